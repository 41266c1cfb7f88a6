"""Exit codes by reason: a failure retrying may fix exits 1, bad input exits 2."""

from __future__ import annotations

import json

import splitcore.split
from splitcore.result import ExitCode, Reason
from support.cli import split_cli


def test_an_unexpected_error_is_internal_error_exit_1_with_a_traceback(
    gpt2_checkpoint, tmp_path, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(splitcore.split, "split_checkpoint", broken)
    result = tmp_path / "r.json"
    code = split_cli(gpt2_checkpoint, tmp_path / "m", "--result-file", str(result))
    assert code == ExitCode.FAILURE == Reason.INTERNAL_ERROR.exit_code == 1
    assert json.loads(result.read_text()) == {
        "error": {"reason": "InternalError", "message": "a bug"}
    }
    err = capsys.readouterr().err
    assert err.startswith("error (InternalError): a bug\n") and "Traceback" in err
