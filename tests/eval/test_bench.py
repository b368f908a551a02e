"""`divrl bench`: the leaderboard from fixed metrics files (hand-computed), a tiny bench end to end, resuming it
without training a finished run again, and its refusals (before anything trains)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from typer.testing import CliRunner

import divrl.trainer.rl as rl_module
from divrl.cli import app
from divrl.config import ConfigError
from divrl.eval import bench as bench_module
from divrl.eval import compare
from divrl.eval.bench import leaderboard_markdown, make_board, picture_name, plot_frontier, run_bench
from divrl.eval.evaluate import write_metrics
from divrl.eval.grid import check_kept_run, config_diff, known_recipes, recipe
from divrl.trainer.common import RunFolderError

N = 32
IDS = ['{"numbers":[1,2,3],"target":6}', '{"numbers":[2,3,4],"target":9}', '{"numbers":[3,4,5],"target":12}']


def _metrics(correct: list[int], classes: list[list[str]], split: str = "test") -> dict:
    per_problem = [
        {"id": i, "n": N, "correct": c, "classes": k} for i, c, k in zip(IDS, correct, classes, strict=True)
    ]
    return {"n": N, "split": split, "per_problem": per_problem}


# per problem: correct samples of 32 and the distinct correct classes (hand-computed values in the test)
FIXED = {
    "grpo": _metrics([1, 1, 1], [["a"], ["b"], ["c"]]),
    "darling": _metrics([32, 32, 2], [["a", "x"], ["b", "y"], ["c", "z"]]),
    "setpo": _metrics([1, 1, 1], [["a"], ["b"], ["c"]]),  # the same results as GRPO
    "base": _metrics([0, 0, 0], [[], [], []]),
}


def _write_fixed(folder: Path, seeds: int = 2) -> tuple[dict, dict]:
    results: dict[str, list[dict]] = {}
    sources: dict[str, list[Path]] = {}
    for seed in range(seeds):
        for name, metrics in FIXED.items():
            path = folder / f"seed{seed}" / name / "metrics.json"
            write_metrics(metrics, path)
            results.setdefault(name, []).append(json.loads(path.read_text()))
            sources.setdefault(name, []).append(path)
    return results, sources


def test_leaderboard_from_fixed_metrics_files(tmp_path):
    """Hand-computed: pass@k of c correct of n = 32 is 1 - C(32-c, k) / C(32, k): c = 1 gives k/32; c = 32 gives 1;
    c = 2 gives pass@1 = 1/16 and pass@8 = 1 - (24 * 23) / (32 * 31) = 0.443548. Every problem of GRPO (and SetPO)
    has c = 1 and 1 class, so its means and intervals are exact: pass@1 1/32, pass@8 0.25, pass@32 1, 1 class.
    DARLING (c = 32, 32, 2; 2 classes each): pass@1 (1 + 1 + 1/16) / 3 = 0.6875, pass@8 (2 + 0.443548) / 3 =
    0.814516, pass@32 1, 2 classes; its difference to GRPO is positive on every problem for pass@1, pass@8 and
    classes (so every bootstrap replicate is: "higher"), 0 on every problem for pass@32 (interval [0, 0]: "within
    noise"). The base (c = 0) is below GRPO on every problem for every metric: "lower"."""
    results, sources = _write_fixed(tmp_path)
    timing = {"grpo": [{"train_s": 60.0, "eval_s": 30.0}, {"train_s": 90.0, "eval_s": 0.0}]}
    board = make_board("test", results, sources, "grpo", timing, note="fixed problems")
    assert board.columns == ("pass@1", "pass@8", "pass@32", "distinct_correct_classes")
    assert board.frontier == ("pass@1", "pass@32") and board.problems == 3
    # sorted by pass@32 (all 1.0: ties by name), the base last
    assert board.rows == ("darling", "grpo", "setpo", "base")
    assert board.seeds == {"darling": 2, "grpo": 2, "setpo": 2, "base": 2}
    assert board.minutes == {"darling": None, "grpo": pytest.approx(1.5), "setpo": None, "base": None}
    bands = board.found.bands
    for m, want in (("pass@1", 1 / 32), ("pass@8", 0.25), ("pass@32", 1.0), ("distinct_correct_classes", 1.0)):
        e = bands["grpo"][m]
        assert (e.mean, e.low, e.high) == pytest.approx((want, want, want))
    d = bands["darling"]
    assert (
        d["pass@1"].mean == pytest.approx(0.6875) and 1 / 16 - 1e-9 <= d["pass@1"].low <= d["pass@1"].high <= 1 + 1e-9
    )
    assert d["pass@8"].mean == pytest.approx((2 + 1 - 24 * 23 / (32 * 31)) / 3)
    assert (d["distinct_correct_classes"].low, d["distinct_correct_classes"].high) == pytest.approx((2, 2))
    diffs = board.found.comparisons["darling"]
    assert diffs["pass@1"].mean == pytest.approx(0.6875 - 1 / 32) and diffs["pass@1"].low > 0
    assert diffs["pass@8"].mean == pytest.approx((2 + 1 - 24 * 23 / (32 * 31)) / 3 - 0.25)
    assert not diffs["pass@8"].within_noise
    assert diffs["pass@32"].within_noise and (diffs["pass@32"].low, diffs["pass@32"].high) == (0.0, 0.0)
    assert all(d.within_noise and d.mean == 0 for d in board.found.comparisons["setpo"].values())
    assert all(d.high < 0 for d in board.found.comparisons["base"].values())
    # the same differences as `divrl compare` on the folder
    groups = compare.load_groups([str(tmp_path)])
    again = compare.compare_groups(groups, "grpo", list(board.found.metrics))
    for name, per_metric in again.items():
        for m, d in per_metric.items():
            assert board.found.comparisons[name][m] == d

    lines = bench_module.board_markdown(board, picture="leaderboard.png")
    text = "\n".join(lines)
    assert "| rank | method | seeds | pass@1 | pass@8 | pass@32 | distinct correct classes | min / seed |" in lines
    assert (
        "| 2 | GRPO (baseline) | 2 | 0.031 [0.031, 0.031] | 0.250 [0.250, 0.250] | 1.000 [1.000, 1.000] "
        "| 1.000 [1.000, 1.000] | 1.5 |"
    ) in lines
    assert next(line for line in lines if line.startswith("| 1 | DARLING | 2 | 0.688 ["))
    assert "| – | base (no RL) | 2 | 0.000 [0.000, 0.000] |" in text
    assert "Problems: fixed problems." in lines and "### Difference to GRPO" in lines
    darling = next(line for line in lines if line.startswith("| DARLING | "))
    cells = [c.strip() for c in darling.split("|")[2:-1]]
    assert cells[0].startswith("**+0.656 [+") and cells[0].endswith("] higher**")
    assert cells[1].startswith("**+0.565 [+") and cells[1].endswith("] higher**")
    assert cells[2] == "+0.000 [+0.000, +0.000] within noise"
    assert cells[3] == "**+1.000 [+1.000, +1.000] higher**"
    assert "| SetPO | " + " | ".join(["+0.000 [+0.000, +0.000] within noise"] * 4) + " |" in lines
    base = next(line for line in lines if line.startswith("| base (no RL) | "))
    assert base.split("|")[2].strip() == "**-0.031 [-0.031, -0.031] lower**"
    assert any("seed-paired hierarchical bootstrap over 2 matched seeds" in line for line in lines)
    start = lines.index("In words: beyond noise against GRPO (95% interval excluding 0):")
    assert lines[start + 2 : start + 7] == [
        "- pass@1: higher: DARLING; lower: none",
        "- pass@8: higher: DARLING; lower: none",
        "- pass@32: higher: none; lower: none",
        "- distinct correct classes: higher: DARLING; lower: none",
        "- within noise on every metric: SetPO",
    ]  # the base (lower on everything) is not a method
    assert lines[-2] == "![pass@1 against pass@32, test split](leaderboard.png)"

    env = {"divrl": "9.9", "commit": "abc", "torch": "t1", "transformers": "tf2", "python": "3.x"}
    env |= {"machine": "m", "date": "d"}
    page = leaderboard_markdown(
        [board], command="divrl bench --seeds 2", env=env, wall_s=600, setup="S", out=Path("runs/x")
    )
    assert "- Command: `divrl bench --seeds 2`\n" in page
    assert "- Versions: divrl 9.9 (commit abc), torch t1, transformers tf2, Python 3.x\n" in page
    assert "- Machine: m\n- Date: d\n" in page
    # 10 min now; recorded: GRPO 1.5 min per seed x 2 seeds
    assert "- Wall time: 10.0 min for this invocation; 3.0 min of training and evaluation recorded" in page
    assert "`divrl compare runs/x` on test" in page
    plot_frontier(tmp_path / picture_name(Path("docs/leaderboard.md"), "test"), board)
    assert (tmp_path / "leaderboard.png").stat().st_size > 0
    assert picture_name(Path("docs/leaderboard.md"), "ood") == "leaderboard-ood.png"


TINY = ["rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=12", "threads=1"]


def _tiny(tmp_path: Path, **kwargs):
    args = {
        "out": tmp_path / "runs",
        "leaderboard": tmp_path / "docs" / "leaderboard.md",
        "methods": ["grpo", "r1_zero_div"],
        "seeds": 1,
        "steps": 1,
        "overrides": TINY,
        "problems": 2,
        "samples": 2,
        "command": "divrl bench --tiny",
        "resamples": 200,
    }
    return run_bench(**(args | kwargs))


def test_bench_end_to_end_tiny_then_resume_trains_only_what_is_missing(tmp_path, monkeypatch):
    """A tiny bench (two methods, one seed, one RL step, 2 problems x 2 samples per split) writes the leaderboard
    with both splits, its pictures, the header and summary.json. A resumed bench whose second method's run was lost
    (killed before it ran) trains that run only: the finished GRPO run is neither trained nor evaluated again."""
    record = _tiny(tmp_path)
    out, page = tmp_path / "runs", tmp_path / "docs" / "leaderboard.md"
    text = page.read_text()
    test_part, ood_part = text.split("## ood split (out of distribution): 2 problems")
    assert "## test split (in distribution): 2 problems" in test_part
    for part in (test_part, ood_part):
        assert "GRPO (baseline) | 1 |" in part and "| R1-zero-Div | 1 |" in part and "| – | base (no RL) | 1 |" in part
        assert "### Difference to GRPO" in part and "not training noise (which seed)" in part
    assert "](leaderboard.png)" in test_part and "](leaderboard-ood.png)" in ood_part
    for png in ("leaderboard.png", "leaderboard-ood.png"):
        assert (tmp_path / "docs" / png).stat().st_size > 0
    assert "- Command: `divrl bench --tiny`\n" in text
    assert f"torch {torch.__version__}, transformers {transformers.__version__}" in text
    assert "(commit " in text and "- Machine: " in text and "- Wall time: " in text
    # with 2 samples: pass@1, pass@2 (the picture's y) and classes
    assert "| pass@1 | pass@2 | distinct correct classes |" in test_part
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(record))
    assert summary["settings"]["methods"] == ["grpo", "r1_zero_div"] and list(summary["splits"]) == ["test", "ood"]
    grpo_test = json.loads((out / "seed0" / "grpo" / "metrics.json").read_text())
    assert summary["splits"]["test"]["rows"]["grpo"]["pass@1"][0] == pytest.approx(grpo_test["pass@1"])
    assert json.loads((out / "seed0" / "grpo" / "metrics-ood.json").read_text())["split"] == "ood"
    timing = json.loads((out / "seed0" / "grpo" / "timing.json").read_text())
    assert timing["train_s"] > 0 and timing["eval_s"] > 0

    # killed before R1-zero-Div ran: resume trains it, and only it
    grpo = out / "seed0" / "grpo"
    kept = {p: p.stat().st_mtime_ns for p in grpo.rglob("*") if p.is_file()}
    import shutil

    shutil.rmtree(out / "seed0" / "r1_zero_div")
    trained: list[Path] = []
    original = rl_module.train

    def recording_train(cfg, run_dir, **kwargs):
        trained.append(Path(run_dir))
        return original(cfg, run_dir, **kwargs)

    monkeypatch.setattr(rl_module, "train", recording_train)
    _tiny(tmp_path, resume=True)
    assert trained == [out / "seed0" / "r1_zero_div"]
    assert {p: p.stat().st_mtime_ns for p in grpo.rglob("*") if p.is_file()} == kept
    assert (out / "seed0" / "r1_zero_div" / "metrics-ood.json").is_file()
    assert "| R1-zero-Div | 1 |" in page.read_text()

    # everything finished: a resume trains nothing and rewrites the leaderboard from the kept results
    monkeypatch.setattr(rl_module, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    page.unlink()
    _tiny(tmp_path, resume=True)
    assert "(this time continued with `--resume`)" in page.read_text()


def test_bench_refusals_before_anything_trains(tmp_path, monkeypatch):
    """A folder holding a bench without --resume; a resume with other settings; a kept run trained with another
    recipe than now; a baseline that is not run; an unknown method (CLI: one error line, exit code 2)."""
    monkeypatch.setattr(rl_module, "train", lambda *a, **k: pytest.fail("trained"))
    out = tmp_path / "runs"
    settings = {"steps": 1, "problems": 2, "samples": 2, "splits": ["test", "ood"], "overrides": TINY}
    (out / "seed0" / "grpo").mkdir(parents=True)
    (out / "bench.json").write_text(json.dumps(settings | {"methods": ["grpo"], "seeds": 1}))
    with pytest.raises(RunFolderError, match="already holds a bench .*use --resume to continue it or --overwrite"):
        _tiny(tmp_path)
    with pytest.raises(RunFolderError, match=r"other settings \(samples: 2 there, 4 now\)"):
        _tiny(tmp_path, samples=4, resume=True)
    # GRPO's run was trained with another learning rate than its recipe has now: refused, naming the field
    cfg = recipe("grpo", 0, 1, TINY)
    from divrl.config import save_yaml, to_dict

    data = to_dict(cfg)
    data["optim"]["lr"] = 2.0e-4  # the recipe's is 1e-4
    (out / "seed0" / "grpo" / "config.yaml").write_text(yaml.safe_dump(data))
    for name in ("base",):
        for split, file in (("test", "metrics.json"), ("ood", "metrics-ood.json")):
            write_metrics({"n": 2, "split": split}, out / "seed0" / name / file)
    with pytest.raises(
        ConfigError, match=r"seed0/grpo: trained with another config .*optim.lr: 0.0002 there, 0.0001 now"
    ):
        _tiny(tmp_path, methods=["grpo"], resume=True)
    save_yaml(cfg, out / "seed0" / "grpo" / "config.yaml")
    check_kept_run(out / "seed0" / "grpo", cfg)  # the recipe's own config passes
    check_kept_run(out / "seed0" / "grpo", recipe("grpo", 0, 1, [*TINY[:3], "threads=2"]))  # threads are ignored
    assert config_diff({"a": {"b": [1, {"c": 2}]}}, {"a": {"b": [1, {"c": 3}]}, "d": 0}) == ["a.b.1.c", "d"]
    with pytest.raises(ConfigError, match=r"--baseline 'grpo' is not among the methods \['darling'\]"):
        _tiny(tmp_path / "other", methods=["darling"])
    assert not (tmp_path / "other").exists()
    known = known_recipes()
    assert {"grpo", "darling"} <= set(known)
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "x"), "--methods", "grpo,nosuch"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"unknown method 'nosuch'; known (configs/countdown/*.yaml): {known}" in result.stderr
    assert not (tmp_path / "x").exists()


def test_cli_and_function_default_to_the_same_problem_count():
    """700 problems per split (a pass@32 interval of about ±0.03 from evaluation noise), the same from the CLI and
    from Python; never the whole 11,510-problem test split by default."""
    import inspect

    from divrl import cli

    assert cli.BENCH_PROBLEMS == inspect.signature(bench_module.run_bench).parameters["problems"].default == 700
