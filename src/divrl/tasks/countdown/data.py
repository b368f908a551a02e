"""Countdown task configuration, problem generation and splits.

Part of :mod:`divrl.tasks.countdown` (see its docstring for the rules and format)."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from divrl.tasks.base import config_from_options
from divrl.tasks.countdown.expressions import ANSWER_CLOSE, ANSWER_OPEN, MAX_LITERAL_DIGITS
from divrl.tasks.countdown.problem import Problem, _is_int
from divrl.tasks.countdown.solver import _class_counts

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
    """Keep only problems with at least this many solver solution classes (:func:`count_solution_classes`);
    1 keeps every solvable problem."""
    exact_use: bool = False
    """Require every number exactly once (verifier, solver and generator); default: at most once."""
    test_fraction: float = 0.2
    """Share of all problems (by a stable hash of sorted numbers and target) that form the test split."""
    val_fraction: float = 0.1
    """Share that forms the validation split (hyperparameter sweeps), disjoint from train and test."""
    attempts: int = 0
    """The search format: a reference completion (:func:`reference_completion`) first shows ``0..attempts`` failed
    attempts (uniformly many), each a chain of true steps over all the numbers whose result misses the target,
    ended by ``;``, then the solution (``5*9=45,45-1=44;1+5=6,...=25<answer>...</answer>``). 0 (default): the
    solution only, the testbed's format. Only warm-start data reads it; the verifier grades the answer either way."""
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
        for name in ("low", "high", "max_target", "min_classes", "ood_high", "attempts"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an int, got {getattr(self, name)!r}")
        if not 1 <= self.low <= self.high < 10**MAX_LITERAL_DIGITS:
            raise ValueError(f"need 1 <= low <= high < 10**{MAX_LITERAL_DIGITS}, got low={self.low}, high={self.high}")
        if self.max_target < 1:
            raise ValueError(f"max_target must be >= 1, got {self.max_target}")
        if self.attempts < 0:
            raise ValueError(f"attempts must be >= 0, got {self.attempts}")
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
        47 for the default config (the prototype's longest completion was 47). With ``attempts``, each failed
        attempt adds at most the steps text over all ``k`` numbers, its ``k - 2`` commas and the ``;``.
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
        failed = steps[k] + (k - 2) + 1
        return root + (k - 2) + len(ANSWER_OPEN) + answer + len(ANSWER_CLOSE) + self.attempts * failed


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
