"""Final answers of maths completions and their grading with math-verify, behind a timeout pool.

What is graded
--------------
* :func:`extract_final_answer` takes the content of the **last** ``\\boxed{...}`` (or ``\\fbox{...}``,
  braces balanced; a last box that never closes, as in a truncated completion, counts as none) of a
  completion; without one, the text after the last ``####`` on its line (the GSM8K convention).
  Nothing else counts: a completion that never commits to a final answer earns 0 with reason
  ``"no final answer"``. (No "last number in the text" fallback: it rewards rambling.)
* :func:`parse_number` reads a *plain number* -- ``42``, ``-3``, ``1,234``, ``1{,}234``, ``$18``,
  ``2.50``, ``.5``, ``3/4``, ``\\frac{3}{4}``, ``\\dfrac34``, ``-\\frac{1}{2}`` -- as an exact
  ``Fraction`` (at most 64 characters; no percent signs, units or powers).
* :meth:`MathVerifier.grade` compares a predicted answer with the reference answer:

  1. both plain numbers: exact rational equality, in-process (``0.5 == 1/2 == \\dfrac12``;
     ``0.333 != 1/3``). This is the whole story for GSM8K and AIME, so those never start a worker.
  2. equal after :func:`normalize_answer`: correct, in-process.
  3. otherwise math-verify (``parse`` + ``verify``, HuggingFace's ``math-verify`` package) in a
     worker of a :class:`~divrl.rewards.pool.TimeoutPool`: symbolic equivalence, sets, intervals,
     tuples, percentages, units -- whatever math-verify supports. Each side is wrapped as
     ``\\boxed{...}`` so math-verify parses exactly the extracted answer. math-verify's own
     ``signal.alarm`` timeouts are switched off in the worker (``parsing_timeout=None``,
     ``timeout_seconds=None``); the pool's per-call timeout replaces them, so a hang is reported as
     ``correct=None`` ("timeout: ...") instead of silently scoring 0.

* :func:`normalize_answer` is the answer's key for answer-level partitions: a plain number becomes
  its reduced fraction (``"1/2"``, ``"1234"``, ``"-3"``), anything else its LaTeX with surrounding
  ``$``/``\\(...\\)`` delimiters, whitespace, ``\\left``/``\\right``, spacing commands and a trailing
  period removed and ``\\dfrac``/``\\tfrac`` spelled ``\\frac``. It is a syntactic key: ``x^2+2x+1``
  and ``(x+1)^2`` differ.

The extraction and normalisation rules are our own choices: DARLING's reward is Math-Verify and
R1-zero-Div's a rule-based accuracy plus ``\\boxed{}`` format reward, and neither paper spells out
these details.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from divrl.rewards.pool import TimeoutPool

__all__ = [
    "Grade",
    "MathVerifier",
    "extract_final_answer",
    "extract_gsm8k_answer",
    "has_boxed_format",
    "last_boxed",
    "math_verify_equal",
    "normalize_answer",
    "parse_number",
]

MAX_NUMBER_CHARS = 64
"""Longest string :func:`parse_number` reads (longer ones go to math-verify, inside the pool)."""
_BOX_COMMANDS = ("\\boxed", "\\fbox")


# --------------------------------------------------------------------------------------------------
# Extraction


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``/``\\fbox{...}`` (braces balanced; ``\\boxed 5`` too), stripped.

    ``None`` when there is none, or when the last one is never closed (a truncated completion does not
    fall back to an earlier box).
    """
    if not isinstance(text, str):
        return None
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    k = start + next(len(cmd) for cmd in _BOX_COMMANDS if text.startswith(cmd, start))
    if not text.startswith("{", k):  # ``\boxed 5``: one space-separated token
        m = re.match(r" +([^\s$]+)", text[k : k + 200])
        return m.group(1) if m else None
    depth = 0
    for j in range(k, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[k + 1 : j].strip()
    return None


def extract_gsm8k_answer(text: str) -> str | None:
    """The text after the last ``####`` up to the end of its line, stripped (GSM8K's answer marker);
    ``None`` when absent or empty."""
    if not isinstance(text, str):
        return None
    k = text.rfind("####")
    if k < 0:
        return None
    answer = text[k + 4 :].split("\n", 1)[0].strip()
    return answer or None


def extract_final_answer(text: str) -> str | None:
    """The final answer of a completion: the last ``\\boxed{}``, else the ``####`` line; else ``None``."""
    answer = last_boxed(text)
    if answer:
        return answer
    return extract_gsm8k_answer(text)


def has_boxed_format(text: str, think: bool = False) -> bool:
    """Format check: a complete, non-empty ``\\boxed{...}``; with ``think`` it must come after exactly one ``</think>``
    (the R1-zero template's think-then-answer format)."""
    if not isinstance(text, str):
        return False
    if not think:
        return bool(last_boxed(text))
    if text.count("</think>") != 1:
        return False
    return bool(last_boxed(text.split("</think>", 1)[1]))


# --------------------------------------------------------------------------------------------------
# Normalisation

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SLASH = re.compile(r"([+-]?\d+)/(\d+)")
_FRAC = re.compile(r"([+-]?)\\frac(?:\{([+-]?\d+)\}|(\d))(?:\{([+-]?\d+)\}|(\d))")
_SPACING = re.compile(r"\\(?:left|right|displaystyle|!|,|;|:|quad|qquad)(?![a-zA-Z])|\\ ")


def _strip_math_delimiters(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left) : len(s) - len(right)].strip()
    return s


