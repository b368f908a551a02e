"""The signals layer and its single sources: one verdict per completion (key included), batch verification,
reason counts, one definition of distinct correct classes, and one declaration of needs read by the trainer and
both adapters."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divrl.core.advantages import ADVANTAGES, register_advantage
from divrl.core.batch import GroupBatch
from divrl.core.metrics import correct_classes, distinct_correct_classes
from divrl.core.needs import Needs
from divrl.signals import (
    check_embedder,
    check_provided,
    embed_groups,
    group_batch,
    labels_from_keys,
    select_groups,
    signal_size,
)
from divrl.tasks.base import Verdict
from divrl.tasks.countdown import CountdownTask, Problem, equivalence_key, verify
from divrl.tasks.verify import reason_category, verify_all
from divrl.trainer.rl import score

PIECES = ["<answer>", "</answer>", "3", "4", "7", "12", "+", "-", "*", "/", "(", ")", " ", "x", "9"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14))
def test_countdown_verdict_carries_the_equivalence_key(pieces):
    """One parse serves both: the verdict's key is exactly what equivalence_key computes separately."""
    text = "".join(pieces)
    for completion in (text, f"<answer>{text}</answer>", "<answer>3+4+7</answer>" + text):
        verdict = verify(Problem(numbers=(3, 4, 7), target=14), completion)
        assert verdict.keyed and verdict.key == equivalence_key(completion)


def test_verdict_equality_ignores_the_key():
    assert Verdict(1.0, True, "a", "ok", "a", True) == Verdict(1.0, True, "a", "ok")


class _BatchTask:
    """A task with a batch verifier that records its calls (and can fail)."""

    name, stop = "toy", ()

    def __init__(self, fail: bool = False):
        self.fail, self.batch_calls, self.single_calls = fail, [], 0

    def verify(self, problem, text):
        self.single_calls += 1
        ok = text == str(problem)
        return Verdict(1.0 if ok else 0.0, ok, text, "ok" if ok else f"wrong value {text} != {problem}")

    def verify_batch(self, problems, texts):
        self.batch_calls.append(len(texts))
        if self.fail:
            raise RuntimeError("pool died")
        return [
            dataclasses_replace(self.verify(p, t), key=f"k{t}", keyed=True)
            for p, t in zip(problems, texts, strict=True)
        ]

    def equivalence_key(self, problem, text):
        self.key_calls = getattr(self, "key_calls", 0) + 1  # a keyed verdict needs no second call
        return f"asked{text}"


def dataclasses_replace(v, **kw):
    import dataclasses

    return dataclasses.replace(v, **kw)


def test_score_calls_the_batch_verifier_once_and_counts_reasons():
    task = _BatchTask()
    scored = score(task, [1, 2], ["1", "2", "1", "3"], group_size=2)
    assert task.batch_calls == [4]
    assert scored.correct.tolist() == [[True, False], [False, False]]
    assert scored.keys == [["k1", "k2"], ["k1", "k3"]]
    assert scored.reasons == {"ok": 1, "wrong value": 3}
    assert task.single_calls == 4 and not hasattr(task, "key_calls")  # from verify_batch; no key calls
    failing = _BatchTask(fail=True)  # the batch verifier raises: one at a time, and the keys are asked for
    assert score(failing, [1], ["1", "2"], group_size=2).keys == [["asked1", "asked2"]]
    assert verify_all(failing, [1, 1], ["1", "2"]) == [Verdict(1.0, True, "1", "ok"), failing.verify(1, "2")]


def test_select_groups_is_scoring_the_kept_groups_again():
    """Groups picked from two score() calls, in a given order, equal one score() call on their problems and texts:
    rewards, correctness, answers, keys and the reason counts (per group and in total)."""
    task = _BatchTask()
    first = score(task, [1, 2], ["1", "2", "1", "3"], group_size=2)
    second = score(task, [3], ["3", "x"], group_size=2)
    assert first.group_reasons == [{"ok": 1, "wrong value": 1}, {"wrong value": 2}]
    got = select_groups([first, second], [(1, 0), (0, 0)])
    want = score(task, [3, 1], ["3", "x", "1", "2"], group_size=2)
    assert torch.equal(got.rewards, want.rewards) and torch.equal(got.correct, want.correct)
    assert (got.answers, got.keys, got.reasons, got.group_reasons) == (
        want.answers,
        want.keys,
        want.reasons,
        want.group_reasons,
    )
    with pytest.raises(ValueError, match="no groups"):
        select_groups([first], [])


