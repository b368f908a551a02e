"""``outcome_ucb``: outcome-based exploration, historical variant (Song, Kempe & Munos, "Outcome-based Exploration
for LLM Reasoning", arXiv 2509.06941, the "historical exploration" algorithm). A stateful estimator.

Each rollout's reward gets a UCB-style bonus that is large for a final answer rarely seen *for this problem over
training* and shrinks as that answer recurs; the shaped rewards then go through a base estimator (GRPO by
default)::

    N(q, a)   = times answer a was produced for problem q: past steps (the history) + this step (count_current)
    b(q, a)   = min(1, 1 / sqrt(N(q, a)))                      # 1 for an answer never counted
    b'_i      = b(q, a_i)            baseline="none"   (UCB)
              = b_i - mean_g b       baseline="mean"   (the variant with a batch-mean baseline)
              = b_i - b0             baseline="constant" (UCB-Con, constant baseline b0)
    r~_i      = r_i + c * 1[gate_i] * b'_i
    A         = base(r~)                                        # grpo: (r~ - mean) / (std + eps)
    history   : N(q, .) += this step's answer counts

Evidence: **2nd-hand / reconstructed**. The abstract (read) confirms UCB-style bonuses on rarely observed final
answers over the training history, with variants that correct the bonus with a baseline (named ``UCB``,
``UCB-Con`` and a mean-baseline variant by secondary summaries). The formula above is the shared research notes'
reconstruction from those summaries (related-methods.md §6), not read in the paper body, and no official code was
found; every choice is therefore an option whose default says where it comes from:

- ``c`` (1.0, ours: the reconstruction writes ``c_h`` without a value);
- ``baseline`` (``"none"``: the plain UCB form); with a base that centres each group (``grpo``, ``dr_grpo``,
  ``rloo``) ``"mean"`` and ``"constant"`` change nothing (a per-group constant cancels);
- ``count_current`` (True: the reconstruction counts "the training history, incl. the current group");
- ``gate`` (``"all"``: the reconstruction shapes every rollout; ``"correct"``/``"incorrect"`` restrict the bonus);
- ``missing`` (``"skip"``, ours: a rollout without an extracted answer has no outcome, gets no bonus and is not
  counted; ``"count"`` treats "no answer" as one more outcome);
- ``base`` (``"grpo"``: "then A_i from r~ with the usual GRPO normalisation").

The answer is ``GroupBatch.answers`` as the task extracts it (Countdown: the canonical form of the expression, so
an "outcome" is a solution class; maths: the normalised final answer).

Unscorable rollouts (NaN reward) have no verified outcome: no bonus, not counted in the history, and the base
takes its statistics over the scored ones; so a group of G with c scored gets what the group of those c alone
gets, and the history grows by the same counts. Two groups of one problem in a batch share this step's counts.

State: ``GroupBatch.history`` maps a problem id to its record, ``{answer: count}`` (the no-answer outcome of
``missing="count"`` under :data:`NO_ANSWER`); the estimator returns the new records of the batch's problems
(a problem none of whose rollouts counted gets no record). Plain ``str -> int`` dicts: they pickle into a
checkpoint's ``trainer_state.pt`` and compare exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from divrl.core.advantages import (
    _call,
    _mean,
    _scored,
    advantage_is_stateful,
    register_advantage,
    with_base_needs,
)
from divrl.core.batch import GroupBatch
from divrl.core.needs import Needs

__all__ = ["NO_ANSWER", "outcome_ucb", "outcome_ucb_bonus", "outcome_ucb_needs"]

NO_ANSWER = "\x00no answer"
"""History key of the "no extracted answer" outcome (``missing="count"``); a NUL cannot come out of an extractor."""

Record = dict[str, int]


def outcome_ucb_needs(options: Mapping[str, Any]) -> Needs:
    """What ``outcome_ucb`` reads: ``answers``, ``problem_ids`` and ``history`` (a stateful estimator),
    ``correct`` with a ``gate``, plus its base estimator's needs."""
    reads = {"answers", "problem_ids", "history"}
    if options.get("gate", "all") != "all":
        reads.add("correct")
    return with_base_needs(Needs.of(reads), "outcome_ucb", options)


def _outcomes(batch: GroupBatch, missing: str) -> list[list[str | None]]:
    """Each rollout's outcome key, or None where it takes no part (unscorable; no answer with ``missing="skip"``)."""
    assert batch.answers is not None
    scored = batch.scored.tolist()  # (P, G) bools
    out: list[list[str | None]] = []
    for answers, ok in zip(batch.answers, scored, strict=True):
        row: list[str | None] = []
        for answer, is_scored in zip(answers, ok, strict=True):
            if not is_scored or (answer is None and missing == "skip"):
                row.append(None)
            else:
                row.append(NO_ANSWER if answer is None else answer)
        out.append(row)
    return out


def _record(history: Mapping[str, Any], pid: str) -> Mapping[str, int]:
    """The history record of problem ``pid`` (empty when it has none), checked."""
    record = history.get(pid, {})
    if not isinstance(record, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in record.items()
    ):
        raise ValueError(f"outcome_ucb: GroupBatch.history[{pid[:60]!r}] must map answers (str) to counts (int >= 0)")
    return record