def parse_number(text: str) -> Fraction | None:
    """A plain number (formats in the module docstring) as an exact ``Fraction``, else ``None``."""
    if not isinstance(text, str) or len(text) > MAX_NUMBER_CHARS:
        return None
    s = _strip_math_delimiters(text)
    s = (
        s.replace("\\$", "")
        .replace("$", "")
        .replace("{,}", ",")
        .replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
    )
    s = _SPACING.sub("", s)
    s = "".join(s.split()).rstrip(".")
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1]
    try:
        if _NUMBER.fullmatch(s):
            return Fraction(s)
        if _THOUSANDS.fullmatch(s):
            return Fraction(s.replace(",", ""))
        if m := _SLASH.fullmatch(s):
            return Fraction(int(m.group(1)), int(m.group(2)))
        if m := _FRAC.fullmatch(s):
            sign = -1 if m.group(1) == "-" else 1
            return sign * Fraction(int(m.group(2) or m.group(3)), int(m.group(4) or m.group(5)))
    except (ValueError, ZeroDivisionError):  # "1/0", "\frac{1}{0}"
        return None
    return None


def _render_number(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def normalize_answer(text: str) -> str:
    """The answer-level key of an answer (rules in the module docstring)."""
    number = parse_number(text)
    if number is not None:
        return _render_number(number)
    s = _strip_math_delimiters(text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SPACING.sub("", s)
    s = "".join(s.split()).rstrip(".")
    return s


# --------------------------------------------------------------------------------------------------
# math-verify (runs inside pool workers)


@functools.lru_cache(maxsize=4096)
def _mv_parse(answer: str) -> list[object]:
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout disabled" warning: the pool times out
    parsed: list[object] = parse(f"\\boxed{{{answer}}}", parsing_timeout=None)
    return parsed


def math_verify_equal(gold: str, pred: str) -> bool:
    """math-verify's judgement that the answer ``pred`` equals the reference answer ``gold``.

    Meant to run in a pool worker: math-verify's own signal-based timeouts are disabled, so this can
    hang on a pathological input (that is what the pool's timeout is for). Raises ``ValueError`` when
    the reference answer cannot be parsed (the caller reports the row, it is not the policy's fault).
    """
    from math_verify import verify

    gold_parsed = _mv_parse(gold)
    if not gold_parsed:
        raise ValueError(f"math-verify cannot parse the reference answer {gold!r}")
    pred_parsed = _mv_parse(pred)
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


# --------------------------------------------------------------------------------------------------
# The verifier


@dataclass(frozen=True)
class Grade:
    """The judgement of one answer against a reference.

    Attributes:
        correct: ``True``/``False``, or ``None`` when it could not be decided (timeout, crash).
        reason: ``"ok"`` for a correct answer, else a short reason whose prefix before ``:`` names its kind
            (``"wrong answer"``, ``"timeout: ..."``, ``"verifier error: ..."``).
        method: ``"number"``, ``"string"`` or ``"math-verify"`` -- which rule decided.
    """

    correct: bool | None
    reason: str
    method: str


class MathVerifier:
    """Grades answers (strings already extracted) against reference answers; never raises on model output.

    Args:
        timeout: default seconds per math-verify call before it is abandoned and scored ``None``.
        workers: worker processes of the pool (started on the first call that needs math-verify).
        equal_fn: the picklable, module-level function run in the pool as ``equal_fn(gold, pred) -> bool``
            (default :func:`math_verify_equal`); injectable so the timeout path can be tested with a
            function that sleeps.
        start_method: the pool's start method (see :class:`~divrl.rewards.pool.TimeoutPool`).
    """

    def __init__(
        self,
        timeout: float = 5.0,
        workers: int = 2,
        equal_fn: Callable[[str, str], bool] = math_verify_equal,
        start_method: str | None = None,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.timeout = float(timeout)
        self.equal_fn = equal_fn
        preload = ("math_verify", "divrl.rewards.math_verify") if equal_fn is math_verify_equal else ()
        self.pool = TimeoutPool(workers=workers, start_method=start_method, preload=preload)

    def __repr__(self) -> str:
        return f"MathVerifier(timeout={self.timeout:g}, pool={self.pool!r})"

    def close(self) -> None:
        """Stop the worker processes (a later call restarts them)."""
        self.pool.close()

    def grade(self, gold: str, pred: str, timeout: float | None = None) -> Grade:
        """Judge the answer ``pred`` against the reference answer ``gold`` (rules in the module docstring)."""
        quick = _quick_grade(gold, pred)
        if quick is not None:
            return quick
        outcome = self.pool.call(self.equal_fn, gold, pred, timeout=timeout or self.timeout)
        return _grade_from(outcome.ok, outcome.value, outcome.reason)

    def grade_many(self, pairs: Sequence[tuple[str, str]], timeout: float | None = None) -> list[Grade]:
        """:meth:`grade` for many ``(gold, pred)`` pairs; the math-verify ones run concurrently in the pool."""
        grades: list[Grade | None] = [_quick_grade(g, p) for g, p in pairs]
        todo = [i for i, g in enumerate(grades) if g is None]
        outcomes = self.pool.map(self.equal_fn, [tuple(pairs[i]) for i in todo], timeout=timeout or self.timeout)
        for i, outcome in zip(todo, outcomes, strict=True):
            grades[i] = _grade_from(outcome.ok, outcome.value, outcome.reason)
        return [g for g in grades if g is not None]


def _quick_grade(gold: str, pred: str) -> Grade | None:
    """The in-process rules (plain numbers, equal normal forms); ``None`` = ask math-verify."""
    if not isinstance(gold, str) or not isinstance(pred, str):
        return Grade(
            None, f"verifier error: answers must be str, got {type(gold).__name__}/{type(pred).__name__}", "string"
        )
    g, p = parse_number(gold), parse_number(pred)
    if g is not None and p is not None:
        return Grade(True, "ok", "number") if g == p else Grade(False, "wrong answer", "number")
    if normalize_answer(gold) == normalize_answer(pred):
        return Grade(True, "ok", "string")
    return None


def _grade_from(ok: bool, value: object, reason: str) -> Grade:
    if not ok:
        if reason.startswith("error: "):
            reason = "verifier error: " + reason[len("error: ") :]
        elif reason == "worker crashed":
            reason = "verifier error: worker crashed"
        return Grade(None, reason, "math-verify")
    return Grade(True, "ok", "math-verify") if value else Grade(False, "wrong answer", "math-verify")
