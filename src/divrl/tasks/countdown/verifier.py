"""Countdown answer extraction and verification (one parse gives the verdict and the equivalence key).

Part of :mod:`divrl.tasks.countdown` (see its docstring for the rules and format)."""

from __future__ import annotations

from collections import Counter

from divrl.tasks.base import Verdict
from divrl.tasks.countdown.expressions import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    MAX_EXPR_CHARS,
    EvaluationError,
    Node,
    ParseError,
    _canon_of,
    _literals,
    canonical,
    exact_value,
    parse,
)
from divrl.tasks.countdown.problem import Problem

# --------------------------------------------------------------------------------------------------
# Answer extraction and verification


def extract_answer(completion: str) -> str | None:
    """The text inside the last complete ``<answer>...</answer>`` pair, or ``None``.

    The pair is the last ``</answer>``'s nearest preceding ``<answer>`` and that tag's first
    ``</answer>``. Linear time (``str.rfind``/``str.find``, no regular expression).
    """
    last_close = completion.rfind(ANSWER_CLOSE)
    if last_close < 0:
        return None
    start = completion.rfind(ANSWER_OPEN, 0, last_close)
    if start < 0:
        return None
    start += len(ANSWER_OPEN)
    return completion[start : completion.find(ANSWER_CLOSE, start)]


def _usage_error(numbers: tuple[int, ...], node: Node, exact_use: bool) -> str | None:
    """Why the literals of ``node`` are not a sub-multiset of ``numbers`` (or not all of it), else None."""
    available = Counter(numbers)
    used: Counter[int] = Counter()
    for v in _literals(node):
        used[v] += 1
        if available[v] == 0:
            return f"number not available: {v}"
        if used[v] > available[v]:
            return f"number reused: {v}"
    if exact_use:
        for v in numbers:
            if used[v] < available[v]:
                return f"number unused: {v}"
    return None


def verify(problem: Problem, completion: str, *, exact_use: bool = False) -> Verdict:
    """Grade a completion: reward 1.0 iff its answer uses only the problem's numbers (each at most
    once; each exactly once with ``exact_use``) and evaluates exactly to the target.

    Never raises. Reasons for reward 0.0: ``no answer tag``, ``too long: ...``, ``unparsable: ...``,
    ``number not available: 9``, ``number reused: 3``, ``number unused: 7`` (``exact_use``),
    ``division by zero``, ``wrong value 24 != 25``, ``completion is not a str: ...``. An unexpected
    internal failure (e.g. ``problem`` is not a :class:`Problem`) gives ``reward=None`` (unscorable,
    see :class:`~divrl.tasks.base.Verdict`) with reason ``verifier error: ...``.

    ``answer`` is the canonical form when the answer parses, else the raw extracted text, or ``None``
    when there is no answer or it is over :data:`MAX_EXPR_CHARS` characters. ``key`` is
    :func:`equivalence_key` of the completion, from the same parse (``keyed=True``).
    """
    try:
        if not isinstance(completion, str):
            return Verdict(0.0, False, None, f"completion is not a str: {type(completion).__name__}", None, True)
        raw = extract_answer(completion)
        if raw is None:
            return Verdict(0.0, False, None, "no answer tag", None, True)
        if len(raw) > MAX_EXPR_CHARS:
            return Verdict(0.0, False, None, f"too long: {len(raw)} chars > {MAX_EXPR_CHARS}", None, True)
        try:
            node = parse(raw)
        except ParseError as e:
            return Verdict(0.0, False, raw, f"unparsable: {e.reason}", None, True)
        answer = _canon_of(node)[3]  # the canonical form: also the equivalence key (one parse serves both)
        why = _usage_error(problem.numbers, node, exact_use)
        if why is not None:
            return Verdict(0.0, False, answer, why, answer, True)
        try:
            value = exact_value(node)
        except EvaluationError as e:
            return Verdict(0.0, False, answer, e.reason, answer, True)
        if value != problem.target:
            return Verdict(0.0, False, answer, f"wrong value {value} != {problem.target}", answer, True)
        return Verdict(1.0, True, answer, "ok", answer, True)
    except Exception as e:  # the verifier never raises; a bug here must not stop training
        return Verdict(None, False, None, f"verifier error: {type(e).__name__}: {e}")


def equivalence_key(completion: str) -> str | None:
    """The canonical form of the completion's answer, whether right or wrong; ``None`` if it has none
    or it is unparsable (DARLING's partition key on this task). Never raises."""
    try:
        raw = extract_answer(completion)
        if raw is None or len(raw) > MAX_EXPR_CHARS:
            return None
        return canonical(raw)
    except Exception:  # a partition key never raises
        return None
