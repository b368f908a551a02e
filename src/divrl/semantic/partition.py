"""Learned partitions for the trainer (``partition.source: learned``) and their agreement with exact partitions.

:func:`learned_partition` turns a classifier checkpoint into a callable ``texts -> labels`` for one group: every
unordered pair is decided in **one** batched classifier call (rules first, see
:class:`~divrl.semantic.classifier.EquivalenceClassifier`), then :func:`divrl.core.diversity.partition` takes the
transitive closure with union-find, as DARLING's ``partition_reward_vllm_serve.py`` does. The returned object's
:meth:`LearnedPartition.labels` does a whole step (P groups) in one call and returns the ``(P, G)`` tensor that
``GroupBatch.partition`` takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from divrl.core.diversity import partition
from divrl.semantic.classifier import EquivalenceClassifier, load_classifier
from divrl.semantic.embedder import embed_texts, load_embedder

__all__ = [
    "LearnedPartition",
    "adjusted_rand_index",
    "learned_partition",
    "measure_agreement",
]


class LearnedPartition:
    """Partition labels from a pairwise equivalence classifier. ``obj(texts)`` labels one group."""

    def __init__(self, classifier: EquivalenceClassifier) -> None:
        self.classifier = classifier

    def __call__(self, texts: Sequence[str]) -> list[int]:
        """G canonical labels (classes numbered by first appearance) for one group's texts."""
        return self.groups([texts])[0]

    def decisions(self, groups: Sequence[Sequence[str]]) -> list[Tensor]:
        """Per group a (G, G) bool matrix of pairwise decisions (diagonal True), all pairs of all groups decided
        in one batched classifier call."""
        idx_p: list[int] = []
        idx_i: list[int] = []
        idx_j: list[int] = []
        for p, texts in enumerate(groups):
            if isinstance(texts, str):
                raise ValueError(f"groups[{p}] must be a list of str, got a single str")
            g = len(texts)
            iu, ju = torch.triu_indices(g, g, offset=1)  # (2, C(G,2))
            idx_p += [p] * iu.numel()
            idx_i += iu.tolist()
            idx_j += ju.tolist()
        a = [groups[p][i] for p, i in zip(idx_p, idx_i, strict=True)]
        b = [groups[p][j] for p, j in zip(idx_p, idx_j, strict=True)]
        eq = self.classifier.equivalent(a, b) if a else torch.zeros(0, dtype=torch.bool)  # (pairs,)
        mats = [torch.eye(len(texts), dtype=torch.bool) for texts in groups]
        for k, (p, i, j) in enumerate(zip(idx_p, idx_i, idx_j, strict=True)):
            mats[p][i, j] = mats[p][j, i] = bool(eq[k])
        return mats

    def groups(self, groups: Sequence[Sequence[str]]) -> list[list[int]]:
        """Labels for each group (lists may differ in length)."""
        out: list[list[int]] = []
        for mat in self.decisions(groups):
            m: list[list[bool]] = mat.tolist()
            out.append(partition(range(len(m)), _lookup(m)))
        return out

    def labels(self, groups: Sequence[Sequence[str]]) -> Tensor:
        """(P, G) long labels for P groups of G texts (``GroupBatch.partition``)."""
        sizes = {len(texts) for texts in groups}
        if len(sizes) > 1:
            raise ValueError(f"labels: every group must have the same size G, got sizes {sorted(sizes)}")
        return torch.tensor(self.groups(groups), dtype=torch.long).reshape(len(groups), -1)  # (P, G)


def _lookup(matrix: list[list[bool]]) -> Callable[[int, int], bool]:
    def equivalent(i: int, j: int) -> bool:
        return bool(matrix[i][j])

    return equivalent


def learned_partition(
    checkpoint: str | Path | EquivalenceClassifier,
    *,
    device: str = "cpu",
    short_rule: bool | None = None,
    threshold: float | None = None,
) -> LearnedPartition:
    """A :class:`LearnedPartition` from a classifier checkpoint folder (``divrl classifier train --out``).

    Args:
        checkpoint: the folder, or an already loaded classifier.
        device: where the classifier runs.
        short_rule: override the checkpoint's ``short_rule`` (DARLING's short-answer rule) when not ``None``.
        threshold: override the checkpoint's decision threshold when not ``None``.
    """
    clf = checkpoint if isinstance(checkpoint, EquivalenceClassifier) else load_classifier(checkpoint, device=device)
    changes: dict[str, Any] = {}
    if short_rule is not None:
        changes["short_rule"] = short_rule
    if threshold is not None:
        changes["threshold"] = threshold
    if changes:
        import copy
        import dataclasses

        clf = copy.copy(clf)  # shares the weights, not the config
        clf.config = dataclasses.replace(clf.config, **changes)
    return LearnedPartition(clf)


