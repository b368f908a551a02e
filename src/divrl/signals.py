"""Group signals: from scored rollouts to the ``GroupBatch`` an estimator reads, in one place.

Sits between :mod:`divrl.tasks` / :mod:`divrl.semantic` (verdicts, partitions, embeddings) and :mod:`divrl.core`
(estimators, losses). The trainer (:mod:`divrl.trainer.rl`), the TRL subclass (:mod:`divrl.integrations.trl`) and
the verl adapter (:mod:`divrl.integrations.verl`) all build their groups here and read the same declared needs
(:mod:`divrl.core.needs`); each keeps only its own gathering across processes and bucketing.

- :func:`score`: verdicts of a step's P×G rollouts (the task's batch verifier when it has one) → :class:`Scored`.
- :func:`partition_labels`: (P, G) labels from the configured partition source (exact, answer, text, learned).
- :func:`check_provided`: refuse an estimator that needs a field a setting cannot provide, in one line naming it.
- :func:`check_embedder`: refuse an embedder that neither the estimator nor a loss term reads.
- :func:`labels_from_keys`: (P, G) partition labels from per-rollout keys (equal key = one class, ``None`` = a
  class of its own), optionally among each group's correct rollouts only.
- :func:`embed_groups`: (P, G, D) embeddings of the rows the declared needs read (:attr:`Needs.embed_rows`).
- :func:`group_batch`: the ``GroupBatch`` itself, with exactly the fields the needs ask for (and those given).
- :func:`signal_size`: how far an estimator's advantages lie from GRPO's on the same groups (``signal/...``
  metrics, logged by the trainer and both adapters).

The design is ours (no paper); see docs/architecture.md, "Signals and declared needs".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from divrl.core import metrics
from divrl.core.advantages import advantage_needs
from divrl.core.batch import GroupBatch
from divrl.core.diversity import partition_by_key
from divrl.core.needs import Needs
from divrl.tasks.base import Task
from divrl.tasks.verify import reason_category, safe_key, verify_all

__all__ = [
    "Scored",
    "check_embedder",
    "check_provided",
    "distinct_correct_classes",
    "embed_groups",
    "group_batch",
    "labels_from_keys",
    "partition_labels",
    "score",
    "select_groups",
    "signal_size",
]


def check_provided(
    advantage: str, options: Mapping[str, Any] | None, provided: Sequence[str], hints: Mapping[str, str], where: str
) -> Needs:
    """The needs of estimator ``advantage`` with ``options``; raises ``ValueError`` naming the first required field
    not in ``provided``, with ``hints[field]`` (how to provide it in ``where``) when there is one."""
    needs = advantage_needs(advantage, options)
    for field in needs.missing(provided):
        hint = hints.get(field, f"{where} does not provide it")
        raise ValueError(f"advantage {advantage!r} needs GroupBatch.{field}: {hint}")
    return needs


def check_embedder(needs: Needs, field: str, fix: str) -> None:
    """Refuse an embedder (set in ``field``) that nothing reads: ``needs`` is the union of the estimator's and every
    loss term's needs (:class:`~divrl.core.needs.Needs`, ``|``). An embedder never changes a kernel by itself
    (``setpo``, ``dra`` and ``dsdr`` default to ``kernel="ngram"``), so one that no entry reads would only cost
    time; raises ``ValueError`` naming ``field`` and ending with ``fix`` (how to ask for the embeddings)."""
    if not needs.uses("embeddings"):
        raise ValueError(
            f"{field} is set, but neither the estimator nor a loss term reads GroupBatch.embeddings (setpo, dra and "
            f"dsdr read them only with kernel 'cosine'; their default is 'ngram'): {fix}"
        )


def labels_from_keys(
    keys: Sequence[Sequence[Hashable | None]], keep: Sequence[Sequence[bool]] | None = None
) -> Tensor:
    """(P, G) int labels: within each group, equal keys share a class and ``None`` is a class of its own
    (:func:`~divrl.core.diversity.partition_by_key`). ``keep``: classes are formed among the kept rollouts only;
    the others are classes of their own. Labels are numbered canonically (first appearance)."""
    rows = []
    for p, group in enumerate(keys):
        if keep is None:
            rows.append(partition_by_key(list(group)))
        else:
            kept = [("key", k) if c and k is not None else None for k, c in zip(group, keep[p], strict=True)]
            rows.append(partition_by_key(kept))
    return torch.tensor(rows, dtype=torch.long)  # (P, G)


def embed_groups(texts: list[list[str]], embedder: Any, rows: str, correct: Tensor | None) -> Tensor:
    """(P, G, D) embeddings of ``texts``, of the ``rows`` the declared needs read (``needs.embed_rows`` of the union
    of the estimator's and the loss terms' needs): ``"all"``, or ``"correct"``: only the correct rollouts are
    embedded and the others are zero vectors, which no entry declared to read correct rows only ever reads."""
    from divrl.semantic.embedder import embed_texts

    if rows not in ("all", "correct"):
        raise ValueError(f"embed_groups: rows must be 'all' or 'correct', got {rows!r}")
    if rows == "correct" and correct is None:
        raise ValueError("embed_groups: rows 'correct' needs the correctness of every rollout")
    only = correct if rows == "correct" else None  # (P, G) bool
    return embed_texts(texts, embedder, only)  # (P, G, D)


def group_batch(
    rewards: Tensor,
    *,
    needs: Needs | None = None,
    correct: Tensor | None = None,
    texts: list[list[str]] | None = None,
    answers: list[list[str | None]] | None = None,
    partition: Tensor | None = None,
    embeddings: Tensor | None = None,
    old_logprobs: Tensor | None = None,
    mask: Tensor | None = None,
    hidden: Tensor | None = None,
    problem_ids: list[str] | None = None,
    self_certainty: Tensor | None = None,
    token_logits: Tensor | None = None,
    vocab_mean_logprobs: Tensor | None = None,
    old_vocab_mean_logprobs: Tensor | None = None,
    log_z: Tensor | None = None,
) -> GroupBatch:
    """The ``GroupBatch`` (P, G) of an advantage computation from the gathered signals.

    With ``needs``, a field the needs require but that is None raises ``ValueError`` naming it (a caller bug or a
    setting that cannot provide it; :func:`check_provided` refuses the setting up front). ``history`` is not
    checked here: :func:`divrl.core.advantages.compute_advantages_and_state` sets it from the state the caller
    carries."""
    batch = GroupBatch(
        rewards=rewards,
        correct=correct,
        texts=texts,
        answers=answers,
        partition=partition,
        embeddings=embeddings,
        old_logprobs=old_logprobs,
        mask=mask,
        hidden=hidden,
        problem_ids=problem_ids,
        self_certainty=self_certainty,
        token_logits=token_logits,
        vocab_mean_logprobs=vocab_mean_logprobs,
        old_vocab_mean_logprobs=old_vocab_mean_logprobs,
        log_z=log_z,
    )
    if needs is not None:
        present = [f for f in needs.reads if getattr(batch, f) is not None] + ["history"]
        missing = needs.missing(present)
        if missing:
            raise ValueError(f"the group signals lack GroupBatch.{missing[0]}, which the estimator declares it reads")
    return batch


@dataclass
class Scored:
    """Verifier output for a step's P×G rollouts (row-major: group p is rows p*G .. p*G+G-1)."""

    rewards: torch.Tensor  # (P, G) float, NaN = unscorable
    correct: torch.Tensor  # (P, G) bool
    answers: list[list[str | None]]
    keys: list[list[str | None]]  # exact equivalence key of each solution (None = none)
    reasons: dict[str, int]  # count per reason_category; logged as reasons/<category> (spaces as _)
    group_reasons: list[dict[str, int]] = dataclasses.field(default_factory=list)  # the same counts per group (P)


