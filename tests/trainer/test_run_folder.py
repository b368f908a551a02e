"""Run-folder safety (issue 13, point 1): a second `divrl train` into a run is refused and loses nothing; --overwrite
removes the old run first; retention orders by step; --resume falls back from a missing or corrupt `latest`; a run
SIGKILLed inside a checkpoint write resumes from the previous complete checkpoint. The same for pretrain and demo."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from divrl.cli import app
from divrl.trainer.common import (
    LATEST,
    RunFolderError,
    RunFolderWarning,
    checkpoint_problem,
    latest_checkpoint,
    read_metrics,
    resume_checkpoint,
    save_checkpoint,
)

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "countdown" / "grpo.yaml"
TINY = [
    "--set",
    "rollout.prompts_per_step=2",
    "--set",
    "rollout.group_size=4",
    "--set",
    "rollout.max_new_tokens=24",
    "--set",
    "threads=1",
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def train_cli(out: Path, *args: str) -> object:
    return CliRunner().invoke(app, ["train", "--config", str(RECIPE), "--out", str(out), *TINY, *args])


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    """The issue's first run, tiny: 3 steps, a checkpoint every step, keep_checkpoints 1."""
    run = tmp_path_factory.mktemp("first") / "R"
    result = train_cli(run, "--set", "steps=3", "--set", "save_every=1")
    assert result.exit_code == 0, result.output
    return run


def copy_run(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


def test_second_train_into_a_run_is_refused_and_the_first_run_is_intact(first_run, tmp_path):
    """The issue's reproduction: the same command with --set steps=1 into the same --out. Before the fix it trained
    from scratch, appended to metrics.jsonl, and its retention deleted its own checkpoint-000001, leaving `latest`
    naming a folder that did not exist."""
    run = copy_run(first_run, tmp_path / "R")
    before = snapshot(run)
    result = train_cli(run, "--set", "steps=1", "--set", "save_every=1")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0] == (
        f"error: {run} already holds a run (config.yaml, latest, metrics.jsonl, tb, 1 checkpoint up to step 3); "
        "use --resume to continue it or --overwrite to start over"
    )
    assert snapshot(run) == before  # nothing touched
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    latest = latest_checkpoint(run)
    assert latest is not None and latest.name == "checkpoint-000003" and checkpoint_problem(latest) is None


def test_overwrite_removes_the_old_run_before_anything_is_written(first_run, tmp_path):
    run = copy_run(first_run, tmp_path / "R")
    (run / "notes.txt").write_text("mine")  # not part of the run: kept
    before = snapshot(run)
    bad = train_cli(run, "--overwrite", "--set", "steps=1", "--set", "rollout.group_size=0")
    assert bad.exit_code == 2 and "rollout.group_size: must be >= 1, got 0" in bad.stderr
    assert snapshot(run) == before, "a command that fails on its inputs must not remove the old run"

    result = train_cli(run, "--overwrite", "--set", "steps=1")
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_metrics(run)] == [1]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-000001"]
    assert (run / LATEST).read_text() == "checkpoint-000001"
    assert "steps: 1\n" in (run / "config.yaml").read_text()
    assert (run / "notes.txt").read_text() == "mine"


def test_resume_and_overwrite_and_config_are_checked(first_run, tmp_path):
    run = copy_run(first_run, tmp_path / "R")
    before = snapshot(run)
    runner = CliRunner()
    both = runner.invoke(app, ["train", "--resume", str(run), "--overwrite"])
    assert both.exit_code == 2 and "give one of them" in both.stderr
    empty = runner.invoke(app, ["train", "--resume", str(tmp_path / "nothing")])
    assert empty.exit_code == 2 and "no run there to continue" in empty.stderr
    assert snapshot(run) == before


