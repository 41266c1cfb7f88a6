"""Running `splitcore` from tests the way users and the operator's Job run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from splitcore.cli import main


def split_cli(checkpoint: Path, storage: Path, *extra: str, points: str = "2-10") -> int:
    """`splitcore split --model CHECKPOINT --split POINTS --storage STORAGE EXTRA...` in process."""
    return main(
        ["split", "--model", str(checkpoint), "--split", points, "--storage", str(storage), *extra]
    )


def in_private_mount(setup: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run `setup && script` in its own mount namespace: a read-only or tiny volume for one test.

    `$SPLITCORE` in `script` is the installed `splitcore` entry point.
    """
    splitcore = shutil.which("splitcore", path=str(Path(sys.executable).parent))
    assert splitcore, "the splitcore entry point is not installed next to this interpreter"
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{setup} && {script}"],
        env={**os.environ, "SPLITCORE": splitcore},
        capture_output=True,
        text=True,
        check=False,
    )