def select_groups(parts: Sequence[Scored], groups: Sequence[tuple[int, int]]) -> Scored:
    """The groups ``(part, group)`` of several :class:`Scored` (from :func:`score`), in that order, as one: what
    :func:`score` returns for those groups' problems and texts, without verifying them again (e.g. the groups that
    dynamic sampling keeps from its generation rounds)."""
    if not groups:
        raise ValueError("select_groups: no groups to keep")
    reasons: dict[str, int] = {}
    group_reasons = [parts[i].group_reasons[p] for i, p in groups]
    for counts in group_reasons:
        for kind, n in counts.items():
            reasons[kind] = reasons.get(kind, 0) + n
    return Scored(
        rewards=torch.stack([parts[i].rewards[p] for i, p in groups]),  # (P, G)
        correct=torch.stack([parts[i].correct[p] for i, p in groups]),  # (P, G)
        answers=[parts[i].answers[p] for i, p in groups],
        keys=[parts[i].keys[p] for i, p in groups],
        reasons=reasons,
        group_reasons=group_reasons,
    )


def synthetic_group(
    g: int,
    *,
    partition: bool = False,
    embeddings: bool = False,
    token_level: bool = False,
    t: int = 3,
    hidden: bool = False,
) -> GroupBatch:
    """One synthetic group (1 prompt, G rollouts) with the fields a real step provides, for dry-running an estimator
    on its options before any model is loaded (``divrl train``'s ``check_methods``, ``DiversityGRPOTrainer``'s
    constructor): alternating 0/1 rewards, three answer classes, distinct texts, a problem id with an empty history
    (a stateful estimator's first step) and, as asked, partition labels, embeddings, old log-probs over ``t``
    tokens (with ``token_level``, also UCAS's self-certainty and raw token logits and the old vocabulary means) and
    mean hidden states."""
    rewards = torch.tensor([[float(i % 2 == 0) for i in range(g)]])  # (1, G)
    return GroupBatch(
        rewards=rewards,
        correct=rewards.bool(),
        texts=[[f"{i % 3}+{i}" for i in range(g)]],
        answers=[[str(i % 3) for i in range(g)]],
        partition=torch.tensor([[i % 3 for i in range(g)]]) if partition else None,  # (1, G)
        embeddings=torch.eye(g, g + 1)[None] if embeddings else None,  # (1, G, D)
        old_logprobs=-torch.linspace(0.1, 2.0, g * t).view(1, g, t) if token_level else None,  # (1, G, T)
        mask=torch.ones(1, g, t) if token_level else None,  # (1, G, T)
        hidden=torch.eye(g, g + 2)[None] if hidden else None,  # (1, G, H)
        self_certainty=torch.linspace(1.0, 3.0, g * t).view(1, g, t) if token_level else None,  # (1, G, T)
        token_logits=torch.linspace(-1.0, 4.0, g * t).view(1, g, t) if token_level else None,  # (1, G, T)
        old_vocab_mean_logprobs=torch.full((1, g, t), -3.1) if token_level else None,  # (1, G, T)
        problem_ids=["synthetic"],
        history={},
    )


