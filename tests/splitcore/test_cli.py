"""`splitcore split` / `inspect`: printed block, JSON result, exit codes, help."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from splitcore import ModelFactory
from splitcore.cli import main
from support.cli import in_private_mount, split_cli


def _split(checkpoint: Path, storage: Path, *extra: str) -> int:
    return split_cli(checkpoint, storage, "--model-type", "gpt2", *extra)


def test_split_prints_the_guides_block_then_the_result(gpt2_checkpoint, tmp_path, capsys):
    assert _split(gpt2_checkpoint, tmp_path / "models") == 0
    lines = capsys.readouterr().out.splitlines()
    storage = tmp_path / "models"
    assert lines[:8] == [
        "=" * 60,
        "Saving split models to storage...",
        "=" * 60,
        f"Storage directory: {storage}",
        f"  Bottom model saved: {storage}/bottom/gpt2_2-10_bottom.pt",
        f"  Trunk model saved: {storage}/trunk/gpt2_2-10_trunk.pt",
        f"  Top model saved: {storage}/top/gpt2_2-10_top.pt",
        "=" * 60,
    ]
    result = json.loads(lines[8])
    assert len(lines) == 9
    assert result["modelName"] == "gpt2"
    assert result["splitConfig"] == "2-10"
    assert result["saved"] is True
    assert [c["name"] for c in result["components"]] == ["bottom", "trunk", "top"]


def test_result_file_holds_compact_json_matching_the_metadata(gpt2_checkpoint, tmp_path, capsys):
    result_file = tmp_path / "result.json"
    assert _split(gpt2_checkpoint, tmp_path / "models", "--result-file", str(result_file)) == 0
    assert capsys.readouterr().out.count("{") == 0  # the JSON went to the file only
    text = result_file.read_text()
    assert "\n" not in text.strip() and ", " not in text  # compact: fits a termination message
    assert len(text) < 4096
    result = json.loads(text)
    assert list(result) == [
        "modelName",
        "modelType",
        "splitConfig",
        "storagePath",
        "format",
        "saved",
        "numLayers",
        "reused",
        "components",
    ]
    assert result["reused"] is False  # a local folder has no revision to reuse files of
    for component in result["components"]:
        metadata = json.loads(Path(component["metadataPath"]).read_text())
        weights = Path(component["path"])
        assert component == {
            "name": metadata["component"],
            "path": str(weights),
            "metadataPath": str(weights.with_name(weights.stem + "_metadata.json")),
            "modelClass": metadata["model_class"],
            "startLayer": metadata["start_layer"],
            "endLayer": metadata["end_layer"],
            "numLayers": metadata["num_layers"],
            "numParameters": metadata["num_parameters"],
            "memoryBytes": metadata["memory_bytes"],
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "savedAt": metadata["saved_at"],
            "dtype": "float32",
            "subPath": f"{metadata['component']}/{weights.name}",  # relative to --storage
        }
        assert weights == tmp_path / "models" / component["subPath"]


def test_cli_and_library_write_identical_files(gpt2_checkpoint, tmp_path, capsys):
    _split(gpt2_checkpoint, tmp_path / "cli")
    ModelFactory.create_split_models(
        "gpt2", str(gpt2_checkpoint), 2, 10, storage_path=str(tmp_path / "lib"), auto_save=True
    )
    for component in ("bottom", "trunk", "top"):
        name = f"{component}/gpt2_2-10_{component}.pt"
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes()


def test_no_save_writes_nothing_and_reports_the_plan(gpt2_checkpoint, tmp_path, capsys):
    assert _split(gpt2_checkpoint, tmp_path / "models", "--no-save") == 0
    assert not (tmp_path / "models").exists()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Plan only (--no-save): nothing was written under {tmp_path / 'models'}"
    result = json.loads(out[1])
    assert result["saved"] is False
    assert [
        (c["startLayer"], c["endLayer"], c["path"], c["sha256"]) for c in result["components"]
    ] == [(0, 2, None, None), (2, 10, None, None), (10, 12, None, None)]
    assert all(c["numParameters"] > 0 and c["memoryBytes"] > 0 for c in result["components"])


def test_model_name_flag_names_the_files(gpt2_checkpoint, tmp_path, capsys):
    assert _split(gpt2_checkpoint, tmp_path, "--model-name", "gpt2-a") == 0
    assert (tmp_path / "bottom" / "gpt2-a_2-10_bottom.pt").is_file()


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--model-name", "../escape"], "InvalidInput"),
        (["--model-name", "a/b"], "InvalidInput"),
        (["--model-name", "gpt2\n"], "InvalidInput"),  # `$` would match before the newline
        (["--model-name", ""], "InvalidInput"),
    ],
)
def test_invalid_input_exits_2_and_writes_the_reason(
    gpt2_checkpoint, tmp_path, capsys, extra, reason
):
    result_file = tmp_path / "result.json"
    code = _split(gpt2_checkpoint, tmp_path / "models", "--result-file", str(result_file), *extra)
    assert code == 2
    assert json.loads(result_file.read_text())["error"]["reason"] == reason
    assert not (tmp_path / "models").exists()
    assert "not a safe file name" in capsys.readouterr().err


def test_split_points_beyond_the_model_exit_2(gpt2_checkpoint, tmp_path, capsys):
    result_file = tmp_path / "r.json"
    code = split_cli(
        gpt2_checkpoint, tmp_path / "m", "--result-file", str(result_file), points="2-12"
    )
    assert code == 2
    error = json.loads(result_file.read_text())["error"]
    assert error["reason"] == "InvalidSplitPoints"
    assert "0 < split_point_1 < split_point_2 < 12" in error["message"]
    assert not (tmp_path / "m").exists()


def test_missing_source_exits_2(tmp_path, capsys):
    code = main(["split", "--model", str(tmp_path / "none"), "--split", "2-10"])
    assert code == 2
    assert "error (SourceNotFound): no checkpoint directory at" in capsys.readouterr().err


def test_hub_failure_exits_1(tmp_path, capsys):
    code = main(["split", "--model", "org/model", "--split", "2-10", "--storage", str(tmp_path)])
    assert code == 1
    assert "HubDownloadFailed" in capsys.readouterr().err


def test_read_only_storage_exits_2_and_leaves_nothing(gpt2_checkpoint, tmp_path):
    """Storage on a read-only volume (bound read-only in a private mount namespace)."""
    storage = tmp_path / "models"
    storage.mkdir()
    done = in_private_mount(
        f'mount --bind -o ro "{storage}" "{storage}"',
        f'exec "$SPLITCORE" split --model "{gpt2_checkpoint}" --split 2-10 --storage "{storage}"',
    )
    assert done.returncode == 2, done.stderr
    assert "error (StorageNotWritable)" in done.stderr
    assert list(storage.iterdir()) == []


def test_storage_that_cannot_exist_exits_2(gpt2_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert _split(gpt2_checkpoint, blocker / "models") == 2
    assert "StorageNotWritable" in capsys.readouterr().err


def test_malformed_split_is_a_usage_error(gpt2_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["split", "--model", str(gpt2_checkpoint), "--split", "2:10"])
    assert exit_info.value.code == 2
    assert "split_config must look like" in capsys.readouterr().err


def test_inspect_prints_every_component(gpt2_checkpoint, tmp_path, capsys):
    _split(gpt2_checkpoint, tmp_path)
    capsys.readouterr()
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("model_class") == 3
    assert "  model_class     GPT2TrunkModel" in out
    assert "  layers          [2, 10) (8 layers)" in out
    assert main(["inspect", "--json", str(tmp_path / "top" / "gpt2_2-10_top.pt")]) == 0
    (document,) = json.loads(capsys.readouterr().out)  # always a list, even of one
    assert (document["component"], document["start_layer"]) == ("top", 10)
    assert main(["inspect", "--json", str(tmp_path)]) == 0
    assert [d["component"] for d in json.loads(capsys.readouterr().out)] == [
        "bottom", "trunk", "top"
    ]  # fmt: skip


def test_inspect_of_nothing_exits_2(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2


@pytest.mark.parametrize("command", [[], ["split"], ["inspect"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: splitcore" in out
    assert "exit codes:" in out


def test_console_script_and_module_entrypoints(gpt2_checkpoint, tmp_path):
    script = shutil.which("splitcore", path=str(Path(sys.executable).parent))
    assert script is not None
    for command in ([script], [sys.executable, "-m", "splitcore"]):
        done = subprocess.run(
            [
                *command,
                "split",
                "--model",
                str(gpt2_checkpoint),
                "--split",
                "3-7",
                "--storage",
                str(tmp_path / "m"),
                "--result-file",
                str(tmp_path / "r.json"),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert "  Top model saved: " in done.stdout
        assert json.loads((tmp_path / "r.json").read_text())["splitConfig"] == "3-7"


def test_an_empty_model_path_is_refused_not_the_current_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["split", "--model", "", "--split", "2-10", "--storage", "models"]) == 2
    assert capsys.readouterr().err == (
        "error (InvalidInput): the checkpoint path is empty; pass the checkpoint directory\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_long_model_name_whose_files_fit_splits(gpt2_checkpoint, tmp_path, capsys):
    """229 characters: the metadata name has 255, the longest a file name may have; the
    temp files beside them are named shorter, so no ENAMETOOLONG."""
    name = "m" * 229
    assert _split(gpt2_checkpoint, tmp_path, "--model-name", name) == 0
    assert len((tmp_path / "bottom" / f"{name}_2-10_bottom_metadata.json").name) == 255
    assert sorted(p.name for p in (tmp_path / "top").iterdir()) == [
        f"{name}_2-10_top.pt",
        f"{name}_2-10_top_metadata.json",
    ]


def test_a_model_name_too_long_for_its_files_exits_2_before_writing(
    gpt2_checkpoint, tmp_path, capsys
):
    assert _split(gpt2_checkpoint, tmp_path / "models", "--model-name", "m" * 230) == 2
    err = capsys.readouterr().err
    assert "is too long: its file names would have 256 characters" in err
    assert not (tmp_path / "models").exists()


def test_an_unwritable_result_file_is_one_line_not_a_crash(gpt2_checkpoint, tmp_path, capsys):
    result_file = tmp_path / "missing-folder" / "result.json"
    extra = ("--quiet", "--result-file", str(result_file))
    assert _split(gpt2_checkpoint, tmp_path / "models", *extra) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error (InvalidInput): cannot write the result file {result_file}: "
        "No such file or directory\n"
    )


def test_a_failure_with_an_unwritable_result_file_reports_both(tmp_path, capsys):
    result_file = tmp_path / "missing-folder" / "result.json"
    missing = tmp_path / "none"
    code = main(
        ["split", "--model", str(missing), "--split", "2-10", "--result-file", str(result_file)]
    )
    assert code == 2  # the reason of the failure, not of the result file
    assert capsys.readouterr().err.splitlines() == [
        f"error (SourceNotFound): no checkpoint directory at {missing}",
        f"error (SourceNotFound): cannot write the result file {result_file}: "
        "No such file or directory",
    ]


def test_verify_on_a_missing_device_exits_2_before_splitting(gpt2_checkpoint, tmp_path, capsys):
    import torch

    device = f"cuda:{torch.cuda.device_count()}"
    assert _split(gpt2_checkpoint, tmp_path / "models", "--verify", "--device", device) == 2
    assert "error (InvalidInput): device" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_allow_pickle_with_verify_verifies_against_the_pickled_source(
    gpt2_checkpoint, tmp_path, capsys
):
    """The operator passes both flags when a spec sets allowPickle and verify."""
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "gpt2"
    pickled.mkdir()
    shutil.copy(gpt2_checkpoint / "config.json", pickled)
    torch.save(load_file(gpt2_checkpoint / "model.safetensors"), pickled / "pytorch_model.bin")
    result_file = tmp_path / "r.json"
    code = _split(
        pickled,
        tmp_path / "models",
        "--allow-pickle",
        "--verify",
        "--result-file",
        str(result_file),
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads(result_file.read_text())["verification"]["ok"] is True


def test_inspect_prints_no_terminal_escape_sequences(gpt2_checkpoint, tmp_path, capsys):
    _split(gpt2_checkpoint, tmp_path)
    path = tmp_path / "top" / "gpt2_2-10_top_metadata.json"
    metadata = json.loads(path.read_text())
    metadata["model_class"] = "\x1b]0;owned\x07\x1b[2J"
    path.write_text(json.dumps(metadata))
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "  model_class     \\x1b]0;owned\\x07\\x1b[2J" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [x, x]\nb: [*a, *a]\n", "YAML aliases (*name) are not accepted"),
        ("model_id: !!python/object/apply:os.system [id]\n", "could not determine a constructor"),
        ("- a\n- b\n", "expected a YAML mapping"),
        ("kind: SplitModel\nspec: [1]\n", "spec: expected a mapping, got list"),
    ],
)
def test_manifest_refuses_hostile_yaml_in_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "model.yaml"
    path.write_text(text)
    assert main(["manifest", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error (InvalidInput): ") and message in err
    assert len(err.splitlines()) == 1


def test_a_directory_at_a_final_path_is_refused_before_writing(gpt2_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "top" / "gpt2_2-10_top_metadata.json"
    blocker.mkdir(parents=True)
    assert _split(gpt2_checkpoint, tmp_path, "--quiet") == 2
    assert capsys.readouterr().err == (
        f"error (StorageNotWritable): {blocker} exists and is a directory; remove it first\n"
    )
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
