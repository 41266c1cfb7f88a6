"""Configuration objects from the guide: `ServerConfig` and `ModelConfig`.

Both are plain dataclasses that round-trip through YAML with the guide's keys. Loading is
strict: an unknown key or a value of the wrong type raises `ConfigError` naming the field, so a
typo in an operator's ConfigMap fails loudly instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml

from splitcore.inputs import clip, load_yaml, shown
from splitcore.points import SplitPointError, SplitPoints

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names it."""


def _type_name(expected: Any) -> str:
    if isinstance(expected, type):
        return expected.__name__
    return str(expected).replace("typing.", "")


def _check_value(value: Any, expected: Any, where: str) -> Any:
    """Return `value` converted to `expected` or raise a `ConfigError` naming `where`."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {shown(value)} is not valid"
        )
    if dataclasses.is_dataclass(expected) and isinstance(expected, type):
        if isinstance(value, expected):
            return value
        if isinstance(value, Mapping):
            return from_mapping(expected, value, where)
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {shown(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(expected)
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or expected is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping, got {type(value).__name__} {shown(value)}"
            )
        return dict(value)
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(
                f"{where}: expected true or false, got {type(value).__name__} {shown(value)}"
            )
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"{where}: expected an integer, got {type(value).__name__} {shown(value)}"
            )
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"{where}: expected a number, got {type(value).__name__} {shown(value)}"
            )
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(
                f"{where}: expected a string, got {type(value).__name__} {shown(value)}"
            )
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(expected)}")  # pragma: no cover


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrongly typed values."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{where or 'top level'}: unknown field{'s' if len(unknown) > 1 else ''} "
            f"{clip(', '.join(shown(k) for k in unknown), 200)}; known fields: {', '.join(known)}"
        )
    values = {
        name: _check_value(value, hints[name], f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    try:
        return cls(**values)
    except TypeError as error:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {error}") from None


class _YamlConfig:
    """YAML round trip shared by the configuration dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return from_mapping(cls, data, "")

    def to_yaml(self, path: str | Path) -> None:
        """Write the configuration as YAML with the guide's keys, in the guide's order."""
        Path(path).write_text(
            yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False),
            encoding="utf-8",
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        """Read a YAML file written by `to_yaml` (or by hand); unknown keys are errors."""
        data = load_yaml(Path(path), ConfigError)
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None


@dataclass
class ServerConfig(_YamlConfig):
    """Settings of the serving process; for the operator this is its configuration file."""

    host: str = "0.0.0.0"
    port: int = 50051
    max_workers: int = 10
    max_models: int = 5
    metrics_port: int = 8000
    health_check_interval: float = 30.0
    enable_monitoring: bool = True
    log_level: str = "INFO"
    model_storage_dir: str = "./models"
    auto_save_split_models: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("port", "metrics_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ConfigError(f"{name}: expected a TCP port 1-65535, got {port}")
        for name in ("max_workers", "max_models"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.health_check_interval <= 0:
            raise ConfigError(
                f"health_check_interval: must be positive, got {self.health_check_interval}"
            )
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(
                f"log_level: expected one of {', '.join(LOG_LEVELS)}, got {shown(self.log_level)}"
            )
        if not self.model_storage_dir:
            raise ConfigError("model_storage_dir: must not be empty")


@dataclass
class SplitStorageConfig(_YamlConfig):
    """Where and how the split components of one model are stored."""

    storage_path: str = "./models"
    auto_save: bool = False
    split_config: str = "2-10"

    def __post_init__(self) -> None:
        """`split_config` is kept in its one canonical spelling (`"02-10"` -> `"2-10"`)."""
        try:
            self.split_config = str(SplitPoints.parse(self.split_config))
        except SplitPointError as error:
            raise ConfigError(f"split_config: {error}") from None

    @property
    def split_points(self) -> tuple[int, int]:
        split = SplitPoints.parse(self.split_config)
        return split.first, split.second


@dataclass
class ModelConfig(_YamlConfig):
    """One model to split: the checkpoint, its family and its storage settings."""

    model_id: str
    model_path: str
    model_type: str = "auto"
    split_storage_config: SplitStorageConfig | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.split_storage_config, Mapping):
            self.split_storage_config = from_mapping(
                SplitStorageConfig, self.split_storage_config, "split_storage_config"
            )
        for name in ("model_id", "model_path", "model_type"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: must not be empty")


_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
SPLITMODEL_API_VERSION = "splitlearn.io/v1alpha1"


def _resource_name(model_id: str) -> str:
    """A Kubernetes object name for a model id: lowercase letters, digits and '-'."""
    name = _DNS_LABEL.sub("-", model_id.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise ConfigError(f"model_id {shown(model_id)} gives no usable resource name")
    return name


def model_config_to_split_model(
    config: ModelConfig,
    *,
    namespace: str | None = None,
    storage_claim: str | None = None,
    source_claim: str | None = None,
) -> dict[str, Any]:
    """The `SplitModel` manifest for a `ModelConfig` (DESIGN's table, in camelCase)."""
    storage = config.split_storage_config or SplitStorageConfig()
    metadata: dict[str, Any] = {"name": _resource_name(config.model_id)}
    if namespace:
        metadata["namespace"] = namespace
    spec: dict[str, Any] = {
        "modelId": config.model_id,
        "modelPath": config.model_path,
        "modelType": config.model_type,
        "splitStorageConfig": {
            "storagePath": storage.storage_path,
            "autoSave": storage.auto_save,
            "splitConfig": storage.split_config,
        },
    }
    if storage_claim:
        spec["storage"] = {"claimName": storage_claim}
    if source_claim:
        spec["source"] = {"claimName": source_claim}
    return {
        "apiVersion": SPLITMODEL_API_VERSION,
        "kind": "SplitModel",
        "metadata": metadata,
        "spec": spec,
    }


def _mapping(document: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    """`document[key]`, which must be a mapping if present (absent or null: empty)."""
    value = document.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}{key}: expected a mapping, got {type(value).__name__}")
    return value


def split_model_to_model_config(manifest: Mapping[str, Any]) -> ModelConfig:
    """The `ModelConfig` a `SplitModel` manifest stands for."""
    if manifest.get("kind") != "SplitModel":
        raise ConfigError(f"expected kind SplitModel, got {shown(manifest.get('kind'))}")
    metadata = _mapping(manifest, "metadata")
    spec = _mapping(manifest, "spec")
    storage = _mapping(spec, "splitStorageConfig", "spec.")
    split_storage = {
        key: storage[camel]
        for key, camel in (
            ("storage_path", "storagePath"), ("auto_save", "autoSave"),
            ("split_config", "splitConfig"),
        )
        if camel in storage
    }  # fmt: skip
    return ModelConfig.from_dict(
        {
            "model_id": spec.get("modelId") or metadata.get("name", ""),
            "model_path": spec.get("modelPath", ""),
            "model_type": spec.get("modelType", "auto"),
            "split_storage_config": split_storage,
        }
    )
