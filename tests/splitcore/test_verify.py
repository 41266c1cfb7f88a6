"""`splitcore verify`: sha256, metadata and the chain against the source model."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from splitcore.cli import main
from splitcore.split import split_checkpoint
from splitcore.verify import verify_split
from support.cli import split_cli


@pytest.fixture
def split_storage(gpt2_checkpoint, tmp_path):
    split_checkpoint(str(gpt2_checkpoint), "gpt2", 2, 10, tmp_path / "models")
    return tmp_path / "models"


def _verify(storage, *extra):
    return main(
        ["verify", "--storage", str(storage), "--model-name", "gpt2", "--split", "2-10", *extra]
    )


def test_verify_passes_with_the_source(split_storage, gpt2_checkpoint, tmp_path, capsys):
    result_file = tmp_path / "verify.json"
    assert (
        _verify(split_storage, "--source", str(gpt2_checkpoint), "--result-file", str(result_file))
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Verifying gpt2 2-10 in {split_storage}"
    assert out[1] == f"  bottom {split_storage}/bottom/gpt2_2-10_bottom.pt  sha256 ok"
    assert out[-2].startswith(f"  chain vs full model ({gpt2_checkpoint}): max abs diff ")
    assert out[-1] == "Verdict: OK"
    result = json.loads(result_file.read_text())
    assert result["ok"] is True
    assert isinstance(result["maxAbsDiff"], str) and float(result["maxAbsDiff"]) <= 1e-5
    assert [c["sha256Ok"] for c in result["components"]] == [True, True, True]
    assert result["problems"] == []


def test_verify_without_source_checks_files_only(split_storage, capsys):
    assert _verify(split_storage) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["ok"] is True and result["maxAbsDiff"] is None


def test_a_flipped_byte_fails_the_sha256(split_storage, capsys):
    path = split_storage / "trunk" / "gpt2_2-10_trunk.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert _verify(split_storage) == 2
    out = capsys.readouterr().out
    assert f"  trunk  {path}  FAILED" in out
    assert "problem: trunk: sha256" in out
    assert "Verdict: FAILED" in out


def test_a_missing_component_fails(split_storage, capsys):
    (split_storage / "top" / "gpt2_2-10_top.pt").unlink()
    assert _verify(split_storage) == 2
    out = capsys.readouterr().out
    assert f"problem: top: {split_storage}/top/gpt2_2-10_top.pt is missing" in out


def test_consistent_but_foreign_weights_fail_the_probe(
    split_storage, gpt2_checkpoint, gpt2_config, checkpoint_writer, tmp_path, capsys
):
    """A trunk from another model, with its own valid metadata: only the probe can tell."""
    other = checkpoint_writer(tmp_path / "other" / "gpt2", gpt2_config, seed=7)
    split_checkpoint(str(other), "gpt2", 2, 10, tmp_path / "other-models")
    for suffix in (".pt", "_metadata.json"):
        shutil.copy(
            tmp_path / "other-models" / "trunk" / f"gpt2_2-10_trunk{suffix}",
            split_storage / "trunk",
        )
    assert verify_split(split_storage, "gpt2", "2-10").ok  # files and metadata agree
    result = verify_split(split_storage, "gpt2", "2-10", source=str(gpt2_checkpoint))
    assert not result.ok
    assert float(result.max_abs_diff) > 1e-3
    assert result.problems[0].startswith("chain and full model differ by ")


def test_split_with_verify_reports_the_verdict(gpt2_checkpoint, tmp_path, capsys):
    result_file = tmp_path / "r.json"
    assert (
        split_cli(
            gpt2_checkpoint,
            tmp_path / "m",
            "--verify",
            "--device",
            "cpu",
            "--result-file",
            str(result_file),
        )
        == 0
    )
    result = json.loads(result_file.read_text())
    assert result["verification"]["ok"] is True
    assert float(result["verification"]["maxAbsDiff"]) <= 1e-5
    assert "Verdict: OK" in capsys.readouterr().out


@pytest.mark.families("llama-tied", "mistral-sliding", "qwen2-sliding", "qwen3", "bert")
def test_verify_every_family(family_checkpoint, tmp_path, capsys):
    split_checkpoint(str(family_checkpoint), "auto", 2, 4, tmp_path / "m", model_name="x")
    result = verify_split(tmp_path / "m", "x", "2-4", source=str(family_checkpoint))
    assert result.ok, result.problems
    assert float(result.max_abs_diff) <= 1e-5


def test_layers_that_disagree_with_the_config_fail_without_a_source(split_storage, capsys):
    """The config in every metadata file says a wider MLP than the layers hold: the split's
    own structural check refuses it, so `verify` does too, with no source to compare."""
    for component in ("bottom", "trunk", "top"):
        path = split_storage / component / f"gpt2_2-10_{component}_metadata.json"
        metadata = json.loads(path.read_text())
        metadata["config"]["n_inner"] = 256
        path.write_text(json.dumps(metadata))
    assert _verify(split_storage) == 2
    out = capsys.readouterr().out
    assert (
        "problem: the components do not match their config: 'transformer.h.0.mlp.c_fc.bias' "
        "has shape [128], but config.json describes no size 128"
    ) in out


def test_garbage_whose_sha_matches_is_a_problem_not_a_crash(split_storage, capsys):
    path = split_storage / "trunk" / "gpt2_2-10_trunk.pt"
    path.write_bytes(b"not a zip archive" * 10)
    metadata_path = path.with_name("gpt2_2-10_trunk_metadata.json")
    metadata = json.loads(metadata_path.read_text())
    metadata["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    metadata_path.write_text(json.dumps(metadata))
    assert _verify(split_storage) == 2
    out = capsys.readouterr().out
    assert f"problem: trunk: {path} cannot be loaded as a component file:" in out
    assert "weights_only" not in out  # never torch's advice to load it unsafely


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m.pop("config"), "config is missing or not an object"),
        (lambda m: m.update(num_parameters=None), "num_parameters is None"),
        (lambda m: m.update(split_config=[2, 10]), "split_config is [2, 10], not a string"),
    ],
)
def test_malformed_metadata_is_a_problem_not_a_crash(split_storage, capsys, change, problem):
    path = split_storage / "top" / "gpt2_2-10_top_metadata.json"
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))
    assert _verify(split_storage) == 2
    out = capsys.readouterr().out
    assert f"problem: top: {path} is not a split-model metadata file: {problem}" in out


def test_a_missing_device_is_refused_before_the_probe(split_storage, gpt2_checkpoint, capsys):
    import torch

    missing = f"cuda:{torch.cuda.device_count()}"
    assert _verify(split_storage, "--source", str(gpt2_checkpoint), "--device", missing) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error (InvalidInput): device '{missing}' is not available")
    assert "Traceback" not in err
