"""Tests for the verl adapter's translation layer, which needs no verl: flat (bs, T) rows + uid <-> (P, G) groups.

These run in the main environment (verl absent) and in .venv-verl. The registry and trainer contracts against the
real verl are in test_verl_plugin.py. Every expected value is either hand-computed or divrl.core run on each group
on its own: verl's layout (shuffled groups, unequal sizes, string uids, ragged masks) must not change a number.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divrl.core.advantages import compute_advantages
from divrl.core.batch import GroupBatch
from divrl.core.diversity import labels_tensor, partition_by_key
from divrl.integrations.verl import (
    SampleInfo,
    group_advantages,
    group_rows,
    positive_entropy_term,
    sample_info_from_rows,
    token_advantages,
)

R2 = 1 / math.sqrt(2)  # GRPO value of a binary group of two


def ragged_mask(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).to(torch.int64)  # (bs, T)


def last_token_rewards(scores: list[float], lengths: list[int], width: int) -> torch.Tensor:
    """verl's token_level_rewards: the outcome score on the last response token, zeros elsewhere."""
    out = torch.zeros(len(scores), width)  # (bs, T)
    for i, (s, n) in enumerate(zip(scores, lengths, strict=True)):
        out[i, n - 1] = s
    return out


# ---------------------------------------------------------------------------------------------
# group_rows


def test_group_rows_orders_groups_by_first_appearance_and_keeps_batch_order_within():
    groups = group_rows(np.array(["b", "a", "b", "c", "a", "b"], dtype=object))
    assert [g.tolist() for g in groups] == [[0, 2, 5], [1, 4], [3]]


def test_group_rows_accepts_lists_and_int_uids():
    assert [g.tolist() for g in group_rows([7, 3, 7, 3])] == [[0, 2], [1, 3]]


@pytest.mark.parametrize(("index", "match"), [([], "empty"), (np.zeros((2, 2)), "one-dimensional")])
def test_group_rows_rejects_bad_index(index: Any, match: str):
    with pytest.raises(ValueError, match=match):
        group_rows(index)


def test_group_rows_rejects_incomparable_uids():
    with pytest.raises(ValueError, match="mutually comparable"):
        group_rows(np.array(["a", 1, None], dtype=object))


# ---------------------------------------------------------------------------------------------
# group_advantages / token_advantages: hand-computed values


def test_grpo_on_interleaved_string_uids_hand_computed():
    # u1 = rows 0, 2 (scores 1, 0); u0 = rows 1, 3 (scores 0, 1): each group is (1, 0) -> +-1/sqrt(2) (unbiased std)
    adv, _ = group_advantages("grpo", torch.tensor([1.0, 0.0, 0.0, 1.0]), np.array(["u1", "u0", "u1", "u0"]))
    torch.testing.assert_close(adv, torch.tensor([R2, -R2, -R2, R2]), atol=1e-5, rtol=0)


def test_unequal_group_sizes_are_exact_hand_computed():
    index = ["a", "b", "a", "a", "b"]  # a = rows 0, 2, 3 (1, 0, 0); b = rows 1, 4 (1, 0)
    scores = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    dr, _ = group_advantages("dr_grpo", scores, index)
    torch.testing.assert_close(dr, torch.tensor([2 / 3, 0.5, -1 / 3, -1 / 3, -0.5]))
    rloo, _ = group_advantages("rloo", scores, index)  # G/(G-1) * centred: a x 3/2, b x 2
    torch.testing.assert_close(rloo, torch.tensor([1.0, 1.0, -0.5, -0.5, -1.0]))