def test_resume_falls_back_from_a_truncated_latest_checkpoint(first_run, tmp_path):
    """`latest` names a checkpoint whose weights were truncated: --resume warns and continues from the newest
    complete checkpoint; with none left it fails with one line and changes nothing."""
    run = copy_run(first_run, tmp_path / "R")
    runner = CliRunner()
    # a second complete checkpoint (step 4), then truncate it: the fallback is step 3
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "steps=4", "--set", "keep_checkpoints=2"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-000003", "checkpoint-000004"]
    weights = run / "checkpoint-000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.warns(
        RunFolderWarning, match=r"names checkpoint-000004, which is incomplete \(model.safetensors has 1000 bytes"
    ):
        assert resume_checkpoint(run).name == "checkpoint-000003"
    with pytest.warns(RunFolderWarning):
        result = runner.invoke(app, ["train", "--resume", str(run), "--set", "steps=4", "--set", "keep_checkpoints=2"])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]
    assert checkpoint_problem(run / "checkpoint-000004") is None and (run / LATEST).read_text() == "checkpoint-000004"

    for ckpt in run.glob("checkpoint-*"):
        (ckpt / "trainer_state.pt").unlink()
    before = snapshot(run)
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: --resume {run}: no complete checkpoint to continue from (checkpoint-000003 is incomplete "
        "(trainer_state.pt is missing); checkpoint-000004 is incomplete (trainer_state.pt is missing)); "
        "--overwrite starts over"
    )
    assert snapshot(run) == before


KILLER = """
import sys, time
from pathlib import Path
import divrl.trainer.common as common

ready = Path(sys.argv[1])
real = common._write_manifest

def blocking_manifest(folder, step):
    if step == 2:  # mid-write of the second checkpoint: weights written, manifest half-written, nothing renamed
        (folder / "checkpoint.json").write_text('{"step": 2, "fi')
        ready.write_text(str(folder))
        time.sleep(600)
    real(folder, step)

common._write_manifest = blocking_manifest
from divrl.cli import app
app(args=sys.argv[2:])
"""


