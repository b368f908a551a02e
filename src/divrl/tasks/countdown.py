"""Countdown: reach a target from a few numbers with ``+ - * /`` -- divrl's CPU testbed task.

A problem is a multiset of small positive integers and a target (``nums 10 7 7 target 59``). A
solution is an arithmetic expression over some of the numbers, each used at most once (or each
exactly once with ``exact_use``), whose exact rational value is the target. The task follows the
TinyZero / "Countdown" RLVR testbed; everything here (rules, format, canonical form) is our own
specification, first measured in a throwaway prototype (``shared/research/testbed-prototype.md``).

Format (what the policy reads and writes)
-----------------------------------------
* Prompt (:func:`format_prompt`): ``nums 10 7 7 target 59:`` left-padded with spaces to the fixed
  width :attr:`CountdownConfig.prompt_width` (25 for the default config), so every prompt of a task
  config has the same length and a character-level policy needs no attention mask.
* Completion (:func:`format_completion`): the steps in evaluation order (post-order, left subtree
  first), comma separated, then the answer: ``7*7=49,10+49=59<answer>10+7*7</answer>``. A
  completion ends at ``</answer>`` (``CountdownTask.stop``). Reference completions (solver output)
  only have positive integer steps; :attr:`CountdownConfig.max_completion_chars` bounds their length
  (47 for the default config).
* Grading (:func:`verify`): only the expression inside the last ``<answer>...</answer>`` pair is
  graded; the steps before it are not (malformed steps are harmless).

Expressions
-----------
ASCII ``+ - * /``, parentheses, non-negative integer literals of at most 8 digits (leading zeros
are read as decimal: ``07`` is 7), spaces/tabs/newlines. No unary minus or plus (``-3``, ``2*-3``
are unparsable): every reachable value is written without it, and it would open a second spelling
of every subtraction. At most 256 characters and 32 nested parentheses. Arithmetic is exact
(``fractions.Fraction``); there is no ``eval``.

Rules: the verifier versus the solver (a deliberate asymmetry)
--------------------------------------------------------------
* :func:`verify` grades the final expression only: any exact rational intermediate is fine, so
  ``(2-5)*(1-4)`` is a correct 9 and ``8/(1/2)`` a correct 16. It cannot enforce a rule on
  intermediate results because ``a+b-c`` and ``a-c+b`` are one solution class (below) yet only one
  of them may have a positive ``a-c``.
* The exhaustive solver (:func:`solve_all`) uses the classic Countdown rule: every intermediate
  result is a positive integer (subtraction only when the result is > 0, division only when exact).
  This keeps the reference chains of thought integer-valued, which a tiny character-level policy
  learns much more easily, and avoids junk classes through 0 (``x+(3-3)``). The verifier accepts
  every solver solution (tested). The converse does not hold: a correct answer can lie in a class
  the solver does not list when each of its spellings needs a negative or fractional intermediate,
  e.g. ``(1-3)*(2-7)`` (=10) or ``(1/2+3)*4`` (=14). Such answers are still correct and still get an
  exact :func:`canonical` key (their own class); only metrics that divide by :func:`num_classes`
  should clip at 1.

Solution classes (:func:`canonical`)
------------------------------------
The canonical form is the exact semantic-equivalence key used by DARLING's partition and by Div-Equ
on this task. It normalises commutativity and associativity of ``+`` and ``*`` together with the
matching rewrites of ``-`` and ``/``: a ``+``/``-`` chain becomes a signed multiset of terms and a
``*``/``/`` chain a numerator and a denominator multiset of factors, recursively, each multiset is
sorted (numbers numerically first, then composite terms as strings) and rendered without spaces.
So ``(a+b)*c == c*(b+a)``, ``a+b-c == a-c+b``, ``a-(b-c) == a-b+c``, ``a/(b/c) == a*c/b``, but
``a*b-c != a-b*c``. Nothing else is applied: no distributivity (``a*(b+c) != a*b+a*c``), no
numeric folding (``2*3 != 6``), and identity factors stay as written (``x*1``, ``x/1`` and ``x``
are three classes), because they are different solutions a policy can write and folding them would
make the key depend on arithmetic, not on the expression. Equal canonical forms imply equal values
whenever both expressions are defined (every rewrite is a rational identity; ``a/(b/0)`` is
undefined while its class representative ``a*0/b`` is not).

Keeping identity factors has a visible cost: with a 1 among the numbers, ``x*1``-style variants
multiply the classes (``1 2 5 -> 3`` has 9: ``5-2``, ``1*(5-2)``, ``(5-2)/1``, ``1*5-2``, ``5/1-2``,
``5-1*2``, ``5-2/1``, ``1+2``, ``(1+5)/2``). ``low=2`` removes ones from the pool.

Problem pool (measured; numbers 1..13, max_target 100)
------------------------------------------------------
* 3 numbers: 7,338 problems; 83.6% have a single class, mean 1.32 classes. With ``min_classes=2``
  (the default), ``test_fraction`` 0.2 and ``val_fraction`` 0.1 (the defaults) 851 train, 138 val
  and 218 test problems remain (test: mean 2.73 classes); with ``min_classes=1`` 5,134 / 742 / 1,462.
  (``test_fraction`` 0.1 without val gives 1,098 / 109; 296 of the 1,207 multi-class problems
  contain a 1.) Solver: ~0.05 ms per problem cold.
* 4 numbers: 99,729 problems; 42% single-class, mean 3.10, max 53; with ``min_classes=2`` and
  ``test_fraction`` 0.1: 51,961 train / 5,747 test. Solver: ~1.3-1.6 ms per problem cold (a fresh multiset).

Out-of-distribution split (``ood``)
-----------------------------------
Problems that no train, val or test problem can be, so that neither SFT nor RL on this config's train split
shows them: at least one number lies above ``high`` (every number in ``low..ood_high``,
:attr:`CountdownConfig.ood_high`, 20 by default), the target is drawn as for the other splits (reachable,
<= ``max_target``, not one of the numbers, at least ``min_classes`` classes), and the problem's hash
(:func:`split_of`) lies in the *test* range. The hash keeps the split about the size of ``test`` (the whole
out-of-range pool of the default config has 1,692 multi-class problems) and leaves the pool's val range (10%) free
as an out-of-distribution validation set should one be needed; the choice of range and size is ours. Default
config: **300 problems**, mean 3.00 solution classes (``test``: 218, 2.73); 210 / 81 / 9 of them hold one / two /
three numbers in 14..20. Prompts keep the default prompt width (25: two-digit numbers, as for ``high`` 13), and a
3-number solution's one intermediate stays three digits (at most 20*20 = 400, against 13*13 = 169), so reference
completions stay within :attr:`CountdownConfig.max_completion_chars` (tested) and need no more tokens than in
distribution.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

from divrl.tasks.base import Verdict, config_from_options

__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "MAX_DEPTH",
    "MAX_EXPR_CHARS",
    "MAX_LITERAL_DIGITS",
    "BinOp",
    "CountdownConfig",
    "CountdownTask",
    "EvaluationError",
    "ExpressionError",
    "Node",
    "Num",
    "ParseError",
    "Problem",
    "canonical",
    "equivalence_key",
    "evaluate",
    "extract_answer",
    "format_completion",
    "format_prompt",
    "generate",
    "num_classes",
    "parse",
    "read_jsonl",
    "reference_completion",
    "render",
    "solution_classes",
    "solve",
    "solve_all",
    "split_of",
    "tokenize",
    "verify",
    "write_jsonl",
]

MAX_EXPR_CHARS = 256
"""Longest answer expression (characters) the parser reads."""
MAX_DEPTH = 32
"""Deepest parenthesis nesting the parser reads."""
MAX_LITERAL_DIGITS = 8
"""Longest integer literal (digits); a longer one is a "huge literal"."""
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_DIGITS = frozenset("0123456789")
_SPACE = frozenset(" \t\n\r")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_LEAF_PREC = 3


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


# --------------------------------------------------------------------------------------------------
# Expressions: tokenizer, parser, evaluation, rendering


class ExpressionError(ValueError):
    """An expression that cannot be read or evaluated; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ParseError(ExpressionError):
    """An unparsable expression (bad character, huge literal, too deep, too long, ...)."""


