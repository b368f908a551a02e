"""Advantage estimators: one registry, one signature.

Every estimator is ``fn(batch: GroupBatch, *, <keyword-only options with defaults>) -> Tensor  # (P, G)``
(a *token-level* one, registered with ``token_level=True``, returns ``(P, G, T)`` aligned with ``batch.mask``;
see :func:`register_advantage`) and is looked up by name::

    adv = compute_advantages("darling", batch, floor=0.1)  # (P, G)

:func:`compute_advantages` is the entry point. It rejects unknown options (naming them), checks the result,
and sets the advantage of every *unscorable* rollout to exactly 0.

**Unscorable rollouts.** ``batch.rewards`` may hold NaN where a reward function returned ``None`` (a
math-verify timeout, a crashed verifier). Every statistic is then taken over the *scored* rollouts of a
group only (``batch.scored``): with c of G rollouts scored, a group gets the advantages that the same
estimator gives the group made of those c rollouts alone (G = c), and the unscorable ones get 0. What that
means for each estimator:

==================  ==============================================================================================
``grpo``            mean and std over the c scored rewards (std divides by c - 1); ``scale="batch"``: the std of
                    every scored reward in the batch
``dr_grpo``         mean over the c scored rewards
``rloo``            baseline = mean of the other c - 1 scored rewards
``passk``           n = c and the count of correct among them; a group with c < k has no k-subset: 0
``unlikeliness``    likelihood ranks 0 .. c-1 among the scored rollouts, multiplier ``1 - beta * rank / c``,
                    then the ``grpo`` statistics over them; ``drop_uniform`` looks at the scored rewards
``darling``         class sizes counted among the scored rollouts, ``div = (c - |C(i) ∩ scored|) / (c - 1)``,
                    then the mean (and std) over them
``setpo``           the base estimator as above; the set Ω of the kernel diversity is the scored rollouts
                    (the correct scored ones with ``members="correct"``); ``center`` over the scored ones
``outcome_ucb``     only the scored rollouts' answers get a bonus and enter the history; then the base estimator
                    as above (:mod:`divrl.core.outcome_ucb`, a stateful estimator)
``repexp``          the group's hidden-state mean, covariance, bonus normalisation and gates are over them only;
                    they get no bonus; then the base estimator as above (:mod:`divrl.core.repexp`)
==================  ==============================================================================================

This is what TRL 1.16 does for its own estimators (``grpo_trainer.py``: ``torch.nanmean`` and ``nanstd`` over
the group; ``rloo_trainer.py``: the leave-one-out baseline divides by the scorable count - 1; both zero the
unscorable advantages with ``nan_to_num``). A group with one scored rollout has no baseline and gets 0 (TRL:
its std or baseline is 0/0 = NaN, also turned into 0). An estimator registered by a user without
``handles_unscored=True`` is called on each group's scored rollouts only (:func:`on_scored_rollouts`).

Every estimator returns finite values. For the estimators that only look at rewards (``grpo``,
``dr_grpo``, ``rloo``, ``passk``, and ``unlikeliness`` with its default ``drop_uniform=True``) a
group whose scored rewards are all equal gets exact zeros. ``darling`` and ``setpo`` are diversity
estimators: a group of equal rewards still gets a non-zero advantage when its rollouts differ in
diversity (that is their purpose), and zeros when the diversity is uniform too.

Dimension letters: P prompts, G rollouts per prompt, T tokens (see :mod:`divrl.core.batch`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from functools import lru_cache
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor

from divrl.core.batch import GroupBatch
from divrl.core.diversity import (
    cosine_kernel,
    darling_diversity,
    ngram_kernel,
    setpo_marginal_contributions,
)
from divrl.core.needs import Needs, NeedsFn
from divrl.core.registry import Registry, check_options

__all__ = [
    "ADVANTAGES",
    "AdvantageFn",
    "advantage_handles_unscored",
    "advantage_is_stateful",
    "advantage_is_token_level",
    "advantage_names",
    "advantage_needs",
    "advantage_needs_logprobs",
    "compute_advantages",
    "compute_advantages_and_state",
    "darling",
    "dr_grpo",
    "get_advantage",
    "grpo",
    "on_scored_rollouts",
    "passk",
    "register_advantage",
    "rloo",
    "setpo",
    "setpo_bonus",
    "setpo_needs",
    "unlikeliness",
]

AdvantageFn = Callable[..., Tensor | tuple[Tensor, Mapping[str, Any]]]
"""``fn(batch: GroupBatch, *, **options) -> Tensor  # (P, G)``; a stateful one returns ``(advantages, updates)``."""
_Estimator = TypeVar("_Estimator", bound=AdvantageFn)  # register_advantage keeps the decorated function's own type

ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")

Scale = Literal["group", "batch", "none"]


_HANDLES_UNSCORED: set[str] = set()
_STATEFUL: set[str] = set()
_TOKEN_LEVEL: set[str] = set()