def synthetic_loss_batch(
    rewards: Tensor, t: int = 3, texts: list[list[str]] | None = None, embeddings: Tensor | None = None
) -> GroupBatch:
    """Token-level inputs of a loss term for the synthetic group of :func:`synthetic_group` (rewards ``(1, G)``):
    log-probs with a gradient, old and reference log-probs, mask, entropies, the old pass's self-certainty and raw
    token logits, the current and old vocabulary means, all ``(1, G, t)``, mean hidden states ``(1, G, H)``, a
    learned ``log_z`` ``(1, G)`` with a gradient, and the group's ``texts`` and ``embeddings`` when given (a loss term
    that reads them, e.g. ``dsdr_entropy``)."""
    g = rewards.shape[1]
    lp = torch.full((1, g, t), -0.7, requires_grad=True)  # (1, G, T)
    return GroupBatch(
        rewards=rewards,
        correct=rewards.bool(),
        texts=texts,
        embeddings=embeddings,
        logprobs=lp,
        old_logprobs=lp.detach(),
        ref_logprobs=lp.detach() - 0.1,
        mask=torch.ones(1, g, t),
        entropies=torch.full((1, g, t), 0.5),
        self_certainty=torch.linspace(1.0, 3.0, g * t).view(1, g, t),  # (1, G, T)
        token_logits=torch.linspace(-1.0, 4.0, g * t).view(1, g, t),  # (1, G, T)
        hidden=torch.eye(g, g + 2)[None],  # (1, G, H)
        vocab_mean_logprobs=torch.full((1, g, t), -3.0),
        old_vocab_mean_logprobs=torch.full((1, g, t), -3.1),
        log_z=torch.zeros(1, g, requires_grad=True),
    )


