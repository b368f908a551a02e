import math

import pytest
import torch

from divrl.core.batch import GroupBatch
from divrl.core.losses import (
    AGG_MODES,
    aggregate,
    compute_loss,
    get_loss,
    k3_kl,
    loss_names,
    masked_mean,
    register_loss,
)
from divrl.core.registry import UnknownNameError


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def make_batch(lp, mask, **fields):
    p, g, _ = lp.shape
    return GroupBatch(rewards=torch.zeros(p, g), logprobs=lp, mask=mask, **fields)


def leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# --- registry -------------------------------------------------------------------------------


def test_registered_names():
    assert {"ppo", "positive_entropy", "entropy_bonus", "clip_cov", "kl_cov", "kl"} <= set(loss_names())


def test_unknown_loss_and_unknown_option():
    with pytest.raises(UnknownNameError, match=r"known: .*'ppo'"):
        get_loss("nope")
    lp = leaf([[[-1.0]]])
    batch = make_batch(lp, torch.ones(1, 1, 1))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['epsilon'\]"):
        compute_loss("ppo", batch, torch.zeros(1, 1), epsilon=0.1)


def test_register_loss_refuses_a_different_function_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):

        @register_loss("ppo")
        def other(batch, advantages):  # pragma: no cover - never called
            raise AssertionError


# --- helpers --------------------------------------------------------------------------------

LOSS_MAT = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # third sequence empty


@pytest.mark.parametrize(
    ("mode", "max_len", "expected"),
    [
        ("token-mean", None, (1 + 2 + 4) / 3),
        ("seq-mean-token-mean", None, (1.5 + 4.0) / 2),
        ("seq-mean-token-sum", None, (3.0 + 4.0) / 2),
        ("seq-mean-token-sum-norm", 4, (3.0 / 4 + 4.0 / 4) / 2),
        ("seq-mean-token-sum-norm", None, (3.0 / 3 + 4.0 / 3) / 2),  # default: padded width T = 3
    ],
)
def test_aggregate_hand_values(mode, max_len, expected):
    assert aggregate(LOSS_MAT, MASK, mode, max_len).item() == pytest.approx(expected)
    # (P, G, T) input reduces exactly like its (N, T) flattening
    assert aggregate(LOSS_MAT.reshape(1, 3, 3), MASK.reshape(1, 3, 3).bool(), mode, max_len).item() == pytest.approx(
        expected
    )


def test_aggregate_all_masked_is_zero_and_nan_padding_does_not_leak():
    assert aggregate(LOSS_MAT, torch.zeros(3, 3), "token-mean").item() == 0.0
    x = leaf([[1.0, float("nan")], [float("inf"), 2.0]])
    m = torch.tensor([[1, 0], [0, 1]])
    for mode in AGG_MODES:
        out = aggregate(x, m, mode)
        out.backward()
        assert math.isfinite(out.item())
        assert torch.isfinite(x.grad).all()
        assert x.grad[0, 1] == 0 and x.grad[1, 0] == 0
        x.grad = None


def test_aggregate_errors():
    with pytest.raises(ValueError, match="unknown aggregation mode 'mean'"):
        aggregate(LOSS_MAT, MASK, "mean")
    with pytest.raises(ValueError, match="max_len only applies"):
        aggregate(LOSS_MAT, MASK, "token-mean", max_len=4)
    with pytest.raises(ValueError, match="max_len must be positive"):
        aggregate(LOSS_MAT, MASK, "seq-mean-token-sum-norm", max_len=0)
    with pytest.raises(ValueError, match="mask shape"):
        aggregate(LOSS_MAT, MASK[:, :2], "token-mean")


def test_masked_mean():
    assert masked_mean(LOSS_MAT, MASK).item() == pytest.approx(7 / 3)
    assert masked_mean(LOSS_MAT, MASK, dim=-1).tolist() == pytest.approx([1.5, 4.0, 0.0])


