"""Progress: a live line on a terminal, sparse plain lines in a pod log, never on stdout."""

from __future__ import annotations

import io

from splitcore.progress import Progress, size
from support.cli import split_cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_live_line_per_tensor():
    stream = Terminal()
    progress = Progress(stream)
    progress.component("trunk", 3, 3 * 2048)
    for index in range(3):
        progress.tensor(f"t{index}", 2048)
    progress.component_done()
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n")
    assert "  trunk: 2/3 tensors, 4.0 KiB of 6.0 KiB" in text
    assert "\r  trunk: 3/3 tensors, 6.0 KiB of 6.0 KiB" in text


def test_a_log_gets_a_start_line_and_at_most_one_line_per_interval():
    stream = io.StringIO()
    progress = Progress(stream, interval=3600)
    progress.component("top", 50, 50 * 2**20)
    for index in range(50):
        progress.tensor(f"t{index}", 2**20)
    progress.component_done()
    assert stream.getvalue().splitlines() == ["  writing top: 50 tensors, 50.0 MiB"]
    chatty = io.StringIO()
    progress = Progress(chatty, interval=0)
    progress.component("top", 3, 3)
    for index in range(3):
        progress.tensor(f"t{index}", 1)
    assert chatty.getvalue().splitlines()[1].startswith("  top: 1/3 tensors, 1 B of 3 B")
    assert len(chatty.getvalue().splitlines()) == 3  # the last tensor needs no line of its own


def test_sizes_read_at_a_glance():
    assert [size(n) for n in (0, 1023, 1536, 150 * 2**20, 10.6 * 2**30)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "150 MiB",
        "10.6 GiB",
    ]


def test_cli_progress_goes_to_stderr_and_quiet_silences_it(gpt2_checkpoint, tmp_path, capsys):
    assert split_cli(gpt2_checkpoint, tmp_path / "a") == 0
    captured = capsys.readouterr()
    assert "  writing trunk: 96 tensors, " in captured.err
    assert "writing" not in captured.out
    assert split_cli(gpt2_checkpoint, tmp_path / "b", "--quiet") == 0
    assert capsys.readouterr().err == ""
