"""Model families: one small adapter per family over the shared mechanism.

To add a family, write an adapter (see `gpt2.py`) and register its model types here. Importing
this package does not import torch: the streaming split only needs the adapters' layouts.
The component classes (`GPT2BottomModel`, `LlamaTrunkModel`, ...) are created on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from splitcore.models.bert import BERT
from splitcore.models.family import FamilyAdapter, TensorLayout
from splitcore.models.gpt2 import GPT2
from splitcore.models.llama import LLAMA, MISTRAL, QWEN2, QWEN3
from splitcore.storage import COMPONENTS

if TYPE_CHECKING:
    from splitcore.models.base import BaseSplitModel

#: Every `model_type` the library can split, by the `model_type` of its `config.json`.
FAMILIES: dict[str, FamilyAdapter] = {
    adapter.model_type: adapter for adapter in (GPT2, LLAMA, MISTRAL, QWEN2, QWEN3, BERT)
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = (*FAMILIES, "auto")
_CLASSES = {
    adapter.class_name(component): (adapter, component)
    for adapter in FAMILIES.values()
    for component in COMPONENTS
}


def __getattr__(name: str) -> type[BaseSplitModel]:
    """`from splitcore.models import GPT2BottomModel` (the classes are made on first use)."""
    if name in _CLASSES:
        adapter, component = _CLASSES[name]
        return adapter.component_class(component)
    raise AttributeError(f"module 'splitcore.models' has no attribute {name!r}")


class UnsupportedModelError(ValueError):
    """The model family is not one the library can split."""


def check_model_type(model_type: str) -> str:
    """Refuse an unknown `model_type` early, listing what is supported."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
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
            raise UnsupportedModelError(
                f"the checkpoint's model_type {checkpoint_type!r} is not supported; "
                f"supported: {supported}"
            )
        return FAMILIES[checkpoint_type]
    if checkpoint_type is not None and checkpoint_type != model_type:
        raise UnsupportedModelError(
            f"model_type {model_type!r} does not match the checkpoint's config.json "
            f"(model_type {checkpoint_type!r}); use {checkpoint_type!r} or 'auto'"
        )
    return FAMILIES[model_type]


__all__ = [
    "FAMILIES",
    "SUPPORTED_MODEL_TYPES",
    "FamilyAdapter",
    "TensorLayout",
    "UnsupportedModelError",
    "check_model_type",
    "get_adapter",
    *_CLASSES,
]
