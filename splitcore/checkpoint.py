"""Source checkpoints: a local directory (config.json + safetensors) or a Hugging Face hub id.

Safetensors files are memory-mapped (`formats.SafetensorsFile`), so reading a component hands
out views on the page cache and never materialises the whole model, nor imports torch.
Pickled `.bin` checkpoints are refused unless the caller opts in, and are then loaded with
`torch.load(..., weights_only=True)`. Remote code is never trusted.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from splitcore.formats import DTYPES, FormatError, SafetensorsFile, SourceChangedError, TensorData
from splitcore.inputs import (
    MAX_CONFIG_BYTES,
    MAX_JSON_BYTES,
    InputError,
    load_json,
    open_regular_file,
    refusal,
    shown,
)

if TYPE_CHECKING:
    import torch

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class CheckpointError(ValueError):
    """The checkpoint is unreadable or does not match its config; permanent, not retryable."""


class HubDownloadError(OSError):
    """A hub id was given and the download failed (often: no network); may be retried."""


def _looks_like_local_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text


def resolve_checkpoint_dir(model_name_or_path: str | Path, allow_pickle: bool = False) -> Path:
    """A local checkpoint directory for `model_name_or_path`, downloading a hub id if needed."""
    text = str(model_name_or_path)
    if not text.strip():
        raise InputError("the checkpoint path is empty; pass the checkpoint directory")
    path = Path(text).expanduser()
    try:
        exists = path.exists()
    except OSError as error:  # a folder on the way cannot be searched
        raise CheckpointError(f"{text} cannot be read: {error.strerror}") from None
    if exists:
        if not path.is_dir():
            raise CheckpointError(
                f"{text} is a file; pass the checkpoint directory holding config.json"
            )
        return path
    if _looks_like_local_path(text) or not HUB_ID.match(text) or ".." in text:
        raise FileNotFoundError(f"no checkpoint directory at {text}")
    return download_from_hub(text, allow_pickle)


def download_from_hub(repo_id: str, allow_pickle: bool = False) -> Path:
    """Fetch config.json and the weights of a hub repository (never its code)."""
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "*.safetensors", SAFETENSORS_INDEX]
    if allow_pickle:
        patterns += ["*.bin", PICKLE_INDEX]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as error:
        raise HubDownloadError(
            f"{repo_id!r} is not a local directory, so a download from the Hugging Face Hub "
            f"was attempted and failed ({type(error).__name__}: {error}). To split a local "
            "checkpoint, pass the path of a directory holding config.json and *.safetensors "
            f"(for example ./checkpoints/{repo_id.rsplit('/', 1)[-1]})."
        ) from error


def _open_safetensors(path: Path) -> SafetensorsFile:
    try:
        return SafetensorsFile(path)
    except FormatError as error:
        raise CheckpointError(str(error)) from None


def _identity(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_ino, status.st_size, status.st_mtime_ns


def _present(path: Path) -> bool:
    """Whether anything (a file, a FIFO, a dangling or looping link) is at `path`: what is
    there is then opened by `inputs`, which names what is wrong with it."""
    return os.path.lexists(path)


@dataclass
class Checkpoint:
    """A checkpoint directory: its config and which file holds each tensor."""

    directory: Path
    config: dict[str, Any]
    tensor_files: dict[str, Path]
    pickled: bool = False
    _files: dict[Path, SafetensorsFile] = field(default_factory=dict, repr=False)
    #: Pickled files as first seen (inode, size, mtime): torch reopens them on every read.
    _pickle_identities: dict[Path, tuple[int, int, int]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, directory: str | Path, allow_pickle: bool = False) -> Checkpoint:
        """Read config.json and index the weights, validating every safetensors header."""
        directory = Path(directory)
        config_path = directory / "config.json"
        try:
            config = load_json(config_path, CheckpointError, MAX_CONFIG_BYTES)
        except FileNotFoundError:
            raise CheckpointError(f"{directory} has no config.json") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"{config_path} does not hold a JSON object")
        if not isinstance(config.get("model_type", ""), str):
            raise CheckpointError(f"{config_path}: model_type is {shown(config['model_type'])}")
        safetensors_files = sorted(directory.glob("*.safetensors"))
        if _present(directory / SAFETENSORS_INDEX) or safetensors_files:
            opened = cls._safetensors_files(directory, safetensors_files)
            names = {name: path for path, handle in opened.items() for name in handle.names()}
            return cls(directory, config, names, _files=opened)
        if _present(directory / PICKLE_INDEX) or _present(directory / PICKLE_SINGLE):
            if not allow_pickle:
                raise CheckpointError(
                    f"{directory} holds only pickled .bin weights, which can run code when "
                    "loaded; convert it to safetensors or opt in with --allow-pickle "
                    "(allow_pickle=True); it is then loaded with weights_only=True"
                )
            files = cls._pickle_files(directory)
            identities = {path: _identity(path) for path in set(files.values())}
            return cls(directory, config, files, pickled=True, _pickle_identities=identities)
        raise CheckpointError(f"{directory} has no *.safetensors weights")

    @staticmethod
    def _index(directory: Path, index_name: str) -> dict[str, Path]:
        path = directory / index_name
        document = load_json(path, CheckpointError, MAX_JSON_BYTES)
        weight_map = document.get("weight_map") if isinstance(document, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{path} is not a valid index: it has no weight_map object")
        files: dict[str, Path] = {}
        for name, file_name in weight_map.items():
            if not isinstance(file_name, str) or not file_name:
                raise CheckpointError(
                    f"{index_name} maps {shown(name)} to {shown(file_name)}, not a file name"
                )
            shard = directory / file_name
            if Path(file_name).name != file_name or not _present(shard):
                raise CheckpointError(f"{index_name} names a missing shard {shown(file_name)}")
            files[name] = shard
        return files

    @classmethod
    def _safetensors_files(
        cls, directory: Path, present: list[Path]
    ) -> dict[Path, SafetensorsFile]:
        """Open (and validate) every shard; the index, if any, must agree with the shards."""
        if _present(directory / SAFETENSORS_INDEX):
            files = cls._index(directory, SAFETENSORS_INDEX)
            shards = sorted(set(files.values()))
        elif _present(directory / SAFETENSORS_SINGLE):
            files, shards = {}, [directory / SAFETENSORS_SINGLE]
        elif len(present) == 1:
            files, shards = {}, present
        else:
            raise CheckpointError(
                f"{directory} has several *.safetensors files but no {SAFETENSORS_INDEX}"
            )
        opened = {shard: _open_safetensors(shard) for shard in shards}
        listed = {name: shard for shard, handle in opened.items() for name in handle.names()}
        for name, shard in files.items():
            if listed.get(name) != shard:
                raise CheckpointError(
                    f"{shard.name} does not hold {shown(name)}, as its index says"
                )
        return opened

    @classmethod
    def _pickle_files(cls, directory: Path) -> dict[str, Path]:
        if _present(directory / PICKLE_INDEX):
            return cls._index(directory, PICKLE_INDEX)
        path = directory / PICKLE_SINGLE
        return dict.fromkeys(cls._load_pickle(path), path)

    @staticmethod
    def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
        import torch

        os.close(open_regular_file(path, CheckpointError))  # never block on a FIFO
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:
            raise CheckpointError(
                f"{path} could not be loaded safely: it must hold only tensors "
                f"({refusal(error)}); convert it to safetensors"
            ) from None
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{path} does not hold a state_dict")
        for name, tensor in loaded.items():
            if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                raise CheckpointError(
                    f"{path} holds {shown(name)}: {type(tensor).__name__}, not a named tensor"
                )
            dtype = str(tensor.dtype).removeprefix("torch.")
            if dtype not in DTYPES:
                raise CheckpointError(f"{path}: {shown(name)} has unsupported dtype {dtype}")
        return loaded

    @property
    def names(self) -> list[str]:
        return list(self.tensor_files)

    def read(self, names: Iterable[str], private: bool = False) -> dict[str, TensorData]:
        """The named tensors as bytes; from safetensors these are views on the page cache.

        With `private`, the views come from fresh copy-on-write mappings, so writes to them
        (training a module built on them) never reach tensors handed out by other reads.
        """
        from splitcore.weights import as_tensor_data

        by_file: dict[Path, list[str]] = defaultdict(list)
        for name in names:
            if name not in self.tensor_files:
                raise CheckpointError(f"the checkpoint has no tensor {name!r}")
            by_file[self.tensor_files[name]].append(name)
        tensors: dict[str, TensorData] = {}
        for path, wanted in by_file.items():
            if self.pickled:
                loaded = self._load_pickle(path)
                tensors.update({name: as_tensor_data(loaded[name]) for name in wanted})
            else:
                mapped = self._files[path].remapped() if private else self._files[path]
                tensors.update({name: mapped.tensor(name) for name in wanted})
        return tensors

    def check_unchanged(self) -> None:
        """Raise `SourceChangedError` if a weight file was written to since it was opened:
        a split's files must all come from one version of the checkpoint."""
        for handle in self._files.values():
            handle.check_unchanged()
        for path, identity in self._pickle_identities.items():
            if _identity(path) != identity:
                raise SourceChangedError(f"{path} changed while it was being split")

    def shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Shape and dtype name of every tensor, from the headers only."""
        if not self.pickled:
            return {name: self._files[path].shape(name) for name, path in self.tensor_files.items()}
        result: dict[str, tuple[tuple[int, ...], str]] = {}
        for path in sorted(set(self.tensor_files.values())):
            for name, tensor in self._load_pickle(path).items():
                result[name] = (tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
        return result
