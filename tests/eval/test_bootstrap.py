"""divrl.eval.bootstrap on hand-made per-problem results: hand-computed differences, a known difference whose interval
excludes 0, identical methods whose interval contains 0, the pairing, the seed level, the wording and the errors."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from divrl.eval import bootstrap as B
from divrl.eval.bootstrap import ComparisonError, Run, bootstrap_means, noise_note, paired_difference


def run(correct, n=4, classes=None, ids=None, source="", seed=None) -> Run:
    correct = np.asarray(correct, dtype=np.int64)
    p = len(correct)
    return Run(
        tuple(ids if ids is not None else (f"q{i}" for i in range(p))),
        np.full(p, n, dtype=np.int64),
        correct,
        np.asarray(classes if classes is not None else np.minimum(correct, 1), dtype=np.int64),
        source,
        seed,
    )


def c2(m: int) -> float:
    return m * (m - 1) / 2


def test_hand_computed_paired_difference():
    """Two seeds each, three problems, n = 4: the point estimate is the mean over seeds and problems of B minus A."""
    a = [run([1, 2, 3], classes=[1, 1, 2]), run([0, 2, 4], classes=[0, 2, 2])]
    b = [run([4, 2, 0], classes=[2, 1, 0]), run([3, 3, 3], classes=[3, 2, 1])]
    d = paired_difference(b, a, ["pass@1", "pass@2", "distinct_correct_classes"], resamples=200)
    # pass@1 = c / n: A (6 + 6) / 24 = 0.5, B (6 + 9) / 24 = 0.625
    assert d["pass@1"].mean == pytest.approx(0.125)
    assert d["pass@1"].baseline_mean == pytest.approx(0.5) and d["pass@1"].method_mean == pytest.approx(0.625)
    # pass@2 = 1 - C(n-c, 2) / C(4, 2) per problem
    p2 = {c: 1 - c2(4 - c) / 6 for c in range(5)}
    want_a = (p2[1] + p2[2] + p2[3] + p2[0] + p2[2] + p2[4]) / 6
    want_b = (p2[4] + p2[2] + p2[0] + p2[3] + p2[3] + p2[3]) / 6
    assert d["pass@2"].mean == pytest.approx(want_b - want_a)
    # classes: A (4 + 4) / 6, B (3 + 6) / 6
    assert d["distinct_correct_classes"].mean == pytest.approx(1 / 6)
    assert all(x.seeds == (2, 2) and x.low <= x.high for x in d.values())


def test_a_large_difference_excludes_zero():
    rng = np.random.default_rng(0)
    a = [run(rng.binomial(32, 0.2, size=100), n=32) for _ in range(3)]
    b = [run(rng.binomial(32, 0.6, size=100), n=32) for _ in range(3)]
    d = paired_difference(b, a, ["pass@1"])["pass@1"]
    assert d.mean == pytest.approx(0.4, abs=0.03)
    assert 0.0 < d.low < d.mean < d.high and not d.within_noise
    flipped = paired_difference(a, b, ["pass@1"])["pass@1"]
    assert flipped.mean == pytest.approx(-d.mean) and flipped.high < 0 and not flipped.within_noise


def test_identical_methods_contain_zero():
    """The same three runs as method and baseline (in another order): the seed level still varies (each method's
    seeds are drawn independently), so the interval is not degenerate, and it contains 0."""
    rng = np.random.default_rng(1)
    runs = [run(rng.binomial(32, q, size=80), n=32) for q in (0.3, 0.4, 0.5)]
    d = paired_difference(runs[::-1], runs, ["pass@1", "pass@8"])
    for x in d.values():
        assert x.mean == pytest.approx(0.0, abs=1e-12)
        assert x.low < 0.0 < x.high and x.within_noise
    same = paired_difference(runs[:1], runs[:1], ["pass@1"])["pass@1"]  # one seed: every replicate is exactly 0
    assert (same.low, same.mean, same.high) == (0.0, 0.0, 0.0) and same.within_noise


def test_methods_from_one_distribution_are_within_noise():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.05, 0.6, size=150)  # per-problem difficulty, shared by both methods
    a = [run(rng.binomial(32, p), n=32)]
    b = [run(rng.binomial(32, p), n=32)]
    d = paired_difference(b, a, ["pass@1", "pass@8", "pass@32"])
    assert all(x.within_noise for x in d.values())


def test_pairing_over_problems_matters():
    """Problems differ a lot in difficulty; B solves one more sample of 32 on every problem. Paired over problems the
    difference is exactly 1/32 in every replicate; an unpaired interval would span the problem spread."""
    rng = np.random.default_rng(3)
    c = rng.integers(0, 31, size=60)
    d = paired_difference([run(c + 1, n=32)], [run(c, n=32)], ["pass@1"])["pass@1"]
    assert d.low == pytest.approx(1 / 32) and d.high == pytest.approx(1 / 32) and not d.within_noise
    spread = bootstrap_means([run(c, n=32)], ["pass@1"])["pass@1"]
    assert spread.high - spread.low > 0.1  # what an unpaired comparison would have to cover


def test_problems_are_paired_by_id_not_position():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 33, size=40), rng.integers(0, 33, size=40)
    ids = [f"q{i}" for i in range(40)]
    perm = rng.permutation(40)
    shuffled = run(b[perm], n=32, ids=[ids[i] for i in perm])
    want = paired_difference([run(b, n=32, ids=ids)], [run(a, n=32, ids=ids)], ["pass@1", "pass@4"], seed=5)
    got = paired_difference([shuffled], [run(a, n=32, ids=ids)], ["pass@1", "pass@4"], seed=5)
    for m in want:
        assert got[m].mean == pytest.approx(want[m].mean)
        assert got[m].low == pytest.approx(want[m].low) and got[m].high == pytest.approx(want[m].high)


def test_replicates_match_a_loop_over_drawn_indices():
    """The vectorised replicate means equal an explicit loop over the drawn seeds and problems (same draws)."""
    rng = np.random.default_rng(6)
    x = rng.random((3, 7, 2))  # (S, P, M)
    draws = np.random.default_rng(7)
    seeds = draws.integers(0, 3, size=(5, 3))  # (R, S) chosen seed indices
    problems = draws.integers(0, 7, size=(5, 7))  # (R, P) chosen problem indices
    seed_counts = np.stack([np.bincount(s, minlength=3) for s in seeds]).astype(float)
    problem_counts = np.stack([np.bincount(p, minlength=7) for p in problems]).astype(float)
    got = B._replicate_means(x, seed_counts, problem_counts)  # (R, M)
    want = np.array([[x[np.ix_(s, p, [m])].mean() for m in range(2)] for s, p in zip(seeds, problems, strict=True)])
    np.testing.assert_allclose(got, want)


def test_more_seed_spread_widens_the_hierarchical_interval():
    """Seeds that disagree (an offset per seed) widen the interval; the one-seed interval cannot see that spread."""
    rng = np.random.default_rng(8)
    p = rng.uniform(0.1, 0.5, size=100)
    a = [run(rng.binomial(32, np.clip(p + off, 0, 1)), n=32) for off in (-0.1, 0.0, 0.1)]
    b = [run(rng.binomial(32, np.clip(p + off, 0, 1)), n=32) for off in (-0.1, 0.0, 0.1)]
    many = paired_difference(b, a, ["pass@1"])["pass@1"]
    one = paired_difference(b[1:2], a[1:2], ["pass@1"])["pass@1"]
    assert many.high - many.low > 2 * (one.high - one.low)
    assert many.within_noise


def test_interval_covers_the_truth_about_95_percent():
    """Calibration of the one-seed (evaluation-noise) interval: per-problem rates p ~ U(0.15, 0.6) for A and
    p + N(0.05, 0.05) for B (never clipped at 3 sigma), 16 samples each; the true difference is 0.05."""
    rng = np.random.default_rng(9)
    trials, hits = 80, 0
    for t in range(trials):
        p = rng.uniform(0.15, 0.6, size=60)
        q = p + rng.normal(0.05, 0.05, size=60)
        a, b = run(rng.binomial(16, p), n=16), run(rng.binomial(16, q), n=16)
        d = paired_difference([b], [a], ["pass@1"], resamples=400, seed=t)["pass@1"]
        hits += d.low <= 0.05 <= d.high
    assert 0.85 <= hits / trials <= 1.0, hits / trials


def test_deterministic_given_the_seed():
    rng = np.random.default_rng(10)
    a = [run(rng.integers(0, 33, 50), n=32) for _ in range(2)]
    b = [run(rng.integers(0, 33, 50), n=32) for _ in range(2)]
    one = paired_difference(b, a, seed=3)
    assert one == paired_difference(b, a, seed=3)
    assert one["pass@1"].low != paired_difference(b, a, seed=4)["pass@1"].low


def test_bootstrap_means_interval_brackets_the_mean():
    rng = np.random.default_rng(11)
    runs = [run(rng.integers(0, 33, 50), n=32) for _ in range(3)]
    est = bootstrap_means(runs, ["pass@1", "pass@32"])
    assert est["pass@1"].low < est["pass@1"].mean < est["pass@1"].high
    assert est["pass@1"].mean == pytest.approx(np.mean([r.correct / 32 for r in runs]))
    assert est["pass@32"].mean == pytest.approx(np.mean([(r.correct > 0).mean() for r in runs]))


def test_fast_for_200_problems_3_seeds_2000_resamples():
    rng = np.random.default_rng(12)
    a = [run(rng.integers(0, 33, 200), n=32) for _ in range(3)]
    b = [run(rng.integers(0, 33, 200), n=32) for _ in range(3)]
    start = time.process_time()
    paired_difference(b, a, resamples=2000)
    assert time.process_time() - start < 1.0


def test_noise_wording():
    one = noise_note("darling", 1, "grpo", 1)
    assert "evaluation noise" in one and "only" in one and "not training noise" in one and "hierarchical" not in one
    many = noise_note("darling", 3, "grpo", 3)
    assert "hierarchical" in many and "training noise (which seed)" in many and "only" not in many
    mixed = noise_note("darling", 1, "grpo", 3)
    assert "darling has one seed" in mixed and "grpo's 3 seeds" in mixed and "not darling's training noise" in mixed


def test_from_metrics_and_its_errors():
    record = {"id": "p", "n": 4, "correct": 2, "first_correct": 0, "greedy_correct": True, "classes": ["a", "b"]}
    r = Run.from_metrics({"per_problem": [record, {**record, "id": "q", "classes": []}]}, "m.json")
    assert r.ids == ("p", "q") and list(r.classes) == [2, 0] and list(r.correct) == [2, 2] and r.source == "m.json"
    with pytest.raises(ComparisonError, match=r"^m\.json: no per_problem section"):
        Run.from_metrics({"pass@1": 0.5}, "m.json")
    with pytest.raises(ComparisonError, match=r"m\.json: per_problem\[0\] lacks field 'correct'"):
        Run.from_metrics({"per_problem": [{"id": "p", "n": 4, "classes": []}]}, "m.json")
    with pytest.raises(ComparisonError, match=r"per_problem\[0\] needs integers 0 <= correct <= n"):
        Run.from_metrics({"per_problem": [{**record, "correct": 5}]}, "m.json")
    with pytest.raises(ComparisonError, match="non-empty list"):
        Run.from_metrics({"per_problem": []}, "m.json")


def test_comparison_errors():
    a = run([1, 2, 3], source="a.json")
    with pytest.raises(ComparisonError, match=r"b\.json and a\.json evaluate different problems \(2 vs 3; 1 only in"):
        paired_difference([run([1, 2], ids=["q0", "x"], source="b.json")], [a], ["pass@1"])
    with pytest.raises(ComparisonError, match=r"pass@8 needs >= 8 samples per problem; a\.json has 4"):
        paired_difference([a], [a], ["pass@8"])
    with pytest.raises(ComparisonError, match=r"unknown metric 'pass@0'; known: pass@<k>"):
        paired_difference([a], [a], ["pass@0"])
    with pytest.raises(ComparisonError, match="has no runs"):
        paired_difference([], [a], ["pass@1"])
    with pytest.raises(ComparisonError, match="confidence"):
        paired_difference([a], [a], ["pass@1"], confidence=1.0)
    assert math.isclose(paired_difference([a], [a], ["pass@1"], confidence=0.5)["pass@1"].confidence, 0.5)


def test_seed_label_reads_the_nearest_seed_folder():
    assert B.seed_label("runs/demo/seed3/grpo/metrics.json") == "3"
    assert B.seed_label("runs/grpo/seed_07/metrics-ood.json") == "7"
    assert B.seed_label("runs/seed1/x/seed-2/checkpoint-000010/metrics.json") == "2"
    assert B.seed_label("runs/grpo/metrics.json") is None
    assert B.seed_label("runs/seeds/grpo/metrics.json") is None  # "seeds" is not a seed folder


def matched_runs(effects, shift, problems=120, seed=20):
    """Seed i of both methods shares a seed effect (``effects[i]``, added to every problem's rate: the prompt order and
    evaluation samples they share); B's rates are A's plus ``shift``."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.2, 0.6, size=problems)
    a = [run(rng.binomial(32, np.clip(p + e, 0, 1)), n=32, seed=str(i)) for i, e in enumerate(effects)]
    b = [run(rng.binomial(32, np.clip(p + e + shift, 0, 1)), n=32, seed=str(i)) for i, e in enumerate(effects)]
    return a, b


