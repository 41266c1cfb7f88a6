"""Shared fixtures: tiny random checkpoints written with `save_pretrained`, never downloaded."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

# No test may reach a hub: transformers and huggingface_hub refuse network access.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

#: GPT-2 layout with 12 layers (the guide's 2-10 split fits), small enough to run in ms.
GPT2_TINY: dict[str, Any] = {
    "model_type": "gpt2",
    "n_layer": 12,
    "n_embd": 32,
    "n_head": 4,
    "n_positions": 64,
    "vocab_size": 96,
    "bos_token_id": 0,
    "eos_token_id": 0,
}

FAMILY_VOCAB = 96
_DECODER = {
    "vocab_size": FAMILY_VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention
    "max_position_embeddings": 64,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8,
}

FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama", **_DECODER},
    "llama-tied": {"model_type": "llama", **_DECODER, "tie_word_embeddings": True},
    "llama3-rope": {"model_type": "llama", **_DECODER, "rope_parameters": LLAMA3_ROPE},
    "mistral-sliding": {"model_type": "mistral", **_DECODER, "sliding_window": 4},
    "qwen2-sliding": {
        "model_type": "qwen2",
        **_DECODER,
        "use_sliding_window": True,
        "sliding_window": 4,
        "max_window_layers": 3,  # layers 3.. slide: both mask kinds, in trunk and top
    },
    "qwen2-tied": {"model_type": "qwen2", **_DECODER, "tie_word_embeddings": True},
    "qwen3": {"model_type": "qwen3", **_DECODER, "head_dim": 8},
    "bert": {
        "model_type": "bert",
        "vocab_size": FAMILY_VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
    },
}

CheckpointWriter = Callable[..., Path]


def build_model(config: dict[str, Any], attn_implementation: str = "sdpa", seed: int = 0) -> Any:
    """The full transformers model for `config`, with random weights from `seed`."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    options = dict(config)
    model_type = options.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **options)
    hf_config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model_class = AutoModel if model_type == "bert" else AutoModelForCausalLM
    return model_class.from_config(hf_config).eval()


def write_checkpoint(directory: Path, config: dict[str, Any], seed: int = 0, **save: Any) -> Path:
    """`save_pretrained` a random model of `config` into `directory` (safetensors)."""
    build_model(config, seed=seed).save_pretrained(directory, **save)
    return directory


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """An empty Hugging Face cache per test, so nothing cached on this machine leaks in."""
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))


@pytest.fixture(scope="session")
def gpt2_config() -> dict[str, Any]:
    return dict(GPT2_TINY)


@pytest.fixture(scope="session")
def checkpoint_writer() -> CheckpointWriter:
    """`writer(directory, config, seed=0, **save_pretrained_kwargs) -> directory`."""
    return write_checkpoint


@pytest.fixture(scope="session")
def gpt2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-layer GPT-2 with random weights, saved as `.../gpt2` (the guide's model name)."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "gpt2", GPT2_TINY)


@pytest.fixture(scope="session")
def full_model() -> Callable[[Path, str], Any]:
    """`full_model(directory, attn_implementation)`: the reference, loaded the standard way."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    def load(directory: Path, attn_implementation: str = "sdpa") -> Any:
        config = AutoConfig.from_pretrained(directory)
        model_class = AutoModel if config.model_type == "bert" else AutoModelForCausalLM
        return model_class.from_pretrained(
            directory, attn_implementation=attn_implementation
        ).eval()

    return load


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking `family` runs for every family config (or those its `families` mark names)."""
    if "family" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("families")
        metafunc.parametrize("family", marker.args if marker else list(FAMILY_CONFIGS))


@pytest.fixture(scope="session")
def family_configs() -> dict[str, dict[str, Any]]:
    return FAMILY_CONFIGS


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every family config as a checkpoint on disk (6 layers; split them 2-4)."""
    root = tmp_path_factory.mktemp("families")
    return {name: write_checkpoint(root / name, config) for name, config in FAMILY_CONFIGS.items()}


@pytest.fixture
def family_config(family: str) -> dict[str, Any]:
    return FAMILY_CONFIGS[family]


@pytest.fixture
def family_checkpoint(family: str, family_checkpoints: dict[str, Path]) -> Path:
    return family_checkpoints[family]
