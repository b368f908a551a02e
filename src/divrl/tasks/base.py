"""What a task is to the trainer and the evaluator: prompts, a verifier, and (optionally) an exact
semantic-equivalence key for solutions.

A task never raises on model output: :meth:`Task.verify` returns a :class:`Verdict` whose ``reason``
says why a completion earned nothing (or why it could not be scored at all: ``reward=None``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

C = TypeVar("C")


@dataclass(frozen=True)
class Verdict:
    """The verifier's judgement of one completion.

    Attributes:
        reward: the scalar reward, or ``None`` when the completion could not be scored (timeout,
            verifier failure); the trainer then leaves it out of its group's statistics, gives it a zero
            advantage and counts it as not correct.
        correct: whether the final answer is right (R1-zero-Div's gate, pass@k).
        answer: the extracted final answer (normalised string), ``None`` if none was found.
        reason: ``"ok"`` for a correct answer, otherwise a short human-readable reason.
        key: the completion's exact equivalence key (:meth:`Task.equivalence_key`), when the verifier computed it
            in the same pass (``keyed=True``; then ``None`` means the completion has none). One parse serves both.
        keyed: whether ``key`` was computed; ``False``: a caller asks :meth:`Task.equivalence_key` itself.

    ``key`` and ``keyed`` take no part in equality (two verdicts that grade alike are equal).
    """

    reward: float | None
    correct: bool
    answer: str | None
    reason: str
    key: str | None = field(default=None, compare=False)
    keyed: bool = field(default=False, compare=False)


@runtime_checkable
class Task(Protocol):
    """The interface the trainer and evaluator use. ``Problem`` objects are opaque to them."""

    name: str
    stop: tuple[str, ...]
    """Strings that end a completion (sampling stops right after one is produced)."""

    def problems(self, split: str, n: int | None = None, seed: int = 0) -> list[Any]:
        """Problems of a named split (``train``/``test``/...), the first ``n`` if given."""
        ...

    def prompt(self, problem: Any) -> str:
        """The prompt text shown to the policy."""
        ...

    def verify(self, problem: Any, completion: str) -> Verdict:
        """Grade one completion; never raises."""
        ...

    def equivalence_key(self, problem: Any, completion: str) -> str | None:
        """An exact semantic-class key of the completion's solution (equal key = same solution),
        or ``None`` when the task has no exact equivalence or the completion has no parsable solution."""
        ...


def config_from_options(cls: type[C], options: Mapping[str, Any], task: str) -> C:
    """Build a task's config dataclass from keyword options (a YAML mapping); an unknown name raises
    ``ValueError`` listing the accepted ones."""
    accepted = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{task} got unknown option(s) {unknown}; accepted: {accepted}")
    return cls(**options)


def problem_id(problem: Any) -> str:
    """A stable id of a problem: its ``to_json()`` (Countdown) or ``repr``, replaced by ``sha1:<16 hex digits>`` of
    that text when it is longer than 120 characters (a maths question). The same id pairs evaluations
    (``divrl compare``) and keys a stateful estimator's per-problem history (``GroupBatch.problem_ids``)."""
    to_json = getattr(problem, "to_json", None)
    text = to_json() if callable(to_json) else repr(problem)
    if len(text) <= 120:
        return text
    return "sha1:" + hashlib.sha1(text.encode()).hexdigest()[:16]
