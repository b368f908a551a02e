"""The translation: verl's flat batch of rows and uids <-> divrl.core's ``(P, G)`` groups.

Holds :func:`group_rows` (rows sharing a uid, in any order and of any size), the size buckets (groups of equal size
are computed together, each size on its own, so unequal sizes are exact), :func:`group_advantages` (one
``GroupBatch`` per size, :func:`divrl.core.advantages.compute_advantages`, values scattered back to their rows, and
the per-step stats) and :func:`token_advantages` (verl's estimator contract: token rewards in, ``(bs, T)``
advantages out). Needs only torch and numpy: no verl.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from divrl.core.advantages import compute_advantages
from divrl.core.diversity import labels_tensor
from divrl.core.metrics import correct_classes
from divrl.integrations.verl.config import embedding_rows
from divrl.signals import embed_groups, group_batch, labels_from_keys, signal_size


def group_rows(index: Sequence[Hashable] | np.ndarray) -> list[np.ndarray]:
    """The row indices of each group: rows sharing a uid, in batch order.

    Groups are ordered by first appearance, so any interleaving of verl's batch is accepted. Returns one int64
    array per group; sizes may differ.
    """
    ids = np.asarray(index, dtype=object) if not isinstance(index, np.ndarray) else index
    if ids.ndim != 1:
        raise ValueError(f"index (the per-row uid) must be one-dimensional, got shape {ids.shape}")
    if ids.size == 0:
        raise ValueError("index (the per-row uid) is empty: verl passed an empty batch")
    try:
        _, first, inverse, counts = np.unique(ids, return_index=True, return_inverse=True, return_counts=True)
    except TypeError as exc:
        raise ValueError(f"index (the per-row uid) values must be mutually comparable (e.g. all str): {exc}") from exc
    order = np.argsort(first, kind="stable")  # (U,) group ids by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    row_group = rank[inverse.reshape(-1)]  # (bs,) group number of each row
    rows = np.argsort(row_group, kind="stable")  # (bs,) rows grouped, batch order within a group
    return np.split(rows, np.cumsum(counts[order])[:-1])


def _buckets(groups: list[np.ndarray]) -> list[np.ndarray]:
    """Groups stacked by size: one (P_g, g) row-index matrix per distinct size g, ascending."""
    by_size: dict[int, list[np.ndarray]] = {}
    for rows in groups:
        by_size.setdefault(int(rows.size), []).append(rows)
    return [np.stack(by_size[g]) for g in sorted(by_size)]


PartitionFn = Callable[[list[str]], Sequence[int]]
"""``fn(texts_of_one_group) -> labels``: G class labels (equal label = same class)."""


def _uses_batch_scale(options: Mapping[str, Any]) -> bool:
    base = options.get("base_options") or {}
    return options.get("scale") == "batch" or (isinstance(base, Mapping) and base.get("scale") == "batch")


def group_advantages(
    name: str,
    scores: Tensor,
    index: Sequence[Hashable] | np.ndarray,
    *,
    options: Mapping[str, Any] | None = None,
    correct: Tensor | np.ndarray | None = None,
    texts: Sequence[str] | None = None,
    keys: Sequence[Hashable | None] | None = None,
    partition_fn: PartitionFn | None = None,
    embedder: Any = None,
) -> tuple[Tensor, dict[str, float]]:
    """``(bs,)`` advantages of divrl estimator ``name`` for flat per-row ``scores`` grouped by ``index``.

    Args:
        name: a divrl.core estimator (``grpo``, ``darling``, ...).
        scores: (bs,) outcome reward per row; NaN marks an unscorable row (advantage 0, out of the statistics).
        index: (bs,) uid per row; rows with equal uids form a group, in any order, of any size.
        options: the estimator's keyword options.
        correct: (bs,) bool correctness (``GroupBatch.correct``).
        texts: bs texts (``GroupBatch.texts``; a partition function's input).
        keys: bs partition keys: equal keys within a group share a class (``GroupBatch.partition``).
        partition_fn: ``fn(group_texts) -> labels``, used when ``keys`` is None and ``texts`` is given.
        embedder: a :class:`divrl.semantic.Embedder` (or spec) for ``GroupBatch.embeddings`` (a cosine kernel);
            needs ``texts``, and an estimator that reads embeddings (else ValueError). It embeds the rows the
            estimator's declared needs read (:func:`divrl.integrations.verl.config.embedding_rows`): only the
            correct ones (then ``correct`` is needed) for ``setpo`` with ``members="correct"`` and ``dsdr``, else
            every row.

    Returns:
        The advantages ``(bs,)`` in ``scores``' dtype, and stats: ``classes_per_group`` when a partition was built,
        ``distinct_correct_classes`` (:func:`divrl.core.metrics.correct_classes` over the labels) with ``correct``,
        and the ``signal/...`` sizes of :func:`divrl.signals.signal_size` (group-weighted over group sizes).
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape (bs,), got {tuple(scores.shape)}")
    bs = scores.shape[0]
    groups = group_rows(index)
    if sum(int(g.size) for g in groups) != bs:
        raise ValueError(f"index (the per-row uid) has {sum(int(g.size) for g in groups)} entries for {bs} rows")
    for what, value in (("correct", correct), ("texts", texts), ("keys", keys)):
        if value is not None and len(value) != bs:
            raise ValueError(f"{what} has {len(value)} entries for {bs} rows")
    opts = dict(options or {})
    embed_rows = "all"
    if embedder is not None:
        embed_rows = embedding_rows(name, opts, "an embedder (embedder=)")
        if texts is None:
            raise ValueError("an embedder needs the response texts (texts=)")
        if embed_rows == "correct" and correct is None:
            raise ValueError(
                f"divrl estimator {name!r} reads only correct rollouts' embeddings: the embedder needs correct="
            )
    buckets = _buckets(groups)
    if len(buckets) > 1 and _uses_batch_scale(opts):
        unequal = sorted({int(b.shape[1]) for b in buckets})
        raise ValueError(
            f"scale='batch' takes statistics over the whole batch, but the groups have unequal sizes {unequal} and are "
            "computed per size; use scale='group' or 'none', or keep group sizes equal"
        )
    correct_t = None if correct is None else torch.as_tensor(np.asarray(correct, dtype=bool))  # (bs,)
    flat = scores.detach().to("cpu")  # (bs,)
    out = torch.zeros_like(flat)  # (bs,)
    classes: list[Tensor] = []
    correct_counts: list[int] = []
    sizes: list[tuple[int, dict[str, float]]] = []  # (groups, signal_size) per group size
    for rows in buckets:
        idx = torch.as_tensor(rows, dtype=torch.long)  # (P_g, g)
        group_texts = None if texts is None else [[str(texts[i]) for i in row] for row in rows]
        labels = None
        if keys is not None:
            labels = labels_from_keys([[keys[i] for i in row] for row in rows])  # (P_g, g)
        elif partition_fn is not None and group_texts is not None:
            labels = labels_tensor([_labels(partition_fn, group) for group in group_texts])  # (P_g, g)
        embeddings = None
        if embedder is not None and group_texts is not None:
            group_correct = None if correct_t is None else correct_t[idx]  # (P_g, g)
            embeddings = embed_groups(group_texts, embedder, embed_rows, group_correct)  # (P_g, g, D)
        batch = group_batch(
            flat[idx].float(),  # (P_g, g)
            correct=None if correct_t is None else correct_t[idx],  # (P_g, g)
            texts=group_texts,
            partition=labels,
            embeddings=embeddings,
        )
        adv = compute_advantages(name, batch, **opts)  # (P_g, g)
        out[idx.reshape(-1)] = adv.reshape(-1).to(out.dtype)
        sizes.append((int(idx.shape[0]), signal_size(adv, batch)))
        if labels is not None:
            classes.append((labels.sort(-1).values.diff(dim=-1) != 0).sum(-1) + 1)  # (P_g,)
            if correct_t is not None:  # core.metrics' one definition, over the partition labels
                pairs = zip(labels.tolist(), correct_t[idx], strict=True)
                correct_counts.extend(len(correct_classes(row, c)) for row, c in pairs)
    stats = {"classes_per_group": torch.cat(classes).float().mean().item()} if classes else {}
    if correct_counts:
        stats["distinct_correct_classes"] = sum(correct_counts) / len(correct_counts)
    total = sum(n for n, _ in sizes)
    for key in sizes[0][1] if sizes else ():  # divrl.signals.signal_size, weighted by groups across group sizes
        stats[key] = sum(n * size[key] for n, size in sizes) / total
    if sizes:  # acts_in_flat is a share of the flat groups: weighted by them
        flat_groups = sum(n * size["signal/flat_groups"] for n, size in sizes)
        acts = sum(n * size["signal/flat_groups"] * size["signal/acts_in_flat"] for n, size in sizes)
        stats["signal/acts_in_flat"] = acts / flat_groups if flat_groups else 0.0
    return out.to(scores.device), stats


def _labels(partition_fn: PartitionFn, texts: list[str]) -> list[int]:
    labels = [int(x) for x in partition_fn(texts)]
    if len(labels) != len(texts):
        raise ValueError(f"divrl_partition_fn returned {len(labels)} labels for a group of {len(texts)} responses")
    return labels


def token_advantages(
    name: str,
    token_level_rewards: Tensor,
    response_mask: Tensor,
    index: Sequence[Hashable] | np.ndarray,
    **kwargs: Any,
) -> tuple[Tensor, Tensor, dict[str, float]]:
    """verl's estimator contract around :func:`group_advantages`.

    ``score_i = sum_t token_level_rewards[i, t]`` (the outcome reward sits on the last response token, as verl's
    ``compute_grpo_outcome_advantage`` assumes); the advantage of row ``i`` is broadcast over its response tokens:
    ``adv[i, t] = A_i * response_mask[i, t]``. Returns ``(advantages, returns, stats)``, the first two ``(bs, T)``
    and equal (verl's outcome estimators return the same tensor twice). ``kwargs`` go to :func:`group_advantages`.
    """
    if token_level_rewards.dim() != 2:
        raise ValueError(f"token_level_rewards must have shape (bs, T), got {tuple(token_level_rewards.shape)}")
    if tuple(response_mask.shape) != tuple(token_level_rewards.shape):
        raise ValueError(
            f"response_mask has shape {tuple(response_mask.shape)} but token_level_rewards has shape "
            f"{tuple(token_level_rewards.shape)}"
        )
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)  # (bs,)
        adv, stats = group_advantages(name, scores, index, **kwargs)  # (bs,)
        token_adv = adv.unsqueeze(-1) * response_mask.to(adv.dtype)  # (bs, T)
    return token_adv, token_adv, stats