class EvaluationError(ExpressionError):
    """A parsable expression without a value (division by zero)."""


@dataclass(frozen=True)
class Num:
    """An integer literal."""

    value: int


@dataclass(frozen=True)
class BinOp:
    """``left op right`` with ``op`` one of ``+ - * /``."""

    op: str
    left: Node
    right: Node


Node = Union[Num, BinOp]  # noqa: UP007 (a runtime alias; ``|`` on these classes needs them defined first)

Token = tuple[str, str, int]
"""(kind, text, position); kind is ``"num"``, ``"op"``, ``"("`` or ``")"``."""


def tokenize(expr: str) -> list[Token]:
    """Split ``expr`` into tokens, skipping ASCII whitespace.

    Raises:
        ParseError: not a str, longer than :data:`MAX_EXPR_CHARS`, a character outside the grammar,
            a literal longer than :data:`MAX_LITERAL_DIGITS` digits, or no token at all.
    """
    if not isinstance(expr, str):
        raise ParseError(f"expression must be a str, got {type(expr).__name__}")
    n = len(expr)
    if n > MAX_EXPR_CHARS:
        raise ParseError(f"too long: {n} chars > {MAX_EXPR_CHARS}")
    tokens: list[Token] = []
    i = 0
    while i < n:
        c = expr[i]
        if c in _SPACE:
            i += 1
        elif c in _DIGITS:
            j = i + 1
            while j < n and expr[j] in _DIGITS:
                j += 1
            if j - i > MAX_LITERAL_DIGITS:
                raise ParseError(f"huge literal at {i}: {j - i} digits > {MAX_LITERAL_DIGITS}")
            tokens.append(("num", expr[i:j], i))
            i = j
        elif c in _PREC:
            tokens.append(("op", c, i))
            i += 1
        elif c in "()":
            tokens.append((c, c, i))
            i += 1
        else:
            raise ParseError(f"unexpected character {c!r} at {i}")
    if not tokens:
        raise ParseError("empty expression")
    return tokens


