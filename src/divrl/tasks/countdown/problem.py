"""Countdown problems and their JSONL form.

Part of :mod:`divrl.tasks.countdown` (see its docstring for the rules and format)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divrl.tasks.countdown.expressions import MAX_LITERAL_DIGITS

# --------------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    """A Countdown problem: reach ``target`` from ``numbers`` (a multiset, shown in this order)."""

    numbers: tuple[int, ...]
    target: int

    def __post_init__(self) -> None:
        numbers = self.numbers
        if isinstance(numbers, list):
            numbers = tuple(numbers)
            object.__setattr__(self, "numbers", numbers)
        if not isinstance(numbers, tuple) or not numbers:
            raise ValueError(f"Problem.numbers must be a non-empty tuple of ints, got {self.numbers!r}")
        for x in numbers:
            if not _is_int(x) or not 0 <= x < 10**MAX_LITERAL_DIGITS:
                raise ValueError(f"Problem.numbers must hold ints in [0, 10**{MAX_LITERAL_DIGITS}), got {x!r}")
        if not _is_int(self.target):
            raise ValueError(f"Problem.target must be an int, got {self.target!r}")

    @property
    def key(self) -> tuple[tuple[int, ...], int]:
        """The identity of the problem: (sorted numbers, target); the shown order does not count."""
        return tuple(sorted(self.numbers)), self.target

    def to_json(self) -> str:
        """One JSON object: ``{"numbers": [...], "target": t}``."""
        return json.dumps({"numbers": list(self.numbers), "target": self.target})

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> Problem:
        """Parse :meth:`to_json` output (a JSON string or an already decoded mapping); extra keys are ignored."""
        obj = json.loads(data) if isinstance(data, (str, bytes)) else data
        if not isinstance(obj, Mapping):
            raise ValueError(f"a problem must be a JSON object, got {type(obj).__name__}")
        for name in ("numbers", "target"):
            if name not in obj:
                raise ValueError(f"problem is missing field {name!r}")
        if not isinstance(obj["numbers"], list):
            raise ValueError(f"problem field 'numbers' must be a list, got {obj['numbers']!r}")
        return cls(tuple(obj["numbers"]), obj["target"])


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def write_jsonl(problems: Iterable[Problem], path: str | Path) -> None:
    """Write one problem per line (UTF-8 JSON lines)."""
    with open(path, "w", encoding="utf-8") as f:
        for p in problems:
            f.write(p.to_json() + "\n")


def read_jsonl(path: str | Path) -> list[Problem]:
    """Read :func:`write_jsonl` output; blank lines are skipped.

    Raises:
        ValueError: ``"<path>:<line>: <why>"`` for the first malformed line.
    """
    problems = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    problems.append(Problem.from_json(line))
            except ValueError as e:  # includes JSONDecodeError and UnicodeDecodeError
                raise ValueError(f"{path}:{lineno}: malformed problem: {e}") from e
    return problems
