"""Policy-loss registry: PPO-clip with aggregation modes and a k3 KL, R1-zero-Div's positive-entropy
term, an entropy bonus, and Clip-Cov / KL-Cov.

Every entry has one signature::

    fn(batch: GroupBatch, advantages: Tensor, *, <keyword-only options>) -> LossOutput

``advantages`` is ``(P, G)`` (one value per rollout, broadcast over its tokens) or ``(P, G, T)``
(token-level). It is treated as a constant (detached). Token inputs come from the batch:
``logprobs`` (current policy, with grad), ``old_logprobs`` (behaviour policy; ``None`` means
on-policy, i.e. ``logprobs.detach()``), ``ref_logprobs``, ``entropies`` and the required ``mask``.

A loss is *minimised*. Terms compose by addition: a trainer configured with ``ppo`` and
``positive_entropy`` sums the two terms' losses and logs each term's metrics as ``<term>/<metric>``.

Padding positions (``mask == 0``) are zeroed *before* any arithmetic, so NaN/inf log-probs in the
padding never reach the loss or its gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

from divrl.core.batch import GroupBatch
from divrl.core.needs import Needs, NeedsFn
from divrl.core.registry import Registry

__all__ = [
    "AGG_MODES",
    "LOSSES",
    "LossFn",
    "LossOutput",
    "aggregate",
    "clip_cov_loss",
    "compute_loss",
    "entropy_bonus_loss",
    "get_loss",
    "k3_kl",
    "kl_cov_loss",
    "kl_loss",
    "loss_names",
    "loss_needs",
    "masked_mean",
    "positive_entropy_loss",
    "ppo_loss",
    "register_loss",
]


@dataclass(frozen=True)
class LossOutput:
    """The result of one loss term.

    Attributes:
        loss: scalar tensor to minimise (carries grad when its inputs do).
        metrics: detached python floats for logging (clip fractions, KL, the term's value, ...).
    """

    loss: Tensor
    metrics: dict[str, float]


LossFn = Callable[..., LossOutput]
_L = TypeVar("_L", bound=LossFn)

LOSSES: Registry[LossFn] = Registry("policy loss")


def register_loss(name: str, needs: NeedsFn | None = None) -> Callable[[_L], _L]:
    """Decorator registering a policy loss ``fn(batch, advantages, *, **options) -> LossOutput``, with
    ``needs(options) -> Needs`` declaring the :class:`GroupBatch` fields it reads (:mod:`divrl.core.needs`;
    default: the current log-probs and the mask, with the old log-probs when set)."""

    def decorator(fn: _L) -> _L:
        LOSSES.register(name, needs if needs is not None else _policy_tokens)(fn)
        return fn

    return decorator


def loss_needs(name: str, options: Mapping[str, Any] | None = None) -> Needs:
    """What loss ``name`` reads with ``options``: its declared :class:`~divrl.core.needs.Needs`."""
    return LOSSES.needs(name, options)


def _policy_tokens(options: Mapping[str, Any]) -> Needs:
    """A token-level policy-gradient term: current log-probs and mask; old log-probs when set (None = on-policy)."""
    return Needs.of({"logprobs", "mask"}, {"old_logprobs"})


def _ppo_needs(options: Mapping[str, Any]) -> Needs:
    ref = {"ref_logprobs"} if _positive(options.get("beta", 0.0)) else set()
    return _policy_tokens(options) | Needs.of(ref)


def _positive_entropy_needs(options: Mapping[str, Any]) -> Needs:
    if options.get("estimator", "surrogate") == "exact":
        own = Needs.of({"mask", "entropies"})
    else:
        own = _policy_tokens(options)
    return own | Needs.of({"correct"} if options.get("gate", "correct") == "correct" else set())


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False  # the loss itself rejects the value, naming the option


def get_loss(name: str) -> LossFn:
    """The loss registered under ``name`` (unknown names raise, listing the known ones)."""
    return LOSSES.get(name)


def loss_names() -> list[str]:
    """Sorted registered loss names."""
    return LOSSES.names()


def compute_loss(name: str, batch: GroupBatch, advantages: Tensor, **options: Any) -> LossOutput:
    """Call loss ``name``; unknown options raise ``ValueError`` naming them."""
    return cast(LossOutput, LOSSES.call(name, batch, advantages, **options))


# ---------------------------------------------------------------------------------------------
# Helpers: masked mean, aggregation, k3 KL


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over positions where the 0/1 ``mask`` is set; 0 where nothing is set.

    Masked-out positions are excluded with ``torch.where`` (a NaN there does not leak).
    """
    if values.shape != mask.shape:
        raise ValueError(f"masked_mean: values shape {tuple(values.shape)} != mask shape {tuple(mask.shape)}")
    keep = mask.bool()
    zeros = torch.zeros((), dtype=values.dtype, device=values.device)
    total = torch.where(keep, values, zeros)
    count = keep.to(values.dtype)
    if dim is None:
        return total.sum() / count.sum().clamp_min(1)
    return total.sum(dim) / count.sum(dim).clamp_min(1)


AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def aggregate(loss_mat: Tensor, mask: Tensor, mode: str = "token-mean", max_len: int | None = None) -> Tensor:
    """Reduce a token-level loss ``(P, G, T)`` or ``(N, T)`` to a scalar (verl ``agg_loss`` modes).

    With ``l`` the token losses, ``m`` the 0/1 mask, ``T_i = sum_t m_it`` and ``N`` the number of
    sequences that have at least one valid token:

    - ``token-mean`` (DAPO, verl default): ``sum_it l_it / sum_i T_i``.
    - ``seq-mean-token-mean`` (GRPO, DeepSeekMath): ``(1/N) sum_i (1/T_i) sum_t l_it``.
    - ``seq-mean-token-sum``: ``(1/N) sum_i sum_t l_it``.
    - ``seq-mean-token-sum-norm`` (Dr. GRPO, arXiv 2503.20783): ``(1/N) sum_i sum_t l_it / max_len``.
      This follows the Dr. GRPO code (``masked_sum(..., constant_normalizer=generate_max_length)``
      then a mean over sequences). verl's ``agg_loss`` mode of the same name computes the same
      value since v0.7.1 (the seq-mean over sequences with tokens, then ``/ loss_scale_factor``;
      read in ``verl/trainer/ppo/core_algos.py`` at v0.7.1, v0.9.0 and main); up to v0.7.0 it
      omitted the ``1/N``. ``max_len=None`` uses the padded width ``T`` (verl's default
      ``loss_scale_factor``); pass the maximum generation length to get a normaliser that does not
      depend on the batch.

    Sequences without valid tokens are left out of ``N`` (they carry no loss); an all-masked input
    gives 0.

    Args:
        loss_mat: ``(P, G, T)`` or ``(N, T)`` token losses.
        mask: same shape, 0/1 or bool.
        mode: one of :data:`AGG_MODES`.
        max_len: the constant of ``seq-mean-token-sum-norm`` (positive); not accepted by other modes.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; known: {list(AGG_MODES)}")
    if loss_mat.shape != mask.shape:
        raise ValueError(f"aggregate: loss_mat shape {tuple(loss_mat.shape)} != mask shape {tuple(mask.shape)}")
    if loss_mat.dim() < 2:
        raise ValueError(f"aggregate: loss_mat must be (P, G, T) or (N, T), got shape {tuple(loss_mat.shape)}")
    if max_len is not None and mode != "seq-mean-token-sum-norm":
        raise ValueError(f"max_len only applies to mode 'seq-mean-token-sum-norm', not {mode!r}")
    if max_len is not None and max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    width = loss_mat.shape[-1]
    keep = mask.reshape(-1, width).bool()  # (N, T)
    zeros = torch.zeros((), dtype=loss_mat.dtype, device=loss_mat.device)
    values = torch.where(keep, loss_mat.reshape(-1, width), zeros)  # (N, T)
    tokens = keep.to(loss_mat.dtype).sum(-1)  # (N,)
    if mode == "token-mean":
        return values.sum() / tokens.sum().clamp_min(1)
    seq_sum = values.sum(-1)  # (N,)
    if mode == "seq-mean-token-mean":
        per_seq = seq_sum / tokens.clamp_min(1)  # (N,)
    elif mode == "seq-mean-token-sum":
        per_seq = seq_sum
    else:
        per_seq = seq_sum / float(max_len if max_len is not None else width)
    num_seqs = (tokens > 0).to(loss_mat.dtype).sum()
    return per_seq.sum() / num_seqs.clamp_min(1)


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate of ``KL(pi_theta || pi_ref)`` (Schulman 2020; GRPO, DeepSeekMath arXiv 2402.03300).

    ``d = clamp(ref - logp, -20, 20)``, ``KL = clamp(exp(d) - d - 1, -10, 10)``: verl's
    ``low_var_kl`` with its clamps. Unbiased for samples from ``pi_theta``, always >= 0.
    """
    d = (ref_logprobs - logprobs).clamp(-20.0, 20.0)  # (..., T)
    return (torch.exp(d) - d - 1.0).clamp(-10.0, 10.0)


# ---------------------------------------------------------------------------------------------
# Input gathering and option checks


@dataclass(frozen=True)
class _Tokens:
    """Token inputs of a loss, all (P, G, T), zeroed at padding."""

    mask: Tensor  # bool
    logprobs: Tensor  # current policy, with grad
    old: Tensor  # behaviour policy, detached
    adv: Tensor  # advantages broadcast to tokens, detached


def _require(batch: GroupBatch, field: str, loss: str, why: str = "") -> Tensor:
    value = getattr(batch, field)
    if value is None:
        reason = f" ({why})" if why else ""
        raise ValueError(f"policy loss {loss!r} requires GroupBatch.{field}{reason}, but it is None")
    return cast(Tensor, value)


def _mask(batch: GroupBatch, loss: str) -> Tensor:
    mask = _require(batch, "mask", loss, "the response-token mask")
    if mask.dtype is not torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"GroupBatch.mask must hold only 0/1 values (policy loss {loss!r})")
        mask = mask.bool()
    return mask