class _Parser:
    """Recursive descent over ``expr := term (('+'|'-') term)*``, ``term := factor (('*'|'/') factor)*``,
    ``factor := NUMBER | '(' expr ')'``; chains are left-associative loops, recursion only at parentheses."""

    def __init__(self, tokens: list[Token], length: int) -> None:
        self.tokens = tokens
        self.length = length
        self.i = 0
        self.depth = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expr(self) -> Node:
        node = self.term()
        while (t := self.peek()) is not None and t[1] in "+-" and t[0] == "op":
            self.i += 1
            node = BinOp(t[1], node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while (t := self.peek()) is not None and t[1] in "*/" and t[0] == "op":
            self.i += 1
            node = BinOp(t[1], node, self.factor())
        return node

    def factor(self) -> Node:
        t = self.peek()
        if t is None:
            raise ParseError(f"unexpected end of expression at {self.length}")
        kind, text, pos = t
        if kind == "num":
            self.i += 1
            return Num(int(text))
        if kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ParseError(f"nesting deeper than {MAX_DEPTH} at {pos}")
            self.i += 1
            node = self.expr()
            if (close := self.peek()) is None or close[0] != ")":
                raise ParseError(f"unclosed '(' at {pos}")
            self.i += 1
            self.depth -= 1
            return node
        if kind == "op" and text in "+-":
            raise ParseError(f"unary {'minus' if text == '-' else 'plus'} at {pos} is not allowed")
        raise ParseError(f"expected a number or '(' at {pos}, found {text!r}")


def parse(expr: str) -> Node:
    """Parse an expression (grammar and limits in the module docstring) into a :class:`Node` tree.

    Raises:
        ParseError: with a ``reason`` naming the problem and its position.
    """
    tokens = tokenize(expr)
    parser = _Parser(tokens, len(expr))
    node = parser.expr()
    if (t := parser.peek()) is not None:
        what = "unbalanced ')'" if t[0] == ")" else f"unexpected {t[1]!r}"
        raise ParseError(f"{what} at {t[2]}")
    return node


def evaluate(node: Node) -> Fraction:
    """The exact value of an expression tree.

    Raises:
        EvaluationError: ``"division by zero"``.
    """
    if isinstance(node, Num):
        return Fraction(node.value)
    a, b = evaluate(node.left), evaluate(node.right)
    if node.op == "+":
        return a + b
    if node.op == "-":
        return a - b
    if node.op == "*":
        return a * b
    if b == 0:
        raise EvaluationError("division by zero")
    return a / b


def render(node: Node) -> str:
    """Write a tree with the fewest parentheses that keep *this* tree: ``parse(render(t)) == t``.

    A left operand is parenthesised when it binds looser than its operator, a right operand when it
    binds looser or equally (``a-(b-c)``, ``a+(b+c)``, ``a/(b*c)``). No spaces.
    """
    if isinstance(node, Num):
        return str(node.value)
    prec = _PREC[node.op]
    left, right = render(node.left), render(node.right)
    if isinstance(node.left, BinOp) and _PREC[node.left.op] < prec:
        left = f"({left})"
    if isinstance(node.right, BinOp) and _PREC[node.right.op] <= prec:
        right = f"({right})"
    return left + node.op + right


def _literals(node: Node) -> list[int]:
    """The literal values of a tree, left to right."""
    out: list[int] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Num):
            out.append(n.value)
        else:
            stack.append(n.right)
            stack.append(n.left)
    return out


# --------------------------------------------------------------------------------------------------
# Canonical form (solution classes)

# A canonical value is (kind, a, b, text): kind "n" (number, a=b=()), "s" (sum: a = positive terms,
# b = negative terms) or "p" (product: a = numerator factors, b = denominator factors); a and b hold the
# canonical texts of the parts, sorted by _order; text is the rendering. It is built compositionally, so
# the solver can carry it along its bottom-up enumeration instead of re-parsing every tree.
_Canon = tuple[str, tuple[str, ...], tuple[str, ...], str]


def _order(text: str) -> tuple[int, int, str]:
    """Sort key of a term/factor: numbers numerically (no leading zeros in canonical text), then the rest."""
    return (0, len(text), text) if text.isdigit() else (1, 0, text)


def _canon_leaf(value: int) -> _Canon:
    return ("n", (), (), str(value))


def _canon_combine(op: str, x: _Canon, y: _Canon) -> _Canon:
    """The canonical form of ``x op y`` from those of ``x`` and ``y``."""
    if op in "+-":
        xp, xn = (x[1], x[2]) if x[0] == "s" else ((x[3],), ())
        yp, yn = (y[1], y[2]) if y[0] == "s" else ((y[3],), ())
        pos, neg = (xp + yp, xn + yn) if op == "+" else (xp + yn, xn + yp)
        pos, neg = tuple(sorted(pos, key=_order)), tuple(sorted(neg, key=_order))
        return ("s", pos, neg, "+".join(pos) + "".join("-" + t for t in neg))
    xu, xd = (x[1], x[2]) if x[0] == "p" else ((f"({x[3]})" if x[0] == "s" else x[3],), ())
    yu, yd = (y[1], y[2]) if y[0] == "p" else ((f"({y[3]})" if y[0] == "s" else y[3],), ())
    num, den = (xu + yu, xd + yd) if op == "*" else (xu + yd, xd + yu)
    num, den = tuple(sorted(num, key=_order)), tuple(sorted(den, key=_order))
    return ("p", num, den, "*".join(num) + "".join("/" + f for f in den))


