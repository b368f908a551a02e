"""ROVER's Q-regression loss (divrl.core.rover): hand values, agreement with the official arithmetic, the on-policy
reduction to 2 rho x the PG gradient, permutation within a group, unscorable rollouts, options and needs."""

from __future__ import annotations

import math

import pytest
import torch

from divrl.core.batch import GroupBatch
from divrl.core.losses import compute_loss, loss_needs
from divrl.core.rover import rover_next_value

# --- the official arithmetic, vendored --------------------------------------------------------------------------
# tinnerhrhe/ROVER at b0fa5878a0c7a29a9d18205b19d024b779b0609c:
#   Math/verl/utils/torch_functional.py      sum_log_softmax, masked_sum/masked_mean
#   Math/verl/workers/actor/dp_actor.py      DataParallelROVERActor.update_policy, the "ROVER start/end" block
#   Math/verl/trainer/ppo/core_algos.py      compute_rover_loss
# Only the arithmetic lines are kept (metrics and the config plumbing are dropped; `config` is a dict here).


def _official_sum_log_softmax(x):
    x_float = x.float()
    D = x_float.shape[-1]
    logsumexp_ = torch.logsumexp(x_float, dim=-1)
    mean_x = (x_float / D).sum(dim=-1)
    term = mean_x - logsumexp_
    return term


def _official_masked_mean(values, mask, axis=None):
    s = (values * mask).sum(axis) if axis is not None else (values * mask).sum()
    return s / (mask.sum(axis=axis) + 1e-8)


def _official_compute_rover_loss(q_values, target, eos_mask, step=0, weights=1):
    rover_loss_ = (q_values - target.detach()) ** 2
    rover_loss = _official_masked_mean(rover_loss_, eos_mask)
    return rover_loss


def _official_rover(config, log_prob, old_log_prob, current_q, old_logits, response_mask, low_var_reward):
    if config.get("target_adv_only"):
        target = low_var_reward
    else:
        next_q = config["rover_t"] * torch.cat(
            [(current_q[:, 1:] - old_logits[:, 1:]) * response_mask[:, 1:], torch.zeros_like(response_mask[:, :1])],
            dim=1,
        )
        scaled_next_q = next_q * config["next_q_scale_factor"]
        target = low_var_reward + scaled_next_q
    logIS = config["rover_t"] * (log_prob - old_log_prob)
    if config.get("use_rover_clip"):
        clip_high = torch.log(torch.tensor(1.0 + config["clip_ratio"], device=logIS.device))
        clip_low = torch.log(torch.tensor(1.0 - config["clip_ratio"], device=logIS.device))
        condition_high = (target > logIS) & (logIS > clip_high)
        condition_low = (target < logIS) & (logIS < clip_low)
        clipped_ratio = torch.where(
            condition_high, clip_high.detach(), torch.where(condition_low, clip_low.detach(), logIS)
        )
        q_values = clipped_ratio * response_mask
    else:
        q_values = logIS * response_mask
    if config.get("response_level_rover_loss"):
        rover_loss = (((q_values).sum(dim=-1) / response_mask.sum(dim=-1) - low_var_reward[:, 0].detach()) ** 2).mean()
    else:
        rover_loss = _official_compute_rover_loss(q_values, target, eos_mask=response_mask)
    return rover_loss


# -----------------------------------------------------------------------------------------------------------------


def _random_case(seed: int, p: int = 2, g: int = 3, t: int = 5, v: int = 11):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(p, g, t, v, generator=gen) * 2  # (P, G, T, V) current policy
    old_logits = logits + 0.3 * torch.randn(p, g, t, v, generator=gen)  # (P, G, T, V)
    tokens = torch.randint(0, v, (p, g, t), generator=gen)  # (P, G, T)
    lengths = torch.randint(1, t + 1, (p, g), generator=gen)  # (P, G)
    mask = torch.arange(t) < lengths.unsqueeze(-1)  # (P, G, T) right-padded
    lp = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (P, G, T)
    old = old_logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (P, G, T)
    rewards = torch.randint(0, 2, (p, g), generator=gen).float()  # (P, G)
    adv = rewards - rewards.mean(-1, keepdim=True)  # (P, G): ROVER's Countdown rtilde
    return logits, old_logits, lp, old, mask, rewards, adv