def score(task: Task, problems: list[Any], texts: list[str], group_size: int) -> Scored:
    """Verify every rollout and collect rewards, correctness, answers and equivalence keys.

    The verdicts come from :func:`verify_all` (the task's batch verifier when it has one). A verdict that carries
    its equivalence key (``keyed``) supplies it; otherwise the task is asked (:func:`safe_key`). An unscorable
    rollout (``reward=None``, or a verifier that raised) gets reward NaN, which
    :func:`divrl.core.advantages.compute_advantages` leaves out of its group's statistics (advantage 0), and
    ``correct=False`` whatever the verdict said. ``reasons`` counts the verdicts per :func:`reason_category`."""
    p_count = len(problems)
    rewards = torch.zeros(p_count, group_size)  # (P, G)
    correct = torch.zeros(p_count, group_size, dtype=torch.bool)  # (P, G)
    answers: list[list[str | None]] = []
    keys: list[list[str | None]] = []
    reasons: dict[str, int] = {}
    group_reasons: list[dict[str, int]] = []
    verdicts = verify_all(task, [problem for problem in problems for _ in range(group_size)], texts)
    for p, problem in enumerate(problems):
        row_answers, row_keys = [], []
        row_reasons: dict[str, int] = {}
        for g in range(group_size):
            text = texts[p * group_size + g]
            verdict = verdicts[p * group_size + g]
            rewards[p, g] = math.nan if verdict.reward is None else float(verdict.reward)
            correct[p, g] = bool(verdict.correct) and verdict.reward is not None  # unscorable is never correct
            row_answers.append(verdict.answer)
            row_keys.append(verdict.key if verdict.keyed else safe_key(task, problem, text))
            reason = reason_category(verdict.reason)
            reasons[reason] = reasons.get(reason, 0) + 1
            row_reasons[reason] = row_reasons.get(reason, 0) + 1
        answers.append(row_answers)
        keys.append(row_keys)
        group_reasons.append(row_reasons)
    return Scored(rewards, correct, answers, keys, reasons, group_reasons)


def partition_labels(
    source: str, scored: Scored, texts: list[list[str]], learned: Any = None, members: str = "all"
) -> tuple[torch.Tensor | None, int]:
    """(P, G) class labels from the configured partition source (or None), and how many groups fell back to
    singleton classes because the learned classifier failed on them. ``members`` (``partition.members``): which
    rollouts the classes are formed among: ``"all"``, or ``"correct"`` (each group's correct rollouts only; an
    incorrect or unscorable rollout is a class of its own, and nothing of it reaches the learned classifier)."""
    if members not in ("all", "correct"):
        raise ValueError(f"partition.members must be 'all' or 'correct', got {members!r}")
    if source == "none":
        return None, 0
    keep = scored.correct.tolist() if members == "correct" else None  # (P, G) bools
    keys: dict[str, Sequence[Sequence[Hashable | None]]] = {
        "exact": scored.keys,
        "answer": scored.answers,
        "text": texts,
    }
    if source in keys:
        return labels_from_keys(keys[source], keep), 0
    if source != "learned":
        raise ValueError(f"partition.source {source!r}: known sources are none, exact, answer, text, learned")
    rows = keep if keep is not None else [[True] * len(t) for t in texts]
    chosen = [[x for x, c in zip(group, row, strict=True) if c] for group, row in zip(texts, rows, strict=True)]
    failures = 0
    try:
        subsets = learned.groups(chosen)
    except Exception:
        subsets, failures = [list(range(len(t))) for t in chosen], len(texts)
    # kept rollouts keep their subset class (its label as the key); the others are classes of their own
    class_keys = [[next(it) if c else None for c in row] for row, it in zip(rows, map(iter, subsets), strict=True)]
    return labels_from_keys(class_keys, rows), failures  # (P, G)