def test_nan_score_rows_are_unscorable():
    # group a = rows 0, 2, 3, 5 with scores (1, NaN, 0, 1): grpo over the 3 scored (mean 2/3, std 1/sqrt3);
    # group b = rows 1, 4 with (NaN, 1): one scored, no baseline. The NaN rows claim to be correct: never counted.
    s3 = 1 / math.sqrt(3)
    scores, lengths, width = [1.0, math.nan, math.nan, 0.0, 1.0, 1.0], [2, 3, 1, 3, 2, 1], 3
    index = ["a", "b", "a", "a", "b", "a"]
    adv, ret, _ = token_advantages(
        "grpo", last_token_rewards(scores, lengths, width), ragged_mask(lengths, width), index
    )
    row = torch.tensor([s3, 0.0, 0.0, -2 * s3, 0.0, s3])
    torch.testing.assert_close(adv, row[:, None] * ragged_mask(lengths, width), atol=1e-5, rtol=0)
    assert torch.equal(adv, ret)
    correct = np.array([True, True, True, False, True, True])
    passk, _ = group_advantages("passk", torch.tensor(scores), index, options={"k": 1}, correct=correct)
    expected = compute_advantages("passk", GroupBatch(rewards=torch.tensor([[1.0, 0.0, 1.0]])), k=1)[0]
    torch.testing.assert_close(passk[[0, 3, 5]], expected)
    assert torch.equal(passk[[1, 2, 4]], torch.zeros(3))


def test_darling_with_keys_hand_computed_on_shuffled_rows():
    # One group of 4 with keys x, x, y, None and rewards 1, 1, 1, 0 (floor 0.1):
    # div = (G - |C|)/(G - 1) = 2/3, 2/3, 1, 1; r*div = 2/3, 2/3, 1, 0; mean 7/12 -> 1/12, 1/12, 5/12, -7/12.
    # Rows are interleaved with a second group whose rewards are all 0 (advantage 0).
    order = [2, 0, 3, 1]  # row r of the batch holds member order[r] of group g
    keys_g = ["x", "x", "y", None]
    rewards_g = [1.0, 1.0, 1.0, 0.0]
    expected_g = [1 / 12, 1 / 12, 5 / 12, -7 / 12]
    index, scores, keys, expected = [], [], [], []
    for member in order:
        index += ["g", "h"]
        scores += [rewards_g[member], 0.0]
        keys += [keys_g[member], f"k{member}"]
        expected += [expected_g[member], 0.0]
    adv, stats = group_advantages("darling", torch.tensor(scores), index, keys=keys)
    torch.testing.assert_close(adv, torch.tensor(expected))
    # signal sizes against GRPO (g: 1/2, 1/2, 1/2, -3/2; h: 0): d = -5/12, -5/12, -1/12, 11/12 in group g only
    assert stats == {
        "classes_per_group": pytest.approx((3 + 4) / 2),
        "signal/rms_ratio": pytest.approx(math.sqrt((172 / 144) / 3), rel=1e-5),  # RMS(d) / RMS(A_grpo), float32
        "signal/groups_changed": pytest.approx(0.5),
        "signal/corr": pytest.approx(14 / math.sqrt(228), rel=1e-5),  # (7/6) / sqrt(76/144 * 3)
        "signal/flat_groups": pytest.approx(0.5),  # h: all 0
        "signal/acts_in_flat": 0.0,  # darling leaves it at 0
    }
    correct = [s == 1.0 for s in scores]  # group g: correct x, x, y -> 2 classes; group h: none correct -> 0
    _, stats = group_advantages("darling", torch.tensor(scores), index, keys=keys, correct=correct)
    assert stats["distinct_correct_classes"] == pytest.approx((2 + 0) / 2)


def test_token_advantages_broadcast_over_ragged_masks():
    lengths, width = [3, 1, 2, 4], 4
    scores = [1.0, 0.0, 0.0, 1.0]
    mask = ragged_mask(lengths, width)
    adv, returns, _ = token_advantages(
        "dr_grpo", last_token_rewards(scores, lengths, width), mask, np.array(["u1", "u0", "u1", "u0"], dtype=object)
    )
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5])[:, None] * mask  # (bs, T)
    torch.testing.assert_close(adv, expected)
    assert adv.shape == (4, width)
    assert bool((adv[mask == 0] == 0).all())
    torch.testing.assert_close(returns, adv)


