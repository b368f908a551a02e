"""The verifier wrappers the trainer and the evaluation share: never a crash, one verdict per completion.

- :func:`safe_verify` / :func:`safe_key`: a task's verdict / equivalence key; a raising verifier yields an
  unscorable verdict / no key.
- :func:`verify_all`: many completions at once through the task's batch verifier when it has one.
- :func:`reason_category`: the kind of a verdict's reason, for the ``reasons/<kind>`` counts in the metrics.
"""

from __future__ import annotations

import re
from typing import Any

from divrl.tasks.base import Task, Verdict

__all__ = ["reason_category", "safe_key", "safe_verify", "verify_all"]


def safe_verify(task: Task, problem: Any, text: str) -> Verdict:
    """The task's verdict; a verifier that raises yields an unscorable verdict, never a crash."""
    try:
        return task.verify(problem, text)
    except Exception as exc:
        return Verdict(reward=None, correct=False, answer=None, reason=f"verifier error: {type(exc).__name__}: {exc}")


def safe_key(task: Task, problem: Any, text: str) -> str | None:
    try:
        return task.equivalence_key(problem, text)
    except Exception:
        return None


def verify_all(task: Task, problems: list[Any], texts: list[str]) -> list[Verdict]:
    """One verdict per ``(problems[i], texts[i])``: through the task's batch verifier when it has one
    (``verify_batch``; :class:`~divrl.tasks.math.MathTask` runs math-verify concurrently), else one at a time. A
    batch verifier that raises or returns the wrong count falls back to one at a time; a verifier that raises on
    one completion yields an unscorable verdict for it (:func:`safe_verify`), never a crash."""
    batch = getattr(task, "verify_batch", None)
    if callable(batch):
        try:
            verdicts = list(batch(problems, texts))
        except Exception:
            verdicts = []
        if len(verdicts) == len(texts) and all(isinstance(v, Verdict) for v in verdicts):
            return verdicts
    return [safe_verify(task, problem, text) for problem, text in zip(problems, texts, strict=True)]


def reason_category(reason: str) -> str:
    """The kind of a verdict's reason, for counting: its text before any ``:`` or digit, e.g. ``"wrong value"``
    for ``"wrong value 24 != 25"``, ``"unparsable"`` for ``"unparsable: unexpected ')'"``."""
    head = re.match(r"[^:\d]*", reason)
    kind = (head.group(0) if head else "").strip()
    return kind or "other"
