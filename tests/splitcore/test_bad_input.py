"""Bad checkpoints and arguments: a clear error, exit code 2, nothing left behind."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from support.cli import split_cli


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _rewrite(directory: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(directory / "model.safetensors")
    change(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def _truncate(directory: Path) -> None:
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-500])


def _corrupt_header(directory: Path) -> None:
    path = directory / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[10:20] = b"\x00" * 10
    path.write_bytes(bytes(data))


def _drop_layer_3(directory: Path) -> None:
    _rewrite(directory, lambda t: [t.pop(k) for k in list(t) if k.startswith("transformer.h.3.")])


def _reshape_layer_5(directory: Path) -> None:
    def change(tensors):
        tensors["transformer.h.5.mlp.c_fc.weight"] = torch.zeros(32, 64)

    _rewrite(directory, change)


def _fewer_layers_in_config(directory: Path) -> None:
    config = json.loads((directory / "config.json").read_text())
    config["n_layer"] = 11
    (directory / "config.json").write_text(json.dumps(config))


def _wrong_vocabulary(directory: Path) -> None:
    config = json.loads((directory / "config.json").read_text())
    config["vocab_size"] = 100
    (directory / "config.json").write_text(json.dumps(config))


def _missing_shard(directory: Path) -> None:
    index = {"metadata": {}, "weight_map": {"transformer.wte.weight": "model-00002.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def _broken_config(directory: Path) -> None:
    (directory / "config.json").write_text("{not json")


def _config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        config = json.loads((directory / "config.json").read_text())
        change(config)
        (directory / "config.json").write_text(json.dumps(config))

    return damage


def _config_text(text: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        (directory / "config.json").write_text(text)

    return damage


def _rename_layer_3_to_03(directory: Path) -> None:
    def change(tensors):
        for key in [k for k in tensors if k.startswith("transformer.h.3.")]:
            tensors[key.replace(".h.3.", ".h.03.")] = tensors.pop(key)

    _rewrite(directory, change)


def _float_offsets(directory: Path) -> None:
    path = directory / "model.safetensors"
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + size].replace(b'"data_offsets":[0,', b'"data_offsets":[0.0,', 1)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data[8 + size :])


def _index_with(weight_map: object) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        index = {"metadata": {}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index))

    return damage


CASES = {
    "truncated": (_truncate, "not a valid safetensors file"),
    "corrupt-header": (_corrupt_header, "not a valid safetensors file"),
    "missing-layer": (_drop_layer_3, "no tensors for layer 3"),
    "wrong-shape": (_reshape_layer_5, "transformer.h.5.mlp.c_fc.weight: shape [32, 64]"),
    "extra-layer": (_fewer_layers_in_config, "has layer 11 but its config says 11 layers"),
    "wrong-vocabulary": (_wrong_vocabulary, "but config.json says vocab_size=100"),
    "missing-shard": (_missing_shard, "names a missing shard"),
    "broken-config": (_broken_config, "is not valid JSON"),
    # Layers that agree with each other but not with the config (the library refused these
    # only when building modules; the streaming split wrote them).
    "wider-mlp-in-config": (
        _config(lambda c: c.update(n_inner=256)),
        "'transformer.h.0.mlp.c_fc.bias' has shape [128], but config.json describes no size 128",
    ),
    "heads-not-dividing": (
        _config(lambda c: c.update(n_head=5)),
        "hidden size 32 with 5 attention heads",
    ),
    "billion-layers": (
        _config(lambda c: c.update(n_layer=10**9)),
        "no tensors for layer 12 (its config says 1000000000 layers)",
    ),
    "nan-in-config": (_config_text('{"n_layer": 12, "eps": NaN}'), "NaN is not a JSON number"),
    "huge-number": (_config_text('{"n_layer": 1e400}'), "the number 1e400 is out of range"),
    "deep-config": (_config_text("[" * 200_000 + "]" * 200_000), "nested too deeply"),
    "layer-alias": (_rename_layer_3_to_03, "'transformer.h.03.attn.c_attn.bias' is not a layer"),
    "float-offsets": (_float_offsets, "bad entry for"),
    "index-value-types": (
        _index_with({"transformer.wte.weight": ["model.safetensors"]}),
        "maps 'transformer.wte.weight' to ['model.safetensors'], not a file name",
    ),
    "index-not-a-map": (_index_with(["model.safetensors"]), "has no weight_map object"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoint_exits_2_and_writes_nothing(gpt2_checkpoint, tmp_path, capsys, case):
    damage, message = CASES[case]
    checkpoint = _copy(gpt2_checkpoint, tmp_path / "gpt2")
    damage(checkpoint)
    result_file = tmp_path / "result.json"
    code = split_cli(checkpoint, tmp_path / "models", "--result-file", str(result_file))
    assert code == 2
    error = json.loads(result_file.read_text())["error"]
    assert error["reason"] == "InvalidCheckpoint"
    assert message in error["message"]
    assert message in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("name", ["../up", "a/b", "..", "x..y"])
def test_unsafe_model_name_exits_2(gpt2_checkpoint, tmp_path, capsys, name):
    code = split_cli(gpt2_checkpoint, tmp_path / "models", "--model-name", name)
    assert code == 2
    assert not (tmp_path / "models").exists()
    assert not any(tmp_path.parent.glob("up_2-10_*"))


def test_split_beyond_the_layer_count_exits_2(gpt2_checkpoint, tmp_path, capsys):
    code = split_cli(gpt2_checkpoint, tmp_path / "models", points="4-40")
    assert code == 2
    assert "split_point_2 < 12" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()
