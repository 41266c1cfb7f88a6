"""Source checkpoints: a local directory (config.json + safetensors) or a Hugging Face hub id.

Safetensors files are memory-mapped (`formats.SafetensorsFile`), so reading a component hands
out views on the page cache and never materialises the whole model, nor imports torch.
Pickled `.bin` checkpoints are refused unless the caller opts in, and are then loaded with
`torch.load(..., weights_only=True)`. Remote code is never trusted.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from splitcore.formats import FormatError, SafetensorsFile, TensorData

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
    path = Path(text).expanduser()
    if path.exists():
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


@dataclass
class Checkpoint:
    """A checkpoint directory: its config and which file holds each tensor."""

    directory: Path
    config: dict[str, Any]
    tensor_files: dict[str, Path]
    pickled: bool = False
    _files: dict[Path, SafetensorsFile] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, directory: str | Path, allow_pickle: bool = False) -> Checkpoint:
        """Read config.json and index the weights, validating every safetensors header."""
        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{directory} has no config.json")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{config_path} is not valid JSON: {error}") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"{config_path} does not hold a JSON object")
        safetensors_files = sorted(directory.glob("*.safetensors"))
        if (directory / SAFETENSORS_INDEX).is_file() or safetensors_files:
            opened = cls._safetensors_files(directory, safetensors_files)
            names = {name: path for path, handle in opened.items() for name in handle.names()}
            return cls(directory, config, names, _files=opened)
        if (directory / PICKLE_INDEX).is_file() or (directory / PICKLE_SINGLE).is_file():
            if not allow_pickle:
                raise CheckpointError(
                    f"{directory} holds only pickled .bin weights, which can run code when "
                    "loaded; convert it to safetensors or opt in with --allow-pickle "
                    "(allow_pickle=True); it is then loaded with weights_only=True"
                )
            return cls(directory, config, cls._pickle_files(directory), pickled=True)
        raise CheckpointError(f"{directory} has no *.safetensors weights")

    @staticmethod
    def _index(directory: Path, index_name: str) -> dict[str, Path]:
        try:
            weight_map = json.loads((directory / index_name).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"{directory / index_name} is not a valid index: {error}"
            ) from None
        files: dict[str, Path] = {}
        for name, file_name in weight_map.items():
            path = directory / file_name
            if Path(file_name).name != file_name or not path.is_file():
                raise CheckpointError(f"{index_name} names a missing shard {file_name!r}")
            files[name] = path
        return files

    @classmethod
    def _safetensors_files(
        cls, directory: Path, present: list[Path]
    ) -> dict[Path, SafetensorsFile]:
        """Open (and validate) every shard; the index, if any, must agree with the shards."""
        if (directory / SAFETENSORS_INDEX).is_file():
            files = cls._index(directory, SAFETENSORS_INDEX)
            shards = sorted(set(files.values()))
        elif (directory / SAFETENSORS_SINGLE).is_file():
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
                raise CheckpointError(f"{shard.name} does not hold {name}, as its index says")
        return opened

    @classmethod
    def _pickle_files(cls, directory: Path) -> dict[str, Path]:
        if (directory / PICKLE_INDEX).is_file():
            return cls._index(directory, PICKLE_INDEX)
        path = directory / PICKLE_SINGLE
        return dict.fromkeys(cls._load_pickle(path), path)

    @staticmethod
    def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
        import torch

        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:
            raise CheckpointError(f"{path} could not be loaded safely: {error}") from None
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{path} does not hold a state_dict")
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

    def shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Shape and dtype name of every tensor, from the headers only."""
        if not self.pickled:
            return {name: self._files[path].shape(name) for name, path in self.tensor_files.items()}
        result: dict[str, tuple[tuple[int, ...], str]] = {}
        for path in sorted(set(self.tensor_files.values())):
            for name, tensor in self._load_pickle(path).items():
                result[name] = (tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
        return result
