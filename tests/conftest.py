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
