"""``repexp``: representation-based exploration (Tuyls, Foster, Krishnamurthy & Ash, "Representation-Based
Exploration for Language Models: From Test-Time to Post-Training", arXiv 2510.11686), the RL post-training variant.

Each rollout's feature is the mean of the last-layer hidden states over its completion tokens,
``h_i = (1/T_i) sum_t h(x, y_i^{<=t})`` (the paper's ``h_bar_theta(x, y_i)``; ``GroupBatch.hidden``). Within a
group (the scored rollouts of one prompt) the features are optionally sparse-projected, centred, and scored with
an elliptical bonus; the bonus is added to the reward and a base estimator (GRPO) runs on the sum::

    h~_i  = h_i S                      (S: a (H, k) sparse random projection, sklearn's SparseRandomProjection)
    c_i   = h~_i - mean_j h~_j          (centred over the group)
    Sigma = lam I + sum_j c_j c_j^T     (the group's regularised covariance, this rollout included)
    b_i   = c_i^T Sigma^{-1} c_i                                   bonus="leverage"
          = c_i^T (Sigma - c_i c_i^T)^{-1} c_i = l_i / (1 - l_i)   bonus="leave_one_out"
    b_i  <- normalised within the group ("none" | "rnd": / std | "z_score")
    b_i  <- 0 in groups (or rollouts) the gates switch off (default: a group with no reward)
    r~_i  = alpha r_i + beta b_i ;   A = base(r~)

Evidence: **code**. The paper (abstract and project page read) defines the elliptical bonus
``h^T (lam I + sum_j h_j h_j^T)^{-1} h`` on the mean hidden state; the RL arithmetic above is read from the official
recipe, ``verl-project/verl-recipe`` @ ``48ea0a7`` (``rep_exp/workers/elliptical_reward_model_worker.py``:
``compute_rm_score``, ``_compute_bonuses``, ``_normalize_bonuses``; ``rep_exp/reward_manager/
elliptical_reward_manager.py``: ``alpha * extrinsic + beta * intrinsic`` and the ``turn_off_elliptical_if_*``
gates; ``rep_exp/train_elliptical.sh``: the settings of the paper's runs). ``tests/core/test_repexp.py`` vendors
that arithmetic and checks agreement on random groups. Note the bonus is the leverage score itself, no square root
(the bandit bonus ``sqrt(h^T Sigma^{-1} h)`` of the paper's motivation is not what the code adds).

Defaults follow ``train_elliptical.sh`` (the paper's runs) where it sets a value, else the recipe's config
(``rep_exp/config/rep_exp_trainer.yaml``): ``beta=0.01`` (script; config 1.0), ``bonus="leverage"`` (script;
config ``leave_one_out``), ``lam=0.01`` (config; the script keeps it), ``normalization="none"`` (both),
``sparse_dim=32`` (script for MATH/GSM8K; 128 for DAPO; config 512), a fresh projection per call (both:
``randomize_sparse_matrix=True``), ``off_if_none_correct=True`` and the other gates off (both), ``alpha=1`` (both),
``base="grpo"`` with std normalisation (script: ``adv_estimator=grpo``, ``norm_adv_by_std_in_grpo=True``).
``persist_covariance=True`` (the official alternative: a per-prompt inverse covariance accumulated over training,
a stateful estimator) is not built: the paper's runs keep it off, and the official code refuses it with
``leave_one_out``.

Differences from the official code, each stated:

- **Whose hidden states.** The official recipe runs a separate frozen copy of the *initial* model as a "reward
  model" (``reward_model.model.path`` = the actor's starting checkpoint), an extra forward over every rollout.
  divrl reads them from the old-log-prob pass of the current policy (field ``hidden`` of
  :func:`divrl.rollout.token_statistics` in ``divrl train``), a forward the trainer already runs for PPO's old
  log-probs; at the first step the two agree.
  (ours, to avoid a second model copy and a second pass.)
- **Projection randomness.** ``projection_seed=None`` draws the fresh matrix from torch's default generator
  (``divrl train`` seeds it from ``(seed, step)`` before every step, so a resumed run draws the same matrices);
  an integer draws one fixed matrix from that seed (the official ``randomize_sparse_matrix=False``). The entries
  are sklearn's: ``+-sqrt(1/density)/sqrt(k)`` with probability ``density/2`` each, else 0,
  ``density = 1/sqrt(H)``. ``sparse_dim=None`` skips the projection (ours).
- **Gates** read the group's *scored* rewards as the official ones read the extrinsic reward: "none correct" =
  the scored rewards sum to 0, "all correct" = they sum to the number of scored rollouts (0/1 rewards), "rollout
  incorrect" = a reward of 0.
- **Normalisation of equal bonuses.** ``rnd``/``z_score`` treat a group's bonus std below ``1e-9`` times its
  largest bonus as 0 (the official test is ``std > 0``), so float rounding between bonuses that are equal in exact
  arithmetic is not blown up to +-1.
- **Precision.** The official code casts the (bfloat16) hidden states to float64 after projection and builds
  ``Sigma^{-1}`` by Sherman-Morrison updates from ``I / lam``; here float64 and one solve (equal to ~1e-10).

What varies: with G distinct rollouts, G - 1 <= k and ``lam`` small against the group's squared singular values,
every leverage is (G-1)/G up to O(lam/s^2), nearly a group constant; rollouts with equal hidden states (identical
completions) share their leverage (m copies get about 1/m of a unique one's). With ``beta=0.01`` the bonus moves
advantages mainly in groups of equal rewards, where GRPO divides by the std of ``beta b`` alone.

Unscorable rollouts (NaN reward) have no verified outcome: they are left out of the group (its mean, covariance,
normalisation and gates), get no bonus, and the base estimator takes its statistics over the scored ones; so a
group of G with c scored gets what the group of those c alone gets.

Dimension letters: P prompts, G rollouts per prompt, H hidden width, k projected width (see
:mod:`divrl.core.batch`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from divrl.core.advantages import ADVANTAGES, _call, advantage_is_stateful, register_advantage, with_base_needs
from divrl.core.batch import GroupBatch
from divrl.core.needs import Needs

__all__ = ["repexp", "repexp_bonus", "repexp_needs", "sparse_projection"]


_SPREAD_TOL = 1e-9
"""A group's bonus std at most this times its largest bonus counts as 0 in ``rnd``/``z_score`` (ours; the official
code tests ``std > 0``). Bonuses that are equal in exact arithmetic (two rollouts: both leverages are 1/2 up to
``lam``) differ by float rounding, and dividing that rounding by its own std would turn it into +-1."""


def repexp_needs(options: Mapping[str, Any]) -> Needs:
    """What ``repexp`` reads: ``hidden`` (the mean last-layer hidden state of each rollout), plus its base
    estimator's needs."""
    return with_base_needs(Needs.of({"hidden"}), "repexp", options)