def _where(mask: Tensor, values: Tensor) -> Tensor:
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))


def _tokens(batch: GroupBatch, advantages: Tensor, loss: str) -> _Tokens:
    mask = _mask(batch, loss)  # (P, G, T)
    lp = _require(batch, "logprobs", loss, "current-policy log-probs of the sampled tokens")
    if not torch.is_floating_point(lp):
        raise ValueError(f"GroupBatch.logprobs must be a float tensor, got dtype {lp.dtype}")
    lp = _where(mask, lp)  # (P, G, T)
    old = lp.detach() if batch.old_logprobs is None else _where(mask, batch.old_logprobs.detach())  # (P, G, T)
    return _Tokens(mask=mask, logprobs=lp, old=old, adv=_broadcast_advantages(advantages, mask, loss))


def _broadcast_advantages(advantages: Tensor, mask: Tensor, loss: str) -> Tensor:
    if not isinstance(advantages, Tensor) or not torch.is_floating_point(advantages):
        raise ValueError(f"advantages must be a float torch.Tensor (policy loss {loss!r})")
    p, g, t = mask.shape
    adv = advantages.detach()
    if tuple(adv.shape) == (p, g):
        adv = adv.unsqueeze(-1).expand(p, g, t)  # (P, G, T)
    elif tuple(adv.shape) != (p, g, t):
        raise ValueError(
            f"advantages must have shape (P, G) = {(p, g)} or (P, G, T) = {(p, g, t)}, "
            f"got {tuple(adv.shape)} (policy loss {loss!r})"
        )
    return _where(mask, adv)  # (P, G, T)


