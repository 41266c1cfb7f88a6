"""Every family honours the correctness contract, whatever its config says."""

from __future__ import annotations

import pytest
import torch

from splitcore import ModelFactory
from splitcore.models import FAMILIES, get_adapter
from splitcore.models.llama import layer_type

TOLERANCE = 1e-5
VOCAB = 96  # the vocabulary of every test family (see conftest)

CLASS_PREFIX = {
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "qwen3": "Qwen3",
    "bert": "Bert",
}


def _inputs(model_type: str, padded: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    ids = torch.randint(3, VOCAB, (3, 11), generator=torch.Generator().manual_seed(2))
    if not padded:
        return ids, None
    mask = torch.ones_like(ids)
    if model_type == "bert":  # encoders pad on the right
        mask[0, -4:] = 0
        mask[1, -1:] = 0
    else:  # decoders pad on the left
        mask[0, :4] = 0
        mask[1, :1] = 0
    return ids, mask


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True], ids=["no-mask", "padding"])
def test_chain_equals_full_model(
    family_checkpoint, family_config, full_model, padded, attn_implementation
):
    checkpoint = family_checkpoint
    model_type = family_config["model_type"]
    bottom, trunk, top = ModelFactory.create_split_models(
        model_type, str(checkpoint), 2, 4, attn_implementation=attn_implementation
    )
    reference = full_model(checkpoint, attn_implementation)
    ids, mask = _inputs(model_type, padded)
    keep = mask.bool() if mask is not None else torch.ones(ids.shape, dtype=torch.bool)
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask)
        output = top(
            trunk(bottom(ids, attention_mask=mask), attention_mask=mask), attention_mask=mask
        )
    if model_type == "bert":
        diff = (output.last_hidden_state - expected.last_hidden_state).abs()[keep]
        assert (output.pooler_output - expected.pooler_output).abs().max() <= TOLERANCE
    else:
        assert output.shape == expected.logits.shape == (3, 11, VOCAB)
        diff = (output - expected.logits).abs()[keep]
    assert diff.max().item() <= TOLERANCE


def test_classes_and_state_dicts(family_checkpoint, family_config, full_model):
    checkpoint = family_checkpoint
    model_type = family_config["model_type"]
    components = ModelFactory.create_split_models("auto", str(checkpoint), 2, 4)
    prefix = CLASS_PREFIX[model_type]
    assert [type(m).__name__ for m in components] == [
        f"{prefix}BottomModel",
        f"{prefix}TrunkModel",
        f"{prefix}TopModel",
    ]
    reference = full_model(checkpoint).state_dict()
    combined = {k: v for m in components for k, v in m.state_dict().items()}
    assert set(combined) == set(reference)
    assert all(torch.equal(combined[name], reference[name]) for name in combined)


def test_tied_checkpoint_has_no_head_tensor_and_top_still_gets_one(family_checkpoints):
    from safetensors import safe_open

    with safe_open(str(family_checkpoints["llama-tied"] / "model.safetensors"), "pt") as handle:
        assert "lm_head.weight" not in handle.keys()  # noqa: SIM118
    with safe_open(str(family_checkpoints["llama"] / "model.safetensors"), "pt") as handle:
        assert "lm_head.weight" in handle.keys()  # noqa: SIM118
    _, _, top = ModelFactory.create_split_models(
        "llama", str(family_checkpoints["llama-tied"]), 2, 4
    )
    assert "lm_head.weight" in top.state_dict()


def test_layers_know_their_global_index_and_attention_type(family_checkpoints):
    _, trunk, _ = ModelFactory.create_split_models(
        "qwen2", str(family_checkpoints["qwen2-sliding"]), 2, 4
    )
    assert [layer.self_attn.layer_idx for layer in trunk.split_layers.values()] == [2, 3]
    # max_window_layers=3: layer 2 attends fully, layer 3 within its sliding window.
    assert [layer.self_attn.sliding_window for layer in trunk.split_layers.values()] == [None, 4]
    assert [layer_type(trunk.config, index) for index in range(6)] == ["full_attention"] * 3 + [
        "sliding_attention"
    ] * 3


def test_bert_without_pooler_returns_no_pooled_output(tmp_path, family_configs):
    from transformers import BertConfig, BertModel

    options = dict(family_configs["bert"])
    options.pop("model_type")
    torch.manual_seed(0)
    BertModel(BertConfig(**options), add_pooling_layer=False).save_pretrained(tmp_path / "bert")
    bottom, trunk, top = ModelFactory.create_split_models("bert", str(tmp_path / "bert"), 2, 4)
    assert not any(name.startswith("pooler.") for name in top.state_dict())
    ids, _ = _inputs("bert", False)
    with torch.no_grad():
        output = top(trunk(bottom(ids)))
    assert output.pooler_output is None
    assert output.last_hidden_state.shape == (3, 11, 32)


def test_bert_task_checkpoint_is_split_by_its_encoder(tmp_path, family_configs):
    """A `BertForMaskedLM` stores `bert.`-prefixed tensors and an MLM head the split ignores."""
    from transformers import BertConfig, BertForMaskedLM, BertModel

    options = dict(family_configs["bert"])
    options.pop("model_type")
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(**options)).save_pretrained(tmp_path / "mlm")
    bottom, trunk, top = ModelFactory.create_split_models("bert", str(tmp_path / "mlm"), 2, 4)
    encoder = BertModel.from_pretrained(tmp_path / "mlm", add_pooling_layer=False).eval()
    ids, mask = _inputs("bert", True)
    with torch.no_grad():
        expected = encoder(ids, attention_mask=mask).last_hidden_state
        output = top(trunk(bottom(ids, mask), mask), mask).last_hidden_state
    assert (output - expected).abs()[mask.bool()].max() <= TOLERANCE


def test_bert_token_type_ids_reach_the_embeddings(family_checkpoints, full_model):
    checkpoint = family_checkpoints["bert"]
    bottom, trunk, top = ModelFactory.create_split_models("bert", str(checkpoint), 2, 4)
    ids, _ = _inputs("bert", False)
    token_types = torch.zeros_like(ids)
    token_types[:, 6:] = 1
    with torch.no_grad():
        expected = full_model(checkpoint)(ids, token_type_ids=token_types).last_hidden_state
        output = top(trunk(bottom(ids, token_type_ids=token_types))).last_hidden_state
    assert (output - expected).abs().max() <= TOLERANCE


def test_auto_refuses_an_unsupported_family(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(
        ValueError, match=r"model_type 't5' is not supported; supported: gpt2, llama"
    ):
        get_adapter("auto", json.loads((tmp_path / "config.json").read_text()))


def test_every_registered_family_is_tested(family_configs):
    tested = {config["model_type"] for config in family_configs.values()} | {"gpt2"}
    assert tested == set(FAMILIES)


def test_a_bottom_refuses_inputs_its_family_does_not_take(family_checkpoints):
    bottom, _, _ = ModelFactory.create_split_models("llama", str(family_checkpoints["llama"]), 2, 4)
    ids, _ = _inputs("llama", False)
    with pytest.raises(TypeError, match="LlamaBottomModel takes no token_type_ids; its extra "
                                        "inputs are: none"):  # fmt: skip
        bottom(ids, token_type_ids=torch.zeros_like(ids))
