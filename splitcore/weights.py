"""Component weight files: tensors to bytes in a stable order, and back.

`pt` is a plain `state_dict` that `torch.load(path, weights_only=True)` reads; `safetensors`
carries the component's metadata in its header. Both are written through `atomic`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from splitcore.atomic import StagedFile, staged_file
from splitcore.formats import TensorData, TensorWritten, write_safetensors, write_torch_zip

if TYPE_CHECKING:
    import torch

FORMATS = ("pt", "safetensors")


def check_format(file_format: str) -> str:
    if file_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {file_format!r}")
    return file_format


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