def _choice(value: str, allowed: tuple[str, ...], option: str, loss: str) -> None:
    if value not in allowed:
        raise ValueError(f"policy loss {loss!r}: option {option}={value!r} not in {list(allowed)}")


def _nonneg(value: float, option: str, loss: str) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"policy loss {loss!r}: option {option} must be a finite number >= 0, got {value}")


def _scalar(x: Tensor) -> float:
    return float(x.detach())


def _ratio_metrics(tok: _Tokens) -> dict[str, float]:
    """``approx_kl``: k3 estimate of KL(pi_old || pi_theta) = mean(exp(d) - 1 - d), d = logp - old_logp
    (samples come from pi_old); ``ppo_kl``: verl's k1 ``mean(old_logp - logp)``."""
    with torch.no_grad():
        d = (tok.logprobs - tok.old).clamp(-20.0, 20.0)  # (P, G, T)
        k3 = torch.exp(d) - 1.0 - d  # (P, G, T)
        return {"approx_kl": _scalar(masked_mean(k3, tok.mask)), "ppo_kl": _scalar(masked_mean(-d, tok.mask))}


# ---------------------------------------------------------------------------------------------
# Registered losses


@register_loss("ppo", needs=_ppo_needs)
def ppo_loss(
    batch: GroupBatch,
    advantages: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    clip_c: float | None = None,
    agg: str = "token-mean",
    max_len: int | None = None,
    beta: float = 0.0,
) -> LossOutput:
    """PPO clipped surrogate (Schulman et al. 2017, arXiv 1707.06347, Eq. 7) with a k3 KL penalty.

    Per token, with ``rho = exp(clamp(logp - old_logp, -20, 20))``::

        l = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)
        if clip_c is set and A < 0:  l = min(l, -clip_c * A)          # dual clip
        loss = agg(l) + beta * agg(k3(logp, ref_logp))

    - ``eps_high > eps_low`` is DAPO's Clip-Higher (arXiv 2503.14476: 0.2 / 0.28).
    - ``clip_c`` is dual-clip PPO (Ye et al. 2020, arXiv 1912.09729; verl ``clip_ratio_c``, typically 3):
      bounds the loss of negative-advantage tokens whose ratio has grown large. Must be > 1.
    - ``agg``/``max_len``: see :func:`aggregate` (GRPO: ``seq-mean-token-mean``; DAPO: ``token-mean``;
      Dr. GRPO: ``seq-mean-token-sum-norm`` with ``max_len`` = max generation length).
    - ``beta > 0`` adds the k3 KL to ``batch.ref_logprobs`` (:func:`k3_kl`; GRPO's in-loss KL),
      aggregated with the same ``agg``.

    Metrics: ``pg_loss``; ``clip_frac`` (valid tokens where the clipped branch is active);
    ``clip_frac_dual`` (tokens bounded by the dual clip; only with ``clip_c``); ``approx_kl``
    (k3 estimate of KL(pi_old || pi_theta)); ``ppo_kl`` (verl's k1, mean(old - new));
    ``kl`` (aggregated k3 to the reference; only with ``beta > 0``).
    """
    name = "ppo"
    _nonneg(eps_low, "eps_low", name)
    _nonneg(eps_high, "eps_high", name)
    _nonneg(beta, "beta", name)
    _choice(agg, AGG_MODES, "agg", name)
    if clip_c is not None and not clip_c > 1.0:
        raise ValueError(f"policy loss 'ppo': option clip_c must be > 1 (dual clip), got {clip_c}")
    tok = _tokens(batch, advantages, name)
    adv = tok.adv  # (P, G, T)
    ratio = torch.exp((tok.logprobs - tok.old).clamp(-20.0, 20.0))  # (P, G, T)
    loss_unclipped = -adv * ratio  # (P, G, T)
    loss_clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # (P, G, T)
    token_loss = torch.maximum(loss_unclipped, loss_clipped)  # (P, G, T)
    metrics = {"clip_frac": _scalar(masked_mean((loss_clipped > loss_unclipped).float(), tok.mask))}
    if clip_c is not None:
        bound = -adv * clip_c  # (P, G, T)
        dual = (adv < 0) & (token_loss > bound)  # (P, G, T)
        token_loss = torch.where(dual, bound, token_loss)  # (P, G, T)
        metrics["clip_frac_dual"] = _scalar(masked_mean(dual.float(), tok.mask))
    pg_loss = aggregate(token_loss, tok.mask, agg, max_len)
    metrics["pg_loss"] = _scalar(pg_loss)
    metrics.update(_ratio_metrics(tok))
    loss = pg_loss
    if beta > 0:
        ref = _require(batch, "ref_logprobs", name, "beta > 0 adds a KL to the reference policy")
        kl = aggregate(k3_kl(tok.logprobs, _where(tok.mask, ref.detach())), tok.mask, agg, max_len)
        metrics["kl"] = _scalar(kl)
        loss = pg_loss + beta * kl
    return LossOutput(loss=loss, metrics=metrics)


