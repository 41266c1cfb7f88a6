"""The guide's storage layout: names, folders, metadata and the printed save report.

The library (`save_split_model`), the streaming split, `verify` and `clean` all name, describe
and remove component files through this module, so they agree on every path and key. The
bytes themselves go through `weights` (tensors) and `atomic` (durable, all-or-nothing files).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from splitcore.atomic import (
    StagedFile,
    StorageError,
    output_lock,
    remove_abandoned,
    sha256_file,
    temp_prefix,
    write_json,
)
from splitcore.formats import TensorData, TensorWritten
from splitcore.inputs import (
    MAX_JSON_BYTES,
    InputError,
    dump_json,
    load_json,
    open_regular_file,
    refusal,
    shown,
)
from splitcore.points import SplitPoints
from splitcore.weights import FORMATS, as_tensor_data, check_format, stage_weights

if TYPE_CHECKING:
    import torch

Component = Literal["bottom", "trunk", "top"]
COMPONENTS: tuple[Component, ...] = ("bottom", "trunk", "top")
FORMAT_VERSION = 1
METADATA_SUFFIX = "_metadata.json"
NAME_MAX = 255  # the longest file name most filesystems take
RULE = "=" * 60

_SAFE_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]*")


def validate_model_name(name: str) -> str:
    """Return `name` if it is safe as a file-name prefix inside the storage folder.

    A model name becomes part of a path on a shared volume: it may not contain a path
    separator, start with a dot or contain `..`, so it can never escape the storage folder.
    """
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"model name {shown(name)} is not a safe file name: use letters, digits, '.', "
            "'_', '+' and '-', without '/', '..' or a leading '.'"
        )
    return name


def model_name_from_path(model_name_or_path: str | Path) -> str:
    """The guide's naming rule: the last path component (`/data/ckpt/my-gpt2` -> `my-gpt2`)."""
    text = str(model_name_or_path).rstrip("/")
    name = Path(text).name if text not in ("", ".") else Path.cwd().name
    return validate_model_name(name)


def resolve_model_name(model_name: str | None, model_name_or_path: str | Path) -> str:
    """An explicit model name if given (validated), else the guide's rule on the path."""
    if model_name is not None:
        return validate_model_name(model_name)
    return model_name_from_path(model_name_or_path)


def validate_component(component: str) -> Component:
    if component not in COMPONENTS:
        raise ValueError(
            f"component must be one of {', '.join(COMPONENTS)}; got {shown(component)}"
        )
    return component


class StorageManager:
    """Paths and folders of the guide's storage layout."""

    @staticmethod
    def get_split_model_path(
        base_path: str | Path,
        model_name: str,
        component: str,
        split_config: str | SplitPoints,
        file_format: str = "pt",
    ) -> Path:
        """`{base}/{component}/{model}_{split}_{component}.pt` (or `.safetensors`), with the
        split in its one canonical spelling (`02-10` names the same files as `2-10`)."""
        validate_model_name(model_name)
        validate_component(component)
        split = SplitPoints.parse(split_config)
        check_format(file_format)
        stem = f"{model_name}_{split}_{component}"
        longest = max(len(f"{stem}.{file_format}"), len(stem + METADATA_SUFFIX))
        if longest > NAME_MAX:
            raise ValueError(
                f"model name {shown(model_name)} is too long: its file names would have "
                f"{longest} characters, more than the {NAME_MAX} a file name may have"
            )
        return Path(base_path) / component / f"{stem}.{file_format}"

    @staticmethod
    def create_storage_directories(base_path: str | Path) -> dict[str, Path]:
        """Create `{base}/bottom`, `{base}/trunk`, `{base}/top` and return them by component."""
        folders: dict[str, Path] = {c: Path(base_path) / c for c in COMPONENTS}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return folders

    @staticmethod
    def get_model_metadata_path(model_path: str | Path) -> Path:
        """`.../gpt2_2-10_bottom.pt` -> `.../gpt2_2-10_bottom_metadata.json`."""
        path = Path(model_path)
        return path.with_name(path.stem + METADATA_SUFFIX)


@dataclass(frozen=True)
class TensorSummary:
    """Sizes of a component, computed the same way from modules and from checkpoint tensors."""

    num_parameters: int
    memory_bytes: int
    dtype: str

    @classmethod
    def of(cls, tensors: Mapping[str, TensorData | torch.Tensor]) -> TensorSummary:
        data = [as_tensor_data(t) for t in tensors.values()]
        return cls(
            num_parameters=sum(t.numel for t in data),
            memory_bytes=sum(t.nbytes for t in data),
            dtype=",".join(sorted({t.dtype for t in data})),
        )