def test_token_advantages_shape_errors_name_the_field():
    with pytest.raises(ValueError, match="token_level_rewards"):
        token_advantages("grpo", torch.zeros(4), torch.ones(4), ["a"] * 4)
    with pytest.raises(ValueError, match="response_mask"):
        token_advantages("grpo", torch.zeros(4, 3), torch.ones(4, 2), ["a"] * 4)


def test_side_information_length_errors():
    with pytest.raises(ValueError, match="texts has 1 entries for 2 rows"):
        group_advantages("grpo", torch.zeros(2), ["a", "a"], texts=["x"])
    with pytest.raises(ValueError, match="index"):
        group_advantages("grpo", torch.zeros(3), ["a", "a"])


def test_batch_scale_with_unequal_sizes_raises():
    with pytest.raises(ValueError, match="scale='batch'"):
        group_advantages("grpo", torch.tensor([1.0, 0.0, 1.0]), ["a", "a", "b"], options={"scale": "batch"})
    # equal sizes: batch scale is taken over the whole batch, as divrl.core does
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv, _ = group_advantages("grpo", scores, ["a", "b", "a", "b"], options={"scale": "batch"})
    core = compute_advantages("grpo", GroupBatch(rewards=torch.tensor([[1.0, 1.0], [0.0, 1.0]])), scale="batch")
    torch.testing.assert_close(adv, core.T.reshape(-1))


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="bogus"):
        group_advantages("grpo", torch.zeros(2), ["a", "a"], options={"bogus": 1})


# ---------------------------------------------------------------------------------------------
# Property: any verl layout gives divrl.core's per-group values


@st.composite
def verl_layouts(draw: st.DrawFn) -> tuple[list[str], list[int], torch.Tensor, list[str]]:
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=5))
    uids = [f"uid-{i:02d}" for i in range(len(sizes))]
    index = [u for u, g in zip(uids, sizes, strict=True) for _ in range(g)]
    perm = draw(st.permutations(range(len(index))))
    index = [index[p] for p in perm]
    scores = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=len(index), max_size=len(index)))
    keys = draw(st.lists(st.sampled_from(["p", "q", "r"]), min_size=len(index), max_size=len(index)))
    return index, list(perm), torch.tensor(scores), keys


CASES = [("grpo", {}), ("dr_grpo", {}), ("rloo", {}), ("darling", {"floor": 0.2}), ("passk", {"k": 1})]


@settings(max_examples=40, deadline=None)
@given(layout=verl_layouts(), case=st.sampled_from(CASES))
def test_any_layout_matches_core_group_by_group(
    layout: tuple[list[str], list[int], torch.Tensor, list[str]], case: tuple[str, dict[str, Any]]
):
    index, _, scores, keys = layout
    name, options = case
    correct = (scores == 1).numpy()
    adv, _ = group_advantages(name, scores, index, options=options, correct=correct, keys=keys)
    for uid in dict.fromkeys(index):
        rows = [i for i, u in enumerate(index) if u == uid]
        alone = GroupBatch(
            rewards=scores[rows][None],
            correct=torch.as_tensor(correct[rows])[None],
            partition=labels_tensor([partition_by_key([keys[i] for i in rows])]),
        )
        torch.testing.assert_close(adv[rows], compute_advantages(name, alone, **options)[0])


def test_setpo_texts_follow_their_rows():
    # Group "a" holds two identical texts and one different text; with an n-gram kernel the odd one out gets the
    # larger leave-one-out bonus, wherever verl put the rows.
    texts = ["same words here", "other", "completely different thing", "same words here", "other"]
    index = ["a", "b", "a", "a", "b"]
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    adv, _ = group_advantages("setpo", scores, index, texts=texts, options={"kernel": "ngram"})
    core = compute_advantages(
        "setpo", GroupBatch(rewards=torch.ones(1, 3), texts=[[texts[0], texts[2], texts[3]]]), kernel="ngram"
    )[0]
    torch.testing.assert_close(adv[[0, 2, 3]], core)
    assert adv[2] > adv[0] == adv[3]