def register_advantage(
    name: str,
    *,
    needs: NeedsFn | None = None,
    needs_logprobs: bool = False,
    handles_unscored: bool = False,
    stateful: bool = False,
    token_level: bool = False,
) -> Callable[[_Estimator], _Estimator]:
    """Decorator registering an estimator under ``name`` (a different function under a taken name raises).

    ``needs``: ``needs(options) -> Needs``, the :class:`GroupBatch` fields the estimator reads with those options
    (:mod:`divrl.core.needs`); the trainer computes exactly those, and config checks and adapters read the same
    declaration (:func:`advantage_needs`). Default: rewards only.

    ``needs_logprobs``: shorthand for a ``needs`` that reads ``old_logprobs`` and ``mask`` (P, G, T) whatever the
    options, so a trainer runs a log-prob pass over the rollouts before the advantage.

    ``handles_unscored``: the estimator accepts NaN rewards and takes its statistics over ``batch.scored`` itself
    (every built-in does). Otherwise :func:`compute_advantages` calls it, when a batch holds unscorable rollouts,
    on each group's scored rollouts only (:func:`on_scored_rollouts`), so it never sees a NaN.

    ``stateful``: the estimator keeps per-problem state across steps. It stays a pure function: it reads the state
    of the batch's problems from before this step in ``batch.history`` (keyed by ``batch.problem_ids``) and returns
    ``(advantages (P, G), updates)``, ``updates`` being the new records of the batch's problems; the caller keeps
    the state (:func:`compute_advantages_and_state`). Its ``needs`` must declare ``problem_ids`` and ``history``,
    and it must handle unscorable rollouts itself (``handles_unscored=True``).

    ``token_level``: the estimator returns one advantage per response token, ``(P, G, T)`` aligned with
    ``batch.mask`` (UCAS), instead of one per rollout. Its ``needs`` must declare ``mask`` and it must handle
    unscorable rollouts itself (``handles_unscored=True``). :func:`compute_advantages` then returns ``(P, G, T)``
    with exactly 0 at every padding token and at every token of an unscorable rollout; every policy loss takes
    ``(P, G)`` or ``(P, G, T)`` advantages (docs/architecture.md, "Token-level advantages")."""
    if token_level:
        if not handles_unscored:
            raise ValueError(f"token-level estimator {name!r} must handle unscorable rollouts (handles_unscored=True)")
        if needs is None or "mask" not in needs({}).reads:
            raise ValueError(f"token-level estimator {name!r} must declare needs reading 'mask'")
        if stateful:
            raise ValueError(f"estimator {name!r}: a stateful token-level estimator is not supported")
        _TOKEN_LEVEL.add(name)
    if stateful:
        if not handles_unscored:
            raise ValueError(f"stateful estimator {name!r} must handle unscorable rollouts (handles_unscored=True)")
        if needs is None or not {"problem_ids", "history"} <= needs({}).reads:
            raise ValueError(f"stateful estimator {name!r} must declare needs reading 'problem_ids' and 'history'")
        _STATEFUL.add(name)
    if needs_logprobs:
        declared = needs

        def needs(options: Mapping[str, Any]) -> Needs:
            extra = Needs.of({"old_logprobs", "mask"})
            return extra if declared is None else declared(options) | extra

    if handles_unscored:
        _HANDLES_UNSCORED.add(name)
    register = ADVANTAGES.register(name, needs)

    def decorate(fn: _Estimator) -> _Estimator:
        register(fn)
        return fn

    return decorate


def advantage_needs(name: str, options: Mapping[str, Any] | None = None) -> Needs:
    """What estimator ``name`` reads with ``options``: its declared :class:`~divrl.core.needs.Needs`."""
    return ADVANTAGES.needs(name, options)


def with_base_needs(own: Needs, name: str, options: Mapping[str, Any]) -> Needs:
    """``own`` plus the needs of composite estimator ``name``'s base estimator (option ``base``, default ``grpo``,
    called with ``base_options``). A base that is ``name`` itself or not registered adds nothing: the estimator's
    call raises then, naming the base."""
    base = options.get("base", "grpo")
    if base == name or base not in ADVANTAGES:
        return own
    base_options = options.get("base_options") or {}
    return own | advantage_needs(base, base_options if isinstance(base_options, Mapping) else {})


def advantage_needs_logprobs(name: str, options: Mapping[str, Any] | None = None) -> bool:
    """Whether estimator ``name`` (with ``options``) reads the old log-probs, i.e. a trainer must run a log-prob
    pass before the advantage (e.g. ``unlikeliness``). A read of :func:`advantage_needs`."""
    return advantage_needs(name, options).requires("old_logprobs")


def advantage_handles_unscored(name: str) -> bool:
    """Whether estimator ``name`` was registered with ``handles_unscored=True`` (every built-in estimator)."""
    return name in _HANDLES_UNSCORED


def advantage_is_stateful(name: str) -> bool:
    """Whether estimator ``name`` keeps per-problem state across steps (registered with ``stateful=True``, e.g.
    ``outcome_ucb``): a trainer must carry its state (:func:`compute_advantages_and_state`) and checkpoint it."""
    return name in _STATEFUL


def advantage_is_token_level(name: str) -> bool:
    """Whether estimator ``name`` returns one advantage per response token, ``(P, G, T)`` (registered with
    ``token_level=True``, e.g. ``ucas``), rather than one per rollout, ``(P, G)``."""
    return name in _TOKEN_LEVEL


def get_advantage(name: str) -> AdvantageFn:
    """The estimator registered under ``name``; an unknown name raises listing the known ones."""
    return ADVANTAGES.get(name)


def advantage_names() -> list[str]:
    """Sorted names of the registered estimators."""
    return ADVANTAGES.names()


def compute_advantages(name: str, batch: GroupBatch, **options: Any) -> Tensor:
    """Advantages (P, G) from estimator ``name`` (``(P, G, T)`` for a token-level one, :func:`advantage_is_token_level`),
    statistics over the scored rollouts only.

    Unscorable (NaN-reward) rollouts get exactly 0 and take no part in any group statistic (see the module
    docstring for what that means per estimator). Unknown ``options`` raise ``ValueError`` naming them.

    A stateful estimator (:func:`advantage_is_stateful`) runs on ``batch.history`` as given and its state updates
    are dropped: a dry run, or one step seen in isolation; a trainer calls :func:`compute_advantages_and_state`.
    """
    return _finish(name, batch, _call_with_updates(name, batch, options)[0])  # (P, G)


