"""divrl inside verl 0.9: estimators and a policy loss in verl's registries, plus a trainer for text-based signals.

The adapter only translates. verl hands an advantage estimator a flat batch: ``token_level_rewards`` and
``response_mask`` of shape ``(bs, T)`` and ``index``, the ``uid`` of each row's prompt, as a numpy array of strings.
The rows of a group may be scattered anywhere in the batch, and groups may differ in size. This module:

1. groups the rows by uid (:func:`group_rows`);
2. builds one ``GroupBatch`` of shape ``(P, G)`` per group size;
3. runs :func:`divrl.core.advantages.compute_advantages`;
4. writes the values back to their rows and broadcasts them over the response tokens: ``(bs, T)`` advantages and
   returns, as verl's own GRPO does.

**Unequal group sizes** (rollouts evicted after a failure, multi-output agent loops) are handled exactly. Groups of
equal size are batched together and each size is computed separately, so every per-group estimator gives the same
values as on a batch of whole groups. Padding would not: a padded member changes the group std, G and DARLING's
``G - 1``. Batch-level statistics (``scale="batch"``) would then cover only one size bucket, so that combination
raises instead.

**Unscorable rows.** A verl reward function returns a number, never ``None``. For a response that cannot be scored
(a verifier timeout), return ``float("nan")`` as its score: verl puts it on the last response token, the row's summed
score is NaN, and divrl treats the row as ``divrl.core`` treats any NaN reward: it takes no part in its group's
statistics (mean, std, leave-one-out, ranks, classes, kernels), gets advantage 0 on every token and is never
``correct``. verl's own score metrics (``critic/score/*``) average over every row and show NaN for such a step.

Three ways in, all loaded with ``import verl`` in every process verl starts (driver, trainer, workers) through the
``verl.plugins`` entry point ``divrl = "divrl.integrations.verl_plugin"`` (verl 0.9 ``verl/__init__.py``;
``VERL_USE_EXTERNAL_PLUGINS=none`` turns plugins off):

=================================  =================================================================================
``algorithm.adv_estimator=``        ``divrl_<name>`` for every divrl estimator (``divrl_grpo``, ``divrl_dr_grpo``,
                                    ``divrl_rloo``, ``divrl_passk``, ``divrl_darling``, ``divrl_setpo``, ...).
                                    Options come from ``+algorithm.divrl_options.<key>=...``; SetPO's cosine kernel
                                    embeds with ``+algorithm.divrl_embedder=all-MiniLM-L6-v2`` (optionally
                                    ``+algorithm.divrl_embed_rows=correct``).
``actor_rollout_ref.actor.policy_   ``divrl_positive_entropy``: verl's ``vanilla`` PPO loss plus R1-zero-Div's term
loss.loss_mode=``                   (:func:`positive_entropy_term`)
``trainer.v1.trainer_mode=``        ``divrl_sync``: verl's sync trainer, which also hands each estimator call the
                                    rows' response texts and reward extra info (:class:`DivrlAdvantageMixin`).
                                    DARLING's partition and SetPO's n-gram kernel need it
=================================  =================================================================================

**What relies on verl internals.** The registries, the estimator call and the policy-loss call are public, documented
extension points. The ``divrl_sync`` trainer overrides the private ``PPOTrainer._compute_advantage(batch, metrics)``
(verl 0.9 ``verl/trainer/ppo/v1/trainer_base.py``). It reads the fields ``uid``, ``responses`` and
``extra_fields["reward_extra_info"]`` from TransferQueue, and relies on two facts: verl computes advantages over the
rows in ``batch.keys`` order, and it calls the estimator in the trainer process. The per-row uids are checked against
verl's ``index`` on every call, so a change in row order raises instead of mixing signals up. Pinned by the extra
``divrl[verl]`` (``verl>=0.9,<0.10``); ``tests/integrations/verl`` checks these contracts.

Only this module's verl-facing functions import verl, and they do it lazily. The translation helpers
(:func:`group_rows`, :func:`token_advantages`, :func:`positive_entropy_term`, ...) need only torch and numpy.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import math
import os
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from divrl.core.advantages import (
    ADVANTAGES,
    advantage_is_stateful,
    advantage_is_token_level,
    advantage_needs,
    compute_advantages,
)
from divrl.core.batch import GroupBatch
from divrl.core.diversity import labels_tensor
from divrl.core.losses import LOSSES, compute_loss, loss_needs, positive_entropy_loss
from divrl.core.metrics import correct_classes
from divrl.core.registry import check_options
from divrl.signals import check_embed_rows, embed_groups, group_batch, labels_from_keys, signal_size

__all__ = [
    "ESTIMATOR_PREFIX",
    "EXTRA_CORRECT",
    "EXTRA_KEY",
    "EXTRA_TEXT",
    "POSITIVE_ENTROPY_ENV",
    "POSITIVE_ENTROPY_LOSS",
    "TESTED_VERL",
    "TRAINER_MODE",
    "DivrlAdvantageMixin",
    "SampleInfo",
    "check_loss",
    "group_rows",
    "load_callable",
    "make_estimator",
    "make_positive_entropy_loss",
    "positive_entropy_term",
    "register",
    "register_estimator",
    "register_positive_entropy_loss",
    "register_trainer",
    "sample_info_from_rows",
    "token_advantages",
    "use_sample_info",
]

logger = logging.getLogger(__name__)

TESTED_VERL = (0, 9)
"""The verl minor version whose internals the trainer override was written against."""

INSTALL_HINT = "pip install 'divrl[verl]'  (pins verl>=0.9,<0.10)"

ESTIMATOR_PREFIX = "divrl_"
"""verl name of a divrl estimator: ``divrl_<name>`` for divrl.core's ``<name>``."""

