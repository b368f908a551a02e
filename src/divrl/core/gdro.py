"""Prompt-GDRO: multiplicative weights over difficulty bins when choosing a step's prompts (Panaganti, Liang, Yu, Mi &
Yu, "Group Distributionally Robust Optimization-Driven Reinforcement Learning for LLM Reasoning", arXiv 2601.19280).

The paper's *Online Difficulty Classifier* puts every prompt into a bin by a moving estimate of its pass@k (with
hysteresis so a prompt does not flicker between bins); its *Prompt-GDRO* adversary keeps a distribution ``q`` over the
bins, updated by an EMA-debiased multiplicative-weights (exponentiated-gradient) rule toward the bins with the highest
loss, and the step's prompts are drawn from ``q`` (a bin, then a prompt of that bin). The game it plays is
``min_theta max_{q in simplex} Σ_b q_b L_b(theta)``, ``L_b`` the mean loss of bin b.

Evidence: **reconstructed**. Read: the abstract and two third-party summaries (the difficulty classifier with any-of-k
correctness ``c_t(x)``, its moving average over a window ``H``, bins ``[a_{b-1}, a_b)``, hysteresis; the EMA-debiased
multiplicative weights over bins; the min-max objective). Not read: the paper's body, its algorithm box and its
hyper-parameter values; no official code was found. Every choice below is a named option whose default says
whether it follows the summaries or is ours:

- the per-problem rate is the mean of the last ``window`` observations of ``pass@k`` of the problem's group
  (``k=0``: all G rollouts, the summaries' any-of-k indicator; ``k < G`` the unbiased estimator
  ``1 - C(G-c, k)/C(G, k)``, ours); ``window=8`` is ours;
- bins: ``edges`` ``[0.25, 0.5, 0.75]`` (ours) give bins ``[0, .25), [.25, .5), [.5, .75), [.75, 1]``, bin 0 the
  hardest; a problem never seen yet is in one extra bin, index ``len(edges) + 1`` (:func:`unseen_bin`; ours);
- hysteresis (summaries; margin ``0.05`` ours): a problem leaves its bin only when its rate is more than
  ``hysteresis`` outside the bin's interval;
- a bin's loss (ours; the summaries name a loss, not which one) is the mean over the batch's problems drawn from
  it of the failure rate ``1 - (correct rollouts)/G``: the bin's *mean* (intensive) loss, so a bin's weight does not
  grow with how many of its problems were drawn ("without frequency bias");
- "EMA-debiased" is read as an Adam-style bias-corrected EMA (ours): ``m_b <- beta m_b + (1 - beta) L_b``,
  ``L^_b = m_b / (1 - beta^{n_b})`` after its ``n_b``-th observation (``ema=0.9`` ours);
- the update (exponentiated gradient, summaries): ``log w_b <- log w_b + eta L^_b`` for every bin with an estimate,
  ``q = softmax(log w)`` over the bins that hold problems; ``eta=0.1`` ours;
- sampling: ``(1 - mix) q + mix / B'`` over the ``B'`` non-empty bins (EXP3-style exploration floor, ``mix=0.1``,
  ours), without replacement: a bin by these probabilities among the bins with problems left, then a problem of it
  uniformly.

The state is plain data (dicts, lists, floats), so it pickles into a checkpoint and compares exactly. Everything is
stdlib only; no function modifies its input.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GdroOptions:
    """Options of the ``gdro`` prompt selector (``prompt_selector.options``); defaults and their sources in the module
    docstring."""

    edges: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    """Increasing bin edges in (0, 1) on the per-problem rate; bin 0 (rate below the first edge) is the hardest.
    Ours (the paper's ``a_b`` were not read)."""
    k: int = 0
    """pass@k of a group: 0 = any of its G rollouts correct (the summaries' ``c_t(x)``); ``1 <= k < G`` the unbiased
    estimator from the group's correct count (ours)."""
    window: int = 8
    """How many of a problem's latest observations its rate averages (the paper's ``H``; value ours)."""
    hysteresis: float = 0.05
    """A problem leaves its bin only when its rate is this far outside the bin's interval (paper: hysteresis;
    margin ours). 0 = plain binning."""
    eta: float = 0.1
    """Step size of the multiplicative-weights update ``log w_b += eta * L^_b`` (ours)."""
    ema: float = 0.9
    """Decay ``beta`` of the bias-corrected EMA of each bin's loss (ours)."""
    mix: float = 0.1
    """Share of the sampling distribution spread uniformly over the non-empty bins (exploration floor; ours)."""

    def __post_init__(self) -> None:
        edges = list(self.edges)
        if not edges or any(not (0 < e < 1) for e in edges) or any(a >= b for a, b in itertools.pairwise(edges)):
            raise ValueError(f"edges: must be a non-empty increasing list of numbers in (0, 1), got {self.edges!r}")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 0:
            raise ValueError(f"k: must be an int >= 0 (0 = all rollouts), got {self.k!r}")
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise ValueError(f"window: must be an int >= 1, got {self.window!r}")
        for name in ("hysteresis", "mix"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name}: must be a number in [0, 1], got {value!r}")
        if not isinstance(self.ema, (int, float)) or not 0 <= self.ema < 1:
            raise ValueError(f"ema: must be a number in [0, 1), got {self.ema!r}")
        if not isinstance(self.eta, (int, float)) or not (math.isfinite(self.eta) and self.eta >= 0):
            raise ValueError(f"eta: must be a finite number >= 0, got {self.eta!r}")


def unseen_bin(edges: Sequence[float]) -> int:
    """The index of the bin of problems not seen yet: one past the rate bins (``len(edges) + 1``)."""
    return len(edges) + 1


def num_bins(edges: Sequence[float]) -> int:
    """Rate bins plus the unseen bin."""
    return len(edges) + 2


def group_pass_at_k(correct: Sequence[bool], k: int = 0) -> float:
    """pass@k of one group of G rollouts with c correct: ``k=0`` or ``k >= G``: 1 if any is correct, else 0;
    ``1 <= k < G``: ``1 - C(G-c, k)/C(G, k)`` (Chen et al. 2021)."""
    n, c = len(correct), sum(bool(x) for x in correct)
    if n == 0:
        raise ValueError("a group needs at least one rollout")
    if k == 0 or k >= n:
        return 1.0 if c > 0 else 0.0
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def assign_bin(rate: float, edges: Sequence[float], previous: int | None = None, hysteresis: float = 0.0) -> int:
    """The rate bin of ``rate``: ``#{edges <= rate}`` (bin 0 below the first edge). A problem already in rate bin
    ``previous`` stays there while ``lo - hysteresis <= rate < hi + hysteresis`` (``lo``, ``hi`` its bin's edges,
    ``-inf`` / ``+inf`` at the ends)."""
    natural = bisect.bisect_right(list(edges), rate)
    if previous is None or previous == natural or not 0 <= previous <= len(edges):
        return natural
    lo = edges[previous - 1] if previous > 0 else -math.inf
    hi = edges[previous] if previous < len(edges) else math.inf
    return previous if lo - hysteresis <= rate < hi + hysteresis else natural


def initial_state(options: GdroOptions) -> dict[str, Any]:
    """Uniform weights, no loss estimates, no problem seen."""
    b = num_bins(options.edges)
    return {"log_weights": [0.0] * b, "ema": [0.0] * b, "updates": [0] * b, "problems": {}}


def problem_bin(state: Mapping[str, Any], problem_id: str, edges: Sequence[float]) -> int:
    """The bin a problem is in now (the unseen bin when it has no record)."""
    record = state.get("problems", {}).get(problem_id)
    return unseen_bin(edges) if record is None else int(record["bin"])


def bin_probabilities(state: Mapping[str, Any], nonempty: Sequence[bool], mix: float) -> list[float]:
    """Sampling probability of each bin: ``(1 - mix) softmax(log w) + mix / B'`` over the ``B'`` bins with problems
    (``nonempty``); 0 for the others."""
    logw = state["log_weights"]
    live = [i for i, ok in enumerate(nonempty) if ok]
    if not live:
        raise ValueError("no bin holds a problem")
    top = max(logw[i] for i in live)
    z = sum(math.exp(logw[i] - top) for i in live)
    out = [0.0] * len(logw)
    for i in live:
        out[i] = (1.0 - mix) * math.exp(logw[i] - top) / z + mix / len(live)
    return out


def select(
    problem_ids: Sequence[str], k: int, rng: random.Random, state: Mapping[str, Any], options: GdroOptions
) -> list[int]:
    """Indices of ``k`` distinct problems of the pool for this step: each draw takes a bin with the probabilities of
    :func:`bin_probabilities` renormalised over the bins with problems left (``rng.random()``), then a problem of
    that bin uniformly (``rng.randrange``); pool order within a bin is kept, so the draw is a function of
    ``(pool, state, rng)`` only. When every problem is in one bin (the first step) it is ``rng.sample``, the uniform
    selector's draw, exactly."""
    if not 1 <= k <= len(problem_ids):
        raise ValueError(f"cannot choose {k} of {len(problem_ids)} problems")
    b = num_bins(options.edges)
    members: list[list[int]] = [[] for _ in range(b)]
    for i, pid in enumerate(problem_ids):
        members[problem_bin(state, pid, options.edges)].append(i)
    live_bins = [i for i in range(b) if members[i]]
    if len(live_bins) == 1:  # one bin (e.g. the first step: every problem unseen): exactly the uniform draw
        pool = members[live_bins[0]]
        return [pool[j] for j in rng.sample(range(len(pool)), k)]
    probs = bin_probabilities(state, [bool(m) for m in members], options.mix)
    chosen = []
    for _ in range(k):
        live = [i for i in range(b) if members[i] and probs[i] > 0]
        if not live:  # a bin of probability 0 cannot be empty-handed here: probs > 0 for every non-empty bin
            live = [i for i in range(b) if members[i]]
        total = sum(probs[i] for i in live)
        u, acc, pick = rng.random() * total, 0.0, live[-1]
        for i in live:
            acc += probs[i]
            if u < acc:
                pick = i
                break
        chosen.append(members[pick].pop(rng.randrange(len(members[pick]))))
    return chosen


def update(
    state: Mapping[str, Any], problem_ids: Sequence[str], correct: Sequence[Sequence[bool]], options: GdroOptions
) -> dict[str, Any]:
    """The state after one step whose groups (one per chosen problem, in order) had these correct flags.

    1. Each group's bin is the one it was drawn from (its bin in ``state``); its loss is ``1 - c/G``.
    2. Each bin drawn from: the mean loss of its groups enters its bias-corrected EMA.
    3. ``log w_b += eta * L^_b`` for every bin with an estimate, then shifted so that ``max log w = 0``.
    4. Each problem's rate window gets its group's pass@k (two groups of one problem: in order) and its bin is
       reassigned with hysteresis.

    Returns a new state; ``state`` is not modified.
    """
    if len(problem_ids) != len(correct):
        raise ValueError(f"{len(problem_ids)} problem ids but {len(correct)} groups")
    edges = list(options.edges)
    b = num_bins(edges)
    sums, counts = [0.0] * b, [0] * b
    for pid, flags in zip(problem_ids, correct, strict=True):
        if len(flags) == 0:
            raise ValueError("a group needs at least one rollout")
        i = problem_bin(state, pid, edges)
        sums[i] += 1.0 - sum(bool(x) for x in flags) / len(flags)
        counts[i] += 1
    ema, updates = list(state["ema"]), list(state["updates"])
    for i in range(b):
        if counts[i]:
            ema[i] = options.ema * ema[i] + (1.0 - options.ema) * (sums[i] / counts[i])
            updates[i] += 1
    logw = list(state["log_weights"])
    for i in range(b):
        if updates[i]:
            logw[i] += options.eta * ema[i] / (1.0 - options.ema ** updates[i])
    top = max(logw)
    logw = [w - top for w in logw]

    problems = {pid: dict(rec, window=list(rec["window"])) for pid, rec in state["problems"].items()}
    for pid, flags in zip(problem_ids, correct, strict=True):
        rec = problems.get(pid)
        window = [] if rec is None else rec["window"]
        window = [*window, group_pass_at_k(flags, options.k)][-options.window :]
        rate = sum(window) / len(window)
        previous = None if rec is None else int(rec["bin"])
        problems[pid] = {"window": window, "rate": rate, "bin": assign_bin(rate, edges, previous, options.hysteresis)}
    return {"log_weights": logw, "ema": ema, "updates": updates, "problems": problems}


def bin_loss_estimates(state: Mapping[str, Any], options: GdroOptions) -> list[float | None]:
    """``L^_b`` of every bin (``None`` before its first observation)."""
    return [
        None if n == 0 else m / (1.0 - options.ema**n) for m, n in zip(state["ema"], state["updates"], strict=True)
    ]


__all__ = [
    "GdroOptions",
    "assign_bin",
    "bin_loss_estimates",
    "bin_probabilities",
    "group_pass_at_k",
    "initial_state",
    "num_bins",
    "problem_bin",
    "select",
    "unseen_bin",
    "update",
]
