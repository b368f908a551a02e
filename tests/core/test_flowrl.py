"""FlowRL's trajectory-balance loss (divrl.core.flowrl): hand values, agreement with both official codes, the
log-Z gradient, plain trajectory balance as a limiting case, permutation within a group, unscorable rollouts, the
learned head and the needs."""

from __future__ import annotations

import math

import pytest
import torch

from divrl.core.batch import GroupBatch
from divrl.core.flowrl import flowrl_head_options
from divrl.core.losses import compute_loss, loss_needs
from divrl.models.log_z import LogZHead

# --- the official arithmetic, vendored --------------------------------------------------------------------------
# (a) verl-project/verl-recipe at 48ea0a797fa29867ea0ad92aff7d284eec7d4be3, flowrl/flowrl_actor.py,
#     FlowRLActor.compute_flowrl (self.flowrl_beta_coef = 15.0; metrics dropped);
# (b) Xuekai-Zhu/FlowRL at decbc57b8cef50c6cb142d3a7565858e13811454, verl@FlowRL/verl/workers/actor/dp_actor.py,
#     compute_flowrl_objective (metrics dropped). verl_F.masked_mean / masked_sum as in verl.


def _masked_sum(values, mask, axis=None):
    return (values * mask).sum(axis=axis)


def _masked_mean(values, mask, axis=None):
    return _masked_sum(values, mask, axis) / (mask.sum(axis=axis) + 1e-8)


def _official_recipe(log_prob, ref_log_prob, old_log_prob, log_z, reward, response_mask, flowrl_beta_coef=15.0):
    log_z = log_z.squeeze(-1)
    avg_log_prob = _masked_mean(log_prob, response_mask, axis=1)
    avg_ref_log_prob = _masked_mean(ref_log_prob, response_mask, axis=1)
    seq_log_reward = _masked_mean(reward, response_mask, axis=1)
    delta = log_z + avg_log_prob - flowrl_beta_coef * seq_log_reward - avg_ref_log_prob
    log_w = _masked_sum(log_prob - old_log_prob, response_mask, axis=1)
    imp_w_raw = torch.exp(log_w).detach()
    imp_w = torch.clamp(imp_w_raw, max=10)
    weighted_losses = imp_w * (delta**2)
    avg_loss = torch.mean(weighted_losses)
    return avg_loss


def _official_paper_repo(logpf, logf_ref, logpf_old, log_z, reward, response_mask, clip_ratio=0.2):
    log_z = log_z.squeeze(-1)
    avg_logpf = _masked_mean(logpf, response_mask, axis=1)
    avg_logp_ref = _masked_mean(logf_ref, response_mask, axis=1)
    seq_log_reward = _masked_mean(reward, response_mask, axis=1)
    delta = log_z + avg_logpf - 15 * seq_log_reward - avg_logp_ref
    log_w = _masked_sum(logpf - logpf_old, response_mask, axis=1)
    importance_weight = torch.exp(log_w).detach()
    clip_importance_weight = torch.clamp(importance_weight, 1 - clip_ratio, 1 + clip_ratio)  # noqa: F841 (unused there)
    weighted_losses = importance_weight * (delta**2)
    avg_loss = torch.mean(weighted_losses)
    return avg_loss


# -----------------------------------------------------------------------------------------------------------------


