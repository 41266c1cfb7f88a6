"""Storage layout, atomic component files and their metadata.

Everything that touches the storage volume goes through this module, so the library
(`save_split_model`), the streaming split and `verify` agree byte for byte on file names,
file contents and metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from splitcore.config import parse_split_config
from splitcore.formats import (
    FileSpan,
    TensorData,
    TensorWritten,
    write_safetensors,
    write_torch_zip,
)

if TYPE_CHECKING:
    import torch

Component = Literal["bottom", "trunk", "top"]
COMPONENTS: tuple[Component, ...] = ("bottom", "trunk", "top")
FORMATS = ("pt", "safetensors")
FORMAT_VERSION = 1
METADATA_SUFFIX = "_metadata.json"
RULE = "=" * 60

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_+\-][A-Za-z0-9._+\-]*$")


class StorageError(OSError):
    """A component could not be written or read back."""


def validate_model_name(name: str) -> str:
    """Return `name` if it is safe as a file-name prefix inside the storage folder.

    A model name becomes part of a path on a shared volume: it may not contain a path
    separator, start with a dot or contain `..`, so it can never escape the storage folder.
    """
    if not name or not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(
            f"model name {name!r} is not a safe file name: use letters, digits, '.', '_', '+' "
            "and '-', without '/', '..' or a leading '.'"
        )
    return name


def model_name_from_path(model_name_or_path: str | Path) -> str:
    """The guide's naming rule: the last path component (`/data/ckpt/my-gpt2` -> `my-gpt2`)."""
    text = str(model_name_or_path).rstrip("/")
    name = Path(text).name if text not in ("", ".") else Path.cwd().name
    return validate_model_name(name)


def resolve_model_name(model_name: str | None, model_name_or_path: str | Path) -> str:
    """An explicit model name if given (validated), else the guide's rule on the path."""
    return (
        validate_model_name(model_name) if model_name else model_name_from_path(model_name_or_path)
    )


def check_format(file_format: str) -> str:
    if file_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {file_format!r}")
    return file_format


def validate_component(component: str) -> Component:
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {', '.join(COMPONENTS)}; got {component!r}")
    return component


class StorageManager:
    """Paths and folders of the guide's storage layout."""

    @staticmethod
    def get_split_model_path(
        base_path: str | Path,
        model_name: str,
        component: str,
        split_config: str,
        file_format: str = "pt",
    ) -> Path:
        """`{base}/{component}/{model}_{split}_{component}.pt` (or `.safetensors`)."""
        validate_model_name(model_name)
        validate_component(component)
        parse_split_config(split_config)
        check_format(file_format)
        return (
            Path(base_path) / component / f"{model_name}_{split_config}_{component}.{file_format}"
        )

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


class HashingSink:
    """A write-only sink that hashes every byte on its way to disk.

    Hashing runs in a second thread on the very buffers being written (hashlib releases the
    GIL), so sha256 costs no extra pass and overlaps with the kernel's copy.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.position = 0
        self.sha256: str | None = None  # set by `finish`
        self._sha256 = hashlib.sha256()
        self._queue: queue.Queue[tuple[bytes | memoryview, FileSpan | None] | None] = queue.Queue(
            maxsize=16
        )
        self._hasher = threading.Thread(target=self._hash, name="sha256", daemon=True)
        self._hasher.start()

    def _hash(self) -> None:
        while (item := self._queue.get()) is not None:
            data, span = item
            self._sha256.update(data)
            if span is not None:
                span.release(len(data))  # keep the process's RSS flat on huge models

    def write(self, data: bytes | memoryview, span: FileSpan | None = None) -> None:
        """Append `data`; bytes that lie in a file (`span`) are copied by the kernel."""
        self._queue.put((data, span))
        length = len(data)
        if span is not None:
            done = 0
            while done < length:  # sendfile: an in-kernel copy, like `cp`, across filesystems
                copied = os.sendfile(self._fd, span.fd, span.offset + done, length - done)
                if copied == 0:
                    raise StorageError(f"the source file ended early (fd {span.fd})")
                done += copied
        else:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(self._fd, view) :]
        self.position += length

    def finish(self) -> str:
        """Wait for the hasher; `sha256` is then the digest of everything written."""
        if self.sha256 is None:
            self._queue.put(None)
            self._hasher.join()
            self.sha256 = self._sha256.hexdigest()
        return self.sha256


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedFile:
    """A file written to a temp name beside its final one, waiting to be committed.

    `commit` makes it durable and visible (fsync, rename, fsync the folder); `abort` removes
    it. Until `commit`, nothing exists under the final name, whatever happens.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd, temp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        self.temp = Path(temp_name)
        self.sink = HashingSink(self._fd)

    @property
    def sha256(self) -> str:
        return self.sink.finish()

    def commit(self) -> None:
        try:
            self.sink.finish()
            os.fsync(self._fd)
            os.fchmod(self._fd, 0o644)
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = -1
        self.temp.replace(self.path)
        _fsync_directory(self.path.parent)

    def abort(self) -> None:
        self.sink.finish()  # always stop the hasher thread
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.temp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_file(path: Path) -> Iterator[StagedFile]:
    """A `StagedFile` that is aborted if writing it raises; the caller commits it.

    Hashing may still be running when this returns: `commit` waits for it, so the next file
    can start streaming while the hasher catches up on this one.
    """
    staged = StagedFile(path)
    try:
        yield staged
    except BaseException:
        staged.abort()
        raise


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[HashingSink]:
    """Write `path` through a temp file in the same folder, fsync, then rename.

    A crash, a full disk or an exception never leaves a file under the final name: either the
    old file (if any) or the complete new one is there.
    """
    with staged_file(path) as staged:
        yield staged.sink
    staged.commit()


