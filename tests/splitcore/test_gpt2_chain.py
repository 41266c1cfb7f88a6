"""The correctness contract on GPT-2: top(trunk(bottom(ids))) equals the full model's logits."""

from __future__ import annotations

import pytest
import torch

from splitcore import BaseSplitModel, ModelFactory
from splitcore.models import GPT2BottomModel, GPT2TopModel, GPT2TrunkModel

TOLERANCE = 1e-5


def _ids(batch: int = 3, length: int = 11, vocab: int = 96) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (batch, length), generator=generator)


def _left_padding(ids: torch.Tensor) -> torch.Tensor:
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # row 0 is left-padded by 4 tokens, row 1 by 1, row 2 not at all
    mask[1, :1] = 0
    return mask


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True], ids=["no-mask", "left-padding"])
def test_chain_equals_full_model(gpt2_checkpoint, full_model, attn_implementation, padded):
    bottom, trunk, top = ModelFactory.create_split_models(
        "gpt2", str(gpt2_checkpoint), 2, 10, attn_implementation=attn_implementation
    )
    reference = full_model(gpt2_checkpoint, attn_implementation)
    ids = _ids()
    mask = _left_padding(ids) if padded else None
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask).logits
        hidden = bottom(ids, attention_mask=mask)
        hidden = trunk(hidden, attention_mask=mask)
        logits = top(hidden, attention_mask=mask)
    assert hidden.shape == (3, 11, 32)
    assert logits.shape == expected.shape == (3, 11, 96)
    keep = mask.bool() if mask is not None else torch.ones(ids.shape, dtype=torch.bool)
    assert (logits - expected).abs()[keep].max().item() <= TOLERANCE


def test_eager_attention_is_causal(gpt2_checkpoint):
    """A later token must not change an earlier position's logits (no bidirectional leak)."""
    bottom, trunk, top = ModelFactory.create_split_models(
        "gpt2", str(gpt2_checkpoint), 2, 10, attn_implementation="eager"
    )
    ids = _ids(batch=1)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 96
    with torch.no_grad():
        first = top(trunk(bottom(ids)))
        second = top(trunk(bottom(changed)))
    assert torch.equal(first[0, :-1], second[0, :-1])
    assert not torch.equal(first[0, -1], second[0, -1])


def test_components_are_the_guides_classes_with_half_open_ranges(gpt2_checkpoint):
    bottom, trunk, top = ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), 2, 10)
    assert (type(bottom), type(trunk), type(top)) == (
        GPT2BottomModel,
        GPT2TrunkModel,
        GPT2TopModel,
    )
    assert all(isinstance(m, BaseSplitModel | torch.nn.Module) for m in (bottom, trunk, top))
    assert [(m.start_layer, m.end_layer, m.num_layers) for m in (bottom, trunk, top)] == [
        (0, 2, 2),
        (2, 10, 8),
        (10, 12, 2),
    ]
    assert list(bottom.split_layers) == ["0", "1"]
    assert list(trunk.split_layers) == [str(i) for i in range(2, 10)]
    assert list(top.split_layers) == ["10", "11"]
    # Blocks keep their global index, as in the full model.
    assert [block.attn.layer_idx for block in trunk.split_layers.values()] == list(range(2, 10))
    assert not any(m.training for m in (bottom, trunk, top))


def test_components_together_hold_exactly_the_full_state_dict(gpt2_checkpoint, full_model):
    bottom, trunk, top = ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), 2, 10)
    reference = full_model(gpt2_checkpoint).state_dict()
    combined = {**bottom.state_dict(), **trunk.state_dict(), **top.state_dict()}
    assert set(combined) == set(reference)
    for name, tensor in combined.items():
        assert torch.equal(tensor, reference[name]), name
    assert set(bottom.state_dict()).isdisjoint(trunk.state_dict())
    assert "lm_head.weight" in top.state_dict()  # the tied head travels with the top
    assert "transformer.wte.weight" in bottom.state_dict()


@pytest.mark.parametrize(
    ("split_point_1", "split_point_2"),
    [(0, 5), (5, 5), (6, 5), (2, 12), (2, 13), (-1, 4), (11, 12)],
)
def test_split_points_outside_the_model_are_refused(gpt2_checkpoint, split_point_1, split_point_2):
    with pytest.raises(ValueError, match=r"0 < split_point_1 < split_point_2 < 12") as error:
        ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), split_point_1, split_point_2)
    assert f"got split_point_1={split_point_1}, split_point_2={split_point_2}" in str(error.value)


@pytest.mark.parametrize(("split_point_1", "split_point_2"), [(1, 2), (1, 11), (10, 11)])
def test_extreme_valid_split_points(gpt2_checkpoint, split_point_1, split_point_2):
    bottom, trunk, top = ModelFactory.create_split_models(
        "gpt2", str(gpt2_checkpoint), split_point_1, split_point_2
    )
    assert (bottom.num_layers, trunk.num_layers, top.num_layers) == (
        split_point_1,
        split_point_2 - split_point_1,
        12 - split_point_2,
    )


def test_device_argument_places_every_component(gpt2_checkpoint):
    components = ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), 2, 10, device="cpu")
    for module in components:
        assert {p.device.type for p in module.parameters()} == {"cpu"}