def sparse_projection(
    width: int, sparse_dim: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """(H, k) sparse random projection with sklearn's ``SparseRandomProjection(k, density="auto")`` entries:
    ``+-sqrt(1/density)/sqrt(k)`` with probability ``density/2`` each, else 0, ``density = 1/sqrt(H)`` (Li et al.
    2006). sklearn draws each row's non-zero count from a binomial and their places uniformly, which is the same as
    an independent Bernoulli per entry; the draws themselves differ from sklearn's. ``generator=None``: torch's
    default generator."""
    if width < 1 or sparse_dim < 1:
        raise ValueError(f"repexp: sparse_dim and the hidden width must be >= 1, got {sparse_dim} and {width}")
    density = 1.0 / math.sqrt(width)
    u = torch.rand(sparse_dim, width, generator=generator, dtype=torch.float64)  # (k, H)
    nonzero = u < density  # (k, H)
    sign = torch.where(u < density / 2, -1.0, 1.0).to(torch.float64)  # (k, H)  each half of the non-zeros
    scale = math.sqrt(1.0 / density) / math.sqrt(sparse_dim)
    return (nonzero * sign * scale).t().contiguous().to(dtype)  # (H, k)


def repexp_bonus(
    batch: GroupBatch,
    *,
    lam: float = 0.01,
    bonus: Literal["leverage", "leave_one_out"] = "leverage",
    normalization: Literal["none", "rnd", "z_score"] = "none",
    sparse_dim: int | None = 32,
    projection_seed: int | None = None,
    off_if_none_correct: bool = True,
    off_if_some_correct: bool = False,
    off_if_all_correct: bool = False,
    off_if_rollout_incorrect: bool = False,
) -> Tensor:
    """The normalised, gated elliptical bonus (P, G) before the coefficient ``beta``; 0 at unscorable rollouts
    (see the module docstring; options as in :func:`repexp`)."""
    if bonus not in ("leverage", "leave_one_out"):
        raise ValueError(f"repexp: bonus must be 'leverage' or 'leave_one_out', got {bonus!r}")
    if normalization not in ("none", "rnd", "z_score"):
        raise ValueError(f"repexp: normalization must be 'none', 'rnd' or 'z_score', got {normalization!r}")
    if not (isinstance(lam, (int, float)) and lam > 0):
        raise ValueError(f"repexp: lam must be > 0, got {lam!r}")
    if sparse_dim is not None and (isinstance(sparse_dim, bool) or not isinstance(sparse_dim, int) or sparse_dim < 1):
        raise ValueError(f"repexp: sparse_dim must be a positive integer or None, got {sparse_dim!r}")
    if projection_seed is not None and (isinstance(projection_seed, bool) or not isinstance(projection_seed, int)):
        raise ValueError(f"repexp: projection_seed must be an integer or None, got {projection_seed!r}")
    if batch.hidden is None:
        raise ValueError("repexp needs GroupBatch.hidden: (P, G, H) mean last-layer hidden state of each completion")
    r = batch.rewards  # (P, G)
    scored = batch.scored.to(batch.hidden.device)  # (P, G)
    h = batch.hidden.to(torch.float64)  # (P, G, H)
    h = torch.where(scored[..., None], h, torch.zeros_like(h))  # (P, G, H)  an unscored row is never read
    if not bool(torch.isfinite(h).all()):
        raise ValueError("repexp: GroupBatch.hidden holds a non-finite value at a scored rollout")
    if sparse_dim is not None:
        gen = None if projection_seed is None else torch.Generator().manual_seed(projection_seed)
        h = h @ sparse_projection(h.shape[-1], sparse_dim, generator=gen).to(h.device)  # (P, G, k)
    w = scored.to(h.dtype)  # (P, G)
    n = w.sum(-1, keepdim=True)  # (P, 1)
    mean = (h * w[..., None]).sum(1, keepdim=True) / n.clamp(min=1)[..., None]  # (P, 1, k)
    c = (h - mean) * w[..., None]  # (P, G, k)  centred over the scored rollouts; 0 rows for the others
    k = c.shape[-1]
    sigma = lam * torch.eye(k, dtype=h.dtype, device=h.device) + c.transpose(1, 2) @ c  # (P, k, k)
    solved = torch.linalg.solve(sigma, c.transpose(1, 2)).transpose(1, 2)  # (P, G, k)  Sigma^{-1} c_i
    lev = (c * solved).sum(-1)  # (P, G)
    if bonus == "leave_one_out":
        lev = lev / (1.0 - lev)  # (P, G)  Sherman-Morrison: c^T (Sigma - c c^T)^{-1} c
    b = torch.where(scored, lev, torch.zeros_like(lev))  # (P, G)
    if normalization != "none":
        bmean = (b * w).sum(-1, keepdim=True) / n.clamp(min=1)  # (P, 1)
        var = (((b - bmean) * w) ** 2).sum(-1, keepdim=True) / (n - 1)  # (P, 1)  unbiased, as torch.std; n=1: inf/nan
        std = var.sqrt()  # (P, 1)
        top = torch.where(scored, b.abs(), torch.zeros_like(b)).amax(-1, keepdim=True)  # (P, 1)
        ok = std > _SPREAD_TOL * top  # (P, 1)  official: "if std > 0" (False for NaN); see _SPREAD_TOL
        if normalization == "rnd":
            b = torch.where(ok, b / torch.where(ok, std, torch.ones_like(std)), b)  # (P, G)
        else:
            b = torch.where(ok, (b - bmean) / torch.where(ok, std, torch.ones_like(std)), b - bmean)  # (P, G)
        b = torch.where(scored, b, torch.zeros_like(b))  # (P, G)
    rs = torch.where(scored, r.to(h.device, h.dtype), torch.zeros_like(b))  # (P, G)
    total = rs.sum(-1, keepdim=True)  # (P, 1)  the group's extrinsic reward, over its scored rollouts
    off = torch.zeros_like(scored)  # (P, G)
    if off_if_rollout_incorrect:
        off = off | (rs == 0)
    if off_if_none_correct:
        off = off | (total == 0)
    if off_if_some_correct:
        off = off | ((total > 0) & (total < n))
    if off_if_all_correct:
        off = off | (total == n)
    b = torch.where(off | ~scored, torch.zeros_like(b), b)  # (P, G)
    return b.to(dtype=r.dtype, device=r.device)  # (P, G)


@register_advantage("repexp", handles_unscored=True, needs=repexp_needs)
def repexp(
    batch: GroupBatch,
    *,
    beta: float = 0.01,
    alpha: float = 1.0,
    lam: float = 0.01,
    bonus: Literal["leverage", "leave_one_out"] = "leverage",
    normalization: Literal["none", "rnd", "z_score"] = "none",
    sparse_dim: int | None = 32,
    projection_seed: int | None = None,
    off_if_none_correct: bool = True,
    off_if_some_correct: bool = False,
    off_if_all_correct: bool = False,
    off_if_rollout_incorrect: bool = False,
    base: str = "grpo",
    base_options: dict[str, Any] | None = None,
) -> Tensor:
    """Representation-based exploration (Tuyls et al., arXiv 2510.11686): GRPO (or ``base``) on
    ``alpha r + beta b``, ``b`` the elliptical bonus of each rollout's mean last-layer hidden state within its
    group. **Code** (verl-recipe ``rep_exp/``; see the module docstring for the formula, where each default comes
    from, and the differences).

    Args:
        beta: bonus coefficient (official script: 0.01; ``0`` gives the base estimator on ``alpha r``).
        alpha: reward coefficient (official: 1).
        lam: ridge ``lam`` of ``Sigma = lam I + sum c c^T`` (official config: 0.01).
        bonus: ``"leverage"`` (``c^T Sigma^{-1} c``, the official script's) or ``"leave_one_out"``
            (``c^T (Sigma - c c^T)^{-1} c``, the official config's default).
        normalization: within each group, ``"none"`` (official), ``"rnd"`` (divide by the std when > 0) or
            ``"z_score"`` (centre, then divide by the std when > 0); std unbiased, as ``torch.std``.
        sparse_dim: width ``k`` of the sparse random projection (official script: 32 for MATH/GSM8K, 128 for
            DAPO); ``None``: no projection (ours).
        projection_seed: ``None`` (official ``randomize_sparse_matrix=True``): a fresh matrix per call from torch's
            default generator; an integer: one fixed matrix from that seed.
        off_if_none_correct, off_if_some_correct, off_if_all_correct, off_if_rollout_incorrect: the official
            ``turn_off_elliptical_if_*`` gates (zero the bonus of a group whose scored rewards sum to 0, lie strictly
            between 0 and their count, equal their count; of a rollout with reward 0). Official: only the first.
        base, base_options: the stateless estimator applied to the shaped rewards (official: GRPO with std).
    """
    if base == "repexp" or base not in ADVANTAGES or advantage_is_stateful(base):
        raise ValueError(f"repexp: base must be a registered stateless estimator other than repexp, got {base!r}")
    b = repexp_bonus(
        batch,
        lam=lam,
        bonus=bonus,
        normalization=normalization,
        sparse_dim=sparse_dim,
        projection_seed=projection_seed,
        off_if_none_correct=off_if_none_correct,
        off_if_some_correct=off_if_some_correct,
        off_if_all_correct=off_if_all_correct,
        off_if_rollout_incorrect=off_if_rollout_incorrect,
    )  # (P, G)
    # in float64: with equal rewards the base's std division magnifies float32 rounding of r + beta b (a group of
    # G and the same group's c scored rollouts then disagree by ~1e-4); NaN stays NaN at unscorable rollouts
    shaped = alpha * batch.rewards.double() + beta * b.double()  # (P, G)
    adv = _call(base, batch.replace(rewards=shaped), dict(base_options or {}))  # (P, G)
    return adv.to(batch.rewards.dtype)