@pytest.mark.parametrize(
    ("reason", "kind"),
    [("ok", "ok"), ("wrong value 24 != 25", "wrong value"), ("unparsable: unexpected ')'", "unparsable"),
     ("number not available: 9", "number not available"), ("", "other"), ("7 is odd", "other")],
)  # fmt: skip
def test_reason_category(reason, kind):
    assert reason_category(reason) == kind


def test_one_definition_of_distinct_correct_classes():
    keys = [["a", "a", None, "b"], [None, "c", "c", "d"]]
    correct = torch.tensor([[True, True, True, False], [True, True, True, False]])
    assert correct_classes(keys[0], correct[0]) == {"a"}  # None left out, incorrect "b" not counted
    assert distinct_correct_classes(keys, correct) == pytest.approx((1 + 1) / 2)
    assert distinct_correct_classes([], torch.zeros(0, 0, dtype=torch.bool)) == 0.0


def test_labels_from_keys_matches_partition_by_key_and_keeps_only_correct():
    keys = [["a", None, "a", None], ["x", "y", "x", "y"]]
    assert labels_from_keys(keys).tolist() == [[0, 1, 0, 2], [0, 1, 0, 1]]
    keep = [[True, True, False, True], [False, True, True, True]]
    assert labels_from_keys(keys, keep).tolist() == [[0, 1, 2, 3], [0, 1, 2, 1]]


def test_group_batch_checks_the_declared_fields():
    needs = Needs.of({"partition"})
    with pytest.raises(ValueError, match="GroupBatch.partition"):
        group_batch(torch.zeros(1, 2), needs=needs)
    assert group_batch(torch.zeros(1, 2), needs=needs, partition=torch.tensor([[0, 1]])).partition is not None


def test_embedded_rows_follow_the_union_of_the_declared_needs():
    """Which rollouts are embedded is not a setting: the union of the estimator's and the loss terms' needs says it
    (correct rows only when every reader of embeddings reads those only)."""
    from divrl.core.advantages import advantage_needs
    from divrl.core.losses import loss_needs

    correct_only = advantage_needs("setpo", {"kernel": "cosine", "members": "correct"})
    assert correct_only.embed_rows == "correct"
    assert (correct_only | loss_needs("ppo") | loss_needs("positive_entropy")).embed_rows == "correct"
    assert (correct_only | loss_needs("dsdr_entropy", {"kernel": "cosine"})).embed_rows == "correct"
    assert advantage_needs("setpo", {"kernel": "cosine"}).embed_rows == "all"
    every_row = advantage_needs("dra", {"kernel": "cosine"})  # dra reads every rollout's embedding
    assert (every_row | loss_needs("dsdr_entropy", {"kernel": "cosine"})).embed_rows == "all"


def test_check_embedder_refuses_an_embedder_nothing_reads():
    from divrl.core.advantages import advantage_needs

    check_embedder(advantage_needs("setpo", {"kernel": "cosine"}), "embedder", "fix it")
    for options in ({}, {"kernel": "ngram"}):  # the default kernel is ngram: an embedder alone changes nothing
        with pytest.raises(ValueError, match=r"^embedder is set, but neither .* default is 'ngram'\): fix it$"):
            check_embedder(advantage_needs("setpo", options), "embedder", "fix it")
    with pytest.raises(ValueError, match="reads GroupBatch.embeddings"):
        check_embedder(Needs(), "embedder", "fix it")


