"""Tensor file formats, read and written without importing torch.

The Job's split moves bytes: it maps the source safetensors files and streams each tensor's
bytes into the output, never converting them. Both output formats are written here:

* `safetensors`: an 8-byte header length, a JSON header, the raw bytes;
* `pt`: the zip archive `torch.save` writes for a state_dict (a protocol-2 pickle that
  `torch.load(..., weights_only=True)` accepts, plus one 64-byte-aligned record per tensor),
  with CRC32s in data descriptors so the file is a valid zip for any tool.

Keeping torch out of this path saves its import time (a second or more) on every Job.
"""

from __future__ import annotations

import copy
import hashlib
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from splitcore.inputs import dump_json, open_regular_file, parse_json, shown


@dataclass(frozen=True)
class DType:
    """One tensor dtype in its three spellings."""

    name: str  # torch's: float32
    code: str  # safetensors': F32
    itemsize: int
    storage: str | None  # the typed storage `torch.save` pickles; None: untyped + dtype


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("float64", "F64", 8, "DoubleStorage"),
        DType("float32", "F32", 4, "FloatStorage"),
        DType("float16", "F16", 2, "HalfStorage"),
        DType("bfloat16", "BF16", 2, "BFloat16Storage"),
        DType("int64", "I64", 8, "LongStorage"),
        DType("int32", "I32", 4, "IntStorage"),
        DType("int16", "I16", 2, "ShortStorage"),
        DType("int8", "I8", 1, "CharStorage"),
        DType("uint8", "U8", 1, "ByteStorage"),
        DType("bool", "BOOL", 1, "BoolStorage"),
        DType("float8_e4m3fn", "F8_E4M3", 1, None),
        DType("float8_e5m2", "F8_E5M2", 1, None),
    )
}
DTYPES_BY_CODE = {d.code: d for d in DTYPES.values()}
MAX_HEADER_BYTES = 100 * 2**20


class FormatError(ValueError):
    """A tensor file is truncated, corrupt or not of the expected format."""


#: Dimensions and offsets above this are no real tensor's (and overflow other readers).
_MAX_COUNT = 2**62


def _is_counts(values: Any) -> bool:
    """A JSON list of non-negative integers: not floats, strings or booleans."""
    return isinstance(values, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _MAX_COUNT for v in values
    )


@dataclass(frozen=True)
class FileSpan:
    """Where a tensor's bytes lie in an open file, so a writer reads them there (`chunks`)."""

    fd: int
    offset: int
    path: Path  # named in the error if the file ends early


class SourceChangedError(OSError):
    """A source file changed (or shrank) while it was being copied; retrying may succeed."""


@dataclass(frozen=True)
class TensorData:
    """A contiguous tensor as bytes: what the writers need, with no torch object involved."""

    dtype: str
    shape: tuple[int, ...]
    data: memoryview
    span: FileSpan | None = None  # set when the bytes come from a mapped file

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPES[self.dtype].itemsize