def test_matched_seeds_cancel_a_shared_seed_effect():
    """A large seed effect shared within each pair and a true difference of +0.05: resampled as pairs the interval
    excludes 0 and is several times narrower than the independent one, which the seed effect swamps."""
    a, b = matched_runs([-0.15, 0.0, 0.15, -0.1, 0.1], shift=0.05)
    paired = paired_difference(b, a, ["pass@1"], matched_seeds=True)["pass@1"]
    apart = paired_difference(b, a, ["pass@1"])["pass@1"]
    assert paired.mean == pytest.approx(apart.mean) == pytest.approx(0.05, abs=0.01)
    assert paired.matched_seeds and not apart.matched_seeds
    assert 0.0 < paired.low < paired.mean < paired.high and not paired.within_noise
    assert apart.within_noise
    assert (apart.high - apart.low) > 3 * (paired.high - paired.low)


def test_matched_seeds_pair_by_label_not_position():
    a, b = matched_runs([-0.15, 0.0, 0.15], shift=0.05)
    want = paired_difference(b, a, ["pass@1", "pass@8"], matched_seeds=True, seed=3)
    got = paired_difference(b[::-1], a, ["pass@1", "pass@8"], matched_seeds=True, seed=3)
    assert got == want


def test_matched_replicates_draw_one_seed_set_for_both():
    """The matched replicate equals an explicit loop that applies the same drawn seed indices (and problems) to both
    methods, with the generator's draws in the documented order (seeds, then problems)."""
    a, b = matched_runs([-0.1, 0.0, 0.1], shift=0.02, problems=30)
    d = paired_difference(b, a, ["pass@1"], resamples=50, matched_seeds=True, seed=11)["pass@1"]
    rng = np.random.default_rng(11)
    seeds = rng.multinomial(3, np.full(3, 1 / 3), size=50)  # (R, S)
    problems = rng.multinomial(30, np.full(30, 1 / 30), size=50)  # (R, P)
    order = sorted(range(30), key=lambda i: a[0].ids[i])  # the canonical problem order (sorted ids) of align()
    xa = np.stack([r.correct[order] / 32 for r in a])  # (S, P)
    xb = np.stack([r.correct[order] / 32 for r in b])  # (S, P)
    reps = [(s @ (xb - xa) @ q) / (3 * 30) for s, q in zip(seeds, problems, strict=True)]
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert (d.low, d.high) == (pytest.approx(lo), pytest.approx(hi))