def test_k3_kl_hand_value_and_clamps():
    lp = torch.tensor([math.log(0.5), 0.0, -30.0])
    ref = torch.tensor([math.log(0.25), 0.0, 0.0])
    kl = k3_kl(lp, ref)
    assert kl[0].item() == pytest.approx(0.5 + math.log(2) - 1)  # d = log(1/2): e^d - d - 1
    assert kl[1].item() == 0.0
    assert kl[2].item() == 10.0  # d = 30 -> clamped to 20 -> e^20 - 21 -> clamped to 10


# --- ppo --------------------------------------------------------------------------------------


def test_ppo_on_policy_value_and_gradient():
    lp = leaf([[[-1.0, -2.0, -3.0], [-0.5, -0.5, float("nan")]]])
    mask = torch.tensor([[[1, 1, 1], [1, 1, 0]]])
    adv = torch.tensor([[1.0, -2.0]])
    out = compute_loss("ppo", make_batch(lp, mask), adv)
    # ratio = 1: token losses -A; token-mean over 5 tokens
    assert out.loss.item() == pytest.approx(-(3 * 1.0 + 2 * -2.0) / 5)
    out.loss.backward()
    expected = torch.tensor([[[-1 / 5, -1 / 5, -1 / 5], [2 / 5, 2 / 5, 0.0]]])
    torch.testing.assert_close(lp.grad, expected)
    assert out.metrics["clip_frac"] == 0.0
    assert out.metrics["approx_kl"] == 0.0
    assert set(out.metrics) == {"pg_loss", "clip_frac", "approx_kl", "ppo_kl"}


def test_ppo_clipping_hand_values():
    # four one-token sequences with ratios 1.5, 0.5, 0.5, 1.25 and advantages +1, +1, -1, +1
    old = torch.zeros(1, 4, 1)
    lp = leaf([[[math.log(1.5)], [math.log(0.5)], [math.log(0.5)], [math.log(1.25)]]])
    adv = torch.tensor([[1.0, 1.0, -1.0, 1.0]])
    batch = make_batch(lp, torch.ones(1, 4, 1), old_logprobs=old)
    out = compute_loss("ppo", batch, adv)
    token_losses = [-1.2, -0.5, 0.8, -1.2]  # clipped, unclipped, clipped (A<0, rho<0.8), clipped
    assert out.loss.item() == pytest.approx(sum(token_losses) / 4)
    assert out.metrics["clip_frac"] == pytest.approx(3 / 4)
    out.loss.backward()
    torch.testing.assert_close(lp.grad.flatten(), torch.tensor([0.0, -0.5 / 4, 0.0, 0.0]))
    # DAPO clip-higher: eps_high = 0.28 leaves rho = 1.25 unclipped
    lp.grad = None
    out = compute_loss("ppo", batch, adv, eps_high=0.28)
    assert out.loss.item() == pytest.approx((-1.28 - 0.5 + 0.8 - 1.25) / 4)
    out.loss.backward()
    assert lp.grad.flatten()[3].item() == pytest.approx(-1.25 / 4)


def test_ppo_dual_clip():
    lp = leaf([[[math.log(5.0)], [math.log(2.0)]]])
    batch = make_batch(lp, torch.ones(1, 2, 1), old_logprobs=torch.zeros(1, 2, 1))
    adv = torch.tensor([[-1.0, -1.0]])
    plain = compute_loss("ppo", batch, adv)
    assert plain.loss.item() == pytest.approx((5.0 + 2.0) / 2)
    dual = compute_loss("ppo", batch, adv, clip_c=3.0)
    assert dual.loss.item() == pytest.approx((3.0 + 2.0) / 2)  # 5|A| bounded by 3|A|
    assert dual.metrics["clip_frac_dual"] == pytest.approx(0.5)
    dual.loss.backward()
    assert lp.grad.flatten().tolist() == pytest.approx([0.0, 2.0 / 2])
    with pytest.raises(ValueError, match="clip_c must be > 1"):
        compute_loss("ppo", batch, adv, clip_c=0.5)