def _canon_of(node: Node) -> _Canon:
    if isinstance(node, Num):
        return _canon_leaf(node.value)
    return _canon_combine(node.op, _canon_of(node.left), _canon_of(node.right))


def canonical(expression: str) -> str:
    """The canonical form of an expression: its solution class (rules in the module docstring).

    >>> canonical("(2+1)*3"), canonical("10 - 3 + 4")
    ('3*(1+2)', '4+10-3')
    >>> canonical("8/(4/2)"), canonical("5-(3-1)")
    ('2*8/4', '1+5-3')

    Raises:
        ParseError: the expression is unparsable (a ``ValueError``).
    """
    return _canon_of(parse(expression))[3]


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
            value = evaluate(node)
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


# --------------------------------------------------------------------------------------------------
# Exhaustive solver (classic Countdown rule: every intermediate result is a positive integer)

# A solver tree: (value, text, precedence, canonical). ``text`` is the structure-faithful rendering
# (see ``render``); the children of + and * are ordered by text, so each tree appears once up to the
# order of commutative operands. Both orders are spelled out only for solutions (``solve_all``).
_Tree = tuple[int, str, int, _Canon]


def _sub_multisets(ms: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The distinct non-empty sub-multisets of a sorted tuple, sorted."""
    return sorted({c for r in range(1, len(ms) + 1) for c in itertools.combinations(ms, r)})


def _splits(ms: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Unordered splits of a sorted multiset into two non-empty complementary sorted sub-multisets."""
    k = len(ms)
    for r in range(1, k // 2 + 1):
        for a in sorted(set(itertools.combinations(ms, r))):
            rest = list(ms)
            for v in a:
                rest.remove(v)
            b = tuple(rest)
            if 2 * r == k and a > b:
                continue
            yield a, b


def _join(out: dict[str, _Tree], value: int, op: str, x: _Tree, y: _Tree) -> None:
    prec = _PREC[op]
    left = f"({x[1]})" if x[2] < prec else x[1]
    right = f"({y[1]})" if y[2] <= prec else y[1]
    text = left + op + right
    if text not in out:
        out[text] = (value, text, prec, _canon_combine(op, x[3], y[3]))


def _trees(ms: tuple[int, ...]) -> tuple[_Tree, ...]:
    """Every tree over exactly the sorted multiset ``ms`` whose every node value is a positive integer.

    Bottom-up over unordered splits of ``ms`` into two sub-multisets, each combined with + - * /
    (the classic Countdown recursion), deduplicated by text. Cached on the sorted numbers: all
    multisets of up to 3 numbers (a few KB each), only the last 64 larger ones (~1,500 trees, ~160 KB
    each for 4 numbers from 1..13), since per-problem results are cached again in ``_classes``.
    """
    return _small_trees(ms) if len(ms) <= 3 else _large_trees(ms)


def _build_trees(ms: tuple[int, ...]) -> tuple[_Tree, ...]:
    if len(ms) == 1:
        return ((ms[0], str(ms[0]), _LEAF_PREC, _canon_leaf(ms[0])),)
    out: dict[str, _Tree] = {}
    for a, b in _splits(ms):
        for x in _trees(a):
            vx = x[0]
            for y in _trees(b):
                vy = y[0]
                lo, hi = (x, y) if x[1] <= y[1] else (y, x)
                _join(out, vx + vy, "+", lo, hi)
                if vx * vy > 0:
                    _join(out, vx * vy, "*", lo, hi)
                if vx > vy:
                    _join(out, vx - vy, "-", x, y)
                elif vy > vx:
                    _join(out, vy - vx, "-", y, x)
                if vy and vx % vy == 0 and vx:
                    _join(out, vx // vy, "/", x, y)
                if vx and vy % vx == 0 and vy:
                    _join(out, vy // vx, "/", y, x)
    return tuple(out.values())


_small_trees = functools.lru_cache(maxsize=16384)(_build_trees)
_large_trees = functools.lru_cache(maxsize=64)(_build_trees)


def _candidate_multisets(ms: tuple[int, ...], exact_use: bool) -> list[tuple[int, ...]]:
    return [ms] if exact_use else _sub_multisets(ms)


@functools.lru_cache(maxsize=8192)
def _classes(ms: tuple[int, ...], target: int, exact_use: bool) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(canonical form, sorted solver tree texts) per solution class, sorted by canonical form."""
    classes: dict[str, list[str]] = {}
    for sub in _candidate_multisets(ms, exact_use):
        for value, text, _, canon in _trees(sub):
            if value == target:
                classes.setdefault(canon[3], []).append(text)
    return tuple((c, tuple(sorted(texts, key=_by_length))) for c, texts in sorted(classes.items()))


@functools.lru_cache(maxsize=16384)
def _class_counts(ms: tuple[int, ...], exact_use: bool, max_target: int) -> tuple[tuple[int, int], ...]:
    """(target, number of solution classes) for every reachable target in 1..max_target not in ``ms``."""
    classes: dict[int, set[str]] = {}
    for sub in _candidate_multisets(ms, exact_use):
        for value, _, _, canon in _trees(sub):
            if value <= max_target and value not in ms:
                classes.setdefault(value, set()).add(canon[3])
    return tuple(sorted((t, len(c)) for t, c in classes.items()))


def _by_length(text: str) -> tuple[int, str]:
    return len(text), text


def solution_classes(problem: Problem, *, exact_use: bool = False) -> dict[str, tuple[str, ...]]:
    """Solver solutions grouped by class: canonical form -> the class's trees (one spelling each up
    to the order of commutative operands, shortest first). Cached on the sorted numbers."""
    return dict(_classes(tuple(sorted(problem.numbers)), problem.target, exact_use))


def _commutations(node: Node) -> list[Node]:
    if isinstance(node, Num):
        return [node]
    out: list[Node] = []
    for left in _commutations(node.left):
        for right in _commutations(node.right):
            out.append(BinOp(node.op, left, right))
            if node.op in "+*":
                out.append(BinOp(node.op, right, left))
    return out


def solve_all(problem: Problem, *, exact_use: bool = False) -> list[str]:
    """Every expression string the classic Countdown recursion can write for the problem, sorted.

    Every binary tree over a sub-multiset of the numbers (all of them with ``exact_use``) whose
    every intermediate result is a positive integer and whose value is the target, with both operand
    orders of each ``+`` and ``*``, written by :func:`render` (so ``(2+3)*4``, ``4*(2+3)``,
    ``4*(3+2)``, ... are all listed; ``2+3+4`` and ``2+(3+4)`` are different trees).
    """
    out: set[str] = set()
    for texts in solution_classes(problem, exact_use=exact_use).values():
        for text in texts:
            out.update(render(t) for t in _commutations(parse(text)))
    return sorted(out, key=_by_length)


def solve(problem: Problem, *, exact_use: bool = False) -> list[str]:
    """One representative expression per solution class (its shortest solver spelling), sorted."""
    return sorted((texts[0] for texts in solution_classes(problem, exact_use=exact_use).values()), key=_by_length)


def num_classes(problem: Problem, *, exact_use: bool = False) -> int:
    """The number of distinct solution classes the solver finds (what ``min_classes`` filters on)."""
    return len(_classes(tuple(sorted(problem.numbers)), problem.target, exact_use))


# --------------------------------------------------------------------------------------------------
# Prompt and completion format


def format_prompt(problem: Problem, width: int = 0) -> str:
    """``nums 10 7 7 target 59:`` left-padded with spaces to ``width`` characters.

    Raises:
        ValueError: the prompt is longer than ``width`` (the problem is outside the task config).
    """
    text = f"nums {' '.join(map(str, problem.numbers))} target {problem.target}:"
    if len(text) > width > 0:
        raise ValueError(f"prompt {text!r} is longer than the prompt width {width}")
    return text.rjust(width)


def format_completion(problem: Problem, expression: str) -> str:
    """The chain of thought and answer for a correct expression.

    Steps in evaluation order (post-order, left subtree first), then the expression re-written by
    :func:`render` (no spaces, fewest parentheses keeping its tree):
    ``format_completion(Problem((10, 7, 7), 59), "10 + 7*7") == "7*7=49,10+49=59<answer>10+7*7</answer>"``.
    A non-integer or negative intermediate is written ``7/2`` or ``-3``, and parenthesised as an
    operand: ``1/2=1/2,8/(1/2)=16`` (the solver's completions have positive integers only).

    Raises:
        ValueError: the expression is unparsable or is not a correct answer to the problem.
    """
    node = parse(expression)
    verdict = verify(problem, ANSWER_OPEN + expression + ANSWER_CLOSE)
    if not verdict.correct:
        raise ValueError(f"{expression!r} is not a solution of {problem}: {verdict.reason}")
    steps: list[str] = []

    def walk(n: Node) -> Fraction:
        if isinstance(n, Num):
            return Fraction(n.value)
        a, b = walk(n.left), walk(n.right)
        c = _apply(n.op, a, b)  # no division by zero: the expression verified
        steps.append(f"{_operand(a)}{n.op}{_operand(b)}={c}")
        return c

    walk(node)
    return ",".join(steps) + ANSWER_OPEN + render(node) + ANSWER_CLOSE


def _operand(x: Fraction) -> str:
    return str(x) if x.denominator == 1 and x >= 0 else f"({x})"


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b


def _shuffle_commutative(node: Node, rng: random.Random) -> Node:
    if isinstance(node, Num):
        return node
    left, right = _shuffle_commutative(node.left, rng), _shuffle_commutative(node.right, rng)
    if node.op in "+*" and rng.random() < 0.5:
        left, right = right, left
    return BinOp(node.op, left, right)


def reference_completion(problem: Problem, rng: random.Random, *, exact_use: bool = False) -> str:
    """A supervised warm-start completion: a solution class uniformly at random, then one of its
    solver trees uniformly at random, with each ``+``/``*`` operand pair swapped with probability 1/2,
    written by :func:`format_completion`.

    Raises:
        ValueError: the problem has no solution.
    """
    classes = _classes(tuple(sorted(problem.numbers)), problem.target, exact_use)
    if not classes:
        raise ValueError(f"{problem} has no solution")
    _, texts = classes[rng.randrange(len(classes))]
    node = _shuffle_commutative(parse(texts[rng.randrange(len(texts))]), rng)
    return format_completion(problem, render(node))


# --------------------------------------------------------------------------------------------------
# Task configuration, problem generation, splits


@dataclass(frozen=True)
class CountdownConfig:
    """What problems a Countdown task draws and how it grades them (values only; YAML-friendly).

    Changing any field except ``exact_use`` changes the problem distribution; the train/test split
    of a given problem depends only on the problem and ``test_fraction`` (see :func:`split_of`).
    """

    num_numbers: int | tuple[int, ...] = 3
    """How many numbers a problem has; a tuple such as ``(3, 4)`` mixes sizes (each problem draws one
    uniformly). 3 is the demo default: the solver takes well under a millisecond and the prototype's
    1M-parameter policy learned it in minutes. 4 makes multi-class problems common but is ~100x more
    enumeration. Normalised to a sorted tuple of distinct sizes in 2..5."""
    low: int = 1
    """Smallest number (>= 1: the solver's intermediates are positive integers)."""
    high: int = 13
    """Largest number (numbers are drawn uniformly in ``low..high``, repeats allowed)."""
    max_target: int = 100
    """Largest target; targets are reachable positive integers that are not one of the numbers."""
    min_classes: int = 2
    """Keep only problems with at least this many solver solution classes (:func:`num_classes`);
    1 keeps every solvable problem."""
    exact_use: bool = False
    """Require every number exactly once (verifier, solver and generator); default: at most once."""
    test_fraction: float = 0.2
    """Share of all problems (by a stable hash of sorted numbers and target) that form the test split."""
    val_fraction: float = 0.1
    """Share that forms the validation split (hyperparameter sweeps), disjoint from train and test."""
    ood_high: int = 20
    """Largest number of the out-of-distribution split ``ood`` (module docstring): its problems have every number
    in ``low..ood_high`` and at least one above ``high``. Only that split reads it; it must exceed ``high`` and have
    no more digits than ``high`` (the prompt width), which is checked when the ``ood`` split is drawn."""

    def __post_init__(self) -> None:
        sizes: Any = self.num_numbers
        if _is_int(sizes):
            sizes = (sizes,)
        if not isinstance(sizes, (tuple, list)) or not sizes or not all(_is_int(k) and 2 <= k <= 5 for k in sizes):
            raise ValueError(f"num_numbers must be an int or a tuple of ints in 2..5, got {self.num_numbers!r}")
        object.__setattr__(self, "num_numbers", tuple(sorted(set(sizes))))
        for name in ("low", "high", "max_target", "min_classes", "ood_high"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an int, got {getattr(self, name)!r}")
        if not 1 <= self.low <= self.high < 10**MAX_LITERAL_DIGITS:
            raise ValueError(f"need 1 <= low <= high < 10**{MAX_LITERAL_DIGITS}, got low={self.low}, high={self.high}")
        if self.max_target < 1:
            raise ValueError(f"max_target must be >= 1, got {self.max_target}")
        if self.min_classes < 1:
            raise ValueError(f"min_classes must be >= 1, got {self.min_classes}")
        if not isinstance(self.exact_use, bool):
            raise ValueError(f"exact_use must be a bool, got {self.exact_use!r}")
        if not isinstance(self.test_fraction, (int, float)) or not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        vf = self.val_fraction
        if not isinstance(vf, (int, float)) or not 0.0 <= vf < 1.0 - self.test_fraction:
            raise ValueError(f"val_fraction must be in [0, 1 - test_fraction), got {vf!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> CountdownConfig:
        """Build from keyword options (e.g. a YAML mapping); an unknown name raises ``ValueError``."""
        return config_from_options(cls, options, "countdown")

    @property
    def sizes(self) -> tuple[int, ...]:
        """``num_numbers`` as a tuple."""
        assert isinstance(self.num_numbers, tuple)
        return self.num_numbers

    @property
    def prompt_width(self) -> int:
        """The fixed prompt length: that of the longest possible prompt (25 for the default config)."""
        k = max(self.sizes)
        return len("nums ") + k * len(str(self.high)) + (k - 1) + len(" target ") + len(str(self.max_target)) + 1

    @property
    def max_completion_chars(self) -> int:
        """An upper bound on the length of any reference completion (:func:`reference_completion`).

        Worst case over tree shapes, with every literal ``len(str(high))`` digits, an intermediate over
        ``j`` numbers at most ``(high+1)**j - 1`` (since ``x+y+1 <= (x+1)(y+1)`` and ``x*y+1 <= (x+1)(y+1)``),
        the final value ``len(str(max_target))`` digits and every non-root operation parenthesised.
        47 for the default config (the prototype's longest completion was 47).
        """
        k = max(self.sizes)
        leaf = len(str(self.high))

        def digits(j: int) -> int:  # of a value over j numbers
            return leaf if j == 1 else len(str((self.high + 1) ** j - 1))

        steps = [0] * (k + 1)  # steps[j]: the longest steps text of a subtree over j numbers
        for j in range(2, k + 1):
            steps[j] = max(steps[i] + steps[j - i] + digits(i) + digits(j - i) for i in range(1, j)) + 2 + digits(j)
        root = max(steps[i] + steps[k - i] + digits(i) + digits(k - i) for i in range(1, k)) + 2
        root += len(str(self.max_target))
        answer = k * leaf + (k - 1) + 2 * (k - 2)
        return root + (k - 2) + len(ANSWER_OPEN) + answer + len(ANSWER_CLOSE)


def split_of(problem: Problem, test_fraction: float = 0.2, val_fraction: float = 0.1) -> str:
    """``"test"``, ``"val"`` or ``"train"`` by a stable SHA-256 hash of (sorted numbers, target).

    Independent of the generator's seed, ``n`` and config, so no generated test problem is ever a
    train or validation problem (of any config with the same fractions). The test range of the hash
    does not depend on ``val_fraction``. The ``ood`` split is not a hash range of its own: it is the test range
    of the problems with a number above the config's ``high`` (see :class:`CountdownConfig`), so this function
    returns ``"test"`` for an ood problem.
    """
    return _split_of_key(problem.key, test_fraction, val_fraction)


def _split_of_key(key: tuple[tuple[int, ...], int], test_fraction: float, val_fraction: float = 0.0) -> str:
    numbers, target = key
    digest = hashlib.sha256(f"{','.join(map(str, numbers))}->{target}".encode()).digest()
    u = int.from_bytes(digest[:8], "big")
    if u < test_fraction * 2**64:
        return "test"
    return "val" if u < (test_fraction + val_fraction) * 2**64 else "train"


_MAX_MISSES = 1000
"""Consecutive random draws without a new problem after which the generator sweeps all multisets."""
_MAX_POOL_MULTISETS = 200_000


def _largest_number(cfg: CountdownConfig, split: str) -> int:
    """The largest number a problem of ``split`` may hold: ``ood_high`` for ``ood``, else ``high``."""
    return cfg.ood_high if split == "ood" else cfg.high


def _all_multisets(cfg: CountdownConfig, split: str) -> list[tuple[int, ...]]:
    """Every sorted multiset of the config's sizes whose numbers suit ``split`` (guarded: only small configs can
    be swept). For ``ood``: the multisets over ``low..ood_high`` with a number above ``high``."""
    top = _largest_number(cfg, split)
    m = top - cfg.low + 1
    count = sum(_n_multisets(m, k) for k in cfg.sizes)
    if count > _MAX_POOL_MULTISETS:
        raise ValueError(f"{count} number multisets are too many to enumerate (limit {_MAX_POOL_MULTISETS}) for {cfg}")
    values = range(cfg.low, top + 1)
    every = (ms for k in cfg.sizes for ms in itertools.combinations_with_replacement(values, k))
    return [ms for ms in every if (ms[-1] > cfg.high) == (split == "ood")]


def _n_multisets(m: int, k: int) -> int:
    out = 1
    for i in range(k):
        out = out * (m + i) // (i + 1)
    return out


def _eligible_targets(cfg: CountdownConfig, split: str, ms: tuple[int, ...]) -> list[int]:
    """Targets of the sorted multiset ``ms`` that belong to ``split`` and have >= ``min_classes`` classes.

    ``train``/``val``/``test``: numbers in ``low..high``, the hash range of the split. ``ood``: numbers in
    ``low..ood_high`` with the largest above ``high``, the test hash range."""
    if (ms[-1] > cfg.high) != (split == "ood") or ms[-1] > _largest_number(cfg, split) or ms[0] < cfg.low:
        return []
    hashed = "test" if split == "ood" else split
    counts = _class_counts(ms, cfg.exact_use, cfg.max_target)
    return [
        t
        for t, c in counts
        if c >= cfg.min_classes and _split_of_key((ms, t), cfg.test_fraction, cfg.val_fraction) == hashed
    ]


def generate(
    n: int | None,
    split: str = "train",
    seed: int = 0,
    *,
    num_numbers: int | tuple[int, ...] = 3,
    low: int = 1,
    high: int = 13,
    max_target: int = 100,
    min_classes: int = 2,
    exact_use: bool = False,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    ood_high: int = 20,
) -> list[Problem]:
    """``n`` distinct problems of a split (``None``: all of them, shuffled), seeded and reproducible.

    Sampling: a size uniformly from ``num_numbers``, then that many numbers i.i.d. uniform in
    ``low..high`` (``low..ood_high`` for ``ood``; their drawn order is the shown order), then a target uniformly among the
    multiset's unused eligible targets (reachable, <= ``max_target``, not one of the numbers, at least
    ``min_classes`` solution classes, in ``split``); a multiset without one is redrawn. After
    1000 fruitless draws in a row the remaining multisets are swept in a random order, so small pools
    are exhausted exactly. The output for ``n`` is a prefix of the output for any larger ``n``.

    Raises:
        ValueError: a bad option (naming it), a split other than ``train``/``val``/``test``/``ood``, an
            ``ood_high`` that does not suit the ``ood`` split, or fewer than ``n`` distinct problems exist (the
            message gives the count).
    """
    cfg = CountdownConfig(
        num_numbers=num_numbers,
        low=low,
        high=high,
        max_target=max_target,
        min_classes=min_classes,
        exact_use=exact_use,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        ood_high=ood_high,
    )
    return _generate(cfg, n, split, seed)


def _generate(cfg: CountdownConfig, n: int | None, split: str, seed: int) -> list[Problem]:
    if split not in ("train", "val", "test", "ood"):
        raise ValueError(f"split must be 'train', 'val', 'test' or 'ood' (or a .jsonl path for a task), got {split!r}")
    if n is not None and (not _is_int(n) or n < 0):
        raise ValueError(f"n must be a non-negative int or None, got {n!r}")
    if split == "ood" and not cfg.high < cfg.ood_high < 10 ** len(str(cfg.high)):
        raise ValueError(
            f"the ood split needs high < ood_high < {10 ** len(str(cfg.high))} (above the training numbers, with no "
            f"more digits than high, the prompt width), got high={cfg.high}, ood_high={cfg.ood_high}"
        )
    top = _largest_number(cfg, split)
    rng = random.Random(f"countdown/{split}/{seed}")
    if n is None:
        pool = [(ms, t) for ms in _all_multisets(cfg, split) for t in _eligible_targets(cfg, split, ms)]
        rng.shuffle(pool)
        return [Problem(tuple(rng.sample(ms, len(ms))), t) for ms, t in pool]

    out: list[Problem] = []
    seen: set[tuple[tuple[int, ...], int]] = set()
    exhausted: set[tuple[int, ...]] = set()

    def take(numbers: tuple[int, ...]) -> bool:
        ms = tuple(sorted(numbers))
        if ms in exhausted:
            return False
        candidates = [t for t in _eligible_targets(cfg, split, ms) if (ms, t) not in seen]
        if not candidates:
            exhausted.add(ms)
            return False
        target = rng.choice(candidates)
        seen.add((ms, target))
        out.append(Problem(numbers, target))
        return True

    misses = 0
    while len(out) < n and misses < _MAX_MISSES:
        k = rng.choice(cfg.sizes)
        misses = 0 if take(tuple(rng.randint(cfg.low, top) for _ in range(k))) else misses + 1
    if len(out) < n:  # sweep: every multiset not yet exhausted, in a random order, until done
        remaining = [ms for ms in _all_multisets(cfg, split) if ms not in exhausted]
        rng.shuffle(remaining)
        while len(out) < n and remaining:
            remaining = [ms for ms in remaining if len(out) < n and take(tuple(rng.sample(ms, len(ms))))]
        if len(out) < n:
            raise ValueError(f"only {len(out)} distinct {split} problems exist for {cfg}; asked for {n}")
    return out


# --------------------------------------------------------------------------------------------------
# The task object


class CountdownTask:
    """Countdown as a :class:`~divrl.tasks.base.Task` (see the module docstring for the format).

    ``problems(split)`` takes ``"train"``/``"val"``/``"test"``/``"ood"`` (generated, see :func:`generate`; ``ood``
    is out of distribution, see the module docstring) or the path of a ``.jsonl`` file written by
    :func:`write_jsonl` (a held-out set).
    """

    name = "countdown"
    stop: tuple[str, ...] = (ANSWER_CLOSE,)

    def __init__(self, config: CountdownConfig | None = None) -> None:
        self.config = config if config is not None else CountdownConfig()
        self.prompt_width = self.config.prompt_width
        self.max_completion_chars = self.config.max_completion_chars

    def __repr__(self) -> str:
        return f"CountdownTask({self.config})"

    def problems(self, split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
        if split.endswith(".jsonl"):
            problems = read_jsonl(split)
            return problems if n is None else problems[:n]
        return _generate(self.config, n, split, seed)

    def prompt(self, problem: Problem) -> str:
        return format_prompt(problem, self.prompt_width)

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return verify(problem, completion, exact_use=self.config.exact_use)

    def equivalence_key(self, problem: Problem, completion: str) -> str | None:
        return equivalence_key(completion)

    def reference_completion(self, problem: Problem, rng: random.Random) -> str:
        """See :func:`reference_completion`."""
        return reference_completion(problem, rng, exact_use=self.config.exact_use)

    def num_classes(self, problem: Problem) -> int:
        """See :func:`num_classes`."""
        return num_classes(problem, exact_use=self.config.exact_use)