def test_setpo_members_correct_reads_only_the_embedded_rows():
    """With members=correct and the cosine kernel, embedding only the correct rows (zero vectors elsewhere) gives
    exactly the advantages of embedding every row; with members=all the zero rows would change them."""
    from divrl.core.advantages import compute_advantages
    from divrl.semantic import CharNgramEmbedder

    texts = [["7+5", "12", "3*4", "12+0"], ["9-2", "7", "14/2", "7*1"], ["1+1", "2", "2*1", "3"]]
    rewards = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0], [1.0, math.nan, 0.0, 1.0]])
    correct = rewards.nan_to_num(0.0) == 1.0  # (P, G); the unscorable one is never correct
    embedder = CharNgramEmbedder(2, 32)
    only = embed_groups(texts, embedder, "correct", correct)  # (P, G, D)
    full = embed_groups(texts, embedder, "all", correct)  # (P, G, D)
    assert torch.equal(only[~correct], torch.zeros_like(only[~correct]))
    assert torch.equal(only[correct], full[correct]) and bool((full[~correct].norm(dim=-1) > 0).all())
    options = {"lam": 2.0, "kernel": "cosine", "members": "correct"}
    got = compute_advantages("setpo", GroupBatch(rewards=rewards, correct=correct, embeddings=only), **options)
    want = compute_advantages("setpo", GroupBatch(rewards=rewards, correct=correct, embeddings=full), **options)
    assert torch.equal(got, want)
    assert (want - compute_advantages("grpo", GroupBatch(rewards=rewards))).abs().max() > 0.01  # the bonus is there
    every = {"lam": 2.0, "kernel": "cosine"}  # members=all reads every row: the zero vectors matter there
    a = compute_advantages("setpo", GroupBatch(rewards=rewards, embeddings=only), **every)
    assert not torch.allclose(a, compute_advantages("setpo", GroupBatch(rewards=rewards, embeddings=full), **every))
    with pytest.raises(ValueError, match="rows must be 'all' or 'correct'"):
        embed_groups(texts, embedder, "some", correct)


@pytest.fixture
def toy_estimators():
    """Two user estimators: one reads answers (only divrl train gathers them), one the old log-probs."""
    names = ["_toy_answers", "_toy_logprobs"]

    @register_advantage(names[0], needs=lambda o: Needs.of({"answers"}))
    def answers(batch):
        return torch.zeros_like(batch.rewards)

    @register_advantage(names[1], needs_logprobs=True)
    def logprobs(batch):
        return torch.zeros_like(batch.rewards)

    yield names
    for name in names:
        ADVANTAGES._entries.pop(name)
        ADVANTAGES._needs.pop(name)


def test_trainer_and_adapters_read_the_same_declaration(toy_estimators, tmp_path):
    """The declaration alone decides: divrl train accepts both toys (it can provide answers and old log-probs), the
    TRL subclass and the verl adapter refuse both, naming the field."""
    from divrl.config import apply_overrides, from_dict, load_yaml
    from divrl.eval.demo import RECIPES
    from divrl.integrations.trl import DiversityGRPOTrainer
    from divrl.integrations.verl import _unsupported
    from divrl.trainer.config import RLConfig
    from divrl.trainer.plan import check_methods

    answers, logprobs = toy_estimators
    for name in (answers, logprobs):
        raw = apply_overrides(load_yaml(RECIPES / "countdown" / "grpo.yaml"), [f"advantage.name={name}"])
        check_methods(from_dict(RLConfig, raw))
    with pytest.raises(ValueError, match=r"needs GroupBatch.answers: DiversityGRPOTrainer gathers no final answers"):
        DiversityGRPOTrainer(advantage=answers)
    with pytest.raises(ValueError, match=r"needs GroupBatch.old_logprobs: every rollout's old log-probs"):
        DiversityGRPOTrainer(advantage=logprobs)
    assert (
        _unsupported(answers) == "it needs GroupBatch.answers, which the verl adapter does not gather (final answers)"
    )
    assert "old log-probs" in _unsupported(logprobs)
    assert _unsupported("grpo") is None and _unsupported("setpo") is None
    with pytest.raises(ValueError, match="needs GroupBatch.partition"):
        check_provided("darling", {}, ["correct"], {}, "here")


def test_countdown_scoring_is_unchanged_by_the_single_parse():
    """score() on Countdown gives the keys that the separate equivalence_key calls gave before."""
    task = CountdownTask()
    rng = random.Random(0)
    problems = task.problems("train", n=3)
    texts = []
    for problem in problems:
        for _ in range(4):
            texts.append(task.reference_completion(problem, rng) if rng.random() < 0.5 else "<answer>1+2</answer>")
    scored = score(task, problems, texts, group_size=4)
    assert scored.keys == [[equivalence_key(texts[p * 4 + g]) for g in range(4)] for p in range(3)]
    assert sum(scored.reasons.values()) == 12 and not any(math.isnan(r) for r in scored.rewards.flatten().tolist())