def canonical_order(names: Iterable[str]) -> list[str]:
    """Tensor names in a stable, human order (layer 2 before layer 10).

    Both the library and the streaming split write tensors in this order, which is what makes
    their files identical byte for byte.
    """
    return sorted(names, key=lambda name: [int(p) if p.isdigit() else p for p in name.split(".")])


def as_tensor_data(tensor: TensorData | torch.Tensor) -> TensorData:
    """Bytes of a tensor without copying where it is already contiguous on the CPU."""
    if isinstance(tensor, TensorData):
        return tensor
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    dtype = str(tensor.dtype).removeprefix("torch.")
    if flat.numel() == 0:
        return TensorData(dtype, tuple(tensor.shape), memoryview(b""))
    data = memoryview(flat.view(torch.uint8).numpy().data).cast("B")
    return TensorData(dtype, tuple(tensor.shape), data)


def write_weights(
    tensors: Mapping[str, TensorData | torch.Tensor],
    path: Path,
    file_format: str = "pt",
    header_metadata: Mapping[str, str] | None = None,
) -> str:
    """Atomically write a component's tensors; return the sha256 of the bytes written.

    `pt` is a plain `state_dict` that `torch.load(path, weights_only=True)` reads; tensors are
    written in `canonical_order` so two writers of the same tensors produce the same bytes.
    """
    staged = stage_weights(tensors, path, file_format, header_metadata)
    staged.commit()
    return staged.sha256


def stage_weights(
    tensors: Mapping[str, TensorData | torch.Tensor],
    path: Path,
    file_format: str = "pt",
    header_metadata: Mapping[str, str] | None = None,
    on_tensor: TensorWritten | None = None,
) -> StagedFile:
    """Write a component's tensors to a temp file beside `path`; the caller commits it."""
    check_format(file_format)
    ordered = {name: as_tensor_data(tensors[name]) for name in canonical_order(tensors)}
    with staged_file(path) as staged:
        if file_format == "pt":
            write_torch_zip(ordered, staged.sink, on_tensor=on_tensor)
        else:
            write_safetensors(ordered, staged.sink, header_metadata or {}, on_tensor)
    return staged


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Atomically write a JSON document (indented, keys in insertion order)."""
    with atomic_writer(path) as sink:
        sink.write((json.dumps(document, indent=2) + "\n").encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


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
        key: value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
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
    """Remove exactly the files of one split (weights and metadata); return those removed."""
    removed = []
    for component in COMPONENTS:
        weights = StorageManager.get_split_model_path(
            storage_path, model_name, component, split_config, file_format
        )
        for path in (weights, StorageManager.get_model_metadata_path(weights)):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


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


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read a metadata file, given it or the weight file it describes."""
    path = Path(path)
    if not path.name.endswith(METADATA_SUFFIX):
        path = StorageManager.get_model_metadata_path(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or "component" not in document:
        raise ValueError(f"{path} is not a split-model metadata file")
    return document


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a component file written by `write_weights`, never unpickling arbitrary objects."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(path))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a state_dict")
    return loaded