class Sink(Protocol):
    """Where a writer puts bytes: the atomic, hashing file of `storage.atomic_writer`."""

    position: int

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data`."""


CHUNK_BYTES = 16 * 2**20


def chunks(tensor: TensorData) -> Iterator[bytes | bytearray | memoryview]:
    """The tensor's bytes in 16 MiB pieces.

    Bytes that lie in a file are read from it now with `pread` into a buffer of their own,
    never through its mapping: what a writer checksums and writes is then one and the same,
    even if the file changes meanwhile, and a file truncated meanwhile is an error
    (`SourceChangedError`), not a SIGBUS.
    """
    span, size = tensor.span, len(tensor.data)
    for start in range(0, size, CHUNK_BYTES):
        length = min(CHUNK_BYTES, size - start)
        if span is None:
            yield tensor.data[start : start + length]
        else:
            yield read_span(span, span.offset + start, length)


def read_span(span: FileSpan, offset: int, length: int) -> bytearray:
    """`length` bytes at `offset` of `span`'s file; a file that ends early is an error."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    done = 0
    while done < length:
        count = os.preadv(span.fd, [view[done:]], offset + done)
        if count == 0:
            raise SourceChangedError(
                f"{span.path} ended {length - done} bytes early at offset {offset + done}: "
                "it was truncated or replaced during the split"
            )
        done += count
    return buffer


# ---------------------------------------------------------------------------- safetensors


class SafetensorsFile:
    """A safetensors file, validated and memory-mapped; tensors are views on the page cache."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = open_regular_file(path, FormatError)
        self._file = os.fdopen(fd, "rb")  # kept open: writers copy tensors from it
        try:
            identity = os.fstat(fd)
            size = identity.st_size
            prefix = os.pread(fd, 8, 0)
            if len(prefix) < 8:
                raise self._fail("header too small")
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > min(size - 8, MAX_HEADER_BYTES):
                raise self._fail(
                    f"header length {header_size} exceeds the file ({size} bytes) "
                    f"or {MAX_HEADER_BYTES} bytes"
                )
            header = parse_json(os.pread(fd, header_size, 8), "its header", self._fail)
            self.data_start = 8 + header_size
            self.metadata, self.entries = self._validate(header, size - self.data_start)
            self._mmap = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        except BaseException:
            self._file.close()
            raise
        self._identity = (identity.st_size, identity.st_mtime_ns)

    def _fail(self, reason: str) -> FormatError:
        return FormatError(f"{self.path} is not a valid safetensors file: {reason}")

    def check_unchanged(self) -> None:
        """Raise `SourceChangedError` if the file was written to since it was opened."""
        now = os.fstat(self._file.fileno())
        if (now.st_size, now.st_mtime_ns) != self._identity:
            raise SourceChangedError(
                f"{self.path} changed while it was being split (size or modification time); "
                "nothing may write the checkpoint during a split"
            )

    def _validate(
        self, header: Any, data_size: int
    ) -> tuple[dict[str, str], dict[str, tuple[DType, tuple[int, ...], int, int]]]:
        fail = self._fail
        if not isinstance(header, dict):
            raise fail("the header is not a JSON object")
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(
            isinstance(value, str) for value in metadata.values()
        ):
            raise fail("__metadata__ is not an object of strings")
        entries = {}
        spans = []
        for name, entry in header.items():
            code = entry.get("dtype") if isinstance(entry, dict) else None
            if not isinstance(code, str) or code not in DTYPES_BY_CODE:
                raise fail(f"bad entry for {shown(name)}: {shown(entry)}")
            dtype = DTYPES_BY_CODE[code]
            shape, offsets = entry.get("shape"), entry.get("data_offsets")
            if not (_is_counts(shape) and _is_counts(offsets) and len(offsets) == 2):
                raise fail(f"bad entry for {shown(name)}: {shown(entry)}")
            shape, (begin, end) = tuple(shape), offsets
            numel = 1
            for dim in shape:
                numel *= dim
            if end - begin != numel * dtype.itemsize:
                raise fail(f"{shown(name)}: offsets {begin}-{end} do not fit shape {list(shape)}")
            entries[name] = (dtype, shape, begin, end)
            spans.append((begin, end))
        position = 0
        for begin, end in sorted(spans):
            if begin != position:
                raise fail("tensor data overlaps or leaves gaps")
            position = end
        if position != data_size:
            raise fail(f"the data is {data_size} bytes but the header describes {position}")
        return metadata, entries

    def remapped(self) -> SafetensorsFile:
        """The same file under a mapping of its own: writes to its (copy-on-write) tensors stay
        private to it, so two modules built from one checkpoint never share memory."""
        clone = copy.copy(self)
        clone._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_COPY)
        return clone

    def names(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[tuple[int, ...], str]:
        dtype, shape, _, _ = self.entries[name]
        return shape, dtype.name

    def tensor(self, name: str) -> TensorData:
        dtype, shape, begin, end = self.entries[name]
        start = self.data_start + begin
        view = memoryview(self._mmap)[start : self.data_start + end]
        return TensorData(dtype.name, shape, view, FileSpan(self._file.fileno(), start, self.path))


TensorWritten = Callable[[str, int], None]


def write_safetensors(
    tensors: Mapping[str, TensorData],
    sink: Sink,
    metadata: Mapping[str, str],
    on_tensor: TensorWritten | None = None,
) -> None:
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, tensor in tensors.items():
        header[name] = {
            "dtype": DTYPES[tensor.dtype].code,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = dump_json(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    if len(encoded) > MAX_HEADER_BYTES:  # no reader, ours included, would accept the file
        raise FormatError(
            f"the safetensors header would be {len(encoded)} bytes, more than the "
            f"{MAX_HEADER_BYTES} a reader accepts (is config.json that large?)"
        )
    sink.write(struct.pack("<Q", len(encoded)) + encoded)
    for name, tensor in tensors.items():
        for piece in chunks(tensor):
            sink.write(piece)
        if on_tensor is not None:
            on_tensor(name, tensor.nbytes)


# ---------------------------------------------------------------------- torch.save's zip

_ALIGNMENT = 64
_ZIP64_LIMIT = 0xFFFFFFFF
_DOS_DATE = (0 << 11) | (1 << 5) | 1  # 1980-01-01: fixed, so identical inputs give identical bytes
_FLAGS = 0x08  # sizes and CRC follow the data in a data descriptor


def _pickle_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + struct.pack("<B", value)
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + struct.pack("<B", len(encoded)) + encoded


def _pickle_str(value: str) -> bytes:
    encoded = value.encode()
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def _pickle_tuple(items: list[bytes]) -> bytes:
    if len(items) <= 3:
        return b"".join(items) + (b")", b"\x85", b"\x86", b"\x87")[len(items)]
    return b"(" + b"".join(items) + b"t"


def _pickle_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def pickle_state_dict(tensors: Mapping[str, TensorData]) -> bytes:
    """The `data.pkl` of `torch.save(state_dict)`: one storage per tensor, keys "0", "1", ..."""
    parts = [b"\x80\x02}("]  # PROTO 2, EMPTY_DICT, MARK
    for key, (name, tensor) in enumerate(tensors.items()):
        dtype = DTYPES[tensor.dtype]
        strides: list[int] = []
        stride = 1
        for dim in reversed(tensor.shape):
            strides.insert(0, stride)
            stride *= dim
        storage = (
            _pickle_global("torch", dtype.storage)
            if dtype.storage
            else _pickle_global("torch.storage", "UntypedStorage")
        )
        numel = tensor.numel if dtype.storage else tensor.nbytes
        persistent = _pickle_tuple(
            [
                _pickle_str("storage"),
                storage,
                _pickle_str(str(key)),
                _pickle_str("cpu"),
                _pickle_int(numel),
            ]
        )
        arguments = [
            persistent + b"Q",  # BINPERSID
            _pickle_int(0),
            _pickle_tuple([_pickle_int(d) for d in tensor.shape]),
            _pickle_tuple([_pickle_int(s) for s in strides]),
            b"\x89",  # requires_grad=False
            _pickle_global("collections", "OrderedDict") + b")R",  # backward hooks
        ]
        rebuild = "_rebuild_tensor_v2"
        if dtype.storage is None:
            rebuild = "_rebuild_tensor_v3"
            arguments.append(_pickle_global("torch", dtype.name))
        parts.append(_pickle_str(name))
        parts.append(_pickle_global("torch._utils", rebuild) + b"(" + b"".join(arguments) + b"tR")
    parts.append(b"u.")  # SETITEMS, STOP
    return b"".join(parts)


@dataclass
class _ZipEntry:
    name: bytes
    crc: int
    size: int
    offset: int


class ZipWriter:
    """A stored (uncompressed) zip written front to back, as torch's reader expects it."""

    def __init__(self, sink: Sink, zip64_limit: int = _ZIP64_LIMIT) -> None:
        self.sink = sink
        self.entries: list[_ZipEntry] = []
        self.zip64_limit = zip64_limit

    def _needs_zip64(self, size: int, offset: int) -> bool:
        return size >= self.zip64_limit or offset >= self.zip64_limit

    def record(self, name: str, data: bytes | TensorData) -> None:
        encoded = name.encode()
        offset = self.sink.position
        tensor = (
            data
            if isinstance(data, TensorData)
            else TensorData("uint8", (len(data),), memoryview(data))
        )
        size = len(tensor.data)
        zip64 = self._needs_zip64(size, offset)
        extra = struct.pack("<HHQQ", 0x0001, 16, size, size) if zip64 else b""
        header_size = 30 + len(encoded) + len(extra)
        padding = -(offset + header_size + 4) % _ALIGNMENT
        extra += struct.pack("<HH", 0x4246, padding) + b"Z" * padding  # torch's "FB" padding
        stored_size = 0xFFFFFFFF if zip64 else size
        self.sink.write(
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                45 if zip64 else 20,
                _FLAGS,
                0,
                0,
                _DOS_DATE,
                0,
                stored_size,
                stored_size,
                len(encoded),
                len(extra),
            )
            + encoded
            + extra
        )
        crc = 0
        for piece in chunks(tensor):
            crc = zlib.crc32(piece, crc)
            self.sink.write(piece)
        descriptor = "<IIQQ" if zip64 else "<IIII"
        self.sink.write(struct.pack(descriptor, 0x08074B50, crc, size, size))
        self.entries.append(_ZipEntry(encoded, crc, size, offset))

    def finish(self) -> None:
        start = self.sink.position
        directory = []
        for entry in self.entries:
            fields = []
            size = entry.size
            offset = entry.offset
            if entry.size >= self.zip64_limit or entry.offset >= self.zip64_limit:
                fields = [entry.size, entry.size, entry.offset]
                size, offset = 0xFFFFFFFF, 0xFFFFFFFF
            extra = (
                struct.pack(f"<HH{len(fields)}Q", 0x0001, 8 * len(fields), *fields)
                if fields
                else b""
            )
            directory.append(
                struct.pack(
                    "<IHHHHHHIIIHHHHHII",
                    0x02014B50,
                    45 if fields else 20,
                    45 if fields else 20,
                    _FLAGS,
                    0,
                    0,
                    _DOS_DATE,
                    entry.crc,
                    size,
                    size,
                    len(entry.name),
                    len(extra),
                    0,
                    0,
                    0,
                    0,
                    offset,
                )
                + entry.name
                + extra
            )
        central = b"".join(directory)
        count = len(self.entries)
        tail = b""
        if start >= self.zip64_limit or count >= 0xFFFF:
            zip64_end = start + len(central)
            tail += struct.pack(
                "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(central), start
            )
            tail += struct.pack("<IIQI", 0x07064B50, 0, zip64_end, 1)
            count, start_field = 0xFFFF, 0xFFFFFFFF
        else:
            start_field = start
        tail += struct.pack(
            "<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), start_field, 0
        )
        self.sink.write(central + tail)


def write_torch_zip(
    tensors: Mapping[str, TensorData],
    sink: Sink,
    zip64_limit: int = _ZIP64_LIMIT,
    on_tensor: TensorWritten | None = None,
) -> None:
    """What `torch.save(state_dict, f)` writes, for tensors given as bytes."""
    pickled = pickle_state_dict(tensors)
    archive = ZipWriter(sink, zip64_limit)
    archive.record("archive/data.pkl", pickled)
    archive.record("archive/.format_version", b"1")
    archive.record("archive/.storage_alignment", str(_ALIGNMENT).encode())
    archive.record("archive/byteorder", b"little")
    for key, (name, tensor) in enumerate(tensors.items()):
        archive.record(f"archive/data/{key}", tensor)
        if on_tensor is not None:
            on_tensor(name, tensor.nbytes)
    archive.record("archive/version", b"3\n")
    sizes = ",".join(str(t.nbytes) for t in tensors.values()).encode()
    serialization_id = hashlib.sha1(pickled + sizes, usedforsecurity=False).hexdigest()
    archive.record("archive/.data/serialization_id", serialization_id.encode())
    archive.finish()
