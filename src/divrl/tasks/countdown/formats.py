"""The Countdown prompt and completion format, and reference completions.

Part of :mod:`divrl.tasks.countdown` (see its docstring for the rules and format)."""

from __future__ import annotations

import random
from fractions import Fraction

from divrl.tasks.countdown.expressions import ANSWER_CLOSE, ANSWER_OPEN, BinOp, Node, Num, parse, render
from divrl.tasks.countdown.problem import Problem
from divrl.tasks.countdown.solver import _classes
from divrl.tasks.countdown.verifier import verify

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


ATTEMPT_END = ";"
"""Ends a failed attempt in the search format (:attr:`CountdownConfig.attempts`)."""


def failed_attempt(problem: Problem, rng: random.Random, tries: int = 100) -> str | None:
    """A chain of true steps over all the problem's numbers that misses the target, ended by :data:`ATTEMPT_END`:
    ``10-1=9,9*5=45,45-1=44;`` for ``nums 10 1 5 1 target 25``. Each step combines two values of the pool (shuffled)
    with an operator drawn uniformly among those giving a positive integer (``-`` when the result is > 0, ``/`` when
    exact and the divisor is not 1); no intermediate equals the target (that would be a solution). ``None`` when ``tries``
    draws all hit the target.

    Our construction (the search format is ours): it shows a policy honest arithmetic that can miss, so that a miss
    is visible in its own completion and another attempt can follow.
    """
    for _ in range(tries):
        pool = [Fraction(x) for x in problem.numbers]
        rng.shuffle(pool)
        steps: list[str] = []
        while len(pool) > 1:
            a, b = pool.pop(), pool.pop()
            ops = ["+", "*"] + (["-"] if a > b else []) + (["/"] if b > 1 and a % b == 0 else [])
            op = ops[rng.randrange(len(ops))]
            c = _apply(op, a, b)
            steps.append(f"{a}{op}{b}={c}")
            if c == problem.target:
                break
            pool.insert(rng.randrange(len(pool) + 1), c)
        else:
            return ",".join(steps) + ATTEMPT_END
    return None


def reference_completion(problem: Problem, rng: random.Random, *, exact_use: bool = False, attempts: int = 0) -> str:
    """A supervised warm-start completion: a solution class uniformly at random, then one of its
    solver trees uniformly at random, with each ``+``/``*`` operand pair swapped with probability 1/2,
    written by :func:`format_completion`. With ``attempts`` > 0 (the search format), ``0..attempts``
    :func:`failed_attempt` chains (uniformly many) come first; with 0, ``rng`` draws exactly what it drew before
    the option existed.

    Raises:
        ValueError: the problem has no solution.
    """
    classes = _classes(tuple(sorted(problem.numbers)), problem.target, exact_use)
    if not classes:
        raise ValueError(f"{problem} has no solution")
    _, texts = classes[rng.randrange(len(classes))]
    node = _shuffle_commutative(parse(texts[rng.randrange(len(texts))]), rng)
    solution = format_completion(problem, render(node))
    if attempts <= 0:
        return solution
    failed = [failed_attempt(problem, rng) for _ in range(rng.randrange(attempts + 1))]
    return "".join(f for f in failed if f is not None) + solution
