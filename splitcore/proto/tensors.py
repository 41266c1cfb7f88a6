"""Tensors on the wire: raw C-contiguous little-endian bytes plus dtype and shape, never pickle.

Decoding checks the byte count against dtype and shape before touching the data, so a bad
message is an error naming the field, never a crash or an arbitrary object.
"""

from __future__ import annotations

import math
import warnings

import torch

from splitcore.proto import trunk_pb2

#: The dtypes a `Tensor` message may carry, by their wire name.
WIRE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}
FLOAT_DTYPES = ("float32", "bfloat16", "float16")
INDEX_DTYPES = ("int64", "int32")
MASK_DTYPES = ("int64", "int32", "bool")
_NAMES = {dtype: name for name, dtype in WIRE_DTYPES.items()}


class WireError(ValueError):
    """A `Tensor` message (or a tensor to send) is malformed; the message names the field."""


def dtype_name(dtype: torch.dtype) -> str:
    """The wire name of `dtype` (`torch.float32` -> `float32`)."""
    if dtype not in _NAMES:
        raise WireError(f"dtype {dtype} cannot travel; supported: {', '.join(WIRE_DTYPES)}")
    return _NAMES[dtype]


def encode(tensor: torch.Tensor) -> trunk_pb2.Tensor:
    """The message for `tensor` (one copy of its bytes, into the message)."""
    name = dtype_name(tensor.dtype)
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().tobytes()
    return trunk_pb2.Tensor(dtype=name, shape=list(tensor.shape), data=data)


def decode(message: trunk_pb2.Tensor, field: str, allowed: tuple[str, ...]) -> torch.Tensor:
    """The tensor in `message`, whose dtype must be one of `allowed`; a view of its bytes."""
    if message.dtype not in allowed:
        raise WireError(f"{field}: dtype {message.dtype!r} is not one of {', '.join(allowed)}")
    dtype = WIRE_DTYPES[message.dtype]
    shape = tuple(int(size) for size in message.shape)
    if any(size < 0 for size in shape):
        raise WireError(f"{field}: negative size in shape {list(shape)}")
    expected = math.prod(shape) * dtype.itemsize
    data = message.data
    if len(data) != expected:
        raise WireError(
            f"{field}: shape {list(shape)} of {message.dtype} needs {expected} bytes, "
            f"the message has {len(data)}"
        )
    if expected == 0:
        return torch.empty(shape, dtype=dtype)
    with warnings.catch_warnings():
        # The bytes are immutable; nothing writes into an input tensor, so no copy is made.
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(data, dtype=dtype).reshape(shape)