def _batch(lp, old, mask, rewards, cur_mean=None, old_mean=None):
    return GroupBatch(
        rewards=rewards,
        logprobs=lp,
        old_logprobs=old,
        mask=mask,
        vocab_mean_logprobs=cur_mean,
        old_vocab_mean_logprobs=old_mean,
    )


CONFIGS = [
    ({}, {"rover_t": 1.0, "next_q_scale_factor": 1.0}),
    ({"rho": 0.5, "next_q_scale": 2.0}, {"rover_t": 0.5, "next_q_scale_factor": 2.0}),
    ({"clip_eps": 0.2}, {"rover_t": 1.0, "next_q_scale_factor": 1.0, "use_rover_clip": True, "clip_ratio": 0.2}),
    ({"next_q_scale": 0.0}, {"rover_t": 1.0, "next_q_scale_factor": 0.0}),
    ({"level": "response"}, {"rover_t": 1.0, "next_q_scale_factor": 1.0, "response_level_rover_loss": True}),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("ours", "official"), CONFIGS, ids=lambda x: str(x))
def test_agrees_with_official_code_on_random_inputs(seed, ours, official):
    logits, old_logits, lp, old, mask, rewards, adv = _random_case(seed)
    cur_mean = _official_sum_log_softmax(logits) * mask  # (P, G, T)
    old_mean = _official_sum_log_softmax(old_logits) * mask  # (P, G, T)
    lp = lp.clone().requires_grad_(True)
    out = compute_loss("rover", _batch(lp, old, mask, rewards, cur_mean, old_mean), adv, **ours)
    (grad,) = torch.autograd.grad(out.loss, lp)

    flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731  (P*G, T): verl's flat rows
    lp_ref = lp.detach().clone().requires_grad_(True)
    fmask = flat(mask).float()
    want = _official_rover(
        official,
        flat(lp_ref) * fmask,
        flat(old) * fmask,
        flat(cur_mean),
        flat(old_mean),
        fmask,
        adv.reshape(-1, 1) * fmask,  # verl's token-level advantages: broadcast, masked
    )
    (want_grad,) = torch.autograd.grad(want, lp_ref)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(grad, want_grad, rtol=1e-4, atol=1e-7)


def test_hand_computed_1x1x3():
    """One rollout of 3 tokens, A = 0.5, rho = 1: Q = lp - old, V_{t+1} = m_{t+1} - m~_{t+1} (0 after the last)."""
    lp = torch.tensor([[[-1.0, -2.0, -0.5]]], requires_grad=True)
    old = torch.tensor([[[-1.2, -1.5, -0.5]]])
    cur = torch.tensor([[[-3.0, -2.5, -4.0]]])
    prev = torch.tensor([[[-3.0, -2.7, -3.6]]])
    batch = _batch(lp, old, torch.ones(1, 1, 3), torch.tensor([[1.0]]), cur, prev)
    out = compute_loss("rover", batch, torch.tensor([[0.5]]))
    q = [0.2, -0.5, 0.0]
    target = [0.5 + 0.2, 0.5 - 0.4, 0.5]
    want = sum((a - b) ** 2 for a, b in zip(q, target, strict=True)) / 3  # (0.25 + 0.36 + 0.25) / 3
    assert out.loss.item() == pytest.approx(want)
    assert out.metrics["next_value_mean"] == pytest.approx((0.2 - 0.4 + 0.0) / 3)
    (grad,) = torch.autograd.grad(out.loss, lp)
    torch.testing.assert_close(grad, torch.tensor([[[2 * (0.2 - 0.7), 2 * (-0.5 - 0.1), 2 * (0.0 - 0.5)]]]) / 3)


