"""`divrl compare` on fixed metrics.json files written here: grouping by folder and by name=paths, the paired
differences in the table and report, the noise wording, and one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from divrl.cli import app
from divrl.eval.compare import method_name, metrics_files

runner = CliRunner()
P = 40


def write(
    path: Path, correct, n: int = 32, classes=None, ids=None, per_problem: bool = True, split: str | None = None
) -> Path:
    """A metrics.json with the top-level keys `divrl eval` writes (``split`` when given) and (unless told not to)
    per-problem records."""
    correct = [int(c) for c in correct]
    classes = classes if classes is not None else [min(c, 1 + i % 3) for i, c in enumerate(correct)]
    ids = ids if ids is not None else [f'{{"numbers": [{i}, 2, 3], "target": 7}}' for i in range(len(correct))]
    data = {"num_problems": len(correct), "n": n, "pass@1": float(np.mean(correct) / n)}
    if split is not None:
        data["split"] = split
    if per_problem:
        data["per_problem"] = [
            {"id": i, "n": n, "correct": c, "first_correct": 0 if c else None, "greedy_correct": False,
             "classes": [f"k{j}" for j in range(k)]}
            for i, c, k in zip(ids, correct, classes, strict=True)
        ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def grpo_correct(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 20, size=P)


def invoke(*args: str):
    result = runner.invoke(app, ["compare", *args])
    assert "Traceback" not in result.output
    return result


def test_demo_folder_hierarchical(tmp_path):
    """A demo layout, 3 seeds: DARLING solves 8 more samples of 32 on every problem of every seed (pass@1 +0.25),
    with the same class counts (a difference of 0, within noise). Seed i of both is a matched pair (same seed
    folder), so every replicate's pass@1 difference is exactly +0.25: the interval is [+0.250, +0.250]; resampled
    independently, the seeds' spread widens it."""
    for s in range(3):
        write(tmp_path / "demo" / f"seed{s}" / "grpo" / "metrics.json", grpo_correct(s))
        write(tmp_path / "demo" / f"seed{s}" / "darling" / "metrics.json", grpo_correct(s) + 8,
              classes=[min(c, 1 + i % 3) for i, c in enumerate(grpo_correct(s))])  # fmt: skip
    (tmp_path / "demo" / "report.md").write_text("not a run")
    result = invoke(str(tmp_path / "demo"), "--out", str(tmp_path / "cmp.md"))
    assert result.exit_code == 0, result.output
    assert "seeds per method: darling 3, grpo 3; 40 problems of split test; 2000 resamples" in result.output
    assert "seed-paired hierarchical bootstrap over 3 matched seeds" in result.output
    assert "training noise" in result.output
    report = (tmp_path / "cmp.md").read_text()
    want_grpo = np.mean([grpo_correct(s) / 32 for s in range(3)])
    row = next(line for line in report.splitlines() if line.startswith("| darling | pass@1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == f"{want_grpo:.3f}" and cells[3] == f"{want_grpo + 0.25:.3f}" and cells[4] == "+0.250"
    assert cells[5] == "[+0.250, +0.250]" and cells[6] == "higher"
    classes = next(line for line in report.splitlines() if line.startswith("| darling | distinct correct classes"))
    assert "| +0.000 | [+0.000, +0.000] | within noise |" in classes
    apart = invoke(str(tmp_path / "demo"), "--seed-pairing", "independent", "--out", str(tmp_path / "apart.md"))
    assert "hierarchical bootstrap over seeds (3 and 3)" in apart.output
    row = next(x for x in (tmp_path / "apart.md").read_text().splitlines() if x.startswith("| darling | pass@1 |"))
    low, high = (float(x) for x in row.strip("|").split("|")[5].strip(" []").split(","))
    assert 0 < low < 0.25 < high
    assert "| darling | pass@8 |" in report and "| darling | pass@32 |" in report


def test_seed_pairing_modes(tmp_path):
    """A demo layout whose seeds share a large seed effect: auto and matched pair seed i with seed i (interval excludes
    0); independent resamples them apart (wider, within noise); matched with unmatched seeds is refused."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.2, 0.6, size=P)
    for s, effect in enumerate([-0.15, 0.0, 0.15, -0.1, 0.1]):
        q = np.clip(p + effect, 0, 1)
        write(tmp_path / "demo" / f"seed{s}" / "grpo" / "metrics.json", rng.binomial(32, q))
        write(tmp_path / "demo" / f"seed{s}" / "r1" / "metrics.json", rng.binomial(32, np.clip(q + 0.06, 0, 1)))

    def pass1_cells(*extra: str) -> list[str]:
        out = tmp_path / f"cmp{len(extra)}{extra[-1] if extra else ''}.md"
        result = invoke(str(tmp_path / "demo"), "--metrics", "pass@1", "--out", str(out), *extra)
        assert result.exit_code == 0, result.output
        row = next(line for line in out.read_text().splitlines() if line.startswith("| r1 | pass@1 |"))
        return [c.strip() for c in row.strip("|").split("|")]

    auto, matched, apart = (
        pass1_cells(),
        pass1_cells("--seed-pairing", "matched"),
        pass1_cells("--seed-pairing", "independent"),
    )
    assert auto == matched and auto[6] == "higher"
    assert apart[4] == auto[4] and apart[6] == "within noise"
    write(tmp_path / "other" / "seed7" / "r2" / "metrics.json", rng.binomial(32, p))
    result = invoke(str(tmp_path / "demo" / "seed0" / "grpo"), str(tmp_path / "other"), "--seed-pairing", "matched")
    assert result.exit_code == 2 and "r2 vs grpo: --seed-pairing matched, but different seeds" in result.output
    result = invoke(str(tmp_path / "demo" / "seed0" / "grpo"), str(tmp_path / "other"))
    assert result.exit_code == 0 and "one seed each" in result.output  # auto: unmatched seeds are not paired
    bad = invoke(str(tmp_path / "demo"), "--seed-pairing", "paired")
    assert bad.exit_code == 2 and "unknown seed pairing 'paired'; known: auto, matched, independent" in bad.output


def test_split_picks_the_splits_files_and_never_mixes_them(tmp_path):
    """A demo layout with test (metrics.json) and ood (metrics-ood.json) results: the default compares test, --split
    ood the ood files (other problems, other numbers); run folders and name=folder arguments follow --split too."""
    ood_ids = [f'{{"numbers": [{i}, 14, 3], "target": 9}}' for i in range(P)]
    for s in range(2):
        for method, shift in (("grpo", 0), ("darling", 4)):
            run = tmp_path / "demo" / f"seed{s}" / method
            write(run / "metrics.json", grpo_correct(s) + shift, split="test")
            write(run / "metrics-ood.json", grpo_correct(s) // 4 + 2 * shift, ids=ood_ids, split="ood")
    for args, split, diff in (([], "test", 4 / 32), (["--split", "ood"], "ood", 8 / 32)):
        result = invoke(str(tmp_path / "demo"), *args, "--metrics", "pass@1", "--out", str(tmp_path / "c.md"))
        assert result.exit_code == 0, result.output
        assert f"seeds per method: darling 2, grpo 2; 40 problems of split {split};" in result.output
        assert f"{split} split: difference vs grpo (paired bootstrap)" in result.output
        report = (tmp_path / "c.md").read_text()
        assert report.startswith(f"# darling vs grpo ({split} split)")
        assert "| darling | pass@1 |" in report and f"| {diff:+.3f} |" in report
    seed0 = tmp_path / "demo" / "seed0"
    by_folder = invoke(str(seed0 / "grpo"), f"darling={seed0 / 'darling'}", "--split", "ood", "--metrics", "pass@1")
    assert by_folder.exit_code == 0 and "40 problems of split ood" in by_folder.output, by_folder.output
    assert "+0.250" in by_folder.output


def test_single_seed_named_runs_say_evaluation_noise_only(tmp_path):
    a = write(tmp_path / "a.json", grpo_correct(0))
    b = write(tmp_path / "b.json", grpo_correct(0))
    result = invoke(f"mine={b}", f"ref={a}", "--baseline", "ref", "--metrics", "pass@1,pass@4")
    assert result.exit_code == 0, result.output
    assert "mine vs ref: one seed each" in result.output
    assert "evaluation noise (which problems, which samples) only" in result.output
    assert "not training noise" in result.output and "hierarchical" not in result.output
    assert "pass@4" in result.output and "pass@32" not in result.output
    assert result.output.count("within noise") == 2  # identical runs: every replicate's difference is 0


def test_method_seed_folders_and_checkpoint_metrics(tmp_path):
    """runs/<method>/seed<i>/metrics.json groups seeds; a run folder's own metrics.json hides its checkpoints'."""
    for s in range(2):
        write(tmp_path / "grpo" / f"seed{s}" / "metrics.json", grpo_correct(s))
    write(tmp_path / "darling" / "metrics.json", grpo_correct(5))
    write(tmp_path / "darling" / "checkpoint-000010" / "metrics.json", grpo_correct(6))
    assert metrics_files(tmp_path / "darling") == [tmp_path / "darling" / "metrics.json"]
    assert method_name(tmp_path / "grpo" / "seed1" / "metrics.json") == "grpo"
    assert method_name(tmp_path / "x" / "checkpoint-000010" / "metrics.json") == "x"
    result = invoke(str(tmp_path / "grpo"), str(tmp_path / "darling"))
    assert result.exit_code == 0, result.output
    assert "seeds per method: grpo 2, darling 1" in result.output
    assert "darling has one seed" in result.output and "grpo's 2 seeds" in result.output


def test_default_metrics_leave_out_what_the_runs_cannot_give(tmp_path):
    a = write(tmp_path / "grpo" / "metrics.json", grpo_correct(0) // 2, n=16)
    b = write(tmp_path / "setpo" / "metrics.json", grpo_correct(1) // 2, n=16)
    result = invoke(str(a), str(b))
    assert result.exit_code == 0, result.output
    assert "note: left out: pass@32 needs >= 32 samples per problem" in result.output
    assert "pass@8" in result.output


def test_problem_order_does_not_matter(tmp_path):
    c = grpo_correct(0)
    ids = [f"p{i}" for i in range(P)]
    k = [min(int(x), 2) for x in c]
    write(tmp_path / "grpo" / "metrics.json", c, ids=ids, classes=k)
    write(tmp_path / "r1" / "metrics.json", c[::-1], ids=ids[::-1], classes=k[::-1])
    result = invoke(str(tmp_path / "grpo"), str(tmp_path / "r1"), "--out", str(tmp_path / "r.md"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.md").read_text().count("| +0.000 | [+0.000, +0.000] | within noise |") == 4


def _error_cases(tmp: Path) -> list[tuple[list[str], str]]:
    g = write(tmp / "grpo" / "metrics.json", grpo_correct(0), split="test")
    d = write(tmp / "darling" / "metrics.json", grpo_correct(1))
    ood = write(tmp / "ood" / "metrics.json", grpo_correct(1), split="ood")  # `divrl eval --split ood --out` there
    other = write(tmp / "other" / "metrics.json", grpo_correct(1)[:-1])
    old = write(tmp / "old" / "metrics.json", grpo_correct(1), per_problem=False)
    small = write(tmp / "small" / "metrics.json", grpo_correct(1) // 2, n=16)
    (tmp / "bad").mkdir()
    (tmp / "bad" / "metrics.json").write_text('{"n": 3,\n oops}')
    (tmp / "empty").mkdir()
    return [
        ([str(tmp / "nope.json"), str(g)], "nope.json: no such file or folder"),
        ([str(tmp / "empty"), str(g)], "empty: no metrics.json in this folder or below"),
        ([str(other), str(g)], "evaluate different problems (39 vs 40; 0 only in the first; 1 only in the second"),
        ([str(d)], "no runs of the baseline 'grpo'; methods found: ['darling'] (see --baseline)"),
        ([str(g)], "only the baseline 'grpo' was given; nothing to compare with it"),
        ([str(old), str(g)], "old/metrics.json: no per_problem section (written before divrl kept per-problem"),
        ([str(tmp / "bad"), str(g)], "bad/metrics.json: not valid JSON (Expecting property name enclosed in double"),
        ([str(d), str(g), "--metrics", "pass@1,entropy"], "unknown metric 'entropy'; known: pass@<k>"),
        ([str(small), str(g), "--metrics", "pass@32"], "pass@32 needs >= 32 samples per problem"),
        ([str(g), f"grpo={d}", str(d)], "darling/metrics.json: given twice (as grpo and as darling)"),
        (["x=", str(g)], "x=: no paths after 'x='"),
        ([str(ood), str(g)], "ood/metrics.json: evaluated on split 'ood', not 'test' (see --split)"),
        ([str(g), str(d), "--split", "ood"], "grpo/metrics.json: evaluated on split 'test', not 'ood' (see --split)"),
        ([str(tmp / "grpo"), str(d), "--split", "ood"], "grpo: no metrics-ood.json in this folder or below"),
        ([str(g), str(d), "--split", "../x"], "a split must be a name (letters, digits, _), e.g. test or ood; got"),
    ]


@pytest.mark.parametrize("case", range(15))
def test_errors_are_one_line_exit_2_and_keep_the_report(tmp_path, case):
    args, message = _error_cases(tmp_path)[case]
    (tmp_path / "report.md").write_text("earlier report")
    result = invoke(*args, "--out", str(tmp_path / "report.md"))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    assert message in result.output
    assert (tmp_path / "report.md").read_text() == "earlier report"