def test_ppo_grpo_aggregation_weights_sequences_equally():
    lp = leaf([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[[1, 1, 1, 1], [1, 0, 0, 0]]])
    adv = torch.tensor([[1.0, 3.0]])
    batch = make_batch(lp, mask)
    assert compute_loss("ppo", batch, adv, agg="seq-mean-token-mean").loss.item() == pytest.approx(-(1 + 3) / 2)
    assert compute_loss("ppo", batch, adv, agg="token-mean").loss.item() == pytest.approx(-(4 + 3) / 5)
    drgrpo = compute_loss("ppo", batch, adv, agg="seq-mean-token-sum-norm", max_len=8)
    assert drgrpo.loss.item() == pytest.approx(-(4 / 8 + 3 / 8) / 2)


def test_ppo_token_level_advantages_match_broadcast():
    lp = leaf([[[-1.0, -2.0], [-0.3, -0.7]]])
    old = torch.tensor([[[-1.1, -1.8], [-0.3, -0.9]]])
    batch = make_batch(lp, torch.ones(1, 2, 2), old_logprobs=old)
    adv = torch.tensor([[0.7, -0.4]])
    a = compute_loss("ppo", batch, adv).loss
    b = compute_loss("ppo", batch, adv.unsqueeze(-1).expand(1, 2, 2).clone()).loss
    assert a.item() == pytest.approx(b.item())
    with pytest.raises(ValueError, match=r"advantages must have shape \(P, G\) = \(1, 2\)"):
        compute_loss("ppo", batch, torch.zeros(2, 2))


def test_ppo_kl_term():
    lp = leaf([[[math.log(0.5), math.log(0.5)]]])
    ref = torch.full((1, 1, 2), math.log(0.25))
    batch = make_batch(lp, torch.ones(1, 1, 2), ref_logprobs=ref)
    out = compute_loss("ppo", batch, torch.zeros(1, 1), beta=0.1)
    kl = 0.5 + math.log(2) - 1
    assert out.metrics["kl"] == pytest.approx(kl)
    assert out.loss.item() == pytest.approx(0.1 * kl)
    out.loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp) = 0.5 per token, token-mean over 2, times beta
    torch.testing.assert_close(lp.grad, torch.full((1, 1, 2), 0.1 * 0.5 / 2))
    with pytest.raises(ValueError, match=r"requires GroupBatch\.ref_logprobs"):
        compute_loss("ppo", make_batch(lp, torch.ones(1, 1, 2)), torch.zeros(1, 1), beta=0.1)
    assert compute_loss("kl", batch, torch.zeros(1, 1), beta=0.1).loss.item() == pytest.approx(0.1 * kl)


def test_ppo_approx_kl_is_k3_of_old_vs_new():
    lp = leaf([[[0.0]]])
    out = compute_loss(
        "ppo", make_batch(lp, torch.ones(1, 1, 1), old_logprobs=torch.tensor([[[-0.5]]])), torch.ones(1, 1)
    )
    assert out.metrics["approx_kl"] == pytest.approx(math.exp(0.5) - 1 - 0.5)
    assert out.metrics["ppo_kl"] == pytest.approx(-0.5)


def test_missing_fields_give_clear_errors():
    lp = leaf([[[-1.0]]])
    no_mask = GroupBatch(rewards=torch.zeros(1, 1), logprobs=lp)
    with pytest.raises(ValueError, match=r"policy loss 'ppo' requires GroupBatch\.mask"):
        compute_loss("ppo", no_mask, torch.zeros(1, 1))
    no_lp = GroupBatch(rewards=torch.zeros(1, 1), mask=torch.ones(1, 1, 1))
    with pytest.raises(ValueError, match=r"requires GroupBatch\.logprobs"):
        compute_loss("ppo", no_lp, torch.zeros(1, 1))
    with pytest.raises(ValueError, match="mask must hold only 0/1"):
        compute_loss("ppo", make_batch(lp, torch.full((1, 1, 1), 0.5)), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="agg='sum' not in"):
        compute_loss("ppo", make_batch(lp, torch.ones(1, 1, 1)), torch.zeros(1, 1), agg="sum")


# --- positive_entropy (R1-zero-Div) -----------------------------------------------------------

P1 = [[0.5, 0.25, 0.8], [0.4, 0.3, 0.9]]


def r1_batch(lp, **fields):
    mask = torch.tensor([[[1, 1, 0], [1, 1, 1]]])
    fields.setdefault("correct", torch.tensor([[True, False]]))
    return make_batch(lp, mask, **fields)