def test_the_embedded_rows_come_from_the_estimators_declared_needs():
    """An embedder feeds a cosine kernel per uid group. Which rows it embeds is read from the estimator's declared
    needs (divrl.core.needs Needs.embed_rows), not from a setting: setpo with members='correct' and dsdr read only
    correct rollouts' embeddings, so only the correct rows are embedded, and the values equal divrl.core's on every
    row embedded; setpo with members='all' embeds every row."""
    from divrl.core.advantages import advantage_needs
    from divrl.semantic import CharNgramEmbedder, embed_texts

    texts = ["same words here", "other", "completely different thing", "same words here", "other", "x y z", "a b"]
    index = ["a", "b", "a", "a", "b", "a", "b"]
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    correct = (scores == 1).numpy()
    emb = CharNgramEmbedder(3, 64, cache_size=0)
    seen: list[str] = []
    encode = emb.encode
    emb.encode = lambda t: seen.extend(t) or encode(t)  # type: ignore[method-assign]
    only_correct = sorted(t for t, c in zip(texts, correct, strict=True) if c)
    cases = [
        ("setpo", {"kernel": "cosine", "members": "correct", "lam": 2.0}, "correct"),
        ("dsdr", {"kernel": "cosine", "lam": 1.0}, "correct"),
        ("setpo", {"kernel": "cosine", "members": "all", "lam": 2.0}, "all"),
    ]
    for name, options, rows_read in cases:
        assert advantage_needs(name, options).embed_rows == rows_read
        seen.clear()
        adv, _ = group_advantages(name, scores, index, texts=texts, correct=correct, options=options, embedder=emb)
        assert sorted(seen) == (only_correct if rows_read == "correct" else sorted(texts)), name
        for rows in ([0, 2, 3, 5], [1, 4, 6]):  # groups "a" and "b", in batch order, every row embedded
            group = [[texts[i] for i in rows]]
            batch = GroupBatch(
                rewards=scores[rows][None],
                correct=torch.as_tensor(correct[rows])[None],
                texts=group,
                embeddings=embed_texts(group, CharNgramEmbedder(3, 64)),
            )
            torch.testing.assert_close(adv[rows], compute_advantages(name, batch, **options)[0])
        if name == "setpo" and rows_read == "correct":
            assert adv[2] > adv[0] == adv[3]  # the odd correct one out gets the larger bonus
    options = cases[0][1]
    with pytest.raises(
        ValueError, match=r"^divrl estimator 'setpo' reads only correct rollouts' embeddings: .*correct="
    ):
        group_advantages("setpo", scores, index, texts=texts, options=options, embedder=emb)
    with pytest.raises(ValueError, match="texts"):
        group_advantages("setpo", scores, index, correct=correct, options=options, embedder=emb)


@pytest.mark.parametrize(("name", "options"), [("darling", {}), ("grpo", {}), ("setpo", {"kernel": "ngram"})])
def test_an_embedder_the_estimator_does_not_read_is_refused_in_one_line(name: str, options: dict[str, Any]):
    """An embedder is a setting for a cosine kernel: given to an estimator whose declared needs read no embeddings
    (required or optional) it is a mistake, refused in one line naming the setting, before anything is embedded."""
    from divrl.semantic import CharNgramEmbedder

    emb = CharNgramEmbedder(3, 64, cache_size=0)
    emb.encode = lambda t: pytest.fail("embedded")  # type: ignore[method-assign]
    with pytest.raises(ValueError) as info:
        group_advantages(
            name,
            torch.tensor([1.0, 0.0]),
            ["a", "a"],
            texts=["x", "y"],
            keys=["x", "y"],
            options=options,
            embedder=emb,
        )
    message = str(info.value)
    assert message.startswith(f"an embedder (embedder=) is set, but divrl estimator {name!r} with options {options}")
    assert "reads no embeddings" in message and "\n" not in message


