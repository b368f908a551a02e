"""`divrl eval`'s metrics on fixed completions (hand-computed), the sampling path with a fake sampler, and a
tiny end-to-end `divrl demo`."""

from __future__ import annotations

import json
import math
from pathlib import Path

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
    grade_samples,
    ks_for,
    metrics_json,
    problem_id,
    recompute,
    sample_records,
    score_samples,
    write_jsonl,
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

    def fake_sample(model, tokenizer, prompts, *, num_samples, greedy=False, seed=None, with_entropy=False, **kw):
        calls.append((list(prompts), num_samples, greedy, seed, with_entropy))
        texts = [f"{'g' if greedy else 's'}{p}-{j}" for p in prompts for j in range(num_samples)]
        n = len(texts)
        mask = torch.arange(3) < torch.tensor([3, 1] * (n // 2) + [3] * (n % 2))[:, None]  # (N, 3): 3 or 1 tokens
        entropies = torch.where(mask, torch.tensor([0.5, 2.0] * (n // 2) + [0.5] * (n % 2))[:, None], 0.0)
        return rollout_module.Rollouts(
            prompt_ids=torch.ones(n, 2, dtype=torch.long),
            completion_ids=torch.ones(n, 3, dtype=torch.long),
            completion_mask=mask,
            texts=texts,
            finished=torch.ones(n, dtype=torch.bool),
            prompt_mask=torch.ones(n, 2, dtype=torch.bool),
            entropies=entropies if with_entropy else None,
        )

    monkeypatch.setattr(rollout_module, "sample", fake_sample)

    class Task:
        stop = ()

        def prompt(self, problem):
            return f"P{problem}"

    out = generate_samples(torch.nn.Linear(1, 1), None, Task(), [0, 1, 2], 2, batch_size=4, progress=False, seed=5)
    assert out.samples == [["sP0-0", "sP0-1"], ["sP1-0", "sP1-1"], ["sP2-0", "sP2-1"]]
    # the mean over sampled tokens: 3 rows of 3 tokens at 0.5, 3 rows of 1 token at 2.0 -> (4.5 + 6) / 12
    assert out.greedy == ["gP0-0", "gP1-0", "gP2-0"] and out.entropy == pytest.approx(10.5 / 12)
    # batch_size 4 // n 2 = 2 problems per sampling call, seeded seed + chunk start, with the sampling entropies;
    # then one greedy call
    assert calls == [
        (["P0", "P1"], 2, False, 5, True),
        (["P2"], 2, False, 7, True),
        (["P0", "P1", "P2"], 1, True, None, False),
    ]


def _comparison_rows(text: str) -> list[list[str]]:
    """The rows of the comparison tables in markdown, without the method name (the demo labels it, compare not)."""
    cells = [line.split("|") for line in text.splitlines() if line.startswith("| ")]
    return [c[2:] for c in cells if c[-2].strip() in ("within noise", "higher", "lower")]


def test_demo_end_to_end_tiny(tmp_path, monkeypatch):
    """A tiny `divrl demo --quick`: two methods, one RL step each, every model evaluated on the test and the ood
    split; report.md, plots and summary.json per split, with the comparison against GRPO that `divrl compare`
    (`--split ood` for ood) recomputes from the same folder; an ood evaluation that is missing is redone on resume
    from the kept checkpoint, without training or evaluating test again."""
    monkeypatch.setattr(demo_module, "QUICK", demo_module.Budget(steps=1, eval_problems=2, eval_n=2))
    overrides = ["rollout.prompts_per_step=2", "rollout.group_size=2", "threads=1"]
    record = demo_module.run_demo(tmp_path, quick=True, methods=["grpo", "r1_zero_div"], overrides=overrides)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(json.dumps(record))
    assert set(summary["results"]) == {"base", "grpo", "r1_zero_div"}
    assert summary["budget"] == {"steps": 1, "eval_problems": 2, "eval_n": 2, "ood_problems": None}
    for name in summary["results"]:
        mean, _std = summary["results"][name]["pass@1"]
        assert 0.0 <= mean <= 1.0
    # every model has both splits' files, each recording its split, with the same sample count; ood problems hold
    # a number above the training range (13) and test problems none
    for name in ("base", "grpo", "r1_zero_div"):
        test = json.loads((tmp_path / "seed0" / name / "metrics.json").read_text())
        ood = json.loads((tmp_path / "seed0" / name / "metrics-ood.json").read_text())
        assert (test["split"], ood["split"], test["n"], ood["n"]) == ("test", "ood", 2, 2)
        assert all(max(json.loads(r["id"])["numbers"]) <= 13 for r in test["per_problem"])
        assert all(max(json.loads(r["id"])["numbers"]) > 13 for r in ood["per_problem"])
    # summary.json: the test split at the top level (as before) and under splits, the ood split beside it
    assert list(summary["splits"]) == ["test", "ood"]
    assert summary["splits"]["test"]["results"] == summary["results"]
    assert summary["splits"]["test"]["comparison"] == summary["comparison"]
    for split, file in (("test", "metrics.json"), ("ood", "metrics-ood.json")):
        part = summary["splits"][split]
        assert part["problems"] == 2 and part["metrics_file"] == file
        assert set(part["results"]) == {"base", "grpo", "r1_zero_div"}
        for name in part["results"]:
            want = json.loads((tmp_path / "seed0" / name / file).read_text())["pass@1"]
            assert part["results"][name]["pass@1"][0] == pytest.approx(want)
        cmp = part["comparison"]
        assert cmp["baseline"] == "grpo" and set(cmp["differences"]) == {"base", "r1_zero_div"}
        for name, diffs in cmp["differences"].items():
            assert list(diffs) == ["pass@1", "distinct_correct_classes"]  # n = 2: pass@8 and pass@32 are left out
            for metric, d in diffs.items():
                want = part["results"][name][metric][0] - part["results"]["grpo"][metric][0]
                assert d["difference"] == pytest.approx(want) and d["seeds"] == [1, 1]
                assert d["low"] <= d["high"] and d["within_noise"] == (d["low"] <= 0 <= d["high"])
        assert any("one seed each" in note and "evaluation noise" in note for note in cmp["notes"])
        assert any(note.startswith("left out: pass@8 needs >= 8 samples") and file in note for note in cmp["notes"])
        assert set(cmp["bands"]["grpo"]) == {"pass@1", "pass@2"}
    report = (tmp_path / "report.md").read_text()
    test_part, ood_part = report.split("## ood split (out of distribution)")
    assert "## test split (in distribution)" in test_part and "## Training" in ood_part
    for part, split in ((test_part, "test"), (ood_part, "ood")):
        assert "| GRPO |" in part and "| R1-zero-Div |" in part and "| base |" in part
        assert f"### {split} split: against GRPO" in part and "not training noise (which seed)" in part
    assert "numbers 1..13" in test_part and "a number in 14..20" in ood_part
    assert "`divrl compare --split ood` on this folder" in ood_part
    for png in ("passk.png", "passk-ood.png", "training.png"):
        assert (tmp_path / png).stat().st_size > 0
    assert "(passk.png)" in test_part and "(passk-ood.png)" in ood_part
    assert (tmp_path / "seed0" / "grpo" / "checkpoint-000001").is_dir()
    # `divrl compare` on the demo folder gives the report's numbers per split (same resamples and seed)
    for part, args in ((test_part, []), (ood_part, ["--split", "ood"])):
        result = CliRunner().invoke(app, ["compare", str(tmp_path), *args, "--out", str(tmp_path / "cmp.md")])
        assert result.exit_code == 0, result.output
        assert _comparison_rows((tmp_path / "cmp.md").read_text()) == _comparison_rows(part)
        assert len(_comparison_rows(part)) == 4

    # resume: only the missing ood evaluation of GRPO runs again, from its checkpoint, to the same numbers
    import divrl.trainer.rl as rl_module

    grpo = tmp_path / "seed0" / "grpo"
    before = json.loads((grpo / "metrics-ood.json").read_text())
    test_mtime = (grpo / "metrics.json").stat().st_mtime_ns
    (grpo / "metrics-ood.json").unlink()
    monkeypatch.setattr(rl_module, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    demo_module.run_demo(tmp_path, quick=True, methods=["grpo", "r1_zero_div"], overrides=overrides, resume=True)
    assert json.loads((grpo / "metrics-ood.json").read_text()) == before
    assert (grpo / "metrics.json").stat().st_mtime_ns == test_mtime


def test_demo_refuses_to_evaluate_a_split_without_the_model_of_the_others(tmp_path, monkeypatch):
    """A run folder with test results but no final checkpoint: training again would evaluate another model on ood
    than the one behind metrics.json, so the demo stops with one message naming the folder (before training)."""
    import divrl.trainer.rl as rl_module
    from divrl.config import ConfigError

    monkeypatch.setattr(demo_module, "QUICK", demo_module.Budget(steps=1, eval_problems=2, eval_n=2))
    monkeypatch.setattr(rl_module, "train", lambda *a, **k: pytest.fail("trained"))
    for name in ("base", "grpo"):  # the base is complete; GRPO has only test results
        write_metrics({"n": 2, "split": "test"}, tmp_path / "seed0" / name / "metrics.json")
    write_metrics({"n": 2, "split": "ood"}, tmp_path / "seed0" / "base" / "metrics-ood.json")
    with pytest.raises(ConfigError, match=r"seed0/grpo: holds metrics.json but not checkpoint-000001 .* delete"):
        demo_module.run_demo(tmp_path, quick=True, methods=["grpo"], resume=True)
    assert not (tmp_path / "seed0" / "grpo" / "metrics-ood.json").exists()


def test_demo_intervals_need_per_problem_results(tmp_path):
    """A metrics.json kept from an older demo (no per-problem records): the demo says why it has no intervals."""
    old = {"num_problems": 2, "n": 2, "pass@1": 0.5}
    paths = {name: [tmp_path / name / "metrics.json"] for name in ("base", "grpo")}
    found = demo_module.intervals({"base": [old], "grpo": [old]}, paths, "grpo", 2)
    assert isinstance(found, str) and found.startswith(f"{paths['base'][0]}: no per_problem section")
    assert demo_module.comparison_section(found)[0].startswith("No intervals on the test split: ")


def test_demo_rejects_a_bad_override_before_training(tmp_path):
    """Every method's recipe is checked (estimator and loss options) before the base is evaluated or anything trains:
    an override that breaks only the second method stops the demo before the first one runs."""
    from divrl.config import ConfigError
    from divrl.eval.demo import run_demo

    with pytest.raises(ConfigError, match=r"advantage 'darling'.*partition"):
        run_demo(tmp_path, quick=True, methods=["grpo", "darling"], overrides=["partition.source=none"])
    assert not list(tmp_path.glob("seed*"))
    # options that leave no ood split (numbers up to 20 already in training): one message, before anything runs
    with pytest.raises(
        ConfigError, match=r"task.options: evaluation split 'ood': the ood split needs high < ood_high"
    ):
        run_demo(tmp_path, quick=True, methods=["grpo"], overrides=["task.options.high=20"])
    assert not list(tmp_path.glob("seed*"))


def test_eval_writes_another_split_beside_the_test_results(tmp_path, monkeypatch):
    """`divrl eval --split ood` writes metrics-ood.json (recording its split), so the test split's metrics.json of
    the same model is neither overwritten nor mixed with it by `divrl compare`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics.json").write_text("test results")
    args = ["eval", "--model", "builtin:countdown-tiny", "--split", "ood", "--problems", "1", "--n", "1"]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "4", "--threads", "1"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "metrics-ood.json").read_text())
    assert written["split"] == "ood" and written["n"] == 1 and len(written["per_problem"]) == 1
    assert max(json.loads(written["per_problem"][0]["id"])["numbers"]) > 13
    assert (tmp_path / "metrics.json").read_text() == "test results"
    # it says where it wrote, and what every row of its table means
    assert f"wrote {tmp_path.resolve() / 'metrics-ood.json'}" in " ".join(result.output.split())
    for row in ("pass@k:", "potential@k:", "greedy_pass@1:", "distinct_correct_classes:", "entropy:"):
        assert row in result.output
    from divrl.eval.columns import metric_note

    rows = [k for k, v in written.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert "pass@1" in rows and not [k for k in rows if metric_note(k) is None]  # every table row is explained


def test_sample_records_on_fixed_completions(tmp_path):
    """The records of `divrl eval --samples` for the hand-made SAMPLES: each verdict and reason, and metrics equal to
    those computed without the shared grading."""
    task = get_task("countdown")
    samples = EvalSamples(SAMPLES, GREEDY)
    graded = grade_samples(task, [A, B], samples)
    assert score_samples(task, [A, B], samples, graded) == score_samples(task, [A, B], samples)
    a, b = sample_records(task, [A, B], samples, graded)
    assert a["id"] == problem_id(A) and a["prompt"] == task.prompt(A) and a["samples"] == SAMPLES[0]
    assert a["correct"] == [True, False, True, False] and b["correct"] == [False, True, False, True]
    assert a["reasons"] == ["ok", "wrong value -7 != 15", "ok", "wrong value 7 != 15"]
    assert b["reasons"][0].startswith("unparsable") and b["reasons"][2] == "number reused: 12"
    assert (a["greedy"], a["greedy_correct"], b["greedy_correct"], b["greedy_reason"]) == (
        GREEDY[0],
        True,
        False,
        "no answer tag",
    )
    for name in ("s.jsonl", "s.jsonl.gz"):
        write_jsonl([a, b], tmp_path / name)
    import gzip

    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [a, b]
    with gzip.open(tmp_path / "s.jsonl.gz", "rt") as fh:
        assert fh.read().splitlines() == lines
    assert not list(tmp_path.glob("*.tmp"))


def test_eval_writes_samples_on_request(tmp_path, monkeypatch):
    """`divrl eval --samples F`: one line per problem with n completions, their verdicts agreeing with metrics.json."""
    monkeypatch.chdir(tmp_path)
    args = ["eval", "--model", "builtin:countdown-tiny", "--problems", "3", "--n", "4", "--max-new-tokens", "24"]
    result = CliRunner().invoke(app, [*args, "--threads", "1", "--samples", "s.jsonl"])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    per_problem = json.loads((tmp_path / "metrics.json").read_text())["per_problem"]
    assert [r["id"] for r in records] == [p["id"] for p in per_problem]
    assert [sum(r["correct"]) for r in records] == [p["correct"] for p in per_problem]
    assert [r["greedy_correct"] for r in records] == [p["greedy_correct"] for p in per_problem]
    assert all(len(r["samples"]) == len(r["reasons"]) == 4 for r in records)
    assert f"wrote {tmp_path.resolve() / 's.jsonl'}" in " ".join(result.output.split())
    bad = CliRunner().invoke(app, [*args, "--samples", str(tmp_path)])
    assert bad.exit_code == 2 and "--samples" in bad.output and "is a folder" in bad.output


def test_eval_of_a_run_checkpoint_uses_the_run_task_options_and_length(tmp_path):
    """A checkpoint of a `divrl train` run on the 4-number task is evaluated on 4-number problems with the run's
    rollout length unless the command says otherwise; an explicit --task-option wins (3 numbers then)."""
    from divrl.config import save_yaml

    run = tmp_path / "run"
    ckpt = run / "checkpoint-000001"
    ckpt.mkdir(parents=True)
    from divrl.models.builtin import resolve_model_path

    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (ckpt / f).write_bytes((Path(resolve_model_path("builtin:countdown4-tiny")) / f).read_bytes())
    save_yaml(
        {"task": {"name": "countdown", "options": {"num_numbers": 4}}, "rollout": {"max_new_tokens": 3}},
        run / "config.yaml",
    )
    base = ["eval", "--model", str(ckpt), "--problems", "2", "--n", "1", "--threads", "1"]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 0, result.output
    assert "task options from" in result.output and "{'num_numbers': 4}" in result.output
    written = json.loads((ckpt / "metrics.json").read_text())
    assert [len(json.loads(p["id"])["numbers"]) for p in written["per_problem"]] == [4, 4]
    assert written["pass@1"] == 0.0  # 3 new tokens cannot hold an answer: the run's length was used
    result = CliRunner().invoke(app, [*base, "--task-option", "num_numbers=3", "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert "task options from" not in result.output
    written = json.loads((ckpt / "metrics.json").read_text())
    assert [len(json.loads(p["id"])["numbers"]) for p in written["per_problem"]] == [3, 3]