def outcome_ucb_bonus(
    batch: GroupBatch,
    *,
    baseline: Literal["none", "mean", "constant"] = "none",
    b0: float = 0.0,
    count_current: bool = True,
    gate: Literal["all", "correct", "incorrect"] = "all",
    missing: Literal["skip", "count"] = "skip",
) -> tuple[Tensor, dict[str, Record]]:
    """The bonus ``1[gate] * b'`` (P, G) before the coefficient ``c``, and the updated history records of the
    batch's problems (see the module docstring; options as in :func:`outcome_ucb`). 0 at unscorable rollouts."""
    if baseline not in ("none", "mean", "constant"):
        raise ValueError(f"outcome_ucb: baseline must be 'none', 'mean' or 'constant', got {baseline!r}")
    if gate not in ("all", "correct", "incorrect"):
        raise ValueError(f"outcome_ucb: gate must be 'all', 'correct' or 'incorrect', got {gate!r}")
    if missing not in ("skip", "count"):
        raise ValueError(f"outcome_ucb: missing must be 'skip' or 'count', got {missing!r}")
    for field, what in (
        ("answers", "P lists of G extracted final answers"),
        ("problem_ids", "P problem ids"),
        ("history", "the per-problem answer counts from before this step ({} at the first step)"),
    ):
        if getattr(batch, field) is None:
            raise ValueError(f"outcome_ucb needs GroupBatch.{field}: {what}")
    if gate != "all" and batch.correct is None:
        raise ValueError(f"outcome_ucb: gate={gate!r} needs GroupBatch.correct (P, G) bool")
    assert batch.problem_ids is not None and batch.history is not None
    outcomes = _outcomes(batch, missing)
    now: dict[str, Record] = {}  # this step's counts per problem (every group of the problem pooled)
    for pid, row in zip(batch.problem_ids, outcomes, strict=True):
        counts = now.setdefault(pid, {})
        for outcome in row:
            if outcome is not None:
                counts[outcome] = counts.get(outcome, 0) + 1
    past = {pid: _record(batch.history, pid) for pid in now}
    values = []
    for pid, row in zip(batch.problem_ids, outcomes, strict=True):
        values.append(
            [0.0 if o is None else _ucb(past[pid].get(o, 0) + (now[pid][o] if count_current else 0)) for o in row]
        )
    r = batch.rewards  # (P, G)
    bonus = torch.tensor(values, dtype=r.dtype, device=r.device).view_as(r)  # (P, G)
    applies = torch.tensor([[o is not None for o in row] for row in outcomes], device=r.device).view_as(r)  # (P, G)
    if gate != "all":
        assert batch.correct is not None
        correct = batch.correct.to(r.device) & batch.scored  # (P, G)  an unscorable rollout is never correct
        applies = applies & (correct if gate == "correct" else ~correct)  # (P, G)
    bonus = bonus * applies.to(bonus.dtype)  # (P, G)
    if baseline == "mean":
        s = _scored(batch)
        bonus = bonus - _mean(bonus, s)  # (P, G)  the group mean over its scored rollouts
        bonus = bonus if s is None else torch.where(s, bonus, torch.zeros_like(bonus))  # (P, G)
    elif baseline == "constant":
        bonus = (bonus - b0) * applies.to(bonus.dtype)  # (P, G)
    updates = {}
    for pid, counts in now.items():
        if counts:
            merged = dict(past[pid])
            for outcome, n in counts.items():
                merged[outcome] = merged.get(outcome, 0) + n
            updates[pid] = dict(sorted(merged.items()))
    return bonus, updates


def _ucb(n: int) -> float:
    """``min(1, 1/sqrt(n))``; 1 for an answer never counted (n = 0, only with ``count_current=False``)."""
    return 1.0 if n <= 1 else 1.0 / math.sqrt(n)


@register_advantage("outcome_ucb", handles_unscored=True, stateful=True, needs=outcome_ucb_needs)
def outcome_ucb(
    batch: GroupBatch,
    *,
    c: float = 1.0,
    baseline: Literal["none", "mean", "constant"] = "none",
    b0: float = 0.0,
    count_current: bool = True,
    gate: Literal["all", "correct", "incorrect"] = "all",
    missing: Literal["skip", "count"] = "skip",
    base: str = "grpo",
    base_options: dict[str, Any] | None = None,
) -> tuple[Tensor, dict[str, Record]]:
    """Outcome-based exploration, historical variant (Song, Kempe & Munos, arXiv 2509.06941): GRPO (or ``base``)
    on rewards plus a UCB bonus on answers rarely seen for the problem across training. **2nd-hand /
    reconstructed** (see the module docstring for the formula and where each default comes from).

    A stateful estimator: reads ``batch.history`` (answer counts per problem from before this step, keyed by
    ``batch.problem_ids``) and returns ``(advantages (P, G), updates)`` with the new records of the batch's
    problems; :func:`divrl.core.advantages.compute_advantages_and_state` carries the state, ``divrl train``
    checkpoints it.

    Args:
        c: bonus coefficient (``0`` gives the base estimator exactly).
        baseline: ``"none"`` (UCB), ``"mean"`` (minus the group mean of the bonus over the scored rollouts) or
            ``"constant"`` (minus ``b0`` where the bonus applies, UCB-Con).
        b0: the constant of ``baseline="constant"``.
        count_current: count this step's answers into ``N`` before the bonus (else only past steps).
        gate: which rollouts get the bonus: ``"all"``, ``"correct"`` or ``"incorrect"`` ones.
        missing: a rollout without an answer: ``"skip"`` (no bonus, not counted) or ``"count"`` (one outcome).
        base, base_options: the estimator applied to the shaped rewards (any stateless registered one).
    """
    if base == "outcome_ucb" or advantage_is_stateful(base):
        raise ValueError(f"outcome_ucb: base must be a stateless estimator, got {base!r}")
    bonus, updates = outcome_ucb_bonus(
        batch, baseline=baseline, b0=b0, count_current=count_current, gate=gate, missing=missing
    )  # (P, G)
    shaped = batch.rewards + c * bonus  # (P, G)  NaN stays NaN at unscorable rollouts
    adv = _call(base, batch.replace(rewards=shaped), dict(base_options or {}))  # (P, G)
    return adv, updates