def test_the_algorithm_config_refuses_divrl_embed_rows_and_an_embedder_nothing_reads():
    """algorithm.divrl_embed_rows is gone (the rows come from the declared needs): a config that still sets it gets one
    line naming the replacement behaviour; so does divrl_embedder for an estimator that reads no embeddings. The
    divrl_sync trainer refuses both in __init__, before verl's trainer (and its workers) is built."""
    from divrl.integrations.verl import DivrlAdvantageMixin, EstimatorConfig, read_estimator_config

    old = {"divrl_embed_rows": "correct", "divrl_embedder": "char-ngram:3:64"}
    old["divrl_options"] = {"kernel": "cosine", "members": "correct"}
    removed = (
        r"^divrl_setpo: algorithm.divrl_embed_rows is no longer read: divrl embeds exactly the rows the estimator "
        r"declares it reads \(.*only the correct responses for setpo with divrl_options.members=correct and for "
        r"dsdr, every response otherwise\); remove it$"
    )
    with pytest.raises(ValueError, match=removed):
        read_estimator_config("setpo", old)
    unread = r"^divrl_darling: algorithm.divrl_embedder is set, but divrl estimator 'darling' .*reads no embeddings"
    with pytest.raises(ValueError, match=unread):
        read_estimator_config("darling", {"divrl_embedder": "char-ngram:3:64"})
    cfg = read_estimator_config(
        "setpo",
        {"divrl_options": {"kernel": "cosine"}, "divrl_embedder": "char-ngram:3:64", "divrl_correct_threshold": 0.5},
    )
    assert cfg == EstimatorConfig(options={"kernel": "cosine"}, correct_threshold=0.5, embedder="char-ngram:3:64")

    class Base:
        def __init__(self, config: Any) -> None:
            raise AssertionError("verl's trainer was built")

    trainer = type("Trainer", (DivrlAdvantageMixin, Base), {})
    with pytest.raises(ValueError, match=removed):
        trainer({"algorithm": {"adv_estimator": "divrl_setpo", **old}})
    with pytest.raises(ValueError, match=unread):
        trainer({"algorithm": {"adv_estimator": "divrl_darling", "divrl_embedder": "char-ngram:3:64"}})


def test_partition_fn_runs_per_group_on_texts():
    seen: list[list[str]] = []

    def first_char(texts: list[str]) -> list[int]:
        seen.append(texts)
        return partition_by_key([t[0] for t in texts])

    texts = ["x1", "y1", "x2", "y2", "z"]
    index = ["a", "b", "a", "b", "b"]
    adv, stats = group_advantages("darling", torch.ones(5), index, texts=texts, partition_fn=first_char)
    assert sorted(seen) == [["x1", "x2"], ["y1", "y2", "z"]]
    # group a: one class of 2 -> div = max(0, 0.1) for both -> equal -> 0; group b: y, y, z -> 1/2, 1/2, 1
    torch.testing.assert_close(adv, torch.tensor([0.0, -1 / 6, 0.0, -1 / 6, 1 / 3]))
    assert stats["classes_per_group"] == pytest.approx(1.5)


def test_partition_fn_wrong_length_raises():
    with pytest.raises(ValueError, match="returned 1 labels for a group of 2"):
        group_advantages("darling", torch.ones(2), ["a", "a"], texts=["x", "y"], partition_fn=lambda t: [0])


# ---------------------------------------------------------------------------------------------
# Side information from reward extra info