def adjusted_rand_index(labels_a: Sequence[int], labels_b: Sequence[int]) -> float:
    """Adjusted Rand index of two partitions of the same items (Hubert & Arabie 1985), numpy.

    ``ARI = (Σ_ij C(n_ij,2) - E) / (½(Σ_i C(a_i,2) + Σ_j C(b_j,2)) - E)``, ``E = Σ_i C(a_i,2) Σ_j C(b_j,2) / C(n,2)``
    over the contingency table ``n_ij``. 1 for identical partitions, about 0 for independent ones, can be negative.
    When the denominator is 0 (both partitions all-singletons or both one class, or n < 2) it returns 1.0, the
    same convention as ``sklearn.metrics.adjusted_rand_score``.
    """
    a = np.asarray(labels_a)
    b = np.asarray(labels_b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"adjusted_rand_index: label lists must be 1-D of equal length, got {a.shape} and {b.shape}")
    n = a.size
    if n < 2:
        return 1.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.int64)  # (Ka, Kb) contingency
    np.add.at(table, (ai, bi), 1)

    def c2(x: np.ndarray) -> float:
        return float((x * (x - 1) // 2).sum())

    index = c2(table)
    sum_a, sum_b = c2(table.sum(1)), c2(table.sum(0))
    expected = sum_a * sum_b / (n * (n - 1) / 2)
    max_index = (sum_a + sum_b) / 2
    if max_index == expected:
        return 1.0
    return (index - expected) / (max_index - expected)


def measure_agreement(
    checkpoint: str | Path,
    *,
    task_name: str = "countdown",
    model: str = "builtin:countdown-tiny",
    split: str = "val",
    prompts: int = 16,
    group_size: int = 8,
    steps: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 56,
    seed: int = 0,
    short_rule: bool | None = None,
    threshold: float | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    """Learned vs exact partitions on real policy rollouts, plus the per-step cost.

    ``steps`` batches of ``prompts`` problems × ``group_size`` samples (as one RL step samples them). For each
    group: ARI of the learned labels against ``partition_by_key(task.equivalence_key)`` (the trainer's ``exact``
    source), exact-match rate of the two partitions and class counts. The batch-level (pooled) ARI treats every
    (group, class) as one cluster over all rollouts. Timings per step: ``partition_s`` (all pairs of all groups,
    embeddings included, with the embedding cache holding the previous step's texts), ``partition_cold_s`` (same
    with the cache cleared first) and ``embed_s`` (SetPO's ``embed_texts`` with no cache). The first step's
    ``partition_s`` is also cold.
    """
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return _measure(
            checkpoint,
            task_name,
            model,
            split,
            prompts,
            group_size,
            steps,
            temperature,
            max_new_tokens,
            seed,
            short_rule,
            threshold,
        )
    finally:
        torch.set_num_threads(before)


def _measure(
    checkpoint: str | Path,
    task_name: str,
    model: str,
    split: str,
    prompts: int,
    group_size: int,
    steps: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    short_rule: bool | None,
    threshold: float | None,
) -> dict[str, Any]:
    from divrl.core.diversity import partition_by_key
    from divrl.models import load_policy
    from divrl.models.builtin import resolve_model_path
    from divrl.rollout import sample
    from divrl.tasks import get_task

    task: Any = get_task(task_name)
    part = learned_partition(checkpoint, short_rule=short_rule, threshold=threshold)
    clf: Any = part.classifier
    policy, tokenizer = load_policy(resolve_model_path(model))
    all_problems = task.problems(split, n=prompts * steps, seed=seed)
    per_group: list[dict[str, Any]] = []
    pooled_exact: list[int] = []
    pooled_learned: list[int] = []
    timings: dict[str, list[float]] = {"partition_s": [], "partition_cold_s": [], "embed_s": []}
    for step in range(steps):
        problems = all_problems[step * prompts : (step + 1) * prompts]
        ro = sample(
            policy,
            tokenizer,
            [task.prompt(p) for p in problems],
            num_samples=group_size,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=task.stop,
            seed=seed + step,
        )
        groups = [ro.texts[p * group_size : (p + 1) * group_size] for p in range(len(problems))]
        exact = [
            partition_by_key([task.equivalence_key(pr, t) for t in g]) for pr, g in zip(problems, groups, strict=True)
        ]
        t0 = time.perf_counter()
        learned = part.groups(groups)  # the cache holds the earlier steps' texts, as in training
        timings["partition_s"].append(time.perf_counter() - t0)
        embedder = getattr(clf, "embedder", None)
        if embedder is not None:
            embedder.cache.data.clear()
        t0 = time.perf_counter()
        part.labels(groups)
        timings["partition_cold_s"].append(time.perf_counter() - t0)
        fresh = load_embedder(getattr(embedder, "name", None), cache_size=0)
        t0 = time.perf_counter()
        embed_texts(groups, fresh)
        timings["embed_s"].append(time.perf_counter() - t0)
        for p, (e, lab) in enumerate(zip(exact, learned, strict=True)):
            offset = len(pooled_exact)
            pooled_exact += [offset + x for x in e]
            pooled_learned += [offset + x for x in lab]
            per_group.append(
                {
                    "ari": adjusted_rand_index(e, lab),
                    "same": e == lab,
                    "exact_classes": len(set(e)),
                    "learned_classes": len(set(lab)),
                    "distinct_texts": len(set(groups[p])),
                }
            )
    n = len(per_group)
    return {
        "checkpoint": str(checkpoint),
        "short_rule": clf.config.short_rule,
        "threshold": clf.config.threshold,
        "torch_threads": torch.get_num_threads(),
        "groups": n,
        "group_size": group_size,
        "prompts_per_step": prompts,
        "mean_ari": sum(g["ari"] for g in per_group) / n,
        "pooled_ari": adjusted_rand_index(pooled_exact, pooled_learned),
        "identical_partition_rate": sum(g["same"] for g in per_group) / n,
        "mean_exact_classes": sum(g["exact_classes"] for g in per_group) / n,
        "mean_learned_classes": sum(g["learned_classes"] for g in per_group) / n,
        "mean_distinct_texts": sum(g["distinct_texts"] for g in per_group) / n,
        **{k: sum(v) / len(v) for k, v in timings.items()},
        "timings_per_step": timings,
    }
