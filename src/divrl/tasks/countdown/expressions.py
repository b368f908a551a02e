"""Countdown expressions: limits, tokenizer, parser, exact evaluation, rendering, canonical form (solution classes).

Part of :mod:`divrl.tasks.countdown` (see its docstring for the rules and format)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Union

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


def exact_value(node: Node) -> Fraction:
    """The exact value of an expression tree.

    Raises:
        EvaluationError: ``"division by zero"``.
    """
    if isinstance(node, Num):
        return Fraction(node.value)
    a, b = exact_value(node.left), exact_value(node.right)
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