def _case(seed: int, p: int = 2, g: int = 3, t: int = 6, spread: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    lp = -torch.rand(p, g, t, generator=gen) * 2  # (P, G, T)
    noise = torch.randn(p, g, t, generator=gen)  # (P, G, T)
    old = lp + (spread * noise if spread > 0 else spread + 0.1 * noise)  # (P, G, T); < 0: old below the current
    ref = lp + 0.5 * torch.randn(p, g, t, generator=gen)  # (P, G, T)
    lengths = torch.randint(1, t + 1, (p, g), generator=gen)  # (P, G)
    mask = torch.arange(t) < lengths.unsqueeze(-1)  # (P, G, T)
    rewards = torch.randint(0, 2, (p, g), generator=gen).float()  # (P, G)
    adv = (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-6)  # (P, G) GRPO
    log_z = torch.randn(p, 1, generator=gen).expand(p, g).contiguous()  # (P, G): one value per prompt
    return lp, old, ref, mask, rewards, adv, log_z


def _batch(lp, old, ref, mask, rewards, log_z):
    return GroupBatch(rewards=rewards, logprobs=lp, old_logprobs=old, ref_logprobs=ref, mask=mask, log_z=log_z)


def _flat(x):
    return x.reshape(-1, x.shape[-1]) if x.dim() == 3 else x.reshape(-1, 1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("options", "official"), [({}, _official_recipe), ({"weight": "raw"}, _official_paper_repo)])
def test_agrees_with_official_code_on_random_inputs(seed, options, official):
    lp, old, ref, mask, rewards, adv, log_z = _case(
        seed, spread=-2.0 if seed == 3 else 0.3
    )  # seed 3: w > 10 somewhere
    raw = torch.exp(((lp - old) * mask).sum(-1))  # (P, G)
    assert (seed == 3) == bool((raw > 10).any())  # the cap is exercised in exactly one case
    x, z = lp.clone().requires_grad_(True), log_z.clone().requires_grad_(True)
    out = compute_loss("flowrl", _batch(x, old, ref, mask, rewards, z), adv, **options)
    gx, gz = torch.autograd.grad(out.loss, (x, z))

    fm = _flat(mask).float()
    x2, z2 = lp.clone().requires_grad_(True), log_z.clone().requires_grad_(True)
    want = official(_flat(x2) * fm, _flat(ref) * fm, _flat(old) * fm, _flat(z2), adv.reshape(-1, 1) * fm, fm)
    wx, wz = torch.autograd.grad(want, (x2, z2))
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(gx, wx, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gz, wz, rtol=1e-4, atol=1e-6)
    if seed == 3 and not options:
        assert out.metrics["importance_weight"] < raw.mean().item()  # the cap bit


def test_hand_computed_two_rollouts():
    """P = 1, G = 2, on-policy (w = 1), beta = 2: d_i = log_z + mean lp - 2 A - mean ref."""
    lp = torch.tensor([[[-1.0, -3.0], [-2.0, 0.0]]], requires_grad=True)
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])  # the second rollout has one token
    ref = torch.tensor([[[-1.5, -2.5], [-1.0, 0.0]]])
    log_z = torch.tensor([[0.5, 0.5]], requires_grad=True)
    batch = GroupBatch(rewards=torch.tensor([[1.0, 0.0]]), logprobs=lp, ref_logprobs=ref, mask=mask, log_z=log_z)
    out = compute_loss("flowrl", batch, torch.tensor([[0.5, -0.5]]), beta=2.0)
    d = [0.5 + (-2.0) - 1.0 - (-2.0), 0.5 + (-2.0) + 1.0 - (-1.0)]  # [-0.5, 0.5]
    assert out.loss.item() == pytest.approx((d[0] ** 2 + d[1] ** 2) / 2)
    glp, gz = torch.autograd.grad(out.loss, (lp, log_z))
    torch.testing.assert_close(gz, torch.tensor([[d[0], d[1]]]))  # 2 w d / N with N = 2
    torch.testing.assert_close(glp, torch.tensor([[[d[0] / 2, d[0] / 2], [d[1], 0.0]]]))  # 2 d / N / T_i per token


def test_without_length_norm_and_weights_it_is_plain_trajectory_balance():
    """length_norm=False, weight=none: FoR's trajectory balance (log Z + sum log pi - beta r - sum log pi_ref)^2."""
    lp, old, ref, mask, rewards, adv, log_z = _case(5)
    out = compute_loss(
        "flowrl", _batch(lp, old, ref, mask, rewards, log_z), adv, length_norm=False, weight="none", beta=1.0
    )
    m = mask.float()
    tb = (log_z + (lp * m).sum(-1) - adv - (ref * m).sum(-1)) ** 2  # (P, G)
    assert out.loss.item() == pytest.approx(tb.mean().item(), rel=1e-6)


def test_weight_options():
    lp = torch.zeros(1, 2, 1, requires_grad=True)
    old = torch.tensor([[[-3.0], [1.0]]])  # w = e^3 (capped / clipped) and e^-1
    batch = GroupBatch(
        rewards=torch.ones(1, 2),
        logprobs=lp,
        old_logprobs=old,
        mask=torch.ones(1, 2, 1),
        log_z=torch.ones(1, 2),
        ref_logprobs=torch.zeros(1, 2, 1),
    )
    adv = torch.zeros(1, 2)  # d = 1 for both
    want = {
        "cap": (min(math.e**3, 10.0) + math.e**-1) / 2,
        "raw": (math.e**3 + math.e**-1) / 2,
        "clip": (1.2 + 0.8) / 2,
        "none": 1.0,
    }
    for weight, value in want.items():
        out = compute_loss("flowrl", batch, adv, weight=weight)
        assert out.loss.item() == pytest.approx(value, rel=1e-6), weight
    assert compute_loss("flowrl", batch, adv, weight="cap", weight_cap=5.0).loss.item() == pytest.approx(
        (5.0 + math.e**-1) / 2, rel=1e-6
    )


