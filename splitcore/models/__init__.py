"""Model families: one small adapter per family over the shared mechanism in `base`.

To add a family, write an adapter (see `gpt2.py`) and register its model types here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splitcore.models.base import (
    BaseSplitModel,
    BottomModel,
    FamilyAdapter,
    SplitContext,
    TensorLayout,
    TopModel,
    TrunkModel,
)
from splitcore.models.bert import BERT, BertBottomModel, BertTopModel, BertTrunkModel
from splitcore.models.gpt2 import GPT2, GPT2BottomModel, GPT2TopModel, GPT2TrunkModel
from splitcore.models.llama import (
    LLAMA,
    MISTRAL,
    QWEN2,
    QWEN3,
    LlamaBottomModel,
    LlamaTopModel,
    LlamaTrunkModel,
    MistralBottomModel,
    MistralTopModel,
    MistralTrunkModel,
    Qwen2BottomModel,
    Qwen2TopModel,
    Qwen2TrunkModel,
    Qwen3BottomModel,
    Qwen3TopModel,
    Qwen3TrunkModel,
)

#: Every `model_type` the library can split, by the `model_type` of its `config.json`.
FAMILIES: dict[str, FamilyAdapter] = {
    adapter.model_type: adapter for adapter in (GPT2, LLAMA, MISTRAL, QWEN2, QWEN3, BERT)
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = (*FAMILIES, "auto")


def check_model_type(model_type: str) -> str:
    """Refuse an unknown `model_type` early, listing what is supported."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return model_type


def get_adapter(model_type: str, config: Mapping[str, Any]) -> FamilyAdapter:
    """The adapter for `model_type`; `auto` reads it from the checkpoint's `config.json`.

    An explicit type must agree with the checkpoint's own `model_type` when it has one.
    """
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    check_model_type(model_type)
    checkpoint_type = config.get("model_type")
    if model_type == "auto":
        if checkpoint_type is None:
            raise ValueError("model_type 'auto' needs a config.json with a model_type")
        if checkpoint_type not in FAMILIES:
            raise ValueError(
                f"the checkpoint's model_type {checkpoint_type!r} is not supported; "
                f"supported: {supported}"
            )
        return FAMILIES[checkpoint_type]
    if checkpoint_type is not None and checkpoint_type != model_type:
        raise ValueError(
            f"model_type {model_type!r} does not match the checkpoint's config.json "
            f"(model_type {checkpoint_type!r}); use {checkpoint_type!r} or 'auto'"
        )
    return FAMILIES[model_type]


__all__ = [
    "FAMILIES",
    "SUPPORTED_MODEL_TYPES",
    "BaseSplitModel",
    "BertBottomModel",
    "BertTopModel",
    "BertTrunkModel",
    "BottomModel",
    "FamilyAdapter",
    "GPT2BottomModel",
    "GPT2TopModel",
    "GPT2TrunkModel",
    "LlamaBottomModel",
    "LlamaTopModel",
    "LlamaTrunkModel",
    "MistralBottomModel",
    "MistralTopModel",
    "MistralTrunkModel",
    "Qwen2BottomModel",
    "Qwen2TopModel",
    "Qwen2TrunkModel",
    "Qwen3BottomModel",
    "Qwen3TopModel",
    "Qwen3TrunkModel",
    "SplitContext",
    "TensorLayout",
    "TopModel",
    "TrunkModel",
    "check_model_type",
    "get_adapter",
]