def test_signal_size_by_hand():
    """Group 1 (1, 0, 0, 0): GRPO gives (1.5, -0.5, -0.5, -0.5) (mean 0.25, unbiased std 0.5); a method that adds 0.1
    to rollout 2 moves RMS by sqrt(0.01 / 8) over the 8 scored rollouts against GRPO's sqrt(3 / 8). Group 2 has no
    reward spread (GRPO 0) and the method leaves it alone: half the groups changed."""
    batch = group_batch(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    from divrl.core.advantages import compute_advantages

    grpo = compute_advantages("grpo", batch)  # (2, 4)
    torch.testing.assert_close(grpo[0], torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-5, rtol=0)
    assert signal_size(grpo, batch) == {
        "signal/rms_ratio": 0.0,
        "signal/groups_changed": 0.0,
        "signal/corr": 1.0,
        "signal/flat_groups": 0.5,  # group 2
        "signal/acts_in_flat": 0.0,
    }
    moved = grpo.clone()
    moved[0, 1] += 0.1
    got = signal_size(moved, batch)
    assert got["signal/rms_ratio"] == pytest.approx(math.sqrt(0.01 / 8) / math.sqrt(3 / 8), rel=1e-5)
    assert got["signal/groups_changed"] == 0.5 and got["signal/corr"] < 1.0
    doubled = signal_size(2 * grpo, batch)  # a pure rescaling: as far again, perfectly correlated
    assert doubled["signal/rms_ratio"] == pytest.approx(1.0, rel=1e-6)
    assert doubled["signal/corr"] == pytest.approx(1.0, rel=1e-6)


def test_signal_size_ignores_unscored_rollouts_and_all_zero_advantages():
    rewards = torch.tensor([[1.0, 0.0, float("nan"), 0.0]])
    batch = group_batch(rewards)
    from divrl.core.advantages import compute_advantages

    grpo = compute_advantages("grpo", batch)  # (1, 4), 0 at the unscored rollout
    noisy = grpo.clone()
    noisy[0, 2] = 5.0  # whatever a method put there is not read
    assert signal_size(noisy, batch)["signal/rms_ratio"] == 0.0
    flat = group_batch(torch.zeros(1, 4))
    got = signal_size(torch.zeros(1, 4), flat)
    assert got["signal/rms_ratio"] == 0.0 and got["signal/groups_changed"] == 0.0 and math.isnan(got["signal/corr"])


def test_signal_size_counts_where_a_method_acts_on_flat_groups():
    """Groups: (1, 0, 0) spread; (0, 0, 0) flat; (1, NaN, 1) flat (the scored ones equal); (NaN, 0, NaN) flat (one
    scored). A method that moves the all-zero group and the one-scored group acts in 2 of the 3 flat groups; what it
    writes at an unscored rollout is not read (the third)."""
    nan = float("nan")
    batch = group_batch(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, nan, 1.0], [nan, 0.0, nan]]))
    from divrl.core.advantages import compute_advantages

    advantages = compute_advantages("grpo", batch)  # (4, 3)
    assert signal_size(advantages, batch)["signal/flat_groups"] == 0.75
    assert signal_size(advantages, batch)["signal/acts_in_flat"] == 0.0
    moved = advantages.clone()
    moved[1, 0] = 0.5
    moved[3, 1] = -0.2
    moved[2, 1] = 3.0  # unscored: not read
    got = signal_size(moved, batch)
    assert got["signal/flat_groups"] == 0.75 and got["signal/acts_in_flat"] == pytest.approx(2 / 3)
    outcome = compute_advantages(
        "outcome_batch", batch.replace(answers=[list("abc"), list("aab"), list("aaa"), list("abc")])
    )
    assert signal_size(outcome, batch)["signal/acts_in_flat"] == pytest.approx(1 / 3)  # the all-wrong (a, a, b) group
