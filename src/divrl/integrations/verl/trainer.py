"""The ``divrl_sync`` trainer: verl's sync trainer whose divrl estimators receive the responses and reward extra info.

Holds :class:`DivrlAdvantageMixin` (wraps verl's private ``PPOTrainer._compute_advantage``: reads ``uid``,
``responses`` and ``extra_fields`` from TransferQueue, decodes the responses, hands the estimators that
:class:`~divrl.integrations.verl.side_info.SampleInfo` and logs their ``divrl/*`` stats in verl's metrics) and
:func:`register_trainer`. The only module that relies on verl internals (pinned: verl 0.9).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from divrl.core.advantages import ADVANTAGES
from divrl.integrations.verl.config import (
    ESTIMATOR_PREFIX,
    TRAINER_MODE,
    _cfg_get,
    _verl_module,
    read_estimator_config,
)
from divrl.integrations.verl.policy_loss import term_options
from divrl.integrations.verl.side_info import SampleInfo, sample_info_from_rows, use_sample_info


def _to_list(values: Any) -> list[Any]:
    return list(values.tolist()) if hasattr(values, "tolist") else list(values)


def _reward_extra_info(extra_fields: Any) -> dict[str, Any]:
    """``extra_fields["reward_extra_info"]`` of one TransferQueue row (a dict, possibly wrapped in NonTensorData)."""
    value = getattr(extra_fields, "data", extra_fields)
    info = value.get("reward_extra_info") if isinstance(value, Mapping) else None
    return dict(info) if isinstance(info, Mapping) else {}


def check_config(config: Any) -> None:
    """Refuse, in one line and before verl builds its workers, what a divrl piece named in verl's ``config`` would
    refuse only when first called: the ``algorithm.divrl_*`` keys of a divrl estimator (``algorithm.adv_estimator``
    ``divrl_<name>``: :func:`~divrl.integrations.verl.config.read_estimator_config`; e.g. the removed
    ``divrl_embed_rows``, an embedder the estimator does not read) and the term options of a divrl policy loss
    (``actor_rollout_ref.actor.policy_loss.loss_mode``: its registration options and ``DIVRL_VERL_POSITIVE_ENTROPY``
    as this process sees it, :func:`~divrl.integrations.verl.policy_loss.term_options`; e.g. a gate set nowhere,
    core's default ``correct``, which verl cannot serve). The ``divrl_sync`` trainer calls it in ``__init__``."""
    algorithm = _cfg_get(config, "algorithm", None)
    estimator = str(_cfg_get(algorithm, "adv_estimator", ""))
    if estimator.startswith(ESTIMATOR_PREFIX) and estimator[len(ESTIMATOR_PREFIX) :] in ADVANTAGES:
        read_estimator_config(estimator[len(ESTIMATOR_PREFIX) :], algorithm)
    actor = _cfg_get(_cfg_get(config, "actor_rollout_ref", None), "actor", None)
    loss_mode = _cfg_get(_cfg_get(actor, "policy_loss", None), "loss_mode", None)
    if loss_mode is not None:
        term_options(str(loss_mode))


class DivrlAdvantageMixin:
    """Mixin for a verl 0.9 v1 ``PPOTrainer``: divrl estimators receive per-sample texts and reward extra info.

    Registered with verl's own sync trainer as ``trainer.v1.trainer_mode=divrl_sync`` (:func:`register_trainer`).
    For another mode, compose it yourself and register it in your plugin::

        @register_trainer("my_divrl_async")
        class MyTrainer(DivrlAdvantageMixin, PPOTrainerSeparateAsync):
            divrl_base_mode = "separate_async"

    ``__init__`` refuses ``+divrl.sampler=latr`` / ``+divrl.prompt_selector=gdro`` in one line (divrl train's
    rollout-side entries, :mod:`divrl.rollout.strategies`: verl samples with its own rollout engine and draws
    prompts with its own data sampler) and what :func:`check_config` refuses, then rewrites
    ``config.trainer.v1.trainer_mode`` to ``divrl_base_mode``: verl compares the mode string with ``"sync"`` in
    several places (replay buffer, refill), so ``divrl_sync`` must behave as ``sync`` exactly.

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
        check_config(config)
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
