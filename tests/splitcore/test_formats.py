"""The torch-free writers and reader: what torch, safetensors and zip tools read back."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from splitcore.atomic import atomic_writer
from splitcore.formats import FormatError, SafetensorsFile, write_torch_zip
from splitcore.weights import as_tensor_data, write_weights

DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
]


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tensors = {
        f"t.{str(dtype).removeprefix('torch.')}": (torch.randn(3, 5, generator=generator) * 4).to(
            dtype
        )
        for dtype in DTYPES
    }
    tensors["scalar"] = torch.tensor(3.5)
    tensors["empty"] = torch.zeros(0, 4)
    tensors["layer.10.w"] = torch.randn(70, 300, generator=generator)
    return tensors


def _assert_same(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(expected)
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert loaded[name].shape == tensor.shape, name
        as_bytes = loaded[name].reshape(-1).view(torch.uint8)
        assert torch.equal(as_bytes, tensor.contiguous().reshape(-1).view(torch.uint8)), name


@pytest.mark.parametrize("mmap", [False, True])
def test_pt_files_load_with_weights_only(tmp_path, mmap):
    tensors = _tensors()
    write_weights(tensors, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True, mmap=mmap)
    _assert_same(loaded, {name: tensors[name] for name in loaded})
    assert set(loaded) == set(tensors)


def test_pt_files_are_valid_zips_laid_out_like_torch_save(tmp_path):
    tensors = _tensors()
    write_weights(tensors, tmp_path / "ours.pt")
    ours = zipfile.ZipFile(tmp_path / "ours.pt")
    assert ours.testzip() is None  # every CRC32 is right
    reference = io.BytesIO()
    torch.save({name: tensors[name] for name in sorted(tensors)}, reference)
    theirs = zipfile.ZipFile(reference)
    assert ours.namelist() == theirs.namelist()  # the same records, in torch's order
    for name in (
        "archive/version",
        "archive/byteorder",
        "archive/.format_version",
        "archive/.storage_alignment",
    ):
        assert ours.read(name) == theirs.read(name)


def test_storages_are_aligned_to_64_bytes(tmp_path):
    write_weights(_tensors(), tmp_path / "c.pt")
    data = (tmp_path / "c.pt").read_bytes()
    archive = zipfile.ZipFile(tmp_path / "c.pt")
    for info in archive.infolist():
        name_length, extra_length = struct.unpack(
            "<HH", data[info.header_offset + 26 : info.header_offset + 30]
        )
        start = info.header_offset + 30 + name_length + extra_length
        assert start % 64 == 0, info.filename
        assert data[start : start + info.file_size] == archive.read(info.filename)


def test_zip64_records_read_back(tmp_path):
    """Components over 4 GiB need ZIP64; force its code path with a tiny limit."""
    tensors = {name: as_tensor_data(t) for name, t in _tensors().items()}
    with atomic_writer(tmp_path / "c.pt") as sink:
        write_torch_zip(tensors, sink, zip64_limit=64)
    assert zipfile.ZipFile(tmp_path / "c.pt").testzip() is None
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    _assert_same(loaded, _tensors())


def test_identical_inputs_give_identical_bytes(tmp_path):
    first = write_weights(_tensors(), tmp_path / "a.pt")
    second = write_weights(dict(reversed(_tensors().items())), tmp_path / "b.pt")
    assert first == second
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_safetensors_output_reads_back_with_its_header(tmp_path):
    tensors = _tensors()
    write_weights(tensors, tmp_path / "c.safetensors", "safetensors", {"component": "top"})
    with safe_open(str(tmp_path / "c.safetensors"), "pt") as handle:
        assert handle.metadata() == {"component": "top"}
        loaded = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    _assert_same({n: loaded[n] for n in tensors}, tensors)


def test_reader_gives_the_writer_its_bytes_without_copies(tmp_path):
    tensors = {"a": torch.randn(4, 4), "b": torch.arange(10)}
    save_file(tensors, tmp_path / "m.safetensors", metadata={"format": "pt"})
    source = SafetensorsFile(tmp_path / "m.safetensors")
    assert source.metadata == {"format": "pt"}
    assert source.shape("a") == ((4, 4), "float32")
    data = source.tensor("b")
    assert (data.dtype, data.shape, data.nbytes) == ("int64", (10,), 80)
    assert bytes(data.data) == tensors["b"].numpy().tobytes()
    assert data.span is not None
    assert os.pread(data.span.fd, data.nbytes, data.span.offset) == bytes(data.data)


def _raw(header: dict, payload: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + payload


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x00", "header too small"),
        (struct.pack("<Q", 10**6) + b"{}", "exceeds the file"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (
            _raw({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
            "bad entry",
        ),
        (
            _raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
            "do not fit shape",
        ),
        (
            _raw(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
                },
                b"\0" * 12,
            ),
            "overlaps or leaves gaps",
        ),
        (
            _raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
            "the data is 4 bytes but the header describes 8",
        ),
    ],
)
def test_reader_refuses_damaged_files(tmp_path, content, message):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=message):
        SafetensorsFile(path)


def test_streaming_copies_do_not_grow_private_memory(tmp_path):
    """Bytes of a mapped source go through the kernel (sendfile): no private copy appears."""
    big = torch.randn(8 * 2**20)  # 32 MiB
    save_file({"w": big}, tmp_path / "m.safetensors")
    source = SafetensorsFile(tmp_path / "m.safetensors")

    def anon() -> int:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no RssAnon")

    before = anon()
    write_weights({"w": source.tensor("w")}, tmp_path / "out.pt")
    assert anon() - before < 16 * 2**20
    assert torch.equal(torch.load(tmp_path / "out.pt", weights_only=True)["w"], big)