def test_identical_matched_methods_are_exactly_zero():
    """The same runs on both sides, paired by seed: every replicate's difference is exactly 0 (the independent
    resampling of test_identical_methods_contain_zero is not degenerate)."""
    a, _ = matched_runs([-0.1, 0.0, 0.1], shift=0.0)
    d = paired_difference(a[::-1], a, ["pass@1", "pass@32"], matched_seeds=True)
    assert all((x.low, x.mean, x.high) == (0.0, 0.0, 0.0) and x.within_noise for x in d.values())


def test_matched_refusals_say_why():
    a, b = matched_runs([0.0, 0.1], shift=0.0, problems=10)
    assert B.matched(b, a) is None
    assert "has no seed label" in B.matched([run(b[0].correct, n=32, source="x.json"), b[1]], a)
    relabel = [run(b[0].correct, n=32, seed="0"), run(b[1].correct, n=32, seed="5")]
    assert B.matched(relabel, a) == "different seeds (method ['0', '5'], baseline ['0', '1'])"
    twice = [run(b[0].correct, n=32, seed="1"), b[1]]
    assert B.matched(twice, a) == "the method's runs repeat a seed label (['1', '1'])"
    with pytest.raises(ComparisonError, match=r"^cannot pair the seeds: different seeds"):
        paired_difference(relabel, a, ["pass@1"], matched_seeds=True)


def test_matched_wording():
    note = noise_note("darling", 10, "grpo", 10, matched_seeds=True)
    assert "seed-paired hierarchical bootstrap over 10 matched seeds" in note and "training noise" in note
    assert noise_note("darling", 1, "grpo", 1, matched_seeds=True) == noise_note("darling", 1, "grpo", 1)