def compute_advantages_and_state(
    name: str, batch: GroupBatch, state: Mapping[str, Any], **options: Any
) -> tuple[Tensor, dict[str, Any]]:
    """Advantages (P, G) and the new per-problem state of estimator ``name``: a pure function of (batch, state).

    ``state`` maps a problem id to the estimator's record of that problem (``{}`` before the first step). The
    estimator sees the records of the batch's problems (``batch.problem_ids``) as ``batch.history``; the returned
    state is a new dict, ``state`` with the records of this batch's problems replaced by the estimator's updates
    (``state`` itself is not modified). For a stateless estimator this is ``(compute_advantages(...), state)``.
    The design is ours; see docs/architecture.md, "Stateful estimators".
    """
    if name not in _STATEFUL:
        return compute_advantages(name, batch, **options), dict(state)
    ids = batch.problem_ids
    if ids is None:
        raise ValueError(f"advantage estimator {name!r} keeps per-problem state: it needs GroupBatch.problem_ids")
    batch = batch.replace(history={pid: state[pid] for pid in dict.fromkeys(ids) if pid in state})
    adv, updates = _call_with_updates(name, batch, options)
    unknown = sorted(set(updates) - set(ids))
    if unknown:
        raise ValueError(f"advantage estimator {name!r} returned state for problems not in the batch: {unknown[:3]}")
    return _finish(name, batch, adv), {**state, **updates}


def _finish(name: str, batch: GroupBatch, adv: Tensor) -> Tensor:
    """``adv`` (P, G) checked finite, with exactly 0 at every unscorable rollout; a token-level ``adv`` (P, G, T)
    also exactly 0 at every padding token."""
    if not bool(torch.isfinite(adv).all()):
        raise ValueError(f"advantage estimator {name!r} returned non-finite advantages")
    if adv.dim() == 3:
        assert batch.mask is not None  # _checked
        keep = batch.mask.to(adv.device).bool() & batch.scored.to(adv.device)[..., None]  # (P, G, T)
        return adv.masked_fill(~keep, 0.0)  # (P, G, T)
    return adv.masked_fill(~batch.scored, 0.0)  # (P, G)


def _call(name: str, batch: GroupBatch, options: dict[str, Any]) -> Tensor:
    """Estimator ``name`` on ``batch`` (its advantages only; a stateful one's updates are dropped): the base of a
    composite estimator (``setpo``, ``dra``, ``dsdr``, ...), so it must give one advantage per rollout (P, G)."""
    if name in _TOKEN_LEVEL:
        raise ValueError(
            f"base estimator {name!r} gives token-level advantages (P, G, T); a base must give one per rollout (P, G)"
        )
    return _call_with_updates(name, batch, options)[0]