def test_sigkill_inside_a_checkpoint_write_resumes_from_the_previous_one(tmp_path):
    run, ready = tmp_path / "R", tmp_path / "ready"
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER))
    cmd = [sys.executable, str(script), str(ready), "train", "--config", str(RECIPE), "--out", str(run), *TINY]
    cmd += ["--set", "steps=3", "--set", "save_every=1"]
    proc = subprocess.Popen(cmd, env={**os.environ, "TQDM_DISABLE": "1"}, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timed out"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    half = Path(ready.read_text())
    assert half.is_dir() and half.name.startswith(".tmp-checkpoint-000002-")  # the torn write, never renamed
    assert not (run / "checkpoint-000002").exists()
    latest = latest_checkpoint(run)
    assert latest is not None and latest.name == "checkpoint-000001" and checkpoint_problem(latest) is None

    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == ["checkpoint-000003"]  # torn one gone


class _Saveable:
    def __init__(self, payload: str) -> None:
        self.payload = payload

    def save_pretrained(self, path: Path) -> None:
        (Path(path) / "weights.txt").write_text(self.payload)


def test_retention_orders_by_step_and_keeps_the_checkpoint_just_written(tmp_path):
    # the issue: a folder holding checkpoint-000024 of another run; the new step-1 checkpoint must survive
    save_checkpoint(tmp_path, 24, _Saveable("old"), None, {"step": 24})
    save_checkpoint(tmp_path, 1, _Saveable("new"), None, {"step": 1})
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-000001"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-000001"
    # by step, not by name: checkpoint-1000000 sorts before checkpoint-999999 as a string
    save_checkpoint(tmp_path, 999_999, _Saveable("a"), None, {"step": 999_999}, keep=2)
    save_checkpoint(tmp_path, 1_000_000, _Saveable("b"), None, {"step": 1_000_000}, keep=2)
    assert {p.name for p in tmp_path.glob("checkpoint-*")} == {"checkpoint-999999", "checkpoint-1000000"}
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1000000"


def test_retention_keeps_the_newest_complete_and_drops_those_past_a_resume(tmp_path):
    for step in (8, 16, 24):
        save_checkpoint(tmp_path, step, _Saveable(str(step)), None, {"step": step}, keep=2)
    assert {p.name for p in tmp_path.glob("checkpoint-*")} == {"checkpoint-000016", "checkpoint-000024"}
    # a run resumed from step 16 writes step 20: 24 belongs to the abandoned continuation
    save_checkpoint(tmp_path, 20, _Saveable("20"), None, {"step": 20}, keep=2)
    assert {p.name for p in tmp_path.glob("checkpoint-*")} == {"checkpoint-000016", "checkpoint-000020"}
    # an incomplete older checkpoint does not count towards keep (and is removed)
    (tmp_path / "checkpoint-000020" / "weights.txt").write_text("truncated")
    save_checkpoint(tmp_path, 22, _Saveable("22"), None, {"step": 22}, keep=2)
    assert {p.name for p in tmp_path.glob("checkpoint-*")} == {"checkpoint-000016", "checkpoint-000022"}
    # keep 0 keeps every checkpoint up to the one just written
    save_checkpoint(tmp_path, 23, _Saveable("23"), None, {"step": 23}, keep=0)
    assert {p.name for p in tmp_path.glob("checkpoint-*")} == {
        "checkpoint-000016",
        "checkpoint-000022",
        "checkpoint-000023",
    }


@pytest.mark.parametrize(
    ("pointer", "reason"),
    [
        (None, "is missing"),
        (b"\xff\xfe garbage", r"is unreadable \(UnicodeDecodeError\)"),
        (b"garbage", "does not name a checkpoint"),
        (b"checkpoint-000009", "names checkpoint-000009, which is missing"),
        (b"../elsewhere/checkpoint-000002", "does not name a checkpoint"),
    ],
)
def test_latest_pointer_missing_or_corrupt_falls_back_with_a_warning(tmp_path, pointer, reason):
    save_checkpoint(tmp_path, 2, _Saveable("a"), None, {"step": 2}, keep=0)
    save_checkpoint(tmp_path, 4, _Saveable("b"), None, {"step": 4}, keep=0)
    if pointer is None:
        (tmp_path / LATEST).unlink()
    else:
        (tmp_path / LATEST).write_bytes(pointer)
    with pytest.warns(RunFolderWarning, match=reason):
        assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-000004"


def test_crash_between_rename_and_pointer_keeps_the_previous_pointer(tmp_path, monkeypatch):
    import divrl.trainer.common as common

    save_checkpoint(tmp_path, 2, _Saveable("a"), None, {"step": 2})

    def crash(path, text):
        raise OSError("killed")

    monkeypatch.setattr(common, "_write_atomic", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 4, _Saveable("b"), None, {"step": 4})
    monkeypatch.undo()
    assert (tmp_path / LATEST).read_text() == "checkpoint-000002"
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-000002"  # the pointer is authoritative
    assert checkpoint_problem(tmp_path / "checkpoint-000004") is None  # complete, retried by the resumed run


def test_pretrain_out_that_holds_a_policy_is_refused_or_overwritten(tmp_path):
    from divrl.trainer.config import PretrainConfig
    from divrl.trainer.sft import pretrain

    cfg = PretrainConfig(steps=2, batch_size=4, save_every=1)
    out = pretrain(cfg, tmp_path / "base", progress=False)
    (out / "README.md").write_text("mine")
    before = snapshot(out)
    with pytest.raises(RunFolderError, match=r"already holds a pretrained policy .*use --overwrite to start over"):
        pretrain(cfg, out, progress=False)
    assert snapshot(out) == before
    result = CliRunner().invoke(app, ["pretrain", "--out", str(out), "--steps", "2", "--set", "batch_size=4"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "--overwrite" in result.stderr
    assert snapshot(out) == before
    pretrain(PretrainConfig(steps=1, batch_size=4, save_every=1), out, progress=False, overwrite=True)
    assert [r["step"] for r in read_metrics(out)] == [1]
    assert (out / "README.md").read_text() == "mine"


def test_demo_out_that_holds_a_demo_is_refused(tmp_path):
    from divrl.eval.demo import run_demo

    out = tmp_path / "demo"
    (out / "seed0" / "grpo").mkdir(parents=True)
    (out / "demo.json").write_text(
        json.dumps({"budget": {"steps": 80, "eval_problems": 218, "eval_n": 32}, "overrides": []})
    )
    (out / "report.md").write_text("# an earlier demo\n")
    before = snapshot(out)
    with pytest.raises(RunFolderError, match="already holds a demo .*use --resume to continue it or --overwrite"):
        run_demo(out, methods=["grpo"])
    with pytest.raises(RunFolderError, match=r"other settings \(budget: .*'steps': 80.*'steps': 10"):
        run_demo(out, quick=True, methods=["grpo"], resume=True)
    with pytest.raises(RunFolderError, match="overrides: \\[\\] there, \\['seed=3'\\] now"):
        run_demo(out, methods=["grpo"], resume=True, overrides=["seed=3"])
    assert snapshot(out) == before
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--quick", "--methods", "grpo"])
    assert result.exit_code == 2 and "already holds a demo" in result.stderr
    assert snapshot(out) == before