def test_positive_entropy_hand_value_1x2x3():
    lp = leaf([[[math.log(p) for p in row] for row in P1]])
    out = compute_loss("positive_entropy", r1_batch(lp), torch.zeros(1, 2))
    # only sample 0 is correct; its 2 valid tokens: h = -logp; J = (1/G) * (1/T_0) * sum h
    j_div = 0.5 * 0.5 * (-math.log(0.5) - math.log(0.25))
    assert out.metrics["div_term"] == pytest.approx(j_div)
    assert out.loss.item() == pytest.approx(-0.01 * j_div)
    assert out.metrics["div_gate_frac"] == pytest.approx(0.5)


def test_positive_entropy_on_policy_gradient_is_minus_one_plus_logp():
    lp = leaf([[[math.log(p) for p in row] for row in P1]])
    lam = 0.5
    out = compute_loss(
        "positive_entropy", r1_batch(lp, correct=torch.tensor([[True, True]])), torch.zeros(1, 2), lam=lam
    )
    out.loss.backward()
    # loss = -lam * (1/2) * sum_i (1/T_i) sum_t h_it and dh/dlogp = -(1 + logp) on-policy
    lengths = torch.tensor([[[2.0], [3.0]]])
    mask = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    expected = lam / 2 / lengths * (1 + lp.detach()) * mask
    torch.testing.assert_close(lp.grad, expected)


def test_positive_entropy_off_policy_gradient_eq11():
    # With pi_old != pi_theta: dh/dpi = -(1 + log pi) / pi_old (Eq. 11 with the pi_old factor).
    p = leaf([[[0.5, 0.25, 0.8], [0.4, 0.3, 0.9]]])
    p_old = torch.tensor([[[0.6, 0.2, 0.5], [0.5, 0.5, 0.5]]])
    batch = r1_batch(torch.log(p), old_logprobs=torch.log(p_old), correct=torch.tensor([[True, True]]))
    out = compute_loss("positive_entropy", batch, torch.zeros(1, 2), lam=1.0)
    out.loss.backward()
    lengths = torch.tensor([[[2.0], [3.0]]])
    mask = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    dh_dp = -(1 + torch.log(p.detach())) / p_old
    torch.testing.assert_close(p.grad, -1.0 / 2 / lengths * dh_dp * mask)
    # value: h = -(p/p_old) log p
    h = -(p.detach() / p_old) * torch.log(p.detach())
    expected_j = 0.5 * ((h[0, 0, :2].sum() / 2) + h[0, 1].sum() / 3)
    assert out.metrics["div_term"] == pytest.approx(expected_j.item())


def test_positive_entropy_ratio_detached_is_on_policy_form():
    lp = leaf([[[math.log(p) for p in row] for row in P1]])
    old = torch.zeros(1, 2, 3)  # far from lp: the 'old' ratio differs from 1
    batch = r1_batch(lp, old_logprobs=old)
    detached = compute_loss("positive_entropy", batch, torch.zeros(1, 2), ratio="detached")
    on_policy = compute_loss("positive_entropy", r1_batch(lp), torch.zeros(1, 2))
    paper = compute_loss("positive_entropy", batch, torch.zeros(1, 2))
    assert detached.metrics["div_term"] == pytest.approx(on_policy.metrics["div_term"])
    assert paper.metrics["div_term"] != pytest.approx(on_policy.metrics["div_term"])


def test_positive_entropy_incorrect_and_masked_tokens_get_no_gradient():
    lp = leaf([[[math.log(0.5), math.log(0.25), float("nan")], [-0.9, -1.2, -0.1]]])
    out = compute_loss("positive_entropy", r1_batch(lp), torch.zeros(1, 2))
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    assert lp.grad[0, 1].abs().sum() == 0  # incorrect sample
    assert lp.grad[0, 0, 2] == 0  # masked token (NaN there does not leak)
    assert (lp.grad[0, 0, :2] != 0).all()