def test_next_value_shifts_one_position_and_stops_at_the_end():
    cur = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    prev = torch.tensor([[0.0, 0.5, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # 3 tokens, one padding column
    torch.testing.assert_close(rover_next_value(cur, prev, mask, rho=2.0), torch.tensor([[3.0, 4.0, 0.0, 0.0]]))


@pytest.mark.parametrize("rho", [1.0, 0.3])
def test_on_policy_gradient_is_2_rho_times_the_pg_gradient(rho):
    """With old = current (one optimiser step per batch) Q = 0 and V = 0: ROVER's gradient is 2 rho times that of the
    on-policy PG loss -A * ratio, token-mean (divrl's ppo, whose clip is inactive at ratio 1)."""
    _, _, lp, _, mask, rewards, adv = _random_case(3)
    means = torch.randn(lp.shape)
    grads = {}
    for name, options in (("rover", {"rho": rho}), ("ppo", {"agg": "token-mean"})):
        x = lp.clone().requires_grad_(True)
        batch = _batch(x, x.detach(), mask, rewards, means, means.clone())
        (grads[name],) = torch.autograd.grad(compute_loss(name, batch, adv, **options).loss, x)
    torch.testing.assert_close(grads["rover"], 2 * rho * grads["ppo"])


def test_permuting_a_group_permutes_the_gradient():
    logits, old_logits, lp, old, mask, rewards, adv = _random_case(4, p=1, g=5)
    cur, prev = logits.log_softmax(-1).mean(-1), old_logits.log_softmax(-1).mean(-1)  # (1, G, T)
    perm = torch.tensor([3, 0, 4, 2, 1])
    x, y = lp.clone().requires_grad_(True), lp[:, perm].clone().requires_grad_(True)
    a = compute_loss("rover", _batch(x, old, mask, rewards, cur, prev), adv)
    b = compute_loss(
        "rover", _batch(y, old[:, perm], mask[:, perm], rewards[:, perm], cur[:, perm], prev[:, perm]), adv[:, perm]
    )
    assert a.loss.item() == pytest.approx(b.loss.item())
    torch.testing.assert_close(torch.autograd.grad(a.loss, x)[0][:, perm], torch.autograd.grad(b.loss, y)[0])


def test_unscorable_rollouts_carry_no_loss_but_count_in_the_denominator():
    lp = torch.full((1, 3, 2), -1.0, requires_grad=True)
    old = torch.full((1, 3, 2), -1.5)
    cur, prev = torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)
    rewards = torch.tensor([[1.0, math.nan, 0.0]])
    out = compute_loss(
        "rover", _batch(lp, old, torch.ones(1, 3, 2), rewards, cur, prev), torch.tensor([[0.5, 0.0, -0.5]])
    )
    # Q = 0.5 everywhere; scored rows: (0.5 - 0.5)^2 and (0.5 + 0.5)^2 per token; 6 tokens in the denominator
    assert out.loss.item() == pytest.approx((0 + 0 + 1 + 1) / 6)
    (grad,) = torch.autograd.grad(out.loss, lp)
    assert bool((grad[0, 1] == 0).all()) and bool((grad[0, 2] != 0).all())


def test_clip_holds_q_at_the_bounds_only_when_moving_past_the_target():
    lp = torch.tensor([[[0.5, 0.5, -0.5, -0.5]]], requires_grad=True)  # Q = lp - 0
    old = torch.zeros(1, 1, 4)
    adv = torch.tensor([[[1.0, 0.0, -1.0, 0.0]]])  # token-level targets (next_q_scale = 0)
    batch = _batch(lp, old, torch.ones(1, 1, 4), torch.tensor([[1.0]]))
    out = compute_loss("rover", batch, adv, clip_eps=0.2, next_q_scale=0.0)
    hi, lo = math.log(1.2), math.log(0.8)
    want = ((hi - 1.0) ** 2 + (0.5 - 0.0) ** 2 + (lo + 1.0) ** 2 + (-0.5 - 0.0) ** 2) / 4
    assert out.loss.item() == pytest.approx(want) and out.metrics["clip_frac"] == pytest.approx(0.5)
    (grad,) = torch.autograd.grad(out.loss, lp)
    assert grad[0, 0, 0] == 0 and grad[0, 0, 2] == 0 and grad[0, 0, 1] != 0


def test_needs_and_bad_options():
    assert loss_needs("rover").reads == {"logprobs", "mask", "vocab_mean_logprobs", "old_vocab_mean_logprobs"}
    assert loss_needs("rover", {"next_q_scale": 0}).reads == {"logprobs", "mask"}
    assert loss_needs("rover", {"level": "response"}).reads == {"logprobs", "mask"}
    lp = torch.zeros(1, 2, 2, requires_grad=True)
    batch = _batch(lp, None, torch.ones(1, 2, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="vocab_mean_logprobs"):
        compute_loss("rover", batch, torch.zeros(1, 2))
    for bad, match in (
        ({"rho": 0.0}, "rho"),
        ({"clip_eps": 1.5}, "clip_eps"),
        ({"level": "x"}, "level"),
        ({"next_q_scale": math.inf}, "next_q_scale"),
    ):
        with pytest.raises(ValueError, match=match):
            compute_loss("rover", batch, torch.zeros(1, 2), **{"next_q_scale": 0.0, **bad})
