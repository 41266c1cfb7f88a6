"""The chain with a remote trunk computes, trains and generates exactly as the full model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import splitcore
from splitcore import ModelFactory, ServerConfig
from splitcore.remote import RemoteTrunk, generate
from splitcore.serve import TrunkServer

TOLERANCE = 1e-5
VOCAB = 96
SPLIT = "2-4"
#: Every family config of conftest, the 12-layer GPT-2 (absolute positions, tied head), and
#: that GPT-2 with position embeddings so large that wrong positions change its tokens.
MODELS = ("gpt2", "gpt2-positions", "llama", "llama-tied", "llama3-rope", "mistral-sliding",
          "qwen2-sliding", "qwen2-tied", "qwen3", "bert")  # fmt: skip
DECODERS = tuple(name for name in MODELS if name != "bert")


@pytest.fixture(scope="module")
def checkpoints(family_checkpoints, gpt2_checkpoint, gpt2_config, tmp_path_factory):
    from transformers import AutoModelForCausalLM, GPT2Config

    options = {k: v for k, v in gpt2_config.items() if k != "model_type"}
    torch.manual_seed(0)
    positional = AutoModelForCausalLM.from_config(GPT2Config(**options))
    with torch.no_grad():
        positional.transformer.wpe.weight.mul_(50)
    folder = tmp_path_factory.mktemp("gpt2-positions")
    positional.save_pretrained(folder)
    return {**family_checkpoints, "gpt2": gpt2_checkpoint, "gpt2-positions": folder}


@pytest.fixture
def checkpoint(model, checkpoints) -> Path:
    return checkpoints[model]


@pytest.fixture(scope="module")
def storage(checkpoints, tmp_path_factory) -> Path:
    """Every model split 2-4 into one storage folder, each under its name."""
    folder = tmp_path_factory.mktemp("storage")
    for name, checkpoint in checkpoints.items():
        ModelFactory.create_split_models(
            "auto", str(checkpoint), 2, 4, storage_path=str(folder), auto_save=True, model_name=name
        )
    return folder


@pytest.fixture(scope="module")
def endpoint(storage):
    config = ServerConfig(host="127.0.0.1", max_models=8, enable_monitoring=False)
    with TrunkServer(config, storage, port=0) as server:
        yield f"127.0.0.1:{server.port}"


@pytest.fixture
def remote(model, endpoint):
    with RemoteTrunk(endpoint, model, SPLIT) as trunk:
        yield trunk


def _ends(storage: Path, model: str):
    bottom, _, top = splitcore.load_split(storage, model, SPLIT)
    return bottom, top


def _padded(is_encoder: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (3, 9), generator=torch.Generator().manual_seed(7))
    mask = torch.ones_like(ids)
    if is_encoder:
        mask[0, -4:] = 0
        mask[1, -1:] = 0
    else:
        mask[0, :4] = 0
        mask[1, :1] = 0
    return ids, mask


def _compared(output, keep: torch.Tensor) -> list[torch.Tensor]:
    """What the chain is compared on: kept logits, or kept hidden states and the pooled output."""
    if not isinstance(output, torch.Tensor) and hasattr(output, "logits"):
        output = output.logits
    if isinstance(output, torch.Tensor):
        return [output[keep]]
    return [output.last_hidden_state[keep], output.pooler_output]


@pytest.mark.parametrize("model", MODELS)
def test_remote_chain_equals_full_model(model, storage, remote, checkpoint, full_model):
    bottom, top = _ends(storage, model)
    ids, mask = _padded(bottom.adapter.is_encoder)
    keep = mask.bool()
    with torch.no_grad():
        output = top(remote(bottom(ids, attention_mask=mask), attention_mask=mask), mask)
        expected = full_model(checkpoint)(ids, attention_mask=mask)
    actual, wanted = _compared(output, keep), _compared(expected, keep)
    assert [a.shape for a in actual] == [w.shape for w in wanted]
    assert max((a - w).abs().max().item() for a, w in zip(actual, wanted, strict=True)) <= TOLERANCE
    assert remote.session_id is None  # inference without gradients needs no session


def _loss(output, keep: torch.Tensor) -> torch.Tensor:
    """A loss over the kept positions that weighs every output element differently."""
    total = torch.zeros(())
    for index, tensor in enumerate(_compared(output, keep)):
        weights = torch.randn(tensor.shape, generator=torch.Generator().manual_seed(index))
        total = total + (tensor * weights).sum()
    return total


@pytest.mark.parametrize("model", MODELS)
def test_gradients_at_bottom_and_top_equal_full_model(
    model, storage, remote, checkpoint, full_model
):
    bottom, top = _ends(storage, model)
    reference = full_model(checkpoint)
    ids, mask = _padded(bottom.adapter.is_encoder)
    keep = mask.bool()
    _loss(top(remote(bottom(ids, attention_mask=mask), attention_mask=mask), mask), keep).backward()
    _loss(reference(ids, attention_mask=mask), keep).backward()
    expected = {name: p.grad for name, p in reference.named_parameters()}
    local = {name: p.grad for m in (bottom, top) for name, p in m.named_parameters()}
    layout = bottom.adapter.layout
    if layout.head is not None and layout.head not in expected:
        # A tied full model has one matrix for both ends: its gradient is the sum of theirs.
        local[layout.tied_to] = local[layout.tied_to] + local.pop(layout.head)
    assert local.keys() <= expected.keys()
    assert all(gradient is not None for gradient in local.values())
    worst = max((gradient - expected[name]).abs().max().item() for name, gradient in local.items())
    assert worst <= TOLERANCE


def _train_steps(model_step, optimizers, steps: int) -> None:
    for step in range(steps):
        for optimizer in optimizers:
            optimizer.zero_grad()
        model_step(step).backward()
        for optimizer in optimizers:
            optimizer.step()


def _token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)
    )


@pytest.mark.parametrize("model", ["llama"])
@pytest.mark.parametrize(
    ("optimizer", "local_class", "options"),
    [
        ({"name": "sgd", "lr": 0.1}, torch.optim.SGD, {"lr": 0.1}),
        (
            {"name": "adam", "lr": 0.01, "beta1": 0.8, "beta2": 0.99},
            torch.optim.Adam,
            {"lr": 0.01, "betas": (0.8, 0.99)},
        ),
    ],
    ids=["sgd", "adam"],
)
def test_server_side_training_equals_local_training(
    model, storage, endpoint, checkpoint, full_model, optimizer, local_class, options
):
    """Untied llama: N steps through the wire give the full model's N-step parameters.

    (A tied head, as in GPT-2, is two copies once split: the bottom's embedding and the top's
    head train apart, so a split tied model cannot match its full model after the first step.)
    """
    steps = 3
    batches = [
        torch.randint(3, VOCAB, (2, 8), generator=torch.Generator().manual_seed(s))
        for s in range(steps)
    ]
    reference = full_model(checkpoint)
    _train_steps(
        lambda step: _token_loss(reference(batches[step]).logits, batches[step]),
        [local_class(reference.parameters(), **options)],
        steps,
    )
    bottom, top = _ends(storage, model)
    with RemoteTrunk(endpoint, model, SPLIT, trainable=True, optimizer=optimizer) as remote:
        _train_steps(
            lambda step: _token_loss(top(remote(bottom(batches[step]))), batches[step]),
            [local_class(bottom.parameters(), **options), local_class(top.parameters(), **options)],
            steps,
        )
        expected = dict(reference.named_parameters())
        local = [(n, p) for m in (bottom, top) for n, p in m.named_parameters()]
        assert max((p - expected[n]).abs().max().item() for n, p in local) <= TOLERANCE
        probe = torch.randint(3, VOCAB, (2, 8), generator=torch.Generator().manual_seed(99))
        with torch.no_grad():
            trained_logits = top(remote(bottom(probe)))
            assert (trained_logits - reference(probe).logits).abs().max().item() <= TOLERANCE
        new_name = f"llama-{optimizer['name']}"
        saved = Path(remote.save(new_name))
    assert saved == storage / "trunk" / f"{new_name}_{SPLIT}_trunk.pt"
    trunk = splitcore.load_component(saved)
    trunk_parameters = list(trunk.named_parameters())
    assert len(trunk_parameters) > 0
    assert max((p - expected[n]).abs().max().item() for n, p in trunk_parameters) <= TOLERANCE
    with torch.no_grad():
        assert (top(trunk(bottom(probe))) - trained_logits).abs().max().item() <= TOLERANCE
    # Everyone else still sees the weights of the file.
    original = splitcore.load_component(storage / "trunk" / f"llama_{SPLIT}_trunk.pt")
    hidden = bottom(probe).detach()
    with RemoteTrunk(endpoint, model, SPLIT) as other, torch.no_grad():
        assert torch.equal(other(hidden), original(hidden))


@pytest.mark.parametrize("model", DECODERS)
def test_greedy_generation_equals_full_model(model, storage, remote, checkpoint, full_model):
    bottom, top = _ends(storage, model)
    ids, mask = _padded(is_encoder=False)
    tokens = generate(bottom, remote, top, ids, 12, attention_mask=mask)
    with torch.no_grad():
        expected = full_model(checkpoint).generate(
            ids, attention_mask=mask, max_new_tokens=12, do_sample=False
        )
    assert tokens.shape[1] > ids.shape[1]
    assert torch.equal(tokens, expected)
    assert remote.session_id is not None  # the KV cache lived in a session


@pytest.mark.parametrize("model", ["qwen2-sliding"])
def test_generation_without_mask_and_sampling_is_reproducible(
    model, storage, remote, full_model, checkpoint
):
    bottom, top = _ends(storage, model)
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    greedy = generate(bottom, remote, top, ids, 10)
    with torch.no_grad():
        expected = full_model(checkpoint).generate(ids, max_new_tokens=10, do_sample=False)
    assert torch.equal(greedy, expected)
    first = generate(bottom, remote, top, ids, 10, do_sample=True, seed=5)
    second = generate(bottom, remote, top, ids, 10, do_sample=True, seed=5)
    assert torch.equal(first, second)
    assert torch.equal(first[:, :6], ids)