def distinct_correct_classes(scored: Scored) -> float:
    """Mean over groups of the number of distinct solution classes among correct rollouts
    (:func:`divrl.core.metrics.distinct_correct_classes`: keys of correct rollouts, a ``None`` key left out)."""
    return metrics.distinct_correct_classes(scored.keys, scored.correct)


def signal_size(advantages: Tensor, batch: GroupBatch) -> dict[str, float]:
    """How much a method's own signal moves its advantages away from plain GRPO's on the same groups.

    ``d = A - A_grpo`` over the scored rollouts, ``A_grpo`` the ``grpo`` estimator with its defaults on ``batch``
    (group mean and unbiased std over the scored rollouts). Returns ``signal/rms_ratio`` = RMS(d) / RMS(A_grpo) (0 for
    GRPO itself, 0 when no group has a reward spread), ``signal/groups_changed`` = the share of groups in which some
    ``|d| > 1e-6``, ``signal/corr`` = the cosine between ``A`` and ``A_grpo`` (1 when the method only rescales
    GRPO's advantages; ``nan`` when either is all zero), ``signal/flat_groups`` = the share of groups whose scored
    rewards do not vary (fewer than two scored, or all equal: GRPO gives them 0) and ``signal/acts_in_flat`` = the
    share of those in which the method's advantages are not all 0 (0 when there is none): where a method acts on
    groups with no reward signal at all, e.g. the ungated outcome methods on all-wrong groups (docs/results.md).
    The definition is ours (no paper): it is the "size relative to the advantage" issue 12 asks for, in one form for every estimator, whatever its own signal is (a multiplier, an
    added bonus, a reshaped reward). A method that acts through a loss term (e.g. ``positive_entropy``) leaves
    ``A = A_grpo`` and reports 0; its term's size is in the loss metrics. A token-level estimator's ``(P, G, T)``
    advantages are compared token by token with GRPO's broadcast over the tokens, over the valid tokens
    (``batch.mask``) of the scored rollouts.
    """
    from divrl.core.advantages import compute_advantages

    base = compute_advantages("grpo", batch)  # (P, G)
    scored = ~torch.isnan(batch.rewards)  # (P, G)
    if advantages.dim() == 3:  # token-level (ucas): GRPO's value on every valid token
        if batch.mask is None:
            raise ValueError("signal_size: token-level advantages (P, G, T) need GroupBatch.mask")
        scored = scored[..., None] & batch.mask.to(scored.device).bool()  # (P, G, T)
        base = base[..., None].expand(scored.shape)  # (P, G, T)
    a = torch.where(scored, advantages.to(base.dtype), torch.zeros_like(base))  # (P, G) or (P, G, T)
    b = torch.where(scored, base, torch.zeros_like(base))  # (P, G) or (P, G, T)
    d = (a - b).flatten(1)  # (P, G) or (P, G * T)
    count = max(int(scored.sum()), 1)
    rms_b = math.sqrt(float((b * b).sum()) / count)
    rms_d = math.sqrt(float((d * d).sum()) / count)
    norm = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    r = batch.rewards  # (P, G)  NaN = unscored
    top = torch.where(torch.isnan(r), torch.full_like(r, -math.inf), r).amax(-1)  # (P,)
    low = torch.where(torch.isnan(r), torch.full_like(r, math.inf), r).amin(-1)  # (P,)
    flat = ~(top > low)  # (P,)  no spread among the scored rollouts (fewer than two scored included)
    acts = (a.flatten(1).abs() > 1e-6).any(-1)  # (P,)
    flat_count = int(flat.sum())
    return {
        "signal/rms_ratio": rms_d / rms_b if rms_b > 0 else 0.0,
        "signal/groups_changed": float((d.abs() > 1e-6).any(-1).float().mean()),
        "signal/corr": float((a * b).sum()) / norm if norm > 0 else math.nan,
        "signal/flat_groups": flat_count / max(len(flat), 1),
        "signal/acts_in_flat": float((acts & flat).sum()) / flat_count if flat_count else 0.0,
    }