POSITIVE_ENTROPY_LOSS = "divrl_positive_entropy"
"""verl policy-loss name of R1-zero-Div's term on top of verl's ``vanilla`` PPO loss."""

POSITIVE_ENTROPY_ENV = "DIVRL_VERL_POSITIVE_ENTROPY"
"""Environment variable overriding the term's options at call time, e.g. ``lam=0.02,gate=all``."""

TRAINER_MODE = "divrl_sync"
"""``trainer.v1.trainer_mode`` of verl's sync trainer with divrl's side information."""

EXTRA_KEY = "divrl_key"
"""Reward extra info key: a per-sample partition key (equal keys = one DARLING class; ``None`` = its own class)."""

EXTRA_CORRECT = "divrl_correct"
"""Reward extra info key: per-sample verifier correctness (bool); otherwise ``score >= divrl_correct_threshold``."""

EXTRA_TEXT = "divrl_text"
"""Reward extra info key: a text to use instead of the decoded response (e.g. the extracted solution)."""


VERL_CAN_PROVIDE = ("correct", "texts", "partition", "embeddings")
"""GroupBatch fields the verl adapter can build (texts and partition keys from the reward extra info under the
``divrl_sync`` trainer, embeddings from the texts). An estimator declared to need anything else is refused."""


def _unsupported(name: str) -> str | None:
    """Why estimator ``name`` (with its default options) cannot run inside verl, or None: read from its declared
    needs (:mod:`divrl.core.needs`)."""
    if advantage_is_stateful(name):
        return (
            "it keeps per-problem state across steps (GroupBatch.history), which verl's estimator hook (a function "
            "of one batch) can neither carry nor save in verl's checkpoints"
        )
    if advantage_is_token_level(name):  # ucas: one advantage per token from full-vocabulary statistics
        return (
            "it needs per-token statistics of the old-log-prob forward (GroupBatch.self_certainty, token_logits), "
            "which verl 0.9's actor does not compute (UCAS ships its own verl fork for them); use divrl train"
        )
    missing = advantage_needs(name).missing(VERL_CAN_PROVIDE)
    if not missing:
        return None
    if "old_logprobs" in missing:
        return "it needs the old log-probs of every group member, which verl does not pass to estimators"
    if "hidden" in missing:  # repexp
        return (
            "it needs each rollout's mean last-layer hidden state (GroupBatch.hidden), which verl does not pass to "
            "estimators (the official RepExp recipe, verl-recipe rep_exp/, runs its own reward-model worker for them)"
        )
    if "answers" in missing:  # e.g. outcome_batch, seed_grpo with their default classes="answers"
        return "it needs GroupBatch.answers, which the verl adapter does not gather (final answers)"
    return f"it needs GroupBatch.{missing[0]}, which verl does not pass to estimators"


_LOSS_REFUSALS = {
    "vocab_mean_logprobs": (
        "it replaces the policy loss with a regression on full-vocabulary means of the current and old policy at "
        "every response position (GroupBatch.vocab_mean_logprobs, old_vocab_mean_logprobs), which verl's "
        "PolicyLossFn does not receive (ROVER's official code ships its own verl actor)"
    ),
    "log_z": (
        "it replaces the policy loss with trajectory balance on a learned log Z head over the prompt's hidden states "
        "(GroupBatch.log_z), which verl's PolicyLossFn neither receives nor optimises or checkpoints (the official "
        "verl-recipe flowrl/ replaces verl's actor and worker)"
    ),
}