@register_loss("kl", needs=lambda o: _policy_tokens(o) | Needs.of({"ref_logprobs"}))
def kl_loss(
    batch: GroupBatch,
    advantages: Tensor,
    *,
    beta: float = 0.001,
    agg: str = "token-mean",
    max_len: int | None = None,
) -> LossOutput:
    """Standalone k3 KL penalty ``beta * agg(k3(logp, ref_logp))`` (see :func:`k3_kl`).

    For composing with losses that have no KL option (``clip_cov``, ``kl_cov``). Do not combine it
    with ``ppo(beta > 0)``: the KL would be counted twice. ``beta=0.001`` is verl's ``kl_loss_coef``
    default; ``advantages`` is unused. Metric: ``kl``.
    """
    name = "kl"
    _nonneg(beta, "beta", name)
    _choice(agg, AGG_MODES, "agg", name)
    tok = _tokens(batch, advantages, name)
    ref = _require(batch, "ref_logprobs", name, "the KL is to the reference policy")
    kl = aggregate(k3_kl(tok.logprobs, _where(tok.mask, ref.detach())), tok.mask, agg, max_len)
    return LossOutput(loss=beta * kl, metrics={"kl": _scalar(kl)})


POSITIVE_ENTROPY_GATES = ("correct", "positive_advantage", "all")


