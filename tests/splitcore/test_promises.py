"""What the README promises of `splitcore split` and no other test holds it to: a failed
verification is invalid input (exit 2), progress every 10 seconds in a log, no torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import splitcore.progress
import splitcore.verify
from splitcore.cli import main
from support.cli import split_cli


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_split_verify_on_a_mismatch_exits_2_with_verification_failed(
    gpt2_checkpoint, tmp_path, monkeypatch, capsys
):
    """The trunk is damaged between writing and verifying (a bad disk): the Job must fail
    for good (exit 2, not retried) and say why in its result."""
    storage = tmp_path / "models"
    trunk = storage / "trunk" / "gpt2_2-10_trunk.pt"
    verify_split = splitcore.verify.verify_split

    def verify_a_damaged_trunk(*args: Any, **kwargs: Any) -> splitcore.verify.VerifyResult:
        flip_a_byte(trunk)
        return verify_split(*args, **kwargs)

    monkeypatch.setattr(splitcore.verify, "verify_split", verify_a_damaged_trunk)
    result_file = tmp_path / "result.json"
    code = split_cli(gpt2_checkpoint, storage, "--verify", "--result-file", str(result_file))
    assert code == 2
    error = json.loads(result_file.read_text())["error"]
    assert error["reason"] == "VerificationFailed"
    assert error["message"].startswith("trunk: sha256 ")
    captured = capsys.readouterr()
    assert "Verdict: FAILED" in captured.out
    assert "error (VerificationFailed): trunk: sha256 " in captured.err


def test_verify_of_a_chain_that_differs_from_the_source_exits_2(
    gpt2_checkpoint, gpt2_config, checkpoint_writer, tmp_path, capsys
):
    """Files that match their metadata but not the source model: only the probe can tell."""
    other = checkpoint_writer(tmp_path / "other" / "gpt2", gpt2_config, seed=7)
    assert split_cli(other, tmp_path / "models", "--quiet") == 0
    result_file = tmp_path / "verify.json"
    code = main([
        "verify", "--storage", str(tmp_path / "models"), "--model-name", "gpt2",
        "--split", "2-10", "--source", str(gpt2_checkpoint), "--result-file", str(result_file),
    ])  # fmt: skip
    assert code == 2
    result = json.loads(result_file.read_text())
    assert result["ok"] is False
    assert float(result["maxAbsDiff"]) > 1e-5
    assert result["problems"][0].startswith("chain and full model differ by ")
    assert capsys.readouterr().out.splitlines()[-1] == "Verdict: FAILED"


class OneSecondPerTick:
    """A clock that advances one second each time it is read: one tensor, one second."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_a_pod_log_gets_a_progress_line_every_10_seconds_by_default(
    gpt2_checkpoint, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(splitcore.progress, "time", OneSecondPerTick())
    assert split_cli(gpt2_checkpoint, tmp_path / "models") == 0
    lines = capsys.readouterr().err.splitlines()
    starts = [re.fullmatch(r"  writing (\w+): (\d+) tensors, .*", line) for line in lines]
    totals = {match[1]: int(match[2]) for match in starts if match}
    assert list(totals) == ["bottom", "trunk", "top"]
    progress = [re.fullmatch(r"  (\w+): (\d+)/(\d+) tensors, .*", line) for line in lines]
    seen = [(match[1], int(match[2])) for match in progress if match]
    assert seen == [(name, done) for name, total in totals.items() for done in range(10, total, 10)]
    assert ("trunk", 90) in seen  # the trunk's 96 tensors take 96 "seconds"


def imported_modules(stderr: str) -> set[str]:
    """Module names from `python -X importtime` output."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.parametrize("file_format", ["pt", "safetensors"])
def test_split_never_imports_torch(gpt2_checkpoint, tmp_path, file_format):
    done = subprocess.run(
        [
            sys.executable, "-X", "importtime", "-m", "splitcore", "split",
            "--model", str(gpt2_checkpoint), "--split", "2-10",
            "--storage", str(tmp_path / "models"), "--format", file_format, "--quiet",
        ],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    modules = imported_modules(done.stderr)
    assert {"splitcore.cli", "splitcore.split"} <= modules  # the import log was read
    assert sorted(m for m in modules if m == "torch" or m.startswith("torch.")) == []
    assert (tmp_path / "models" / "top" / f"gpt2_2-10_top.{file_format}").is_file()
