"""R1-zero-Div's positive-entropy term as a verl policy loss, and which divrl policy losses run inside verl.

Holds :func:`positive_entropy_term` (the term on one verl micro-batch, rescaled like verl's ``agg_loss``),
:func:`make_positive_entropy_loss` / :func:`register_positive_entropy_loss` (verl's ``vanilla``, or any registered
verl loss, plus the term, in verl's policy-loss registry as ``divrl_positive_entropy``), the term's options (checked
for what verl can serve; overridden at call time by the environment variable ``DIVRL_VERL_POSITIVE_ENTROPY``), and
:func:`check_loss`: whether a divrl policy loss runs inside verl, with the reason when not.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from divrl.core.batch import GroupBatch
from divrl.core.losses import LOSSES, compute_loss, loss_needs, positive_entropy_loss
from divrl.core.registry import check_options
from divrl.integrations.verl.config import _verl_module

POSITIVE_ENTROPY_LOSS = "divrl_positive_entropy"
"""verl policy-loss name of R1-zero-Div's term on top of verl's ``vanilla`` PPO loss."""

POSITIVE_ENTROPY_ENV = "DIVRL_VERL_POSITIVE_ENTROPY"
"""Environment variable overriding the term's options at call time, e.g. ``lam=0.02,gate=all``."""


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
    """Whether divrl policy loss ``name`` runs inside verl with ``options``: ``positive_entropy`` does (registered as
    ``divrl_positive_entropy``) with ``gate`` ``positive_advantage`` or ``all`` (an unset gate is core's default
    ``correct``, refused); any other raises ValueError in one line saying why, read from its declared needs
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


def _core_default(option: str) -> Any:
    """The default of option ``option`` of divrl.core's ``positive_entropy`` (read from its signature, so the verl
    term's defaults are core's)."""
    return inspect.signature(positive_entropy_loss).parameters[option].default


def _gate_refusal(given: bool) -> str:
    which = "gate='correct'" if given else f"no gate is set, and divrl.core's default gate={_core_default('gate')!r}"
    return (
        f"{POSITIVE_ENTROPY_LOSS}: {which} is not available inside verl: verl's ppo_loss passes the policy loss only "
        "log-probs, advantages and the response mask (no correctness); set gate=positive_advantage (A > 0) or "
        f"gate=all, e.g. {POSITIVE_ENTROPY_ENV}=gate=positive_advantage"
    )


def _check_term_options(options: Mapping[str, Any], *, complete: bool = True) -> dict[str, Any]:
    """The term's ``options`` checked for verl, unchanged: unknown names, ``estimator`` other than ``surrogate`` and
    ``gate="correct"`` are refused in one line. ``complete``: these are all the options (a missing ``gate`` is
    core's default ``"correct"``, refused too); else a part (registration defaults, the environment variable) that
    others may complete, and only what it sets is checked."""
    opts = dict(options)
    check_options(positive_entropy_loss, opts, f"verl policy loss {POSITIVE_ENTROPY_LOSS!r}")
    if (complete or "gate" in opts) and opts.get("gate", _core_default("gate")) == "correct":
        raise ValueError(_gate_refusal(given="gate" in opts))
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
        options: ``lam``, ``gate`` (``positive_advantage`` or ``all``; required: an unset gate is core's default
            ``correct``, refused), ``ratio``.
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
    _check_term_options(options, complete=False)
    return options


_TERMS: dict[str, dict[str, Any]] = {}
"""verl policy-loss name -> the term options it was registered with (:func:`register_positive_entropy_loss`)."""


def term_options(name: str, environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The options the term of registered loss ``name`` runs with: its registration options, overridden by
    ``DIVRL_VERL_POSITIVE_ENTROPY`` in ``environ`` (default ``os.environ``), checked as a whole
    (:func:`_check_term_options`: a gate neither sets is refused, core's default ``correct`` being one verl cannot
    serve). None when ``name`` is not a divrl loss registered in this process."""
    if name not in _TERMS:
        return None
    env = os.environ if environ is None else environ
    return _check_term_options({**_TERMS[name], **_env_options(env.get(POSITIVE_ENTROPY_ENV, ""))})


def make_positive_entropy_loss(
    *, base: str = "vanilla", **options: Any
) -> Callable[..., tuple[Tensor, dict[str, Any]]]:
    """A verl policy loss: verl's registered loss ``base`` plus :func:`positive_entropy_term`.

    The signature is verl 0.9's ``PolicyLossFn`` as ``ppo_loss`` calls it (keywords ``old_log_prob``, ``log_prob``,
    ``advantages``, ``response_mask``, ``loss_agg_mode``, ``config``, ``rollout_is_weights``). ``options`` are the
    term's defaults over divrl.core's (``lam=0.01``, ``gate="correct"``, ``ratio="old"``). The environment variable
    ``DIVRL_VERL_POSITIVE_ENTROPY`` (e.g. ``gate=positive_advantage,lam=0.02``), read in the worker at call time,
    overrides them. verl's ActorConfig accepts no extra keys, so options cannot come from the actor config.

    The gate must be set, here or in the environment variable, to ``positive_advantage`` or ``all``: core's default
    ``gate="correct"`` reads correctness, which verl's ``ppo_loss`` does not pass. ``gate="correct"`` given here is
    refused at once; a gate set nowhere is refused by the ``divrl_sync`` trainer before verl builds its workers
    (:class:`~divrl.integrations.verl.trainer.DivrlAdvantageMixin`) and, under any trainer, at the first call. Metrics:
    ``actor/divrl_div_term``, ``actor/divrl_div_gate_frac``.
    """
    defaults = _check_term_options(options, complete=False)

    def loss_fn(
        old_log_prob: Tensor,
        log_prob: Tensor,
        advantages: Tensor,
        response_mask: Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        opts = {**defaults, **_env_options(os.environ.get(POSITIVE_ENTROPY_ENV, ""))}
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
    ``register_positive_entropy_loss("my_div", base="gspo", lam=0.02, gate="all")``. The plugin registers
    ``divrl_positive_entropy`` with no options: its gate comes from ``DIVRL_VERL_POSITIVE_ENTROPY``.
    """
    core_algos = _verl_module("verl.trainer.ppo.core_algos")
    core_algos.register_policy_loss(name)(make_positive_entropy_loss(base=base, **options))
    _TERMS[name] = dict(options)
    return name