@register_loss("positive_entropy", needs=_positive_entropy_needs)
def positive_entropy_loss(
    batch: GroupBatch,
    advantages: Tensor,
    *,
    lam: float = 0.01,
    gate: str = "correct",
    estimator: str = "surrogate",
    ratio: str = "old",
) -> LossOutput:
    """R1-zero-Div's diversity term (Yao et al., arXiv 2505.23433, Eq. 9 / Eq. 12): ``loss = -lam * J_div``.

    ::

        h_it  = -exp(logp_it - old_logp_it) * logp_it            # Eq. 8, one-sample entropy surrogate
        J_div = (1/N) sum_i 1[gate_i] * (1/T_i) sum_t h_it       # N = all P*G sequences (with tokens)

    Add it to a ``ppo`` loss (the paper's Eq. 12: ``pg - lam * J_div``, outside the min/clip, no
    clipping of its own). Gated-out samples contribute 0 but still count in ``N``, as in the
    paper's ``1/G``. On-policy (``old == logp.detach()``) the value of ``h`` is ``-logp`` and its
    gradient w.r.t. ``logp`` is ``-(1 + logp)``; in general it is ``-(1 + logp) * pi/pi_old``,
    i.e. ``d h / d pi = -(1 + log pi) / pi_old`` (the paper's per-token gradient, Eq. 11).

    Options:
        lam: weight lambda (paper: 0.01).
        gate: ``correct`` (paper: ``1(r_i = 1)``, reads ``batch.correct``; a rollout whose reward is NaN,
            i.e. unscorable, is never correct), ``positive_advantage``
            (``A > 0``; reported for the released code, unverified; token-level advantages gate per
            token), or ``all`` (the paper's "positive and negative samples" ablation).
        estimator: ``surrogate`` (the paper's Eq. 8) or ``exact``: the full-vocabulary token entropy
            ``batch.entropies`` (must carry grad) in place of ``h`` -- a lower-variance variant, NOT
            the paper's method.
        ratio: denominator of the importance ratio: ``old`` (paper, pi_old) or ``detached``
            (stopgrad of the current log-prob, reported for the released code). They coincide with
            one optimiser step per batch. Unused by ``estimator="exact"``.

    Metrics: ``div_term`` (the value of ``J_div``), ``div_gate_frac`` (fraction of sequences the
    gate lets through; with token-level gates, the mean per-sequence fraction of gated tokens).
    """
    name = "positive_entropy"
    if not math.isfinite(lam):
        raise ValueError(f"policy loss {name!r}: option lam must be finite, got {lam}")
    _choice(gate, POSITIVE_ENTROPY_GATES, "gate", name)
    _choice(estimator, ("surrogate", "exact"), "estimator", name)
    _choice(ratio, ("old", "detached"), "ratio", name)
    mask = _mask(batch, name)  # (P, G, T)
    adv = _broadcast_advantages(advantages, mask, name)  # (P, G, T)
    if estimator == "surrogate":
        tok = _tokens(batch, advantages, name)
        lp = tok.logprobs  # (P, G, T)
        denominator = tok.old if ratio == "old" else lp.detach()  # (P, G, T)
        h = -torch.exp(lp - denominator) * lp  # (P, G, T)  Eq. 8
    else:
        entropies = _require(batch, "entropies", name, "estimator='exact' uses full-vocabulary entropies")
        h = _where(mask, entropies)  # (P, G, T)

    if gate == "correct":
        correct = _require(batch, "correct", name, "gate='correct' uses verifier correctness") & batch.scored  # (P, G)
        gate_mat = correct.to(h.dtype).unsqueeze(-1).expand_as(h)  # (P, G, T)
    elif gate == "positive_advantage":
        gate_mat = (adv > 0).to(h.dtype)  # (P, G, T)
    else:
        gate_mat = torch.ones_like(h)  # (P, G, T)
    j_div = aggregate(gate_mat * h, mask, "seq-mean-token-mean")
    metrics = {
        "div_term": _scalar(j_div),
        "div_gate_frac": _scalar(aggregate(gate_mat, mask, "seq-mean-token-mean")),
    }
    return LossOutput(loss=-lam * j_div, metrics=metrics)


