"""`divrl bench --workers` / `divrl demo --workers`: the grid run in spawned worker processes writes the same run
folders and byte-identical metrics files as the serial grid, resumes as it does, and reports a model that fails in
its worker by name while the others run on; bad --workers / --threads / --device values are one-line refusals."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from divrl.cli import app
from divrl.config import ConfigError
from divrl.eval import bench as bench_module
from divrl.eval import grid

# 4 prompts x 4 samples at the recipes' own rollout length: step 1 has a non-zero advantage, so the weights move
TINY = ["rollout.prompts_per_step=4", "rollout.group_size=4", "threads=1"]
WALL_CLOCK = ("time_",)  # metrics.jsonl fields that measure seconds (the only ones that may differ)


class Recorder(grid.Progress):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []

    def start(self, index, total, seed, name, todo):
        self.calls.append(("start", grid.run_name(seed, name), todo))

    def done(self, index, total, seed, name, seconds):
        self.calls.append(("done", grid.run_name(seed, name), seconds))

    def failed(self, index, total, seed, name, error, detail):
        self.calls.append(("failed", grid.run_name(seed, name), error))

    def names(self, kind: str) -> list[str]:
        return [name for k, name, _ in self.calls if k == kind]


def _files(out: Path) -> set[str]:
    """Every file under ``out`` (tensorboard event files by folder: their names hold the time and the pid)."""
    return {
        str(p.relative_to(out).parent / "<events>") if p.name.startswith("events.") else str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file()
    }


def _curve(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(WALL_CLOCK)} for r in rows]


def _assert_same_runs(serial: Path, parallel: Path, runs: list[str]) -> None:
    for run in runs:
        a, b = serial / run, parallel / run
        for name in ("metrics.json", "metrics-ood.json"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{run}/{name} differs"
        if run.endswith("/base"):
            continue
        # the trained weights, the config and the training curve (less its seconds) too
        final = (a / "latest").read_text().strip()
        assert (b / "latest").read_text().strip() == final
        for name in (f"{final}/model.safetensors", "config.yaml"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{run}/{name} differs"
        assert json.dumps(_curve(a / "metrics.jsonl")) == json.dumps(_curve(b / "metrics.jsonl"))


def test_workers_write_what_the_serial_grid_writes_resume_and_report_a_failure(tmp_path):
    """Two recipes x two seeds, 2 RL steps, 3 problems x 2 samples per split, 1 torch thread: the serial grid and
    two workers give the same files; after losing a trained run and a base evaluation and breaking a third run's
    weights, two workers redo exactly those three models: the first two come back byte-identical, the broken one
    fails in its worker, is reported by name, and the grid ends in one GridRunError naming it."""
    plan = grid.plan_grid(["grpo", "r1_zero_div"], 2, ["test", "ood"], {"test": 3, "ood": 3}, 2, 2, TINY)
    runs = [grid.run_name(seed, name) for seed, name in plan.runs()]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the serial grid's base evaluations run in this process
    try:
        serial = grid.run_grid(plan, tmp_path / "serial")
    finally:
        torch.set_num_threads(before)
    recorder = Recorder()
    parallel = grid.run_grid(plan, tmp_path / "parallel", recorder, workers=2, threads=1)
    a, b = tmp_path / "serial", tmp_path / "parallel"
    assert _files(a) == _files(b) and len(_files(a)) > 30
    _assert_same_runs(a, b, runs)
    # not a vacuous comparison: some model solves some problems, some run's weights moved (a non-zero advantage)
    assert any(json.loads((a / run / "metrics.json").read_text())["pass@2"] > 0 for run in runs)
    trained = [run for run in runs if not run.endswith("/base")]
    assert any(r["adv_abs_mean"] > 0 for run in trained for r in _curve(a / run / "metrics.jsonl"))
    assert sorted(recorder.names("start")) == sorted(runs) and sorted(recorder.names("done")) == sorted(runs)
    assert all(isinstance(s, float) and s > 0 for kind, _, s in recorder.calls if kind == "done")
    # the results are read back in the grid's order, as the serial grid's
    for split in plan.splits:
        assert parallel.results[split] == serial.results[split]
        assert {n: [p.relative_to(b) for p in ps] for n, ps in parallel.sources[split].items()} == {
            n: [p.relative_to(a) for p in ps] for n, ps in serial.sources[split].items()
        }
    for name in plan.methods:
        curves = [serial.curves[name], parallel.curves[name]]
        stripped = [
            [[{k: v for k, v in r.items() if not k.startswith(WALL_CLOCK)} for r in c] for c in x] for x in curves
        ]
        assert json.dumps(stripped[0]) == json.dumps(stripped[1]) and len(stripped[0]) == 2

    # a killed bench: one trained run lost, one base evaluation lost; a third run's final weights broken
    shutil.rmtree(b / "seed1" / "r1_zero_div")
    (b / "seed0" / "base" / "metrics-ood.json").unlink()
    broken = b / "seed0" / "grpo"
    for name in ("metrics.json", "metrics-ood.json"):
        (broken / name).unlink()
    weights = broken / (broken / "latest").read_text().strip() / "model.safetensors"
    weights.write_bytes(b"\0" * weights.stat().st_size)  # the same size: the checkpoint still counts as complete
    kept = {p: p.stat().st_mtime_ns for p in (b / "seed0" / "r1_zero_div").rglob("*") if p.is_file()}
    kept |= {p: p.stat().st_mtime_ns for p in (b / "seed1" / "grpo").rglob("*") if p.is_file()}
    recorder = Recorder()
    with pytest.raises(grid.GridRunError, match=r"^1 of 6 models failed: seed0/grpo \(.+\); the others are finished"):
        grid.run_grid(plan, b, recorder, workers=2, threads=1)
    ran = [name for kind, name, todo in recorder.calls if kind == "start" and todo]
    assert ran == ["seed0/base", "seed0/grpo", "seed1/r1_zero_div"]  # in the grid's order
    assert [todo for kind, _, todo in recorder.calls if kind == "start" and todo] == [
        "eval",
        "eval",
        "train 2 steps + eval",
    ]
    assert recorder.names("failed") == ["seed0/grpo"]
    # the models that were finished: reported as kept (seconds None), their files untouched
    kept_now = [n for k, n, s in recorder.calls if k == "done" and s is None]
    assert kept_now == ["seed0/r1_zero_div", "seed1/base", "seed1/grpo"]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    # the two that ran again are byte-identical to the serial grid's
    _assert_same_runs(a, b, ["seed0/base", "seed1/r1_zero_div"])
    assert not (broken / "metrics.json").exists()


def test_bad_workers_threads_device_are_one_line_refusals(tmp_path, monkeypatch):
    for args, message in (
        ((0, 1, "cpu"), "--workers must be >= 1, got 0"),
        ((2, -1, "cpu"), "--threads must be >= 0, got -1"),
        ((2, 1, "tpu"), "--device must be one of ['cpu', 'cuda'], got 'tpu'"),
    ):
        with pytest.raises(ConfigError) as info:
            grid.check_execution(*args)
        assert str(info.value) == message
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="^--device cuda: torch sees no CUDA GPU here; use --device cpu$"):
        grid.check_execution(1, 0, "cuda")
    grid.check_execution(1, 0, "cpu")
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert [grid.worker_threads(0, w) for w in (1, 4, 15, 32)] == [16, 4, 1, 1]
    assert grid.worker_threads(3, 15) == 3  # given: each worker's
    out = tmp_path / "b"
    for flags, message in ((["--workers", "0"], "--workers must be >= 1, got 0"), (["--device", "tpu"], "'tpu'")):
        for command in ("bench", "demo"):
            result = CliRunner().invoke(app, [command, "--out", str(out), "--methods", "grpo", *flags])
            assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
            assert message in result.stderr
    assert not out.exists()


def test_failed_models_end_the_cli_in_one_line_with_exit_code_1(monkeypatch, tmp_path):
    def failing(*args, **kwargs):
        raise grid.GridRunError("1 of 6 models failed: seed0/grpo (ValueError: boom\nmore); the others are kept")

    monkeypatch.setattr(bench_module, "run_bench", failing)
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "b"), "--workers", "2"])
    assert result.exit_code == 1
    assert result.stderr == ("error: 1 of 6 models failed: seed0/grpo (ValueError: boom more); the others are kept\n")


def test_bench_progress_with_workers_counts_finished_models(monkeypatch):
    """With 2 workers the estimate is the mean cost times the models to go, halved: one model of 5 done in 120 s
    leaves 4 x 120 s / 2 = 4 min; a failure is one red line naming the model, after the worker's traceback."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    monkeypatch.setattr(bench_module, "console", Console(file=buffer, width=300, color_system=None))
    progress = bench_module.BenchProgress(workers=2)
    progress.start(3, 5, 1, "grpo", "train 2 steps + eval")
    progress.done(3, 5, 1, "grpo", 120.0)
    progress.failed(
        2, 5, 0, "darling", "ValueError: boom", "Traceback (most recent call last):\n  x\nValueError: boom"
    )
    text = buffer.getvalue()
    assert "bench 3/5: GRPO, seed 1: train 2 steps + eval" in text
    assert "bench 3/5: GRPO, seed 1 done in 2.0 min (elapsed 0.0 min) (1 of 5 finished)" in text
    assert "about 4 min left (models to go: 4)" in text
    assert text.rstrip().endswith("ValueError: boom\nbench 2/5 FAILED: DARLING, seed 0: ValueError: boom")
    assert progress.finished == 2
    serial = bench_module.BenchProgress()  # one worker: as before, the models to go are those after this one
    serial.done(1, 5, 0, "grpo", 120.0)
    assert "about 8 min left (models to go: 4)" in buffer.getvalue()


def test_bench_estimate_ignores_resumed_runs_and_base_evaluations(monkeypatch):
    """A method that only finished its evaluation (trained before) or resumed its training cost less than a whole
    one, and a base only evaluates: none of them enters the estimate, which waits for a method trained from step 0."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    monkeypatch.setattr(bench_module, "console", Console(file=buffer, width=300, color_system=None))
    progress = bench_module.BenchProgress(workers=2)
    for index, (name, todo, seconds) in enumerate(
        [("base", "eval", 60.0), ("grpo", "eval", 30.0), ("darling", "train 5 more steps + eval", 90.0)], start=1
    ):
        progress.start(index, 10, 0, name, todo)
        progress.done(index, 10, 0, name, seconds)
    assert "min left" not in buffer.getvalue()
    progress.start(4, 10, 0, "setpo", "train 120 steps + eval")
    progress.done(4, 10, 0, "setpo", 480.0)
    assert buffer.getvalue().rstrip().endswith("about 24 min left (models to go: 6)")  # 6 x 8 min / 2 workers
