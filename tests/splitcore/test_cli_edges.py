"""The command line's rough edges a new user hit: pipes, clean JSON, help, hints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from splitcore import __version__
from splitcore.cli import build_parser, main

SPLITCORE = shutil.which("splitcore", path=str(Path(sys.executable).parent))


def _split(checkpoint: Path, storage: Path, *extra: str) -> list[str]:
    return ["split", "--model", str(checkpoint), "--split", "2-10", "--storage", str(storage),
            *extra]  # fmt: skip


@pytest.mark.parametrize("command", [["inspect", "--json"], ["inspect"], ["verify"]])
def test_a_reader_that_stops_early_ends_the_pipe_quietly(gpt2_checkpoint, tmp_path, command):
    storage = tmp_path / "models"
    assert main([*_split(gpt2_checkpoint, storage, "--quiet"), "--result-file", "/dev/null"]) == 0
    target = (["--storage", str(storage), "--model-name", "gpt2", "--split", "2-10"]
              if command == ["verify"] else [str(storage)])  # fmt: skip
    done = subprocess.run(
        f"{SPLITCORE} {' '.join(command)} {' '.join(target)} | head -c 10; "
        "echo \" ${PIPESTATUS[0]}\"",
        shell=True, executable="/bin/bash", capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.endswith(" 0\n") and done.stderr == ""


@pytest.mark.parametrize("flag", [["--json"], ["--result-file", "-"]])
def test_json_on_stdout_is_clean_and_the_guides_block_goes_to_stderr(
    gpt2_checkpoint, tmp_path, capsys, flag
):
    assert main([*_split(gpt2_checkpoint, tmp_path / "m"), *flag]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["splitConfig"] == "2-10"
    assert "Saving split models to storage..." in captured.err


def test_the_guides_block_stays_on_stdout_and_quiet_silences_it(gpt2_checkpoint, tmp_path, capsys):
    assert main([*_split(gpt2_checkpoint, tmp_path / "a"), "--result-file", "/dev/null"]) == 0
    assert "  Top model saved: " in capsys.readouterr().out
    assert (
        main([*_split(gpt2_checkpoint, tmp_path / "b", "--quiet"), "--result-file", "/dev/null"])
        == 0
    )
    assert capsys.readouterr() == ("", "")


def test_version_and_defaults_in_every_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"splitcore {__version__}\n"
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, command in commands.items():
        for action in command._actions:
            if action.default not in (None, False, "==SUPPRESS==") and action.option_strings:
                assert "default" in command.format_help(), name
    assert "(default: ./models)" in commands["split"].format_help()
    assert "example:\n  splitcore inspect ./models --json" in commands["inspect"].format_help()


def test_inspect_names_the_path_as_typed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "./nope"]) == 2
    assert capsys.readouterr().err == "error (SourceNotFound): ./nope does not exist\n"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("model_id: m\nmodel_path: p\nmodel_type: t5\n", "error (UnsupportedModel)"),
        ("model_id: m\nmodel_path: p\nsplit_storage_config:\n  split_config: 2:10\n",
         "YAML read it as the number 130 (an unquoted 2:10 is base 60)"),
        ("model_id: m\nmodel_path: p\nmodel_typ: gpt2\n",
         "config.yaml: top level: unknown field 'model_typ'"),
    ],
)  # fmt: skip
def test_manifest_checks_families_and_explains_yaml_surprises(tmp_path, capsys, yaml_text, message):
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    assert main(["manifest", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_manifest_warns_when_auto_save_has_no_storage(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("model_id: m\nmodel_path: p\nsplit_storage_config:\n  auto_save: true\n")
    assert main(["manifest", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("warning: auto_save is on but no --storage-claim was given")
    assert "kind: SplitModel" in captured.out
    assert main(["manifest", str(config), "--storage-claim", "models"]) == 0
    assert capsys.readouterr().err == ""
