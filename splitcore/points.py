"""A split as a value: two split points, parsed once, with one spelling.

Every path, label, Job name, conflict key, cleanup command and status field spells a split
`str(SplitPoints)`, `f"{p1}-{p2}"`. Parsing is the single rule every entry point shares (the
CLI, the library, `ModelConfig`, the operator): surrounding whitespace and leading zeros are
accepted and normalised away (`" 02-10\\n"` is the split `2-10`); anything else is refused.
The CRD admits only the canonical spelling, so what a user applies is what names the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Self

from splitcore.inputs import shown

#: The canonical spelling, as the CRD's pattern admits it.
CANONICAL_PATTERN = "^(0|[1-9][0-9]{0,8})-(0|[1-9][0-9]{0,8})$"  # "0-5": the CRD's CEL refuses
_LENIENT = re.compile(r"([0-9]{1,9})-([0-9]{1,9})")


class SplitPointError(ValueError):
    """The split points do not cut the model into three non-empty parts."""


def check_integers(*points: Any) -> None:
    """Split points are plain integers: not bools, floats or strings."""
    for value in points:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SplitPointError(f"split points must be integers; got {shown(value)}")


@dataclass(frozen=True, order=True)
class SplitPoints:
    """`0 < first < second`: bottom is `[0, first)`, trunk `[first, second)`, top the rest."""

    first: int
    second: int

    def __post_init__(self) -> None:
        check_integers(self.first, self.second)
        if not 0 < self.first < self.second:
            raise SplitPointError(
                "split points must satisfy 0 < split_point_1 < split_point_2; "
                f"got split_point_1={self.first}, split_point_2={self.second}"
            )

    @classmethod
    def parse(cls, text: Any) -> Self:
        """`"2-10"` (or `" 02-10 "`) -> `SplitPoints(2, 10)`; a `SplitPoints` passes through."""
        if isinstance(text, cls):
            return text
        match = _LENIENT.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise SplitPointError(
                "split_config must look like '<split_point_1>-<split_point_2>', e.g. '2-10'; "
                f"got {shown(text)}"
            )
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def for_model(cls, first: Any, second: Any, num_layers: int) -> Self:
        """The split of a `num_layers`-layer model into three non-empty parts."""
        check_integers(first, second)
        if not 0 < first < second < num_layers:
            raise SplitPointError(
                f"split points must satisfy 0 < split_point_1 < split_point_2 < {num_layers} "
                f"(the model has {num_layers} layers, so split_point_1 in 1..{num_layers - 2} "
                f"and split_point_2 in split_point_1+1..{num_layers - 1}); "
                f"got split_point_1={first}, split_point_2={second}"
            )
        return cls(first, second)

    def __str__(self) -> str:
        return f"{self.first}-{self.second}"

    def layer_ranges(self, num_layers: int) -> tuple[tuple[int, int], ...]:
        """Half-open layer ranges of bottom, trunk and top."""
        bounds = (0, self.first, self.second, num_layers)
        return tuple((bounds[i], bounds[i + 1]) for i in range(3))