def test_positive_entropy_gates():
    lp = leaf([[[math.log(p) for p in row] for row in P1]])
    batch = r1_batch(lp)
    h0 = (-math.log(0.5) - math.log(0.25)) / 2
    h1 = -(math.log(0.4) + math.log(0.3) + math.log(0.9)) / 3
    adv = torch.tensor([[-1.0, 2.0]])
    pos = compute_loss("positive_entropy", batch, adv, gate="positive_advantage")
    assert pos.metrics["div_term"] == pytest.approx(h1 / 2)
    every = compute_loss("positive_entropy", batch, adv, gate="all")
    assert every.metrics["div_term"] == pytest.approx((h0 + h1) / 2)
    assert every.metrics["div_gate_frac"] == 1.0
    with pytest.raises(ValueError, match=r"requires GroupBatch\.correct"):
        compute_loss("positive_entropy", make_batch(lp, torch.ones(1, 2, 3)), adv)
    with pytest.raises(ValueError, match="gate='pos' not in"):
        compute_loss("positive_entropy", batch, adv, gate="pos")


def test_positive_entropy_exact_variant_gradient_flows_to_entropies():
    ent = leaf([[[1.0, 2.0, 50.0], [3.0, 4.0, 5.0]]])
    lp = torch.zeros(1, 2, 3)
    out = compute_loss("positive_entropy", r1_batch(lp, entropies=ent), torch.zeros(1, 2), estimator="exact", lam=0.1)
    assert out.metrics["div_term"] == pytest.approx(0.5 * 1.5)
    out.loss.backward()
    expected = torch.tensor([[[-0.1 / 2 / 2, -0.1 / 2 / 2, 0.0], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(ent.grad, expected)
    with pytest.raises(ValueError, match=r"requires GroupBatch\.entropies"):
        compute_loss("positive_entropy", r1_batch(lp), torch.zeros(1, 2), estimator="exact")


# --- entropy bonus ----------------------------------------------------------------------------


def test_entropy_bonus():
    ent = leaf([[[1.0, 3.0], [2.0, 100.0]]])
    batch = GroupBatch(rewards=torch.zeros(1, 2), entropies=ent, mask=torch.tensor([[[1, 1], [1, 0]]]))
    out = compute_loss("entropy_bonus", batch, torch.zeros(1, 2), coef=0.5)
    assert out.metrics["entropy"] == pytest.approx(2.0)
    assert out.loss.item() == pytest.approx(-1.0)
    out.loss.backward()
    torch.testing.assert_close(ent.grad, torch.tensor([[[-0.5 / 3, -0.5 / 3], [-0.5 / 3, 0.0]]]))


# --- Clip-Cov / KL-Cov ------------------------------------------------------------------------


def cov_batch():
    g = torch.Generator().manual_seed(0)
    lp = leaf((-3.0 * torch.rand(2, 4, 5, generator=g)).tolist())
    mask = torch.ones(2, 4, 5)
    mask[0, 0, 3:] = 0
    adv = torch.tensor([[3.0, -3.0, 2.0, -1.0], [1.5, -2.0, 0.5, 4.0]])
    return lp, mask, adv


def centred_cov(lp, mask, adv):
    a = adv.unsqueeze(-1).expand_as(lp)
    valid = mask.bool()
    return (a - a[valid].mean()) * (lp.detach() - lp.detach()[valid].mean())


def test_clip_cov_drops_gradient_of_sampled_covariance_band_tokens():
    lp, mask, adv = cov_batch()
    cov = centred_cov(lp, mask, adv)
    candidates = mask.bool() & (cov > 1.0) & (cov < 5.0)  # on-policy: nothing is PPO-clipped
    assert candidates.sum() >= 3
    out = compute_loss("clip_cov", make_batch(lp, mask), adv, clip_cov_ratio=0.06, seed=1)
    out.loss.backward()
    dropped = mask.bool() & (lp.grad == 0)
    n_valid = int(mask.sum())  # 38 -> floor(0.06 * 38) = 2 tokens
    assert int(dropped.sum()) == 2
    assert (dropped <= candidates).all()
    assert out.metrics["cov_clip_frac"] == pytest.approx(2 / n_valid)
    # the kept tokens have the plain on-policy PPO gradient -A / n_valid
    kept = mask.bool() & ~dropped
    torch.testing.assert_close(lp.grad[kept], (-adv.unsqueeze(-1).expand_as(lp) / n_valid)[kept])
    # value: dropped tokens contribute 0 but count in the token-mean denominator
    a = adv.unsqueeze(-1).expand_as(lp)
    assert out.loss.item() == pytest.approx((-a * kept).sum().item() / n_valid)
    # reproducible with the same seed / generator
    lp.grad = None
    again = compute_loss(
        "clip_cov", make_batch(lp, mask), adv, clip_cov_ratio=0.06, generator=torch.Generator().manual_seed(1)
    )
    assert again.loss.item() == pytest.approx(out.loss.item())


def test_clip_cov_without_candidates_equals_ppo():
    lp, mask, adv = cov_batch()
    batch = make_batch(lp, mask)
    out = compute_loss("clip_cov", batch, adv, clip_cov_lb=100.0, clip_cov_ub=200.0, seed=0)
    assert out.loss.item() == pytest.approx(compute_loss("ppo", batch, adv).loss.item())
    assert out.metrics["cov_clip_frac"] == 0.0
    with pytest.raises(ValueError, match="seed or generator"):
        compute_loss("clip_cov", batch, adv, seed=0, generator=torch.Generator())


def test_kl_cov_penalises_top_covariance_tokens():
    lp, mask, adv = cov_batch()
    old = (lp.detach() - 0.1 * torch.arange(40.0).reshape(2, 4, 5) / 40).clone()
    batch = make_batch(lp, mask, old_logprobs=old)
    out = compute_loss("kl_cov", batch, adv, kl_cov_ratio=0.1, ppo_kl_coef=2.0)
    n_valid = int(mask.sum())
    cov = centred_cov(lp, mask, adv).masked_fill(~mask.bool(), -math.inf)
    top = cov.flatten().topk(3).indices  # floor(0.1 * 38) = 3
    selected = torch.zeros(40, dtype=torch.bool)
    selected[top] = True
    selected = selected.reshape(2, 4, 5)
    a = adv.unsqueeze(-1).expand_as(lp)
    diff = lp.detach() - old
    token_loss = -a * torch.exp(diff) + 2.0 * diff.abs() * selected
    assert out.loss.item() == pytest.approx((token_loss * mask).sum().item() / n_valid)
    assert out.metrics["kl_cov_frac"] == pytest.approx(3 / n_valid)
    # no PPO clipping in KL-Cov: a large ratio is not clipped
    big = make_batch(leaf([[[1.0]]]), torch.ones(1, 1, 1), old_logprobs=torch.zeros(1, 1, 1))
    assert compute_loss("kl_cov", big, torch.ones(1, 1), ppo_kl_coef=0.0).loss.item() == pytest.approx(-math.e)


def test_clip_cov_never_drops_tokens_already_clipped_by_ppo():
    # A = (2, -2), logp = (0, 0 | -2, -2): every token has cov = 2, inside (1, 5)
    lp = leaf([[[0.0, 0.0], [-2.0, -2.0]]])
    old = torch.tensor([[[-math.log(1.5), 0.0], [-2.0, -2.0]]])  # token (0, 0) has ratio 1.5 -> PPO-clipped
    batch = make_batch(lp, torch.ones(1, 2, 2), old_logprobs=old)
    out = compute_loss("clip_cov", batch, torch.tensor([[2.0, -2.0]]), clip_cov_ratio=1.0, seed=0)
    assert out.metrics["cov_clip_frac"] == pytest.approx(3 / 4)  # all unclipped candidates dropped
    assert out.loss.item() == pytest.approx(-2.0 * 1.2 / 4)  # only the clipped token's loss remains


def test_positive_advantage_gate_ignores_all_correct_groups():
    # all-correct group: A = 0, so the advantage gate gives no bonus while the paper's gate does
    lp = leaf([[[math.log(p) for p in row] for row in P1]])
    batch = r1_batch(lp, correct=torch.tensor([[True, True]]))
    adv = torch.zeros(1, 2)
    assert compute_loss("positive_entropy", batch, adv, gate="positive_advantage").metrics["div_term"] == 0.0
    assert compute_loss("positive_entropy", batch, adv).metrics["div_term"] > 0.0