def build_metadata(
    *,
    model_class: str,
    component: Component,
    start_layer: int,
    end_layer: int,
    summary: TensorSummary,
    config: Mapping[str, Any],
    model_type: str,
    split_config: str,
    source: str,
    file_format: str,
) -> dict[str, Any]:
    """The metadata document: the guide's keys first, then the ones this project adds."""
    return {
        "model_class": model_class,
        "component": component,
        "start_layer": start_layer,
        "end_layer": end_layer,
        "num_layers": end_layer - start_layer,
        "num_parameters": summary.num_parameters,
        "memory_mb": round(summary.memory_bytes / 2**20, 2),
        "config": dict(config),
        "saved_at": datetime.now(UTC).isoformat(),
        "memory_bytes": summary.memory_bytes,
        "sha256": None,
        "dtype": summary.dtype,
        "model_type": model_type,
        "split_config": split_config,
        "source": source,
        "format": file_format,
        "format_version": FORMAT_VERSION,
    }


#: Metadata keys that vary between two writes of the same tensors; kept out of file headers.
_UNSTABLE_KEYS = ("saved_at", "sha256")


def header_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The metadata a safetensors header carries: string values, nothing time-dependent."""
    return {
        key: value if isinstance(value, str) else dump_json(value, separators=(",", ":"))
        for key, value in metadata.items()
        if key not in _UNSTABLE_KEYS
    }


def save_component(
    tensors: Mapping[str, TensorData | torch.Tensor],
    path: Path,
    metadata: dict[str, Any],
    save_metadata: bool = True,
) -> dict[str, Any]:
    """Write a component's weights, then its metadata with the sha256 of the bytes written.

    The library (`save_split_model`) and the streaming split both end here, which is what
    keeps their files identical.
    """
    staged = stage_component(tensors, path, metadata)
    return commit_component(staged, path, metadata, save_metadata)


def stage_component(
    tensors: Mapping[str, TensorData | torch.Tensor],
    path: Path,
    metadata: dict[str, Any],
    on_tensor: TensorWritten | None = None,
) -> StagedFile:
    """The first half of `save_component`: the weights, written and hashed, not yet visible."""
    return stage_weights(tensors, path, metadata["format"], header_metadata(metadata), on_tensor)


def commit_component(
    staged: StagedFile, path: Path, metadata: dict[str, Any], save_metadata: bool = True
) -> dict[str, Any]:
    """The second half: make the weights durable and visible, then write their metadata."""
    staged.commit()
    metadata = {**metadata, "sha256": staged.sha256}
    if save_metadata:
        write_json(StorageManager.get_model_metadata_path(path), metadata)
    return metadata


def remove_components(
    storage_path: str | Path, model_name: str, split_config: str, file_format: str = "pt"
) -> list[Path]:
    """Remove exactly the files of one split (weights and metadata); return those removed.

    It holds the split's output lock meanwhile: a split still writing these files makes it
    fail with `OutputLockedError` (retried) rather than see them reappear after it.
    """
    paths = output_paths(storage_path, model_name, split_config, file_format)
    if not Path(storage_path).is_dir():
        return []
    split = str(SplitPoints.parse(split_config))
    removed = []
    with output_lock(Path(storage_path), output_lock_name(model_name, split)):
        for path in paths:
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


def check_storage_writable(storage_path: str | Path) -> None:
    """Fail before any work if the storage folder cannot be created or written."""
    base = Path(storage_path)
    try:
        StorageManager.create_storage_directories(base)
    except OSError as error:
        raise StorageError(f"storage path {base} cannot be created: {error.strerror}") from error
    for component in COMPONENTS:
        if not os.access(base / component, os.W_OK | os.X_OK):
            raise StorageError(f"storage path {base / component} is not writable")


def output_paths(
    storage_path: str | Path, model_name: str, split_config: str, file_format: str
) -> list[Path]:
    """The six files of one split: each component's weights, then its metadata."""
    weights = [
        StorageManager.get_split_model_path(
            storage_path, model_name, component, split_config, file_format
        )
        for component in COMPONENTS
    ]
    return [path for w in weights for path in (w, StorageManager.get_model_metadata_path(w))]