def _call_with_updates(name: str, batch: GroupBatch, options: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """Estimator ``name`` on ``batch``: directly, or on the scored rollouts only for one without
    ``handles_unscored``; the result's shape is checked. Returns the advantages (P, G) and the state updates of a
    stateful estimator (``{}`` for the others)."""
    if bool(torch.isinf(batch.rewards).any()):
        raise ValueError("GroupBatch.rewards holds +-inf; rewards must be finite (or NaN for an unscorable rollout)")
    fn = ADVANTAGES.get(name)
    check_options(fn, options, f"{ADVANTAGES.kind} {name!r}")
    if name in _STATEFUL:
        out = fn(batch, **options)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
            raise ValueError(f"stateful advantage estimator {name!r} must return (advantages, updates)")
        return _checked(name, out[0], batch), dict(out[1])
    if name in _HANDLES_UNSCORED or bool(batch.scored.all()):
        return _checked(name, fn(batch, **options), batch, token_level=name in _TOKEN_LEVEL), {}
    return on_scored_rollouts(lambda sub: _checked(name, fn(sub, **options), sub), batch), {}


def _checked(name: str, adv: object, batch: GroupBatch, token_level: bool = False) -> Tensor:
    """``adv`` if it is a tensor of ``batch``'s shape (P, G), or of ``batch.mask``'s (P, G, T) for a token-level
    estimator; else a ``ValueError`` naming the estimator."""
    if token_level:
        if batch.mask is None:
            raise ValueError(f"token-level advantage estimator {name!r} needs GroupBatch.mask (P, G, T)")
        shape, spec = tuple(batch.mask.shape), "(P, G, T)"
    else:
        shape, spec = tuple(batch.rewards.shape), "(P, G)"
    if not isinstance(adv, Tensor) or tuple(adv.shape) != shape:
        got = tuple(adv.shape) if isinstance(adv, Tensor) else type(adv).__name__
        raise ValueError(f"advantage estimator {name!r} returned {got}, expected a tensor of shape {spec} = {shape}")
    return adv


def on_scored_rollouts(fn: Callable[[GroupBatch], Tensor], batch: GroupBatch) -> Tensor:
    """``fn`` applied to each group's scored rollouts only; (P, G) with 0 for every unscorable rollout.

    The groups are bucketed by their count c of scored rollouts; each bucket is compacted into a ``GroupBatch``
    of shape ``(P_c, c)`` (every per-rollout field taken along, rollouts kept in their order) and ``fn`` runs once
    per bucket. Groups with nothing scored get 0. For an estimator whose statistics are per group this gives
    exactly "the estimator on the c scored rollouts"; batch-level statistics (a batch std) would cover one bucket
    only: such an estimator should handle the mask itself (``register_advantage(..., handles_unscored=True)``).
    """
    scored = batch.scored  # (P, G)
    counts = scored.sum(-1)  # (P,)
    out = torch.zeros_like(batch.rewards)  # (P, G)
    for c in sorted(set(counts.tolist())):
        if c == 0:
            continue
        rows = (counts == c).nonzero().squeeze(-1)  # (P_c,)
        cols = torch.stack([scored[p].nonzero().squeeze(-1) for p in rows.tolist()])  # (P_c, c)
        adv = fn(_take(batch, rows, cols))  # (P_c, c)
        if not isinstance(adv, Tensor) or tuple(adv.shape) != tuple(cols.shape):
            got = tuple(adv.shape) if isinstance(adv, Tensor) else type(adv).__name__
            raise ValueError(f"on_scored_rollouts: fn returned {got} for a group batch of shape {tuple(cols.shape)}")
        out[rows[:, None], cols] = adv.to(out.dtype)
    return out


def _take(batch: GroupBatch, rows: Tensor, cols: Tensor) -> GroupBatch:
    """The rollouts ``cols`` (P', G') of the groups ``rows`` (P',), every per-rollout field included."""

    def tensor(x: Tensor | None) -> Tensor | None:
        if x is None:
            return None
        x = x[rows.to(x.device)]  # (P', G, ...)
        index = cols.to(x.device).view(*cols.shape, *([1] * (x.dim() - 2))).expand(*cols.shape, *x.shape[2:])
        return x.gather(1, index)  # (P', G', ...)

    def nested(values: list[list[Any]] | None) -> list[list[Any]] | None:
        if values is None:
            return None
        return [[values[p][g] for g in row] for p, row in zip(rows.tolist(), cols.tolist(), strict=True)]

    return GroupBatch(
        rewards=tensor(batch.rewards),  # type: ignore[arg-type]
        correct=tensor(batch.correct),
        texts=nested(batch.texts),
        answers=nested(batch.answers),
        logprobs=tensor(batch.logprobs),
        old_logprobs=tensor(batch.old_logprobs),
        ref_logprobs=tensor(batch.ref_logprobs),
        mask=tensor(batch.mask),
        entropies=tensor(batch.entropies),
        self_certainty=tensor(batch.self_certainty),
        token_logits=tensor(batch.token_logits),
        embeddings=tensor(batch.embeddings),
        hidden=tensor(batch.hidden),
        partition=tensor(batch.partition),
        problem_ids=None if batch.problem_ids is None else [batch.problem_ids[p] for p in rows.tolist()],
        history=batch.history,
    )


# ---------------------------------------------------------------------------------------------
# Shared group arithmetic over the scored rollouts
#
# ``s`` is the (P, G) bool mask of scored rollouts, or None when every rollout is scored: then each helper runs
# the plain (unmasked) arithmetic, so an all-scored batch gets bit-for-bit the values it got before unscorable
# rollouts were taken out of the statistics.
# ---------------------------------------------------------------------------------------------


def _scored(batch: GroupBatch) -> Tensor | None:
    """(P, G) bool mask of the scored rollouts, or None when all are scored."""
    scored = batch.scored  # (P, G)
    return None if bool(scored.all()) else scored


def _count(x: Tensor, s: Tensor) -> Tensor:
    """(P, 1) number of scored rollouts per group, in ``x``'s dtype."""
    return s.sum(-1, keepdim=True).to(x.dtype)  # (P, 1)


def _mean(x: Tensor, s: Tensor | None) -> Tensor:
    """(P, 1) group mean over the scored rollouts (0 for a group with none)."""
    if s is None:
        return x.mean(-1, keepdim=True)  # (P, 1)
    total = torch.where(s, x, torch.zeros_like(x)).sum(-1, keepdim=True)  # (P, 1)
    return total / _count(x, s).clamp(min=1)  # (P, 1)


def _uniform(x: Tensor, s: Tensor | None = None) -> Tensor:
    """(P, 1) bool: groups whose scored values are all equal (true for a group with at most one scored)."""
    if s is None:
        return x.amax(-1, keepdim=True) == x.amin(-1, keepdim=True)  # (P, 1)
    hi = torch.where(s, x, torch.full_like(x, -math.inf)).amax(-1, keepdim=True)  # (P, 1)
    lo = torch.where(s, x, torch.full_like(x, math.inf)).amin(-1, keepdim=True)  # (P, 1)
    return hi <= lo  # (P, 1)


def _centre(x: Tensor, s: Tensor | None = None) -> Tensor:
    """``x - mean_g(x)`` over the scored rollouts, exactly 0 for a group of equal values (a float mean can
    miss by an ulp) and at every unscored rollout."""
    centred = (x - _mean(x, s)).masked_fill(_uniform(x, s), 0.0)  # (P, G)
    return centred if s is None else torch.where(s, centred, torch.zeros_like(centred))  # (P, G)


def _std(x: Tensor, s: Tensor | None, scale: str, correction: int) -> Tensor:
    """The std of GRPO's denominator over the scored values: per group (P, 1) or of the whole batch ()."""
    if s is None:
        if scale == "group":
            return x.std(-1, keepdim=True, correction=correction)  # (P, 1)
        return x.std(correction=correction)  # ()  over all P*G values
    if scale == "group":
        sq = torch.where(s, (x - _mean(x, s)) ** 2, torch.zeros_like(x)).sum(-1, keepdim=True)  # (P, 1)
        return (sq / (_count(x, s) - correction).clamp(min=1)).sqrt()  # (P, 1)
    values = x[s]  # (n,)  every scored value of the batch
    if values.numel() <= correction:
        return torch.zeros((), dtype=x.dtype, device=x.device)  # nothing to scale: every centred value is 0
    return values.std(correction=correction)  # ()


def _normalise(x: Tensor, s: Tensor | None, scale: str, unbiased: bool, eps: float) -> Tensor:
    """GRPO's ``(x - mean_g) / (std + eps)`` over the scored rollouts; ``scale`` picks the std (group, batch) or
    none. 0 at every unscored rollout."""
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    if x.shape[-1] == 1:
        return torch.zeros_like(x)  # a group of one has no baseline to compare against
    centred = _centre(x, s)  # (P, G)  0 for a group with fewer than two scored
    if scale == "none":
        return centred
    return centred / (_std(x, s, scale, 1 if unbiased else 0) + eps)  # (P, G)


# ---------------------------------------------------------------------------------------------
# Reward-only estimators
# ---------------------------------------------------------------------------------------------


@register_advantage("grpo", handles_unscored=True)
def grpo(batch: GroupBatch, *, scale: Scale = "group", unbiased: bool = True, eps: float = 1e-6) -> Tensor:
    """Group-relative advantage (GRPO; DeepSeekMath, arXiv 2402.03300, §4.1.2).

    ``A_i = (r_i - mean_g(r)) / (std + eps)`` with ``eps = 1e-6`` and the unbiased std (divides
    by G - 1), as in verl's ``compute_grpo_outcome_advantage``; ``unbiased=False`` gives the
    population std that many papers write.

    Args:
        scale: ``"group"`` (per-group std, GRPO), ``"batch"`` (std over all P*G rewards, as in
            REINFORCE++-style batch whitening), ``"none"`` (no division: Dr. GRPO's advantage).
        unbiased: std with Bessel's correction.
        eps: added to the std.

    Unscorable rollouts: mean and std over the c scored rewards of the group (the std divides by c - 1);
    ``scale="batch"`` takes the std of every scored reward of the batch (TRL's ``nanstd(rewards)``).

    Note:
        A group of size 1 (or with one scored rollout) gets advantage 0; a group of equal rewards gets
        exact zeros.
    """
    return _normalise(batch.rewards, _scored(batch), scale, unbiased, eps)  # (P, G)


@register_advantage("dr_grpo", handles_unscored=True)
def dr_grpo(batch: GroupBatch) -> Tensor:
    """Dr. GRPO advantage ``A_i = r_i - mean_g(r)`` (Liu et al., arXiv 2503.20783).

    Drops GRPO's std division ("difficulty bias"). Dr. GRPO's other change, a constant loss
    normaliser, lives in the policy loss. Same as ``grpo`` with ``scale="none"``; the mean is
    over the scored rewards of the group.
    """
    return _centre(batch.rewards, _scored(batch))  # (P, G)


@register_advantage("rloo", handles_unscored=True)
def rloo(batch: GroupBatch) -> Tensor:
    """REINFORCE leave-one-out baseline (Ahmadian et al., arXiv 2402.14740; Kool et al. 2019).

    ``A_i = r_i - (1/(G-1)) Σ_{j≠i} r_j = G/(G-1) · (r_i - mean_g(r))`` (the second form is
    verl's ``compute_rloo_outcome_advantage``). A group of size 1 gets 0 here (verl returns ``r``).

    Unscorable rollouts: the baseline is the mean of the other c - 1 *scored* rewards, i.e.
    ``c/(c-1) · (r_i - mean_scored(r))``, as in TRL's ``rloo_trainer.py`` (``(nansum - r_i) /
    (scorable_count - 1)``). A group with one scored rollout gets 0 (TRL: 0/0, zeroed).
    """
    r = batch.rewards  # (P, G)
    g = r.shape[-1]
    if g == 1:
        return torch.zeros_like(r)
    s = _scored(batch)
    if s is None:
        return _centre(r) * (g / (g - 1))  # (P, G)
    c = _count(r, s)  # (P, 1)
    factor = torch.where(c > 1, c / (c - 1).clamp(min=1), torch.zeros_like(c))  # (P, 1)
    return _centre(r, s) * factor  # (P, G)


@register_advantage("passk", handles_unscored=True, needs=lambda o: Needs.of(optional={"correct"}))
def passk(batch: GroupBatch, *, k: int = 4) -> Tensor:
    """Analytic Pass@k-training advantage (Chen et al., arXiv 2508.10751; official ``code/passk_adv.py``).

    Evidence: [code]. For a group of n = G rollouts with c correct and ``n_neg = n - c``::

        R̄     = 1 - C(n_neg, k) / C(n, k)          # expected pass@k of a random k-subset
        σ     = sqrt(R̄ (1 - R̄))
        A_pos = (1 - R̄) / (σ + 1e-6)                               # every correct rollout
        A_neg = (1 - R̄ - C(n_neg-1, k-1) / C(n-1, k-1)) / (σ + 1e-6)  # every incorrect rollout

    with ``C(a, b) = 0`` for ``b > a`` or ``a < 0``. All-correct, all-wrong and ``n_neg < k``
    groups get exact zeros (binomials are evaluated exactly with :class:`fractions.Fraction`).

    Correctness is ``batch.correct`` when given, else ``reward == 1`` as in the official code
    (any other reward counts as incorrect).

    Unscorable rollouts: n is the group's number of scored rollouts and c the correct ones among
    them (an unscorable rollout is never correct). A group with fewer than k scored rollouts has no
    k-subset to score, so the formula is undefined there: it gets 0 (our choice).

    Args:
        k: the target k, ``1 <= k <= G``. The default 4 is our choice; the paper's headline k
            was not confirmed.
    """
    r = batch.rewards  # (P, G)
    g = r.shape[-1]
    if not 1 <= k <= g:
        raise ValueError(f"passk: k must satisfy 1 <= k <= G = {g}, got k={k}")
    scored = batch.scored  # (P, G)
    correct = (batch.correct if batch.correct is not None else r == 1) & scored  # (P, G) bool
    count = correct.sum(-1)  # (P,)  correct per group
    n = scored.sum(-1)  # (P,)  scored per group
    pos_table = torch.zeros(g + 1, g + 1, dtype=r.dtype, device=r.device)  # (n, count) -> A_pos
    neg_table = torch.zeros(g + 1, g + 1, dtype=r.dtype, device=r.device)  # (n, count) -> A_neg
    for size in sorted(set(n.tolist())):
        if size >= k:
            a_pos, a_neg = _passk_table(size, k)
            pos_table[size, : size + 1] = torch.tensor(a_pos, dtype=r.dtype, device=r.device)
            neg_table[size, : size + 1] = torch.tensor(a_neg, dtype=r.dtype, device=r.device)
    pos = pos_table[n, count]  # (P,)
    neg = neg_table[n, count]  # (P,)
    adv = torch.where(correct, pos[:, None], neg[:, None])  # (P, G)
    return torch.where(scored, adv, torch.zeros_like(adv))  # (P, G)


@lru_cache(maxsize=64)
def _passk_table(n: int, k: int) -> tuple[list[float], list[float]]:
    """A_pos and A_neg for c = 0..n correct rollouts (exact binomials, then float)."""

    def comb(a: int, b: int) -> int:
        return math.comb(a, b) if 0 <= b <= a else 0

    a_pos: list[float] = []
    a_neg: list[float] = []
    for c in range(n + 1):
        n_neg = n - c
        rbar = 1 - Fraction(comb(n_neg, k), comb(n, k))
        sigma = math.sqrt(float(rbar * (1 - rbar)))
        a_pos.append(float(1 - rbar) / (sigma + 1e-6))
        a_neg.append(float(1 - rbar - Fraction(comb(n_neg - 1, k - 1), comb(n - 1, k - 1))) / (sigma + 1e-6))
    return a_pos, a_neg


@register_advantage("unlikeliness", needs_logprobs=True, handles_unscored=True)
def unlikeliness(
    batch: GroupBatch,
    *,
    beta_rank: float = 0.25,
    drop_uniform: bool = True,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Unlikeliness reward ("Rewarding the Unlikely", He, Fried & Welleck, arXiv 2506.02355).

    Evidence: [code], the official ``_compute_advantages`` in ``ray_lean_trainer.py``::

        s_i    = mean_t old_logprob_{i,t}              # length-normalised, over masked tokens
        rank_i = argsort(argsort(s))_i                 # 0 = least likely ... G-1 = most likely (all G)
        r'_i   = r_i * (1 - beta_rank * rank_i / G)
        A_i    = (r'_i - mean_g r') / (std_g r' + eps) # GRPO normalisation after shaping

    The paper's own form differs by a constant offset ``beta_rank / G`` in the multiplier.

    Ties in ``s`` (e.g. duplicate completions) are broken by position: divrl sorts with
    ``stable=True``, so of two rollouts with equal ``s`` the earlier one in the group gets the lower
    rank (treated as less likely, larger multiplier). The official code calls ``torch.argsort``
    without ``stable``, whose order of equal elements torch leaves unspecified: on CPU (torch 2.13,
    100 random tied groups for each G = 2..40) it gave the stable order for every G <= 16 and another
    order in every tied group with G >= 17, and on CUDA it is not guaranteed either. We fix the
    stable order so that a run is deterministic and device-independent; without ties, or with
    G <= 16 on CPU, the ranks equal the official ones.

    Unscorable rollouts: the ranks 0 .. c-1 are taken among the c scored rollouts (the unscorable
    ones are placed after them), the multiplier is ``1 - beta_rank * rank / c``, the GRPO
    normalisation and ``drop_uniform`` look at the scored rollouts only.

    Args:
        beta_rank: rank penalty (official recipe: 0.25).
        drop_uniform: give 0 to groups whose rewards are all equal. The official recipe sets
            ``advantage_threshold=True``, which drops groups with 0 or G successes; zero advantage
            is our stand-in for dropping (with token-mean aggregation, dropping also removes the
            group's tokens from the denominator). ``False`` shapes such groups too.
        unbiased, eps: as in ``grpo``.

    Needs ``batch.old_logprobs`` and ``batch.mask`` (P, G, T).
    """
    r = batch.rewards  # (P, G)
    if batch.old_logprobs is None or batch.mask is None:
        missing = [f for f in ("old_logprobs", "mask") if getattr(batch, f) is None]
        raise ValueError(
            f"unlikeliness needs GroupBatch.old_logprobs and GroupBatch.mask (P, G, T); missing: {missing}"
        )
    g = r.shape[-1]
    s = _scored(batch)
    mask = batch.mask.bool()  # (P, G, T)
    lp = torch.where(mask, batch.old_logprobs, torch.zeros_like(batch.old_logprobs))  # (P, G, T)
    mean_lp = lp.sum(-1) / mask.sum(-1).clamp(min=1)  # (P, G)
    order = mean_lp.argsort(dim=-1, stable=True)  # (P, G)  least likely first, ties by position
    if s is not None:  # scored rollouts first, each part still in likelihood order (a second stable sort)
        order = order.gather(-1, (~s).gather(-1, order).argsort(dim=-1, stable=True))  # (P, G)
    rank = order.argsort(dim=-1, stable=True)  # (P, G)  0 = least likely; the scored ones take 0 .. c-1
    size = g if s is None else _count(r, s).clamp(min=1)  # G, or (P, 1) scored per group
    shaped = r * (1 - beta_rank * rank.to(r.dtype) / size)  # (P, G)  NaN where unscored
    adv = _normalise(shaped, s, "group", unbiased, eps)  # (P, G)
    if drop_uniform:
        adv = adv.masked_fill(_uniform(r, s), 0.0)
    return adv


# ---------------------------------------------------------------------------------------------
# Diversity estimators
# ---------------------------------------------------------------------------------------------


@register_advantage("darling", handles_unscored=True, needs=lambda o: Needs.of({"partition"}))
def darling(
    batch: GroupBatch,
    *,
    floor: float = 0.1,
    scale: Scale = "none",
    shift: bool = False,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """DARLING: diversity-weighted reward, then a group baseline (Li et al., arXiv 2509.02534).

    Evidence: [paper + code]. Eq. 5 (multiplicative fusion) and the advantage after Eq. 6::

        div_i = max((G - |C(i)|) / (G - 1), floor)     # darling_diversity; the floor is code-only
        r'_i  = r_i * div_i
        A_i   = r'_i - mean_g(r')                      # no std division (norm_adv_by_std_in_grpo=False)

    The partition comes from ``batch.partition`` (P, G) labels. With every rollout in its own
    class ``div = 1`` and this is ``dr_grpo``.

    Unscorable rollouts: the partition is restricted to the c scored rollouts, so ``G`` becomes c and
    ``|C(i)|`` counts the scored members of i's class (an unscorable rollout neither shares nor
    splits a class); mean, std, ``shift`` and the ``>= 0`` check look at the scored rewards.

    Args:
        floor: diversity floor (code: 0.1).
        scale: ``"none"`` (DARLING), ``"group"`` divides by the group std + eps as in ``grpo``
            (``"batch"`` also accepted).
        shift: subtract the group minimum reward first (the official code's ``add_bias``, unused
            in its released scripts). Without it, rewards must be >= 0: multiplying a negative
            reward by a diversity in (0, 1] would reward duplicates.
        unbiased, eps: std settings when ``scale != "none"``.
    """
    r = batch.rewards  # (P, G)
    if batch.partition is None:
        raise ValueError(
            "darling needs GroupBatch.partition: (P, G) integer class labels per group. Build them with "
            "divrl.core.diversity.partition(texts, equivalent) or partition_by_key(keys), stack with "
            "labels_tensor(...), and pass batch.replace(partition=labels)"
        )
    s = _scored(batch)
    if shift:
        low = r if s is None else torch.where(s, r, torch.full_like(r, math.inf))  # (P, G)
        r = r - low.amin(-1, keepdim=True)  # (P, G)  >= 0 where scored
    elif bool((r < 0).any()):  # NaN < 0 is false: unscorable rewards pass
        raise ValueError("darling: GroupBatch.rewards must be >= 0 (or pass shift=True to subtract the group minimum)")
    div = darling_diversity(batch.partition, floor, s).to(dtype=r.dtype, device=r.device)  # (P, G)
    return _normalise(r * div, s, scale, unbiased, eps)  # (P, G)


def kernel_needs(kernel: object) -> set[str]:
    """The field a per-group kernel chosen by ``kernel`` reads (:func:`_setpo_kernel`, shared by ``setpo``, ``dra``
    and ``dsdr``): ``embeddings`` for ``"cosine"``, ``texts`` for ``"ngram"`` (any other value is refused when the
    kernel is built, naming the option)."""
    return {"embeddings"} if kernel == "cosine" else {"texts"}


def setpo_needs(options: Mapping[str, Any]) -> Needs:
    """What ``setpo`` reads with ``options``: its base estimator's needs, plus ``embeddings``
    (``kernel="cosine"``) or ``texts`` (``"ngram"``, the default), and ``correct`` with ``gate`` or ``members``
    ``"correct"``. With ``members="correct"`` only correct rollouts' embeddings are read."""
    kernel, members, gate = options.get("kernel", "ngram"), options.get("members", "all"), options.get("gate", "all")
    reads = kernel_needs(kernel)
    if "correct" in (members, gate):
        reads.add("correct")
    return with_base_needs(Needs.of(reads, (), "correct" if members == "correct" else "all"), "setpo", options)


def setpo_bonus(
    batch: GroupBatch,
    *,
    lam: float = 1.0,
    gate: Literal["all", "correct"] = "all",
    center: bool = False,
    kernel: Literal["cosine", "ngram"] = "ngram",
    ngram: int = 3,
    ngram_unit: Literal["char", "token"] = "char",
    members: Literal["all", "correct"] = "all",
) -> Tensor:
    """SetPO-style shaping term ``lam * s`` (P, G), gated and optionally centred.

    ``s`` is :func:`~divrl.core.diversity.setpo_marginal_contributions` (a **reconstructed**
    formula, see there) on a per-group kernel: cosine of ``batch.embeddings`` (``kernel="cosine"``,
    the reconstructed SetPO kernel) or character/token n-gram Jaccard of ``batch.texts``
    (``kernel="ngram"``, our weight-free choice and the default: an embedder alone does not change the
    kernel, ``"cosine"`` must be asked for). ``gate="correct"`` keeps the term only for correct rollouts
    (``batch.correct``); then ``center=True`` subtracts the group mean of the gated term, so the bonus sums to 0 per group.
    ``members="correct"`` (our variant, not SetPO's) measures the set diversity over each group's
    correct rollouts only (``Ω`` = the correct ones; the others get 0, which implies the gate), so
    a trainer embeds only the correct rollouts (the declared needs say so: :attr:`Needs.embed_rows`).
    Useful on its own for logging ``RMS(lam*s) / RMS(A_base)`` (seed-methods.md §3.3 suggests
    calibrating ``lam`` so that this is about 5-10%).

    Unscorable rollouts are outside ``Ω`` (their kernel rows and columns are never read), are never
    correct, get 0, and take no part in the ``center`` mean.
    """
    if gate not in ("all", "correct"):
        raise ValueError(f"setpo: gate must be 'all' or 'correct', got {gate!r}")
    if members not in ("all", "correct"):
        raise ValueError(f"setpo: members must be 'all' or 'correct', got {members!r}")
    if members == "correct" and batch.correct is None:
        raise ValueError("setpo: members='correct' needs GroupBatch.correct (P, G) bool")
    if gate == "correct" and batch.correct is None:
        raise ValueError("setpo: gate='correct' needs GroupBatch.correct (P, G) bool")
    scored = batch.scored  # (P, G)
    correct = None if batch.correct is None else batch.correct & scored  # (P, G)  unscorable is not correct
    k = _setpo_kernel(batch, kernel, ngram, ngram_unit)  # (P, G, G)
    omega = correct if members == "correct" and correct is not None else scored  # (P, G)  Ω per group
    s = setpo_marginal_contributions(k, omega.to(k.device)).to(batch.rewards.dtype)  # (P, G)
    bonus = lam * s  # (P, G)
    if gate == "correct" and correct is not None:
        bonus = bonus * correct.to(bonus.dtype)  # (P, G)
    return _centre(bonus, _scored(batch)) if center else bonus  # (P, G)


def _setpo_kernel(
    batch: GroupBatch,
    kernel: str,
    ngram: int,
    ngram_unit: Literal["char", "token"],
    *,
    who: str = "setpo",
    clamp: bool = True,
) -> Tensor:
    """(P, G, G) per-group kernel: cosine of the embeddings (``kernel="cosine"``, clamped to [0, 1] unless
    ``clamp=False``) or n-gram Jaccard of the texts (``"ngram"``). ``who`` names the estimator in errors."""
    if kernel not in ("cosine", "ngram"):
        removed = " ('auto' was removed: the default is 'ngram', and 'cosine' must be asked for)"
        raise ValueError(
            f"{who}: kernel must be 'cosine' or 'ngram', got {kernel!r}" + (removed if kernel == "auto" else "")
        )
    if kernel == "cosine":
        if batch.embeddings is None:
            raise ValueError(f"{who}: kernel='cosine' needs GroupBatch.embeddings (P, G, D)")
        return cosine_kernel(batch.embeddings, clamp=clamp)  # (P, G, G)
    if batch.texts is None:
        raise ValueError(f"{who}: kernel='ngram' needs GroupBatch.texts (P lists of G strings)")
    return torch.stack([ngram_kernel(group, n=ngram, unit=ngram_unit) for group in batch.texts])  # (P, G, G)


@register_advantage("setpo", handles_unscored=True, needs=setpo_needs)
def setpo(
    batch: GroupBatch,
    *,
    base: str = "grpo",
    base_options: dict[str, Any] | None = None,
    lam: float = 1.0,
    gate: Literal["all", "correct"] = "all",
    center: bool = False,
    kernel: Literal["cosine", "ngram"] = "ngram",
    ngram: int = 3,
    ngram_unit: Literal["char", "token"] = "char",
    members: Literal["all", "correct"] = "all",
) -> Tensor:
    """SetPO-style set-diversity advantage shaping (Li et al., arXiv 2602.01062) -- **reconstructed**.

    ``Â_i = A_base_i + lam * s_i`` with ``s`` the leave-one-out marginal contribution of rollout i
    to a kernel set diversity (:func:`setpo_bonus`). The abstract confirms a plug-in LOO
    advantage-shaping term; the formula, the kernel, ``lam = 1.0`` (a third-party port's choice),
    the absence of centring and of a correctness gate are from a port and notes
    (seed-methods.md §3.2), not the paper. Call it "SetPO-style (reconstructed)" in results.

    Unscorable rollouts: the base estimator takes its statistics over the scored rollouts (as it
    does on its own) and the set ``Ω`` of the bonus is the scored rollouts (see :func:`setpo_bonus`).

    Args:
        base: any registered estimator, called through the registry with ``base_options``.
        lam: weight of ``s``.
        gate: ``"all"`` or ``"correct"`` (only correct rollouts get ``s``).
        center: subtract the group mean of the (gated) ``lam * s``.
        kernel, ngram, ngram_unit, members: see :func:`setpo_bonus`.

    Note:
        With ``lam = 0`` (or a constant ``s`` and ``center=True``) this is the base estimator.
    """
    if base == "setpo":
        raise ValueError("setpo: base must be another estimator, not 'setpo' itself")
    if base in _STATEFUL:
        raise ValueError(f"setpo: base {base!r} keeps per-problem state across steps; use a stateless base")
    a_base = _call(base, batch, dict(base_options or {}))  # (P, G)
    bonus = setpo_bonus(
        batch,
        lam=lam,
        gate=gate,
        center=center,
        kernel=kernel,
        ngram=ngram,
        ngram_unit=ngram_unit,
        members=members,
    )  # (P, G)
    return a_base + bonus  # (P, G)