def test_sample_info_reads_reward_extra_info():
    info = sample_info_from_rows(
        ["u", "u"],
        texts=["decoded 1", "decoded 2"],
        extras=[{"divrl_key": "3", "divrl_correct": 1, "acc": 1.0}, {"divrl_key": None, "divrl_correct": False}],
    )
    assert isinstance(info, SampleInfo)
    assert info.keys == ["3", None]
    assert info.correct is not None and info.correct.tolist() == [True, False]
    assert info.texts == ["decoded 1", "decoded 2"]
    assert info.uids.tolist() == ["u", "u"]


def test_sample_info_text_override_and_absent_fields():
    info = sample_info_from_rows(["u"], texts=["decoded"], extras=[{"divrl_text": "answer: 4"}])
    assert info.texts == ["answer: 4"] and info.keys is None and info.correct is None
    assert sample_info_from_rows(["u", "v"], extras=[None, {}]).keys is None


def test_sample_info_partial_column_raises():
    with pytest.raises(ValueError, match="'divrl_key' is set for some samples but missing for 1 of 2"):
        sample_info_from_rows(["u", "u"], extras=[{"divrl_key": 1}, {}])


# ---------------------------------------------------------------------------------------------
# R1-zero-Div's term for one verl micro-batch


def term_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    log_prob = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]], requires_grad=True)  # (B, T); -9 = padding
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])  # (B, T) token-level, as verl has them
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    return log_prob, advantages, mask


def test_positive_entropy_term_hand_computed():
    # on-policy: h = -logp -> row means 1.5 and 0.5; gate A > 0 keeps row 0 -> J = (1.5 + 0) / 2 = 0.75
    log_prob, advantages, mask = term_inputs()
    loss, metrics = positive_entropy_term(
        log_prob, log_prob.detach(), advantages, mask, lam=0.01, gate="positive_advantage"
    )
    torch.testing.assert_close(loss, torch.tensor(-0.0075))
    assert metrics == {"div_term": pytest.approx(0.75), "div_gate_frac": pytest.approx(0.5)}
    loss.backward()
    assert log_prob.grad is not None
    # d/dlogp of -lam * (1/2) * (1/2) * sum_t h, h = -exp(lp - old) lp with old = lp: -(1 + lp) -> x(-lam/4)
    torch.testing.assert_close(log_prob.grad[0, :2], 0.01 / 4 * torch.tensor([1 - 1.0, 1 - 2.0]))
    assert bool((log_prob.grad[1] == 0).all()) and bool((log_prob.grad[0, 2] == 0).all())


def test_positive_entropy_term_global_scaling_and_gate_all():
    log_prob, advantages, mask = term_inputs()
    local, _ = positive_entropy_term(log_prob, log_prob.detach(), advantages, mask, gate="all", lam=0.01)
    torch.testing.assert_close(local, torch.tensor(-0.01 * (1.5 + 0.5) / 2))
    scaled, _ = positive_entropy_term(
        log_prob, log_prob.detach(), advantages, mask, gate="all", lam=0.01, dp_size=2, global_batch_size=8
    )
    torch.testing.assert_close(scaled, local * 2 * 2 / 8)  # x N_local * dp_size / global_batch_size


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"gate": "correct"}, "gate='correct' is not available inside verl"),
        ({}, "no gate is set, and divrl.core's default gate='correct' is not available inside verl"),
        ({"lam": 0.02}, "no gate is set"),
        ({"gate": "all", "estimator": "exact"}, "only estimator='surrogate'"),
        ({"gate": "all", "beta": 1.0}, "unknown option"),
        ({"gate": "all", "dp_size": 2}, "global_batch_size is required"),
    ],
)
def test_positive_entropy_term_rejects(options: dict[str, Any], match: str):
    log_prob, advantages, mask = term_inputs()
    with pytest.raises(ValueError, match=match):
        positive_entropy_term(log_prob, log_prob.detach(), advantages, mask, **options)