@register_loss("entropy_bonus", needs=lambda o: Needs.of({"mask", "entropies"}))
def entropy_bonus_loss(
    batch: GroupBatch,
    advantages: Tensor,
    *,
    coef: float = 0.001,
    agg: str = "token-mean",
    max_len: int | None = None,
) -> LossOutput:
    """Plain entropy regulariser ``-coef * agg(H)`` on ``batch.entropies`` (verl ``entropy_coeff``).

    ``H`` is the full-vocabulary entropy of the current policy at each response token and must carry
    grad. verl's current default coefficient is 0 (off); 0.001 here is its former default, so that
    the registered term does something when switched on. ``advantages`` is unused.
    Metric: ``entropy`` (the aggregated entropy).
    """
    name = "entropy_bonus"
    if not math.isfinite(coef):
        raise ValueError(f"policy loss {name!r}: option coef must be finite, got {coef}")
    _choice(agg, AGG_MODES, "agg", name)
    mask = _mask(batch, name)  # (P, G, T)
    entropies = _require(batch, "entropies", name, "full-vocabulary token entropies")
    entropy = aggregate(_where(mask, entropies), mask, agg, max_len)
    return LossOutput(loss=-coef * entropy, metrics={"entropy": _scalar(entropy)})


def _centred_cov(tok: _Tokens) -> Tensor:
    """(P, G, T) ``(A - mean(A)) * (logp - mean(logp))``, means over all valid tokens of the batch, no grad."""
    with torch.no_grad():
        lp = tok.logprobs.detach()  # (P, G, T)
        return (tok.adv - masked_mean(tok.adv, tok.mask)) * (lp - masked_mean(lp, tok.mask))  # (P, G, T)


