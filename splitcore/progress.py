"""Progress of a long split: a live line on a terminal, plain lines in a pod log.

On a terminal the line is rewritten after every tensor. Anywhere else (a Job's log) each
component gets a start line, then at most one line every `interval` seconds, so a 13 GB split
shows it is alive without flooding the log. Everything goes to stderr: stdout carries the
guide's block and the JSON result.
"""

from __future__ import annotations

import sys
import time
from typing import IO


def size(nbytes: float) -> str:
    """1536 -> '1.5 KiB': a size a person reads at a glance."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return (
                f"{nbytes:.0f} {unit}" if unit == "B" or nbytes >= 100 else f"{nbytes:.1f} {unit}"
            )
        nbytes /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class Progress:
    def __init__(self, stream: IO[str] | None = None, interval: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._component = ""
        self._tensors = self._total_tensors = 0
        self._bytes = self._total_bytes = 0
        self._started = self._last = 0.0

    def component(self, name: str, tensors: int, nbytes: int) -> None:
        """A component starts: how many tensors and bytes it will write."""
        self._component, self._total_tensors, self._total_bytes = name, tensors, nbytes
        self._tensors = self._bytes = 0
        self._started = self._last = time.monotonic()
        if not self.live:
            self._print(f"  writing {name}: {tensors} tensors, {size(nbytes)}")

    def tensor(self, name: str, nbytes: int) -> None:
        """One tensor written."""
        self._tensors += 1
        self._bytes += nbytes
        now = time.monotonic()
        if self.live:
            self.stream.write(f"\r{self._line(now)}")
            self.stream.flush()
        elif now - self._last >= self.interval and self._tensors < self._total_tensors:
            self._last = now
            self._print(self._line(now))

    def component_done(self) -> None:
        if self.live:
            self.stream.write(f"\r{self._line(time.monotonic())}\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        return (
            f"  {self._component}: {self._tensors}/{self._total_tensors} tensors, "
            f"{size(self._bytes)} of {size(self._total_bytes)}, {size(self._bytes / elapsed)}/s"
        )

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