def test_the_term_has_cores_defaults_and_refuses_cores_gate_in_one_line():
    """The verl term's defaults are divrl.core's: its gate defaults to 'correct', which verl's ppo_loss cannot serve
    (it passes the policy loss only log-probs, advantages and the mask), so an unset gate is refused like an explicit
    'correct', in one line saying why and what to set; the other options default as in core (lam=0.01)."""
    import inspect

    from divrl.core.losses import positive_entropy_loss
    from divrl.integrations.verl import check_loss, make_positive_entropy_loss

    assert inspect.signature(positive_entropy_loss).parameters["gate"].default == "correct"
    log_prob, advantages, mask = term_inputs()
    for options in ({}, {"gate": "correct"}):
        with pytest.raises(ValueError) as info:
            positive_entropy_term(log_prob, log_prob.detach(), advantages, mask, **options)
        message = str(info.value)
        assert "\n" not in message and message.startswith("divrl_positive_entropy: ")
        assert "only log-probs, advantages and the response mask" in message
        assert "set gate=positive_advantage (A > 0) or gate=all" in message
        assert "DIVRL_VERL_POSITIVE_ENTROPY=gate=positive_advantage" in message
    # lam left to core's default (0.01): the hand-computed value of test_positive_entropy_term_hand_computed
    loss, _ = positive_entropy_term(log_prob, log_prob.detach(), advantages, mask, gate="positive_advantage")
    torch.testing.assert_close(loss, torch.tensor(-0.0075))
    # check_loss reads the options as complete: no gate = core's 'correct' = refused
    with pytest.raises(ValueError, match=r"^divrl_positive_entropy: no gate is set"):
        check_loss("positive_entropy", {"lam": 0.02})
    check_loss("positive_entropy", {"lam": 0.02, "gate": "all"})
    # registration options are a part the environment variable may complete: an explicit 'correct' is refused at
    # once (no verl needed), no gate is accepted (the plugin registers divrl_positive_entropy without options)
    with pytest.raises(ValueError, match=r"^divrl_positive_entropy: gate='correct' is not available inside verl"):
        make_positive_entropy_loss(gate="correct")
    with pytest.raises(ValueError, match="unknown option"):
        make_positive_entropy_loss(gat="all")
    assert callable(make_positive_entropy_loss()) and callable(make_positive_entropy_loss(lam=0.02))


def test_divrl_sync_refuses_a_gate_set_nowhere_before_verl_builds_its_workers(monkeypatch: pytest.MonkeyPatch):
    """With loss_mode=divrl_positive_entropy (registered by the plugin without options), the divrl_sync trainer
    reads DIVRL_VERL_POSITIVE_ENTROPY as its process sees it: no gate there is core's 'correct', refused in __init__
    (verl's trainer, which builds the workers, is never reached); a gate=correct there too."""
    from divrl.integrations.verl import POSITIVE_ENTROPY_ENV, DivrlAdvantageMixin, policy_loss

    class Base:
        def __init__(self, config: Any) -> None:
            raise AssertionError("verl's trainer was built")

    trainer = type("Trainer", (DivrlAdvantageMixin, Base), {})
    monkeypatch.setitem(policy_loss._TERMS, "divrl_positive_entropy", {})  # as register() leaves it
    config = {"actor_rollout_ref": {"actor": {"policy_loss": {"loss_mode": "divrl_positive_entropy"}}}}
    monkeypatch.delenv(POSITIVE_ENTROPY_ENV, raising=False)
    with pytest.raises(ValueError, match=r"^divrl_positive_entropy: no gate is set, .*gate=all"):
        trainer(config)
    monkeypatch.setenv(POSITIVE_ENTROPY_ENV, "lam=0.02,gate=correct")
    with pytest.raises(ValueError, match=r"^divrl_positive_entropy: gate='correct' is not available inside verl"):
        trainer(config)
    monkeypatch.setenv(POSITIVE_ENTROPY_ENV, "gate=all")
    assert policy_loss.term_options("divrl_positive_entropy") == {"gate": "all"}
    assert policy_loss.term_options("vanilla") is None  # not a divrl loss: verl's own, nothing to check


