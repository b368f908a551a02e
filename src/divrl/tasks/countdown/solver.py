"""The exhaustive Countdown solver (classic rule: every intermediate result is a positive integer).

Part of :mod:`divrl.tasks.countdown` (see its docstring for the rules and format)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

from divrl.tasks.countdown.expressions import (
    _LEAF_PREC,
    _PREC,
    BinOp,
    Node,
    Num,
    _Canon,
    _canon_combine,
    _canon_leaf,
    parse,
    render,
)
from divrl.tasks.countdown.problem import Problem

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


def count_solution_classes(problem: Problem, *, exact_use: bool = False) -> int:
    """The number of distinct solution classes the solver finds (what ``min_classes`` filters on)."""
    return len(_classes(tuple(sorted(problem.numbers)), problem.target, exact_use))