def test_permuting_a_group_permutes_the_gradient():
    lp, old, ref, mask, rewards, adv, log_z = _case(6, p=1, g=5)
    perm = torch.tensor([4, 2, 0, 1, 3])
    x, y = lp.clone().requires_grad_(True), lp[:, perm].clone().requires_grad_(True)
    a = compute_loss("flowrl", _batch(x, old, ref, mask, rewards, log_z), adv)
    b = compute_loss(
        "flowrl", _batch(y, old[:, perm], ref[:, perm], mask[:, perm], rewards[:, perm], log_z[:, perm]), adv[:, perm]
    )
    assert a.loss.item() == pytest.approx(b.loss.item())
    torch.testing.assert_close(torch.autograd.grad(a.loss, x)[0][:, perm], torch.autograd.grad(b.loss, y)[0])


def test_unscorable_rollouts_carry_no_residual_but_count_in_n():
    lp, old, ref, mask, _, _, log_z = _case(7, p=1, g=3)
    rewards = torch.tensor([[1.0, math.nan, 0.0]])
    adv = torch.tensor([[0.7, 0.0, -0.7]])
    x = lp.clone().requires_grad_(True)
    out = compute_loss("flowrl", _batch(x, old, ref, mask, rewards, log_z), adv)
    full = compute_loss("flowrl", _batch(lp, old, ref, mask, torch.tensor([[1.0, 0.0, 0.0]]), log_z), adv)
    (grad,) = torch.autograd.grad(out.loss, x)
    assert bool((grad[0, 1] == 0).all()) and bool((grad[0, 0][mask[0, 0]] != 0).all())
    # the same residuals for the scored ones; the unscored one's term is gone, N stays 3
    m = mask.float()
    d = log_z + (lp * m).sum(-1) / m.sum(-1) - 15 * adv - (ref * m).sum(-1) / m.sum(-1)  # (1, 3)
    w = torch.exp(((lp - old) * m).sum(-1)).clamp(max=10)  # (1, 3)
    assert out.loss.item() == pytest.approx(((w * d**2)[0, [0, 2]].sum() / 3).item(), rel=1e-5)
    assert full.loss.item() > out.loss.item()


def test_needs_head_options_and_bad_options():
    assert loss_needs("flowrl").reads == {"logprobs", "mask", "log_z", "ref_logprobs"}
    assert loss_needs("flowrl", {"reference": False}).reads == {"logprobs", "mask", "log_z"}
    assert loss_needs("flowrl").uses("old_logprobs") and not loss_needs("flowrl").requires("old_logprobs")
    assert flowrl_head_options({}) == (3, 0.1) and flowrl_head_options({"z_layers": 1, "z_dropout": 0}) == (1, 0.0)
    lp, old, ref, mask, rewards, adv, log_z = _case(8)
    batch = _batch(lp, old, ref, mask, rewards, log_z)
    for bad, match in (
        ({"weight": "x"}, "weight"),
        ({"beta": math.nan}, "beta"),
        ({"clip_eps": 1.0}, "clip_eps"),
        ({"z_layers": 0}, "z_layers"),
        ({"z_dropout": 1.0}, "z_dropout"),
        ({"length_norm": "yes"}, "length_norm"),
        ({"weight_cap": 0.0}, "weight_cap"),
    ):
        with pytest.raises(ValueError, match=match):
            compute_loss("flowrl", batch, adv, **bad)
    with pytest.raises(ValueError, match="log_z"):
        compute_loss("flowrl", batch.replace(log_z=None), adv)
    assert compute_loss("flowrl", batch.replace(ref_logprobs=None), adv, reference=False).loss.item() > 0


def test_log_z_head_is_the_recipes_projz_module():
    """Linear-GELU-LayerNorm-Dropout blocks, then Linear to 1 (verl-recipe flowrl ProjZModule), output (N,)."""
    head = LogZHead(8, num_layers=3, dropout=0.1)
    kinds = [type(m).__name__ for m in head.net]
    assert kinds == ["Linear", "GELU", "LayerNorm", "Dropout"] * 2 + ["Linear"]
    assert head(torch.randn(5, 8)).shape == (5,)
    assert [type(m).__name__ for m in LogZHead(8, num_layers=1).net] == ["Linear"]
