"""splitcore: split transformer checkpoints into bottom / trunk / top components.

`from splitcore import ModelFactory, StorageManager` is the guide's API. Heavy modules
(torch, transformers) load on first use, so `splitcore.config` stays cheap to import for the
operator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "ModelFactory": "splitcore.factory",
    "StorageManager": "splitcore.storage",
    "BaseSplitModel": "splitcore.models.base",
    "BottomModel": "splitcore.models.base",
    "TrunkModel": "splitcore.models.base",
    "TopModel": "splitcore.models.base",
    "ServerConfig": "splitcore.config",
    "ModelConfig": "splitcore.config",
    "split_checkpoint": "splitcore.split",
    "load_component": "splitcore.loading",
    "load_split": "splitcore.loading",
}

if TYPE_CHECKING:
    from splitcore.config import ModelConfig, ServerConfig
    from splitcore.factory import ModelFactory
    from splitcore.loading import load_component, load_split
    from splitcore.models.base import BaseSplitModel, BottomModel, TopModel, TrunkModel
    from splitcore.split import split_checkpoint
    from splitcore.storage import StorageManager


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'splitcore' has no attribute {name!r}")


__all__ = [
    "BaseSplitModel",
    "BottomModel",
    "ModelConfig",
    "ModelFactory",
    "ServerConfig",
    "StorageManager",
    "TopModel",
    "TrunkModel",
    "__version__",
    "load_component",
    "load_split",
    "split_checkpoint",
]
