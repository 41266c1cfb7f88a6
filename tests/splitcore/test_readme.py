"""The README's library and split-learning examples run as written on the demo checkpoint."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from splitcore.demo import build_demo_checkpoint
from support.repo import REPO

README = (REPO / "README.md").read_text()
SPLITCORE = shutil.which("splitcore", path=str(Path(sys.executable).parent))


def _block(after: str, language: str) -> str:
    """The first fenced `language` block after the text `after`."""
    tail = README.split(after, 1)[1]
    return tail.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(code: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_library_and_split_learning_examples_run_as_written(tmp_path):
    build_demo_checkpoint(tmp_path / "demo" / "checkpoints" / "gpt2")
    library = _run(_block("this runs as written", "python"), tmp_path)
    assert "torch.Size([2, 16, 50257])" in library
    assert "GPT2TrunkModel 2 10" in library

    port = _free_port()
    setup = _block("## Split learning and split inference", "bash").replace("50051", str(port))
    config_line, serve_line = setup.replace("\\\n", "").strip().splitlines()
    subprocess.run(config_line, shell=True, cwd=tmp_path, check=True)
    assert serve_line == ".venv/bin/splitcore serve --config server_config.yaml"
    server = subprocess.Popen(
        [SPLITCORE, "serve", "--config", "server_config.yaml"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for the port, not for a fixed time
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        client = _block("Terminal 2, `.venv/bin/python client.py`:", "python")
        output = _run(client.replace("50051", str(port)), tmp_path)
    finally:
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=60)
    assert server.returncode == 0, errors
    assert "logits (2, 16, 50257)" in output
    losses = [float(x) for x in re.findall(r"step \d: loss ([0-9.]+)", output)]
    assert len(losses) == 3 and losses[2] < losses[0]
    assert "trained trunk saved on the server as" in output
    assert "models/trunk/gpt2-tuned_2-10_trunk.pt" in output
    assert (tmp_path / "models/trunk/gpt2-tuned_2-10_trunk.pt").is_file()
    new_tokens = json.loads(output.split("new tokens ", 1)[1])  # a printed list of lists
    assert [len(row) for row in new_tokens] == [8, 8]
