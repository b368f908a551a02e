"""`divrl eval`'s metrics on fixed completions (hand-computed), the sampling path with a fake sampler, and a
tiny end-to-end `divrl demo`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import divrl.eval.demo as demo_module
import divrl.rollout as rollout_module
from divrl.cli import app
from divrl.core import metrics as M
from divrl.eval.evaluate import (
    EvalSamples,
    generate_samples,
    ks_for,
    metrics_json,
    problem_id,
    recompute,
    score_samples,
    write_metrics,
)
from divrl.tasks import get_task
from divrl.tasks.countdown import Problem

A = Problem(numbers=(4, 11, 1), target=15)
B = Problem(numbers=(1, 12, 3), target=9)
SAMPLES = [
    # A: correct, wrong, correct (another class: 4*1+11), wrong  -> 2 of 4, 2 classes, 4 distinct keys
    ["<answer>4+11</answer>", "<answer>4-11</answer>", "<answer>4*1+11</answer>", "<answer>11-4</answer>"],
    # B: unparsable, correct, the same solution again, another class (12-3*1) -> 3 of 4, 2 classes
    ["<answer>x</answer>", "<answer>12-3</answer>", "<answer>3-12+12+6</answer>", "<answer>12-3*1</answer>"],
]
GREEDY = ["<answer>11+4</answer>", "no answer"]  # A right, B wrong


def test_ks_for():
    assert ks_for(1) == [1] and ks_for(4) == [1, 2, 4] and ks_for(6) == [1, 2, 4, 6] and ks_for(32)[-1] == 32


def test_score_samples_hand_computed():
    task = get_task("countdown")
    m = score_samples(task, [A, B], EvalSamples(SAMPLES, GREEDY, entropy=0.25))
    # B's third sample uses 3, 12, 12, 6: numbers it does not have -> wrong; so B has 2 of 4
    assert m["num_problems"] == 2 and m["n"] == 4
    # pass@1: (2/4 + 2/4) / 2; pass@2: 1 - C(2,2)/C(4,2) = 5/6 for both; pass@4 = 1
    assert m["pass@1"] == pytest.approx(0.5)
    assert m["pass@2"] == pytest.approx(5 / 6)
    assert m["pass@4"] == pytest.approx(1.0)
    assert m["greedy_pass@1"] == pytest.approx(0.5)
    # Potential@k: the only greedy failure is B; B's first sample is wrong, its first two include a correct one
    assert m["potential@1"] == pytest.approx(0.0)
    assert m["potential@2"] == pytest.approx(1.0) and m["potential@4"] == pytest.approx(1.0)
    # Div-Equ over parsable answers: A 4 distinct of 4; B {12-3, 3-12+12+6, 12-3*1} of 3 -> (1 + 1) / 2
    assert m["div_equ"] == pytest.approx(1.0)
    # distinct correct classes: A {4+11, 4*1+11}, B {12-3, 12-3*1}
    assert m["distinct_correct_classes"] == pytest.approx(2.0)
    want_d4 = (M.distinct_n(SAMPLES[0], 4, unit="char") + M.distinct_n(SAMPLES[1], 4, unit="char")) / 2
    assert m["distinct_4"] == pytest.approx(want_d4) and 0 < m["distinct_4"] <= 1
    assert 0 <= m["self_bleu"] <= 100 and m["entropy"] == 0.25


def test_score_samples_per_problem_records():
    """The per-problem section holds what pass@k, Potential@k and distinct classes are recomputed from."""
    task = get_task("countdown")
    m = score_samples(task, [A, B], EvalSamples(SAMPLES, GREEDY))
    assert m["per_problem"] == [
        {
            "id": '{"numbers": [4, 11, 1], "target": 15}',
            "n": 4,
            "correct": 2,
            "first_correct": 0,
            "greedy_correct": True,
            "classes": sorted({task.equivalence_key(A, SAMPLES[0][0]), task.equivalence_key(A, SAMPLES[0][2])}),
        },
        {
            "id": '{"numbers": [1, 12, 3], "target": 9}',
            "n": 4,
            "correct": 2,
            "first_correct": 1,
            "greedy_correct": False,
            "classes": sorted({task.equivalence_key(B, SAMPLES[1][1]), task.equivalence_key(B, SAMPLES[1][3])}),
        },
    ]
    assert all(len(r["classes"]) == 2 for r in m["per_problem"])
    for k in (1, 2, 4):
        again = recompute(m["per_problem"], k)
        assert again[f"pass@{k}"] == pytest.approx(m[f"pass@{k}"])
        assert again[f"potential@{k}"] == pytest.approx(m[f"potential@{k}"])
        assert again["distinct_correct_classes"] == m["distinct_correct_classes"]
    assert recompute(m["per_problem"], 3)["pass@3"] == pytest.approx(1.0)  # any k <= n: 1 - C(2,3)/C(4,3) = 1


def test_metrics_file_keeps_top_level_keys_and_round_trips(tmp_path):
    task = get_task("countdown")
    m = score_samples(task, [A, B], EvalSamples(SAMPLES, GREEDY))
    m["model"] = "x"  # the CLI adds keys after scoring: per_problem still comes last, one problem per line
    write_metrics(m, tmp_path / "metrics.json")
    text = (tmp_path / "metrics.json").read_text()
    back = json.loads(text)
    assert list(back) == [*(k for k in m if k != "per_problem"), "per_problem"]
    assert back["per_problem"] == m["per_problem"] and back["pass@2"] == m["pass@2"] and back["model"] == "x"
    # "{", one line per top-level key but per_problem, its opening line, one line per problem, "  ]", "}"
    assert text.count("\n") == 1 + (len(m) - 1) + 1 + len(m["per_problem"]) + 2
    assert json.loads(metrics_json({})) == {} and json.loads(metrics_json({"per_problem": []})) == {"per_problem": []}


def test_problem_id_hashes_long_problems():
    assert problem_id(A) == A.to_json()
    long_id = problem_id("q" * 200)
    assert long_id.startswith("sha1:") and len(long_id) == 21 and long_id != problem_id("q" * 201)


def test_score_samples_duplicates_lower_div_equ_and_classes():
    task = get_task("countdown")
    same = [["<answer>4+11</answer>", "<answer>11+4</answer>", "<answer>4+11</answer>", "<answer>4-11</answer>"]]
    m = score_samples(task, [A], EvalSamples(same, ["<answer>4+11</answer>"]))
    assert m["pass@1"] == pytest.approx(0.75) and m["distinct_correct_classes"] == 1.0
    assert m["div_equ"] == pytest.approx(2 / 4)  # {4+11 (x3, 11+4 is the same class), 4-11}
    assert math.isnan(m["potential@1"])  # no greedy failure to recover


def test_generate_samples_with_a_fake_sampler(monkeypatch):
    """generate_samples groups n samples per problem in order and adds one greedy completion per problem."""
    calls = []

    def fake_sample(model, tokenizer, prompts, *, num_samples, greedy=False, seed=None, **kw):
        calls.append((list(prompts), num_samples, greedy, seed))
        texts = [f"{'g' if greedy else 's'}{p}-{j}" for p in prompts for j in range(num_samples)]
        n = len(texts)
        return rollout_module.Rollouts(
            prompt_ids=torch.ones(n, 2, dtype=torch.long),
            completion_ids=torch.ones(n, 3, dtype=torch.long),
            completion_mask=torch.ones(n, 3, dtype=torch.bool),
            texts=texts,
            finished=torch.ones(n, dtype=torch.bool),
            prompt_mask=torch.ones(n, 2, dtype=torch.bool),
        )

    def fake_logprobs(model, ids, start, mask, **kw):
        return torch.zeros(mask.shape), torch.full(mask.shape, 0.5)  # (N, Lc) each

    monkeypatch.setattr(rollout_module, "sample", fake_sample)
    monkeypatch.setattr(rollout_module, "token_logprobs", fake_logprobs)

    class Task:
        stop = ()

        def prompt(self, problem):
            return f"P{problem}"

    out = generate_samples(torch.nn.Linear(1, 1), None, Task(), [0, 1, 2], 2, batch_size=4, progress=False, seed=5)
    assert out.samples == [["sP0-0", "sP0-1"], ["sP1-0", "sP1-1"], ["sP2-0", "sP2-1"]]
    assert out.greedy == ["gP0-0", "gP1-0", "gP2-0"] and out.entropy == pytest.approx(0.5)
    # batch_size 4 // n 2 = 2 problems per sampling call, seeded seed + chunk start; then one greedy call
    assert [(c[0], c[1], c[2], c[3]) for c in calls] == [
        (["P0", "P1"], 2, False, 5),
        (["P2"], 2, False, 7),
        (["P0", "P1", "P2"], 1, True, None),
    ]


def test_demo_end_to_end_tiny(tmp_path, monkeypatch):
    """A tiny `divrl demo --quick`: two methods, one RL step each, then report.md, plots and summary.json, with the
    comparison against GRPO that `divrl compare` recomputes from the same folder."""
    monkeypatch.setattr(demo_module, "QUICK", demo_module.Budget(steps=1, eval_problems=2, eval_n=2))
    overrides = ["rollout.prompts_per_step=2", "rollout.group_size=2", "threads=1"]
    demo_module.run_demo(tmp_path, quick=True, methods=["grpo", "r1_zero_div"], overrides=overrides)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["results"]) == {"base", "grpo", "r1_zero_div"}
    for name in summary["results"]:
        mean, _std = summary["results"][name]["pass@1"]
        assert 0.0 <= mean <= 1.0
    cmp = summary["comparison"]
    assert cmp["baseline"] == "grpo" and set(cmp["differences"]) == {"base", "r1_zero_div"}
    for name, diffs in cmp["differences"].items():
        assert list(diffs) == ["pass@1", "distinct_correct_classes"]  # n = 2: pass@8 and pass@32 are left out
        for metric, d in diffs.items():
            want = summary["results"][name][metric][0] - summary["results"]["grpo"][metric][0]
            assert d["difference"] == pytest.approx(want) and d["seeds"] == [1, 1]
            assert d["low"] <= d["high"] and d["within_noise"] == (d["low"] <= 0 <= d["high"])
    assert any("one seed each" in note and "evaluation noise" in note for note in cmp["notes"])
    assert any(note.startswith("left out: pass@8 needs >= 8 samples") for note in cmp["notes"])
    assert set(cmp["bands"]["grpo"]) == {"pass@1", "pass@2"}
    report = (tmp_path / "report.md").read_text()
    assert "| GRPO |" in report and "| R1-zero-Div |" in report and "| base |" in report
    assert "## Against GRPO" in report and "not training noise (which seed)" in report
    assert (tmp_path / "passk.png").stat().st_size > 0 and (tmp_path / "training.png").stat().st_size > 0
    assert (tmp_path / "seed0" / "grpo" / "checkpoint-000001").is_dir()
    # `divrl compare` on the demo folder gives the report's numbers (same resamples and seed; raw method names)
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--out", str(tmp_path / "cmp.md")])
    assert result.exit_code == 0, result.output

    def rows(text):
        cells = [line.split("|") for line in text.splitlines() if line.startswith("| ")]
        return [c[2:] for c in cells if c[-2].strip() in ("within noise", "higher", "lower")]

    assert rows((tmp_path / "cmp.md").read_text()) == rows(report) and len(rows(report)) == 4


def test_demo_intervals_need_per_problem_results(tmp_path):
    """A metrics.json kept from an older demo (no per-problem records): the demo says why it has no intervals."""
    old = {"num_problems": 2, "n": 2, "pass@1": 0.5}
    paths = {name: [tmp_path / name / "metrics.json"] for name in ("base", "grpo")}
    found = demo_module.intervals({"base": [old], "grpo": [old]}, paths, "grpo", 2)
    assert isinstance(found, str) and found.startswith(f"{paths['base'][0]}: no per_problem section")
    assert demo_module.comparison_section(found)[0].startswith("No intervals: ")


def test_demo_rejects_a_bad_override_before_training(tmp_path):
    """Every method's recipe is checked (estimator and loss options) before the base is evaluated or anything trains:
    an override that breaks only the second method stops the demo before the first one runs."""
    from divrl.config import ConfigError
    from divrl.eval.demo import run_demo

    with pytest.raises(ConfigError, match=r"advantage 'darling'.*partition"):
        run_demo(tmp_path, quick=True, methods=["grpo", "darling"], overrides=["partition.source=none"])
    assert not list(tmp_path.glob("seed*"))
