"""divrl estimators in verl's advantage-estimator registry, as ``divrl_<name>``.

Holds :func:`_unsupported` (why an estimator cannot run inside verl, read from its declared needs: refused at
registration), :func:`make_estimator` (the function verl calls: it reads ``algorithm.divrl_*``, takes the side
information of the call, checks it against the estimator's needs, runs the translation of
:mod:`divrl.integrations.verl.groups` and leaves its stats for the trainer to log) and :func:`register_estimator`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from torch import Tensor

from divrl.core.advantages import (
    ADVANTAGES,
    advantage_is_stateful,
    advantage_is_token_level,
    advantage_needs,
)
from divrl.integrations.verl.config import ESTIMATOR_PREFIX, _verl_module, load_callable, read_estimator_config
from divrl.integrations.verl.groups import token_advantages
from divrl.integrations.verl.side_info import (
    _SAMPLE_INFO,
    VERL_CAN_PROVIDE,
    _check_alignment,
    _embedder,
    _info_from_non_tensor_batch,
    check_side_info,
)


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


_ESTIMATORS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {}


def make_estimator(name: str) -> Callable[..., tuple[Tensor, Tensor]]:
    """verl advantage estimator running divrl.core estimator ``name``; the same object on every call.

    The returned function follows verl 0.9's call in ``ray_trainer.compute_advantage``:
    ``fn(token_level_rewards, response_mask, index, config, **other)``. It reads ``config`` (verl's ``algorithm``)
    with :func:`~divrl.integrations.verl.config.read_estimator_config`: the estimator options from
    ``config.divrl_options`` (``+algorithm.divrl_options.<key>=...``), the correctness threshold from
    ``config.divrl_correct_threshold`` (default 1.0: ``correct = score >= 1``; overridden per sample by the reward
    extra info ``divrl_correct``), an optional ``config.divrl_partition_fn`` and an optional ``config.divrl_embedder``
    (refused when the estimator reads no embeddings; it embeds the rows the estimator's declared needs read: only
    the correct ones for ``setpo`` with ``members="correct"`` and for ``dsdr``). For ``grpo`` without an explicit
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
        cfg = read_estimator_config(name, config)
        options = cfg.options
        partition_fn = load_callable(cfg.partition_fn) if cfg.partition_fn else None
        embedder = _embedder(cfg.embedder)

        info = _info_from_non_tensor_batch(non_tensor_batch, bs) if non_tensor_batch is not None else None
        if info is None:
            info = _SAMPLE_INFO.get()
            if info is not None:
                _check_alignment(info, index, verl_name)
        check_side_info(verl_name, name, options, info, partition_fn=partition_fn, embedder=embedder)
        scores = token_level_rewards.sum(dim=-1)  # (bs,)
        correct: np.ndarray | Tensor = (scores >= cfg.correct_threshold).cpu()  # (bs,)
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


def register_estimator(name: str) -> str:
    """Register divrl.core estimator ``name`` in verl's registry as ``divrl_<name>``; returns the verl name."""
    core_algos = _verl_module("verl.trainer.ppo.core_algos")
    verl_name = ESTIMATOR_PREFIX + name
    core_algos.register_adv_est(verl_name)(make_estimator(name))
    return verl_name