def check_loss(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Whether divrl policy loss ``name`` runs inside verl: ``positive_entropy`` does (registered as
    ``divrl_positive_entropy``); any other raises ValueError in one line saying why, read from its declared needs
    (``rover``, ``flowrl``: fields verl's PolicyLossFn does not receive; ``ppo``, ``kl``, ``clip_cov``, ``kl_cov``,
    ``entropy_bonus``: verl's own ``actor.policy_loss.loss_mode`` and actor options provide them)."""
    if name not in LOSSES:
        LOSSES.get(name)  # raises, listing the known names
    if name == "positive_entropy":
        _check_term_options(dict(options or {}))
        return
    needs = loss_needs(name, options)
    reason = next((why for field, why in _LOSS_REFUSALS.items() if needs.requires(field)), None)
    if reason is None:
        reason = "verl's own policy losses and actor options provide it (actor.policy_loss.loss_mode)"
    raise ValueError(f"divrl policy loss {name!r} is not registered with verl: {reason}; use divrl train")


def _verl_module(name: str) -> Any:
    """Import a verl module, or raise ImportError naming the install command."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"divrl.integrations.verl needs verl 0.9 ({name} failed to import): {INSTALL_HINT}") from exc


# ---------------------------------------------------------------------------------------------
# Row layout: verl's flat batch <-> (P, G) groups
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Per-sample side information (texts, partition keys, correctness)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleInfo:
    """Per-row side information of one verl batch, aligned with the rows the estimator sees.

    Attributes:
        uids: (bs,) the rows' uids, checked against verl's ``index`` before use.
        texts: bs response texts (SetPO's n-gram kernel, a partition function).
        keys: bs partition keys from the reward extra info ``divrl_key``.
        correct: (bs,) bool from the reward extra info ``divrl_correct``.
        stats: filled by the estimator with metrics for the trainer to log.
    """

    uids: np.ndarray
    texts: list[str] | None = None
    keys: list[Hashable | None] | None = None
    correct: np.ndarray | None = None
    stats: dict[str, float] = field(default_factory=dict)


_SAMPLE_INFO: contextvars.ContextVar[SampleInfo | None] = contextvars.ContextVar("divrl_sample_info", default=None)


@contextlib.contextmanager
def use_sample_info(info: SampleInfo) -> Iterator[SampleInfo]:
    """Make ``info`` visible to divrl estimators called inside the ``with`` block (same thread)."""
    token = _SAMPLE_INFO.set(info)
    try:
        yield info
    finally:
        _SAMPLE_INFO.reset(token)


def _column(extras: Sequence[Mapping[str, Any]], key: str) -> list[Any] | None:
    """The values of ``key`` over all rows; None when no row has it; raises when only some rows do."""
    present = [key in extra for extra in extras]
    if not any(present):
        return None
    if not all(present):
        missing = [i for i, p in enumerate(present) if not p]
        raise ValueError(
            f"reward extra info {key!r} is set for some samples but missing for {len(missing)} of {len(extras)} "
            f"(rows {missing[:5]}...): the reward function must return it for every sample"
        )
    return [extra[key] for extra in extras]


def sample_info_from_rows(
    uids: Sequence[Hashable] | np.ndarray,
    *,
    texts: Sequence[str] | None = None,
    extras: Sequence[Mapping[str, Any] | None] | None = None,
) -> SampleInfo:
    """Build :class:`SampleInfo` from per-row uids, decoded texts and reward extra info dicts.

    The extra info keys ``divrl_key``, ``divrl_correct`` and ``divrl_text`` are read when present; ``divrl_text``
    replaces the decoded text.
    """
    uid_array = np.asarray(list(uids), dtype=object)
    n = uid_array.size
    rows = [dict(extra or {}) for extra in extras] if extras is not None else [{} for _ in range(n)]
    if len(rows) != n:
        raise ValueError(f"got {len(rows)} reward extra info rows for {n} samples")
    text_list = list(texts) if texts is not None else None
    override = _column(rows, EXTRA_TEXT)
    if override is not None:
        text_list = [str(t) for t in override]
    if text_list is not None and len(text_list) != n:
        raise ValueError(f"got {len(text_list)} texts for {n} samples")
    keys = _column(rows, EXTRA_KEY)
    correct_values = _column(rows, EXTRA_CORRECT)
    correct = None if correct_values is None else np.asarray([bool(c) for c in correct_values], dtype=bool)
    return SampleInfo(uids=uid_array, texts=text_list, keys=keys, correct=correct)


def _info_from_non_tensor_batch(non_tensor_batch: Mapping[str, Any], bs: int) -> SampleInfo | None:
    """Side information from verl's ``non_tensor_batch`` columns (``divrl_key``/``divrl_correct``/``divrl_text``)."""
    if not any(k in non_tensor_batch for k in (EXTRA_KEY, EXTRA_CORRECT, EXTRA_TEXT)):
        return None
    uids = non_tensor_batch.get("uid")
    extras: list[dict[str, Any]] = [{} for _ in range(bs)]
    for key in (EXTRA_KEY, EXTRA_CORRECT, EXTRA_TEXT):
        if key in non_tensor_batch:
            for row, value in zip(extras, list(non_tensor_batch[key]), strict=True):
                row[key] = value
    return sample_info_from_rows(uids if uids is not None else [None] * bs, extras=extras)


# ---------------------------------------------------------------------------------------------
# Advantages: the translation
# ---------------------------------------------------------------------------------------------

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
    embed_rows: str = "all",
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
        embedder: a :class:`divrl.semantic.Embedder` (or spec) for ``GroupBatch.embeddings`` (SetPO's cosine
            kernel); needs ``texts``.
        embed_rows: ``"all"``, or ``"correct"`` (only correct rows are embedded; see
            :func:`divrl.signals.check_embed_rows`).

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
    if embedder is not None:
        check_embed_rows(embed_rows, name, opts)
        if texts is None:
            raise ValueError("an embedder needs the response texts (texts=)")
        if embed_rows == "correct" and correct is None:
            raise ValueError("embed_rows='correct' needs correct=")
    buckets = _buckets(groups)
    if len(buckets) > 1 and _uses_batch_scale(opts):
        sizes = sorted({int(b.shape[1]) for b in buckets})
        raise ValueError(
            f"scale='batch' takes statistics over the whole batch, but the groups have unequal sizes {sizes} and are "
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


# ---------------------------------------------------------------------------------------------
# verl advantage estimators
# ---------------------------------------------------------------------------------------------


def _cfg_get(config: Any, key: str, default: Any) -> Any:
    getter = getattr(config, "get", None)
    if config is None or not callable(getter):
        return default
    value = getter(key, default)
    return default if value is None else value


def _plain(value: Any) -> Any:
    """DictConfig/ListConfig (or any mapping/sequence) -> plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (``importlib``, no eval) and return the callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'package.module:function', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    return obj  # type: ignore[no-any-return]


_SIDE_INFO_HINTS = {
    "partition": (
        "a partition: return {'score': ..., 'divrl_key': <key>} from the reward function, or set "
        "+algorithm.divrl_partition_fn='pkg.module:fn' (fn(texts) -> labels)"
    ),
    "texts": "the response texts",
    "embeddings": "the response texts and +algorithm.divrl_embedder",
}
"""How a verl run provides a field an estimator declares it needs (the needs themselves: divrl.core.needs)."""

_ESTIMATORS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {}


def make_estimator(name: str) -> Callable[..., tuple[Tensor, Tensor]]:
    """verl advantage estimator running divrl.core estimator ``name``; the same object on every call.

    The returned function follows verl 0.9's call in ``ray_trainer.compute_advantage``:
    ``fn(token_level_rewards, response_mask, index, config, **other)``. It reads the estimator options from
    ``config.divrl_options`` (``+algorithm.divrl_options.<key>=...``), the correctness threshold from
    ``config.divrl_correct_threshold`` (default 1.0: ``correct = score >= 1``; overridden per sample by the reward
    extra info ``divrl_correct``), an optional ``config.divrl_partition_fn`` and an optional ``config.divrl_embedder``
    (with ``config.divrl_embed_rows``). For ``grpo`` without an explicit
    ``scale`` option, ``algorithm.norm_adv_by_std_in_grpo=False`` gives ``scale="none"``, as in verl's GRPO.

    Per-sample side information comes from ``non_tensor_batch`` when verl passes it (only for estimators it
    special-cases today), else from the ``divrl_sync`` trainer (:func:`use_sample_info`).
    """
    if name in _ESTIMATORS:
        return _ESTIMATORS[name]
    if name not in ADVANTAGES:
        raise ValueError(f"unknown divrl advantage estimator {name!r}; known: {ADVANTAGES.names()}")
    why = _unsupported(name)
    if why is not None:
        raise ValueError(f"divrl estimator {name!r} cannot run inside verl: {why}")

    def estimator(
        token_level_rewards: Tensor,
        response_mask: Tensor,
        index: np.ndarray | None = None,
        config: Any = None,
        non_tensor_batch: Mapping[str, Any] | None = None,
        **unused: Any,
    ) -> tuple[Tensor, Tensor]:
        verl_name = ESTIMATOR_PREFIX + name
        if index is None:
            raise ValueError(f"{verl_name} needs the per-sample 'uid' (verl passes it as index=) to form groups")
        bs = token_level_rewards.shape[0]
        options = _plain(_cfg_get(config, "divrl_options", {}))
        if not isinstance(options, dict):
            raise ValueError(f"algorithm.divrl_options must be a mapping of {name} options, got {options!r}")
        if name == "grpo" and "scale" not in options and _cfg_get(config, "norm_adv_by_std_in_grpo", True) is False:
            options["scale"] = "none"
        check_options(ADVANTAGES.get(name), options, f"{verl_name} (algorithm.divrl_options)")
        threshold = float(_cfg_get(config, "divrl_correct_threshold", 1.0))
        fn_spec = _cfg_get(config, "divrl_partition_fn", None)
        partition_fn = load_callable(str(fn_spec)) if fn_spec else None
        embedder = _embedder(_cfg_get(config, "divrl_embedder", None))
        embed_rows = str(_cfg_get(config, "divrl_embed_rows", "all"))

        info = _info_from_non_tensor_batch(non_tensor_batch, bs) if non_tensor_batch is not None else None
        if info is None:
            info = _SAMPLE_INFO.get()
            if info is not None:
                _check_alignment(info, index, verl_name)
        texts_ok = info is not None and info.texts is not None
        keys_ok = info is not None and info.keys is not None
        provided = ["correct"] + ["texts"] * texts_ok + ["embeddings"] * (texts_ok and embedder is not None)
        if keys_ok or (texts_ok and partition_fn is not None):
            provided.append("partition")
        missing = advantage_needs(name, options).missing(provided)
        if missing:
            raise ValueError(
                f"{verl_name} needs {_SIDE_INFO_HINTS.get(missing[0], 'GroupBatch.' + missing[0])}. verl passes "
                f"estimators only rewards and uids: run with trainer.v1.trainer_mode={TRAINER_MODE} so divrl receives "
                "the responses and the reward extra info"
            )
        scores = token_level_rewards.sum(dim=-1)  # (bs,)
        correct: np.ndarray | Tensor = (scores >= threshold).cpu()  # (bs,)
        if info is not None and info.correct is not None:
            correct = info.correct
        adv, returns, stats = token_advantages(
            name,
            token_level_rewards,
            response_mask,
            index,
            options=options,
            correct=correct,
            texts=None if info is None else info.texts,
            keys=None if info is None else info.keys,
            partition_fn=partition_fn,
            embedder=embedder,
            embed_rows=embed_rows,
        )
        if info is not None:
            info.stats.update(stats)
            info.stats["correct_frac"] = float(np.asarray(correct, dtype=float).mean())
        return adv, returns

    estimator.__name__ = estimator.__qualname__ = ESTIMATOR_PREFIX + name
    estimator.__doc__ = f"verl advantage estimator: divrl.core {name!r} over verl's uid groups (see make_estimator)."
    estimator.divrl_estimator = name  # type: ignore[attr-defined]
    _ESTIMATORS[name] = estimator
    return estimator


_EMBEDDERS: dict[str, Any] = {}


def _embedder(spec: Any) -> Any:
    """The embedder of ``algorithm.divrl_embedder`` (``None``: none), loaded once per spec and process, so its cache of
    recent texts lives across steps."""
    if spec is None or spec == "":
        return None
    key = str(spec)
    if key not in _EMBEDDERS:
        from divrl.semantic import load_embedder

        _EMBEDDERS[key] = load_embedder(key)
    return _EMBEDDERS[key]


def _check_alignment(info: SampleInfo, index: np.ndarray, who: str) -> None:
    uids = np.asarray(index, dtype=object).reshape(-1)
    if info.uids.shape != uids.shape or not bool(np.all(info.uids == uids)):
        raise RuntimeError(
            f"{who}: the side information fetched by the {TRAINER_MODE} trainer ({info.uids.size} rows) does not line "
            f"up with the rows verl passed to the estimator ({uids.size} rows): did verl's _compute_advantage change "
            "its row order? (divrl was written against verl 0.9)"
        )


def register_estimator(name: str) -> str:
    """Register divrl.core estimator ``name`` in verl's registry as ``divrl_<name>``; returns the verl name."""
    core_algos = _verl_module("verl.trainer.ppo.core_algos")
    verl_name = ESTIMATOR_PREFIX + name
    core_algos.register_adv_est(verl_name)(make_estimator(name))
    return verl_name


# ---------------------------------------------------------------------------------------------
# Policy loss: R1-zero-Div's term on top of a verl loss
# ---------------------------------------------------------------------------------------------

_TERM_DEFAULTS: dict[str, Any] = {"gate": "positive_advantage"}


def _check_term_options(options: Mapping[str, Any]) -> dict[str, Any]:
    opts = {**_TERM_DEFAULTS, **options}
    check_options(positive_entropy_loss, opts, f"verl policy loss {POSITIVE_ENTROPY_LOSS!r}")
    if opts["gate"] == "correct":
        raise ValueError(
            f"{POSITIVE_ENTROPY_LOSS}: gate='correct' is not available inside verl: its ppo_loss passes the policy "
            "loss only log-probs, advantages and the response mask. Use gate='positive_advantage' (A > 0) or 'all'"
        )
    if opts.get("estimator", "surrogate") != "surrogate":
        raise ValueError(
            f"{POSITIVE_ENTROPY_LOSS}: only estimator='surrogate' is available inside verl (its policy loss receives "
            "no token entropies)"
        )
    return opts


def positive_entropy_term(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    dp_size: int = 1,
    global_batch_size: int | None = None,
    **options: Any,
) -> tuple[Tensor, dict[str, float]]:
    """R1-zero-Div's ``-lam * J_div`` (Yao et al., arXiv 2505.23433, Eq. 9 / Eq. 12) for one verl micro-batch.

    The micro-batch's B rows go to ``divrl.core.losses.compute_loss("positive_entropy", ...)`` as one ``(1, B, T)``
    batch; the term needs no group structure. Its ``(1/N) sum_i (1/T_i) sum_t`` is a local sequence mean. It is
    rescaled like verl's ``agg_loss(..., "seq-mean-token-mean", dp_size, global_batch_size)``:
    ``x N_local x dp_size / global_batch_size``. The summed micro-batches of all data-parallel ranks then give the
    mean over the global mini-batch, as verl's own losses do. Without ``global_batch_size`` (one rank) it is the
    local mean.

    Args:
        log_prob, old_log_prob, advantages, response_mask: ``(B, T)`` as verl's policy loss receives them.
        dp_size, global_batch_size: ``config.global_batch_info`` of verl's actor.
        options: ``lam``, ``gate`` (``positive_advantage`` or ``all``), ``ratio``.
    """
    opts = _check_term_options(options)
    if global_batch_size is None and dp_size > 1:
        raise ValueError(
            "positive_entropy_term: global_batch_size is required when dp_size > 1 (as in verl's agg_loss)"
        )
    mask = response_mask.bool()  # (B, T)
    batch = GroupBatch(
        rewards=torch.zeros(1, mask.shape[0], device=log_prob.device),  # (1, B) unused by the term
        logprobs=log_prob.unsqueeze(0),  # (1, B, T)
        old_logprobs=old_log_prob.unsqueeze(0),  # (1, B, T)
        mask=mask.unsqueeze(0),  # (1, B, T)
    )
    out = compute_loss("positive_entropy", batch, advantages.unsqueeze(0), **opts)
    scale = 1.0
    if global_batch_size is not None:
        n_local = int((mask.sum(-1) > 0).sum())
        scale = n_local * dp_size / float(global_batch_size)
    return out.loss * scale, out.metrics


@lru_cache(maxsize=8)
def _env_options(raw: str) -> dict[str, Any]:
    """``"lam=0.02,gate=all"`` -> ``{"lam": 0.02, "gate": "all"}`` (numbers parsed as float)."""
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{POSITIVE_ENTROPY_ENV}={raw!r}: expected comma-separated key=value pairs")
        try:
            number = float(value)
            options[key.strip()] = number if math.isfinite(number) else value.strip()
        except ValueError:
            options[key.strip()] = value.strip()
    _check_term_options(options)
    return options


def make_positive_entropy_loss(
    *, base: str = "vanilla", **options: Any
) -> Callable[..., tuple[Tensor, dict[str, Any]]]:
    """A verl policy loss: verl's registered loss ``base`` plus :func:`positive_entropy_term`.

    The signature is verl 0.9's ``PolicyLossFn`` as ``ppo_loss`` calls it (keywords ``old_log_prob``, ``log_prob``,
    ``advantages``, ``response_mask``, ``loss_agg_mode``, ``config``, ``rollout_is_weights``). ``options`` are the
    term's defaults (``lam=0.01``, ``gate="positive_advantage"``). The environment variable
    ``DIVRL_VERL_POSITIVE_ENTROPY`` (e.g. ``lam=0.02,gate=all``), read in the worker at call time, overrides them.
    verl's ActorConfig accepts no extra keys, so options cannot come from the actor config. Metrics:
    ``actor/divrl_div_term``, ``actor/divrl_div_gate_frac``.
    """
    defaults = _check_term_options(options)

    def loss_fn(
        old_log_prob: Tensor,
        log_prob: Tensor,
        advantages: Tensor,
        response_mask: Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        core_algos = _verl_module("verl.trainer.ppo.core_algos")
        pg_loss, metrics = core_algos.get_policy_loss_fn(base)(
            old_log_prob=old_log_prob,
            log_prob=log_prob,
            advantages=advantages,
            response_mask=response_mask,
            loss_agg_mode=loss_agg_mode,
            config=config,
            rollout_is_weights=rollout_is_weights,
        )
        opts = {**defaults, **_env_options(os.environ.get(POSITIVE_ENTROPY_ENV, ""))}
        info = dict(getattr(config, "global_batch_info", None) or {})
        term, term_metrics = positive_entropy_term(
            log_prob,
            old_log_prob,
            advantages,
            response_mask,
            dp_size=int(info.get("dp_size") or 1),
            global_batch_size=info.get("global_batch_size"),
            **opts,
        )
        metrics = dict(metrics)
        metrics.update({f"actor/divrl_{k}": v for k, v in term_metrics.items()})
        return pg_loss + term, metrics

    loss_fn.__name__ = loss_fn.__qualname__ = f"divrl_positive_entropy_on_{base}"
    return loss_fn


def register_positive_entropy_loss(name: str = POSITIVE_ENTROPY_LOSS, *, base: str = "vanilla", **options: Any) -> str:
    """Register :func:`make_positive_entropy_loss` in verl's policy-loss registry under ``name``.

    For a variant with other defaults, call this from your own plugin module, e.g.
    ``register_positive_entropy_loss("my_div", base="gspo", lam=0.02, gate="all")``.
    """
    core_algos = _verl_module("verl.trainer.ppo.core_algos")
    core_algos.register_policy_loss(name)(make_positive_entropy_loss(base=base, **options))
    return name


# ---------------------------------------------------------------------------------------------
# Trainer: hand the estimator the responses and the reward extra info
# ---------------------------------------------------------------------------------------------


def _to_list(values: Any) -> list[Any]:
    return list(values.tolist()) if hasattr(values, "tolist") else list(values)


def _reward_extra_info(extra_fields: Any) -> dict[str, Any]:
    """``extra_fields["reward_extra_info"]`` of one TransferQueue row (a dict, possibly wrapped in NonTensorData)."""
    value = getattr(extra_fields, "data", extra_fields)
    info = value.get("reward_extra_info") if isinstance(value, Mapping) else None
    return dict(info) if isinstance(info, Mapping) else {}


class DivrlAdvantageMixin:
    """Mixin for a verl 0.9 v1 ``PPOTrainer``: divrl estimators receive per-sample texts and reward extra info.

    Registered with verl's own sync trainer as ``trainer.v1.trainer_mode=divrl_sync`` (:func:`register_trainer`).
    For another mode, compose it yourself and register it in your plugin::

        @register_trainer("my_divrl_async")
        class MyTrainer(DivrlAdvantageMixin, PPOTrainerSeparateAsync):
            divrl_base_mode = "separate_async"

    ``__init__`` refuses ``+divrl.sampler=latr`` / ``+divrl.prompt_selector=gdro`` in one line (divrl train's
    rollout-side entries, :mod:`divrl.rollout.strategies`: verl samples with its own rollout engine and draws
    prompts with its own data sampler), then rewrites ``config.trainer.v1.trainer_mode`` to ``divrl_base_mode``: verl compares the mode string
    with ``"sync"`` in several places (replay buffer, refill), so ``divrl_sync`` must behave as ``sync`` exactly.

    ``_compute_advantage`` (verl internal) is wrapped when ``algorithm.adv_estimator`` is a ``divrl_*`` name. First it
    reads ``uid``, ``responses`` and ``extra_fields`` for ``batch.keys`` from TransferQueue, decodes the responses
    with the trainer's tokenizer, and collects the reward extra info (``divrl_key``, ``divrl_correct``,
    ``divrl_text``). Then it runs verl's ``_compute_advantage`` with that :class:`SampleInfo` in context. The
    estimator checks the rows' uids against verl's ``index`` before using it and logs ``divrl/*`` metrics.
    """

    divrl_base_mode: str = "sync"
    config: Any
    tokenizer: Any

    def __init__(self, config: Any) -> None:
        from divrl.rollout.strategies import adapter_refusal

        side = _cfg_get(config, "divrl", None)
        refusal = adapter_refusal(
            "the divrl_sync verl trainer", _cfg_get(side, "sampler", None), _cfg_get(side, "prompt_selector", None)
        )
        if refusal is not None:  # verl samples with its own rollout engine and draws prompts with its own sampler
            raise ValueError(refusal)
        from omegaconf import open_dict

        with open_dict(config):
            config.trainer.v1.trainer_mode = self.divrl_base_mode
        super().__init__(config)  # type: ignore[call-arg]

    def _compute_advantage(self, batch: Any, metrics: dict[str, Any]) -> Any:
        name = str(self.config.algorithm.adv_estimator)
        if not name.startswith(ESTIMATOR_PREFIX):
            return super()._compute_advantage(batch, metrics)  # type: ignore[misc]
        info = self.divrl_sample_info(batch)
        with use_sample_info(info):
            result = super()._compute_advantage(batch, metrics)  # type: ignore[misc]
        metrics.update({f"divrl/{k}": v for k, v in info.stats.items()})
        return result

    def divrl_sample_info(self, batch: Any) -> SampleInfo:
        """Per-row uids, decoded response texts and reward extra info of ``batch`` (a TransferQueue KVBatchMeta)."""
        tq = _verl_module("verl.trainer.ppo.v1.trainer_base").tq
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["uid", "responses", "extra_fields"]
        )
        uids = _to_list(data["uid"])
        responses = [row.tolist() for row in data["responses"].unbind(0)]  # bs lists of token ids (unpadded)
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        keys = set(data.keys())
        extras = [_reward_extra_info(x) for x in _to_list(data["extra_fields"])] if "extra_fields" in keys else None
        return sample_info_from_rows(uids, texts=texts, extras=extras)


_TRAINERS: dict[str, type] = {}


def register_trainer(name: str = TRAINER_MODE) -> type:
    """Register verl's sync trainer with :class:`DivrlAdvantageMixin` as ``trainer.v1.trainer_mode=<name>``."""
    if name in _TRAINERS:
        return _TRAINERS[name]
    trainer_sync = _verl_module("verl.trainer.ppo.v1.trainer_sync")
    cls = type("DivrlPPOTrainerSync", (DivrlAdvantageMixin, trainer_sync.PPOTrainerSync), {"__module__": __name__})
    cls.__doc__ = "verl's PPOTrainerSync whose divrl estimators receive responses and reward extra info."
    trainer_sync.register_trainer(name)(cls)
    _TRAINERS[name] = cls
    return cls


# ---------------------------------------------------------------------------------------------
# Everything at once (the plugin entry point calls this)
# ---------------------------------------------------------------------------------------------


def register(*, estimators: Sequence[str] | None = None, losses: bool = True, trainer: bool = True) -> list[str]:
    """Register divrl's estimators (all supported ones by default), the policy loss and the ``divrl_sync`` trainer.

    Idempotent. A trainer that cannot be registered (e.g. TransferQueue missing) is logged and skipped: the
    estimators and the loss still work. Returns the registered verl names.
    """
    names = [n for n in ADVANTAGES.names() if _unsupported(n) is None] if estimators is None else list(estimators)
    registered = [register_estimator(n) for n in names]
    if losses:
        registered.append(register_positive_entropy_loss())
    if trainer:
        try:
            register_trainer()
            registered.append(TRAINER_MODE)
        except ImportError as exc:
            logger.warning("divrl: trainer.v1.trainer_mode=%s is unavailable: %s", TRAINER_MODE, exc)
    return registered