# ---------------------------------------------------------------------------------------------
# Imports: divrl.core never needs verl; the verl-facing functions say how to install it


def test_importing_core_and_the_adapter_does_not_import_verl():
    code = "import sys, divrl.core, divrl.integrations.verl; print('verl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _verl_installed() -> bool:
    try:
        return importlib.util.find_spec("verl.trainer.ppo.core_algos") is not None
    except ImportError:
        return False


@pytest.mark.skipif(_verl_installed(), reason="verl is installed here")
def test_register_without_verl_names_the_extra():
    from divrl.integrations.verl import register

    with pytest.raises(ImportError, match=r"pip install 'divrl\[verl\]'"):
        register()


def test_pkpo_runs_on_verl_rows_and_answer_estimators_are_refused():
    """pkpo reads rewards only: interleaved rows of a 4-group (0, 1, 0, 1) give Eq. 33's (0, 1/3, 0, 1/3) with k = 2.
    outcome_batch and seed_grpo read final answers, which the adapter does not gather: refused in one line."""
    from divrl.integrations.verl import make_estimator

    adv, _ = group_advantages(
        "pkpo",
        torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 1.0]),
        np.array(["a", "a", "b", "a", "b", "a"]),
        options={"k": 2},
    )
    # group a = rows 0, 1, 3, 5 (0, 1, 0, 1); group b = rows 2, 4 (1, 0): n = k = 2, Eq. 33 gives (1, 0)
    torch.testing.assert_close(adv, torch.tensor([0.0, 1 / 3, 1.0, 0.0, 0.0, 1 / 3]), atol=1e-6, rtol=0)
    for name in ("outcome_batch", "seed_grpo"):
        with pytest.raises(ValueError, match=rf"'{name}' cannot run inside verl: .*GroupBatch.answers"):
            make_estimator(name)


def test_a_stateful_estimator_is_refused_in_one_line():
    """outcome_ucb keeps per-problem state across steps; verl's estimator hook is a function of one batch."""
    from divrl.integrations.verl import _unsupported, make_estimator

    with pytest.raises(
        ValueError, match=r"^divrl estimator 'outcome_ucb' cannot run inside verl: .*per-problem state"
    ):
        make_estimator("outcome_ucb")
    assert _unsupported("grpo") is None and "\n" not in str(_unsupported("outcome_ucb"))


def test_divrl_sync_refuses_the_rollout_side_entries_in_one_line():
    """``+divrl.sampler=latr`` / ``+divrl.prompt_selector=gdro`` belong to divrl train's own loop (verl samples with
    its own rollout engine); refused before verl's trainer is built."""
    from divrl.integrations.verl import DivrlAdvantageMixin

    class Base:
        def __init__(self, config: Any) -> None:
            raise AssertionError("verl's trainer was built")

    trainer = type("Trainer", (DivrlAdvantageMixin, Base), {})
    with pytest.raises(ValueError, match=r"^the divrl_sync verl trainer: sampler 'latr' .*use divrl train$"):
        trainer({"divrl": {"sampler": "latr"}})
    with pytest.raises(ValueError, match=r"^the divrl_sync verl trainer: prompt selector 'gdro' .*use divrl train$"):
        trainer({"divrl": {"prompt_selector": "gdro"}})


def test_a_token_level_estimator_is_refused_in_one_line_and_dsdr_is_served():
    """ucas reads per-token full-vocabulary statistics that verl 0.9's actor does not compute; dsdr reads correctness
    and the response texts, which the divrl_sync trainer provides."""
    from divrl.integrations.verl import _unsupported, make_estimator

    with pytest.raises(ValueError, match=r"^divrl estimator 'ucas' cannot run inside verl: .*self_certainty"):
        make_estimator("ucas")
    assert "\n" not in str(_unsupported("ucas"))
    assert _unsupported("dsdr") is None