@register_loss("clip_cov")
def clip_cov_loss(
    batch: GroupBatch,
    advantages: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    agg: str = "token-mean",
    max_len: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> LossOutput:
    """Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617).

    Follows ``compute_policy_loss_clip_cov`` of the official code (PRIME-RL/Entropy-Mechanism-of-RL,
    merged into verl)::

        cov_it  = (A_it - mean(A)) * (logp_it - mean(logp))        # means over all valid tokens, no grad
        cand    = valid & not PPO-clipped & clip_cov_lb < cov < clip_cov_ub
        pick max(1, floor(clip_cov_ratio * n_valid)) candidates uniformly at random
        l_it    = max(-rho A, -clip(rho, 1-eps_low, 1+eps_high) A) * (0 if picked else 1)

    Picked tokens lose their gradient but still count in the aggregation's denominator. The
    statistics are batch-level, so the result depends on the batch composition (as in the paper).
    The official 7B recipe uses ``eps_low = eps_high = 1``. Randomness: pass ``seed`` (config-friendly)
    or a CPU ``generator`` for a reproducible pick; with neither, torch's global RNG is used (as in
    the official code).

    Metrics: ``pg_loss``, ``clip_frac`` (PPO clip), ``cov_clip_frac`` (fraction of valid tokens
    whose gradient was removed; verl's ``pg_clipfrac``), ``approx_kl``, ``ppo_kl``.
    """
    name = "clip_cov"
    _nonneg(eps_low, "eps_low", name)
    _nonneg(eps_high, "eps_high", name)
    _choice(agg, AGG_MODES, "agg", name)
    if not clip_cov_ratio > 0:
        raise ValueError(f"policy loss {name!r}: option clip_cov_ratio must be > 0, got {clip_cov_ratio}")
    if seed is not None and generator is not None:
        raise ValueError(f"policy loss {name!r}: pass seed or generator, not both")
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    tok = _tokens(batch, advantages, name)
    adv = tok.adv  # (P, G, T)
    ratio = torch.exp(tok.logprobs - tok.old)  # (P, G, T)  (the official code does not clamp here)
    loss_unclipped = -adv * ratio  # (P, G, T)
    loss_clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # (P, G, T)
    clipped = (loss_clipped > loss_unclipped) & tok.mask  # (P, G, T)

    cov = _centred_cov(tok)  # (P, G, T)
    candidates = tok.mask & ~clipped & (cov > clip_cov_lb) & (cov < clip_cov_ub)  # (P, G, T)
    flat_idx = candidates.reshape(-1).nonzero().squeeze(-1)  # (C,)
    n_pick = max(int(clip_cov_ratio * int(tok.mask.sum())), 1)
    perm = torch.randperm(flat_idx.numel(), generator=generator).to(flat_idx.device)  # (C,)
    keep = torch.ones(tok.mask.numel(), dtype=adv.dtype, device=adv.device)  # (P*G*T,)
    keep[flat_idx[perm[:n_pick]]] = 0.0
    keep = keep.reshape(tok.mask.shape)  # (P, G, T)

    token_loss = torch.maximum(loss_unclipped, loss_clipped) * keep  # (P, G, T)
    pg_loss = aggregate(token_loss, tok.mask, agg, max_len)
    metrics = {
        "pg_loss": _scalar(pg_loss),
        "clip_frac": _scalar(masked_mean(clipped.float(), tok.mask)),
        "cov_clip_frac": _scalar(masked_mean((keep == 0).float(), tok.mask)),
    }
    metrics.update(_ratio_metrics(tok))
    return LossOutput(loss=pg_loss, metrics=metrics)


@register_loss("kl_cov")
def kl_cov_loss(
    batch: GroupBatch,
    advantages: Tensor,
    *,
    kl_cov_ratio: float = 2e-4,
    ppo_kl_coef: float = 1.0,
    agg: str = "token-mean",
    max_len: int | None = None,
) -> LossOutput:
    """KL-Cov (Cui et al. 2025, arXiv 2505.22617), following ``compute_policy_loss_kl_cov`` of the official code::

        cov_it = (A_it - mean(A)) * (logp_it - mean(logp))         # means over all valid tokens, no grad
        top    = the max(1, floor(kl_cov_ratio * n_valid)) valid tokens with the largest cov
        l_it   = -rho_it A_it + (ppo_kl_coef * |logp_it - old_logp_it| if (i, t) in top else 0)

    There is no PPO clipping at all in KL-Cov (as in the official code). With one optimiser step
    per batch ``|logp - old| = 0`` with zero (sub)gradient, so the penalty only acts off-policy.
    The original repository states the ratio in percent (``k_percent = 0.2`` for 7B = 0.002 here);
    verl's default is 2e-4.

    Metrics: ``pg_loss``, ``kl_cov_frac`` (fraction of valid tokens penalised), ``abs_kl``
    (mean ``|logp - old|``, the official ``ppo_kl``), ``approx_kl``, ``ppo_kl``.
    """
    name = "kl_cov"
    if not kl_cov_ratio > 0:
        raise ValueError(f"policy loss {name!r}: option kl_cov_ratio must be > 0, got {kl_cov_ratio}")
    _nonneg(ppo_kl_coef, "ppo_kl_coef", name)
    _choice(agg, AGG_MODES, "agg", name)
    tok = _tokens(batch, advantages, name)
    diff = tok.logprobs - tok.old  # (P, G, T)
    abs_kl = diff.abs()  # (P, G, T)
    token_loss = -tok.adv * torch.exp(diff)  # (P, G, T)

    n_valid = int(tok.mask.sum())
    selected = torch.zeros_like(tok.mask)  # (P, G, T) bool
    if n_valid > 0:
        cov = _centred_cov(tok).masked_fill(~tok.mask, -math.inf)  # (P, G, T)
        n_pick = max(1, int(n_valid * kl_cov_ratio))
        top = cov.reshape(-1).topk(n_pick).indices  # (n_pick,)
        selected = selected.reshape(-1).index_fill(0, top, True).reshape(tok.mask.shape)  # (P, G, T)
    token_loss = token_loss + ppo_kl_coef * abs_kl * selected.to(abs_kl.dtype)  # (P, G, T)
    pg_loss = aggregate(token_loss, tok.mask, agg, max_len)
    metrics = {
        "pg_loss": _scalar(pg_loss),
        "kl_cov_frac": _scalar(masked_mean(selected.float(), tok.mask)),
        "abs_kl": _scalar(masked_mean(abs_kl.detach(), tok.mask)),
    }
    metrics.update(_ratio_metrics(tok))
    return LossOutput(loss=pg_loss, metrics=metrics)