def check_outputs_replaceable(paths: list[Path]) -> None:
    """No final path is a folder, which a finished component could not replace (the rename
    would fail after all the work); anything else there is replaced atomically."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            raise StorageError(f"{path} exists and is a directory; remove it first")


def output_lock_name(model_name: str, split_config: str) -> str:
    """What `atomic.output_lock` locks for one split: `{model}_{split}`."""
    return f"{model_name}_{split_config}"


def remove_stale_temp_files(storage_path: str | Path, model_name: str, split_config: str) -> None:
    """Remove temp files of these very components whose writer is gone (never others).

    A temp file's writer holds a lock on it for as long as it lives, so a concurrent
    writer's file is never taken for a dead one's.
    """
    for file_format in FORMATS:
        for final in output_paths(storage_path, model_name, split_config, file_format):
            for stale in final.parent.glob(f"{glob.escape(temp_prefix(final.name))}*.tmp"):
                remove_abandoned(stale)


class SaveReport:
    """The guide's printed block around a save, line for line."""

    def __init__(self, storage_path: str | Path, out: IO[str] | None = None) -> None:
        self._out = out
        self._print(RULE)
        self._print("Saving split models to storage...")
        self._print(RULE)
        self._print(f"Storage directory: {storage_path}")

    def _print(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    def saved(self, component: Component, path: Path) -> None:
        self._print(f"  {component.capitalize()} model saved: {path}")

    def done(self) -> None:
        self._print(RULE)


#: Keys every metadata file has, with the types a reader may rely on.
_INTEGER_KEYS = ("start_layer", "end_layer", "num_layers", "num_parameters")
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "memory_bytes": (int,),
    "memory_mb": (int, float),
    "format_version": (int,),
    "model_class": (str,),
    "saved_at": (str,),
    "dtype": (str,),
    "source": (str,),
    "format": (str,),
}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read a metadata file, given it or the weight file it describes; every key a reader
    uses is checked for its type, so no consumer trips over a `null` or a missing field."""
    path = Path(path)
    if not path.name.endswith(METADATA_SUFFIX):
        path = StorageManager.get_model_metadata_path(path)
    document = load_json(path, InputError, MAX_JSON_BYTES)

    def fail(problem: str) -> InputError:
        return InputError(f"{path} is not a split-model metadata file: {problem}")

    if not isinstance(document, dict):
        raise fail("not a JSON object")
    if document.get("component") not in COMPONENTS:
        raise fail(f"component is {shown(document.get('component'))}")
    for key in _INTEGER_KEYS:
        value = document.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail(f"{key} is {shown(value)}, not a non-negative integer")
    if not isinstance(document.get("config"), dict):
        raise fail("config is missing or not an object")
    for key in ("model_type", "split_config"):
        if not isinstance(document.get(key), str):
            raise fail(f"{key} is {shown(document.get(key))}, not a string")
    try:
        SplitPoints.parse(document["split_config"])
    except ValueError:
        raise fail(f"split_config is {shown(document['split_config'])}") from None
    if not isinstance(document.get("sha256"), str | None):
        raise fail(f"sha256 is {shown(document.get('sha256'))}, not a string")
    for key, types in _OPTIONAL_TYPES.items():
        value = document.get(key)
        if key in document and (isinstance(value, bool) or not isinstance(value, types)):
            raise fail(f"{key} is {shown(value)}")
    return document


class CorruptComponentError(ValueError):
    """A component file does not match its metadata (sha256, or what it describes)."""


def verified_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a component file, once the file's sha256 matches the recorded one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"component file {path} does not exist")
    metadata = read_metadata(path)
    recorded = metadata.get("sha256")
    actual = sha256_file(path)
    if recorded != actual:
        raise CorruptComponentError(
            f"{path}: sha256 {actual} differs from the metadata's {recorded}; "
            "the file is corrupt or was replaced, refusing to load it"
        )
    return metadata


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a component file written by `write_weights`, never unpickling arbitrary objects;
    a file that is not one raises `InputError` naming it."""
    import torch

    path = Path(path)
    os.close(open_regular_file(path))  # never block on a FIFO
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = dict(load_file(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"{path} cannot be loaded as a component file: {refusal(error)}") from None
    if not isinstance(loaded, dict) or not all(
        isinstance(tensor, torch.Tensor) for tensor in loaded.values()
    ):
        raise InputError(f"{path} does not hold a state_dict of tensors")
    return loaded
