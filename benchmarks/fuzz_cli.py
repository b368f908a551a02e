"""Fuzz every ``divrl`` entry point with bad input and check how each case ends.

Every case runs the CLI in a subprocess (``python -m divrl.cli ...``) in a folder of its own and must end with

- exit code 2,
- stderr holding exactly one ``error: ...`` line, its last line (other lines only ``warning: ...``), no traceback,
- every file that was in the case's folder before (a finished run, a pretrained policy, a demo, a config) still there
  with the same bytes.

Inputs covered: configs (bad YAML, wrong types, unknown keys, out-of-range values, unreadable files), ``--set``
values, option values, data files (JSONL with bad lines, empty, wrong suffix), model and checkpoint folders with
missing or truncated files, and output folders that already hold a run, for ``train``, ``eval``, ``pretrain``,
``demo``, ``bench`` and ``classifier pairs/train/agree``.

    python benchmarks/fuzz_cli.py                 # every case, 2 at a time; a table; exit 1 if any case fails
    python benchmarks/fuzz_cli.py --only train-   # the cases whose name contains "train-"
    python benchmarks/fuzz_cli.py --list          # the case names

The fixtures (a finished 3-step run, a 2-step pretrained policy, a demo folder) are built once per invocation, by
the CLI itself, and only when a selected case needs them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "configs" / "countdown" / "grpo.yaml"
TINY = ["rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=24", "threads=1"]
TINY_SET = [a for s in TINY for a in ("--set", s)]
GOOD_ROW = '{"question": "What is 1+1?", "answer": "1+1=2\\n#### 2"}\n'  # GSM8K layout, the math default


# ------------------------------------------------------------------------------------------------------------------
# fixtures: built once, copied into the cases that use them


class Fixtures:
    """Lazily built inputs shared by the cases (each case gets its own copy)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}
        self._lock = threading.Lock()  # cases run in threads; a fixture is built once, by the first that asks

    def _cli(self, *args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "divrl.cli", *args], capture_output=True, text=True, env=ENV)
        if proc.returncode != 0:
            raise RuntimeError(f"fixture command failed: divrl {' '.join(args)}\n{proc.stderr[-2000:]}")

    def run(self) -> Path:
        """A finished tiny run: 3 steps, checkpoints 2 and 3 (keep_checkpoints 2)."""
        with self._lock:
            return self._run()

    def _run(self) -> Path:
        if "run" not in self._built:
            path = self.root / "run"
            self._cli(
                "train",
                "--config",
                str(RECIPE),
                "--out",
                str(path),
                *TINY_SET,
                "--set",
                "steps=3",
                "--set",
                "save_every=1",
                "--set",
                "keep_checkpoints=2",
            )
            self._built["run"] = path
        return self._built["run"]

    def base(self) -> Path:
        """A tiny pretrained policy (2 steps)."""
        with self._lock:
            return self._base()

    def _base(self) -> Path:
        if "base" not in self._built:
            path = self.root / "base"
            self._cli("pretrain", "--out", str(path), "--steps", "2", "--set", "batch_size=4", "--set", "threads=1")
            self._built["base"] = path
        return self._built["base"]

    def demo(self) -> Path:
        """A demo folder as `divrl demo --quick` leaves it after the base evaluation (no training needed)."""
        with self._lock:
            return self._demo()

    def _demo(self) -> Path:
        if "demo" not in self._built:
            path = self.root / "demo"
            (path / "seed0" / "base").mkdir(parents=True)
            (path / "seed0" / "base" / "metrics.json").write_text('{"pass@1": 0.5}\n')
            settings = {"budget": {"steps": 20, "eval_problems": 100, "eval_n": 16}, "overrides": []}
            (path / "demo.json").write_text(json.dumps(settings) + "\n")
            self._built["demo"] = path
        return self._built["demo"]


# ------------------------------------------------------------------------------------------------------------------
# cases

BENCH_SETTINGS = {"steps": None, "problems": 0, "samples": 32, "splits": ["test", "ood"], "overrides": []}
"""What `divrl bench` records in bench.json with its defaults."""


@dataclass
class Case:
    name: str
    args: list[str]  # after `divrl`; "{d}" is replaced by the case's folder
    setup: Callable[[Path, Fixtures], None] | None = None
    why: str = ""


def write(rel: str, text: str | bytes) -> Callable[[Path, Fixtures], None]:
    def setup(d: Path, fx: Fixtures) -> None:
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return setup


def copy(name: str, rel: str, damage: Callable[[Path], None] | None = None) -> Callable[[Path, Fixtures], None]:
    def setup(d: Path, fx: Fixtures) -> None:
        src = getattr(fx, name)()
        dest = d / rel
        shutil.copytree(src, dest)
        if damage is not None:
            damage(dest)

    return setup


def both(*setups: Callable[[Path, Fixtures], None]) -> Callable[[Path, Fixtures], None]:
    def setup(d: Path, fx: Fixtures) -> None:
        for s in setups:
            s(d, fx)

    return setup


def truncate(rel: str, keep: int = 100) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        for path in root.glob(rel):
            path.write_bytes(path.read_bytes()[:keep])

    return damage


def remove(rel: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        for path in root.glob(rel):
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    return damage


def same_size_garbage(rel: str) -> Callable[[Path], None]:
    """Overwrite a file with as many bytes of garbage (passes a size check; fails to parse)."""

    def damage(root: Path) -> None:
        for path in root.glob(rel):
            path.write_bytes(b"{" + b"x" * (path.stat().st_size - 1))

    return damage


def train(*extra: str) -> list[str]:
    return ["train", "--config", str(RECIPE), "--out", "{d}/out", *TINY_SET, *extra]


def cases() -> list[Case]:
    c: list[Case] = []
    yaml_bad = {
        "flow-seq": "steps: 3\nloss: [1, 2\n",
        "mapping-in-value": "steps: 3\nrollout: group_size: 4\n",
        "tab": "steps: 3\n\trollout: {}\n",
        "unterminated-quote": 'name: "grpo\nsteps: 3\n',
        "undefined-alias": "steps: *n\n",
    }
    for key, text in yaml_bad.items():
        c.append(
            Case(
                f"train-yaml-{key}",
                ["train", "--config", "{d}/bad.yaml", "--out", "{d}/out"],
                write("bad.yaml", text),
                "YAML syntax error in --config",
            )
        )
    config_bad = {
        "top-level-list": "- steps: 3\n",
        "unknown-key": "stepz: 3\n",
        "wrong-type": "rollout:\n  group_size: many\n",
        "section-scalar": "rollout: 5\n",
        "out-of-range": "save_every: 0\n",
        "negative-steps": "steps: -3\n",
        "bool-for-int": "steps: true\n",
        "literal": "optim:\n  schedule: linear\n",
        "unknown-advantage": "advantage:\n  name: nope\n",
        "bad-loss-option": "loss:\n  - name: ppo\n    options: {bogus: 1}\n",
    }
    for key, text in config_bad.items():
        c.append(
            Case(
                f"train-config-{key}",
                ["train", "--config", "{d}/bad.yaml", "--out", "{d}/out"],
                write("bad.yaml", text),
                "a config value that does not fit",
            )
        )
    c += [
        Case("train-config-missing", ["train", "--config", "{d}/nope.yaml"], None, "no such file"),
        Case("train-config-folder", ["train", "--config", "{d}/cfg"], write("cfg/x", "x"), "a folder as --config"),
        Case(
            "train-config-binary",
            ["train", "--config", "{d}/bin.yaml"],
            write("bin.yaml", b"\xff\xfe\x00\x01"),
            "not UTF-8",
        ),
        Case("train-set-no-equals", train("--set", "steps"), None, "--set without ="),
        Case("train-set-bad-yaml", train("--set", "loss.0.options={lam: 0.1"), None, "--set value with a YAML error"),
        Case("train-set-unknown", train("--set", "rollout.group_sise=4"), None, "--set unknown key"),
        Case("train-set-index", train("--set", "loss.5.name=ppo"), None, "--set list index out of range"),
        Case("train-set-through-scalar", train("--set", "steps.x=1"), None, "--set into a scalar"),
        Case("train-set-nan-lr", train("--set", "optim.lr=.nan"), None, "NaN learning rate"),
        Case("train-set-temperature-0", train("--set", "rollout.temperature=0"), None, "temperature 0"),
        Case("train-set-betas", train("--set", "optim.betas=[0.9]"), None, "one beta"),
        Case("train-set-keep-negative", train("--set", "keep_checkpoints=-1"), None, "negative keep"),
        Case("train-set-group-list", train("--set", "rollout.group_size=[4]"), None, "a list for an int"),
        Case("train-set-task-name", train("--set", "task.name=nope"), None, "unknown task"),
        Case("train-set-task-option", train("--set", "task.options.bogus=1"), None, "unknown task option"),
        Case("train-set-task-split", train("--set", "task.split=bogus"), None, "unknown split"),
        Case("train-set-lora", train("--set", "model.lora_r=-1"), None, "negative LoRA rank"),
        Case("train-set-learned-no-ckpt", train("--set", "partition.source=learned"), None, "no classifier"),
        Case(
            "train-set-learned-missing",
            train("--set", "partition.source=learned", "--set", "partition.checkpoint={d}/nope"),
            None,
            "classifier folder missing",
        ),
        Case(
            "train-set-embedder-missing",
            train(
                "--set",
                "embedder={d}/nope",
                "--set",
                "advantage.name=setpo",
                "--set",
                "advantage.options.kernel=cosine",
            ),
            None,
            "embedder folder missing",
        ),
        Case("train-set-vllm-on-cpu", train("--set", "rollout.backend=vllm"), None, "vLLM without a GPU"),
        Case("train-model-missing", train("--model", "./nope"), None, "model folder missing"),
        Case("train-model-empty", train("--model", "{d}/empty"), write("empty/.keep", ""), "folder without config"),
        Case(
            "train-model-truncated",
            train("--model", "{d}/base"),
            copy("base", "base", truncate("model.safetensors")),
            "truncated weights",
        ),
        Case(
            "train-model-bad-config-json",
            train("--model", "{d}/base"),
            copy("base", "base", same_size_garbage("config.json")),
            "garbage config.json",
        ),
        Case("train-data-missing", train("--data", "{d}/nope.jsonl"), None, "data file missing"),
        Case(
            "train-data-all-bad",
            train("--data", "{d}/d.jsonl"),
            write("d.jsonl", "{oops\nnot json\n[1]\n"),
            "every JSONL line bad",
        ),
        Case(
            "train-data-strict",
            train("--data", "{d}/d.jsonl", "--set", "task.options.strict=true"),
            write("d.jsonl", GOOD_ROW * 4 + "{oops\n"),
            "one bad line under strict",
        ),
        Case(
            "train-data-json-object",
            train("--data", "{d}/d.json"),
            write("d.json", '{"question": "q"}'),
            ".json that is not an array",
        ),
        Case("train-data-empty", train("--data", "{d}/d.jsonl"), write("d.jsonl", ""), "empty data file"),
        Case("train-data-suffix", train("--data", "{d}/d.txt"), write("d.txt", GOOD_ROW), "unsupported suffix"),
        Case(
            "train-data-too-few",
            train("--data", "{d}/d.jsonl", "--set", "rollout.prompts_per_step=4"),
            write("d.jsonl", GOOD_ROW),
            "fewer problems than prompts per step",
        ),
        Case(
            "train-out-holds-run",
            ["train", "--config", str(RECIPE), "--out", "{d}/run", *TINY_SET, "--set", "steps=1"],
            copy("run", "run"),
            "second train into a run (issue 13.1)",
        ),
        Case("train-out-is-file", [*train()[:4], "{d}/file"], write("file", "x"), "--out is a file"),
        Case(
            "train-overwrite-bad-config",
            ["train", "--config", str(RECIPE), "--out", "{d}/run", "--overwrite", "--set", "steps=0"],
            copy("run", "run"),
            "--overwrite with a bad value keeps the old run",
        ),
        Case("train-resume-nothing", ["train", "--resume", "{d}/nothing"], None, "--resume of no run"),
        Case(
            "train-resume-and-overwrite",
            ["train", "--resume", "{d}/run", "--overwrite"],
            copy("run", "run"),
            "contradictory flags",
        ),
        Case(
            "train-resume-and-config",
            ["train", "--resume", "{d}/run", "--config", str(RECIPE)],
            copy("run", "run"),
            "--config ignored by --resume",
        ),
        Case(
            "train-resume-bad-config-yaml",
            ["train", "--resume", "{d}/run"],
            copy("run", "run", lambda r: (r / "config.yaml").write_text("steps: [3\n")),
            "run config.yaml broken",
        ),
        Case(
            "train-resume-all-truncated",
            ["train", "--resume", "{d}/run"],
            copy("run", "run", truncate("checkpoint-*/model.safetensors")),
            "every checkpoint truncated",
        ),
        Case(
            "train-resume-state-missing",
            ["train", "--resume", "{d}/run"],
            copy("run", "run", both_damage(remove("checkpoint-*/trainer_state.pt"), remove("latest"))),
            "no trainer state and no latest",
        ),
        Case(
            "train-resume-garbage-state",
            ["train", "--resume", "{d}/run"],
            copy("run", "run", same_size_garbage("checkpoint-*/trainer_state.pt")),
            "unloadable trainer state",
        ),
        Case(
            "train-resume-no-checkpoint",
            ["train", "--resume", "{d}/run"],
            copy("run", "run", both_damage(remove("checkpoint-*"), remove("latest"))),
            "stopped before a save",
        ),
        Case("train-usage-steps-type", ["train", "--steps", "abc"], None, "option of the wrong type"),
        Case("train-usage-unknown-option", ["train", "--bogus"], None, "unknown option"),
        # eval
        Case("eval-model-missing", ["eval", "--model", "{d}/nope"], None, "no model"),
        Case(
            "eval-model-truncated",
            ["eval", "--model", "{d}/run/checkpoint-000003", "--problems", "2", "--n", "2"],
            copy("run", "run", truncate("checkpoint-000003/model.safetensors")),
            "truncated checkpoint",
        ),
        Case(
            "eval-model-garbage-config",
            ["eval", "--model", "{d}/base", "--problems", "2", "--n", "2"],
            copy("base", "base", same_size_garbage("config.json")),
            "garbage config.json",
        ),
        Case(
            "eval-model-tokenizer-missing",
            ["eval", "--model", "{d}/base", "--problems", "2", "--n", "2"],
            copy("base", "base", remove("tokenizer*.json")),
            "no tokenizer files",
        ),
        Case("eval-task-unknown", ["eval", "--model", "builtin:countdown-tiny", "--task", "nope"], None, "task"),
        Case(
            "eval-task-option-yaml",
            ["eval", "--model", "builtin:countdown-tiny", "--task-option", "low=[1"],
            None,
            "--task-option YAML error",
        ),
        Case(
            "eval-task-option-no-equals",
            ["eval", "--model", "builtin:countdown-tiny", "--task-option", "low"],
            None,
            "--task-option without =",
        ),
        Case(
            "eval-task-option-unknown",
            ["eval", "--model", "builtin:countdown-tiny", "--task-option", "x=1"],
            None,
            "unknown task option",
        ),
        Case("eval-split", ["eval", "--model", "builtin:countdown-tiny", "--split", "bogus"], None, "bad split"),
        Case("eval-n-zero", ["eval", "--model", "builtin:countdown-tiny", "--n", "0"], None, "--n 0"),
        Case("eval-temperature-0", ["eval", "--model", "builtin:countdown-tiny", "--temperature", "0"], None, "T = 0"),
        Case(
            "eval-max-new-tokens-0",
            ["eval", "--model", "builtin:countdown-tiny", "--max-new-tokens", "0"],
            None,
            "no tokens",
        ),
        Case("eval-n-type", ["eval", "--model", "builtin:countdown-tiny", "--n", "many"], None, "--n not a number"),
        Case(
            "eval-data-all-bad",
            ["eval", "--model", "builtin:countdown-tiny", "--data", "{d}/d.jsonl"],
            write("d.jsonl", "{oops\n"),
            "bad JSONL",
        ),
        Case(
            "eval-out-folder",
            ["eval", "--model", "builtin:countdown-tiny", "--out", "{d}/o"],
            write("o/m", "x"),
            "--out is a folder",
        ),
        Case("eval-usage-no-model", ["eval"], None, "missing --model"),
        # pretrain
        Case(
            "pretrain-out-holds-policy",
            ["pretrain", "--out", "{d}/base", "--steps", "1"],
            copy("base", "base"),
            "pretrain into a policy folder",
        ),
        Case(
            "pretrain-config-yaml",
            ["pretrain", "--out", "{d}/o", "--config", "{d}/bad.yaml"],
            write("bad.yaml", "steps: 3\n  batch_size: 4\n"),
            "YAML syntax error",
        ),
        Case("pretrain-size", ["pretrain", "--out", "{d}/o", "--size", "huge"], None, "unknown size"),
        Case("pretrain-batch-0", ["pretrain", "--out", "{d}/o", "--set", "batch_size=0"], None, "batch size 0"),
        Case("pretrain-steps-negative", ["pretrain", "--out", "{d}/o", "--steps", "-1"], None, "negative steps"),
        Case("pretrain-task-unknown", ["pretrain", "--out", "{d}/o", "--task", "nope"], None, "unknown task"),
        Case("pretrain-out-is-file", ["pretrain", "--out", "{d}/file"], write("file", "x"), "--out is a file"),
        # demo
        Case("demo-out-holds-demo", ["demo", "--out", "{d}/demo", "--quick"], copy("demo", "demo"), "second demo"),
        Case(
            "demo-resume-other-budget",
            ["demo", "--out", "{d}/demo", "--resume"],
            copy("demo", "demo"),
            "resume with another budget",
        ),
        Case(
            "demo-resume-and-overwrite",
            ["demo", "--out", "{d}/demo", "--resume", "--overwrite"],
            copy("demo", "demo"),
            "contradictory flags",
        ),
        Case("demo-methods-unknown", ["demo", "--out", "{d}/o", "--methods", "grpo,nope"], None, "unknown method"),
        Case("demo-seeds-0", ["demo", "--out", "{d}/o", "--seeds", "0"], None, "zero seeds"),
        Case("demo-threads-negative", ["demo", "--out", "{d}/o", "--threads", "-1"], None, "negative threads"),
        Case("demo-workers-0", ["demo", "--out", "{d}/o", "--workers", "0"], None, "zero workers"),
        Case("demo-device-unknown", ["demo", "--out", "{d}/o", "--device", "tpu"], None, "unknown device"),
        Case("demo-set-bad-yaml", ["demo", "--out", "{d}/o", "--set", "loss.0.options={a"], None, "--set YAML"),
        Case(
            "demo-set-breaks-method",
            ["demo", "--out", "{d}/o", "--methods", "darling", "--set", "partition.source=none"],
            None,
            "an override that breaks a method",
        ),
        # bench
        Case(
            "bench-out-holds-bench",
            ["bench", "--out", "{d}/bench", "--methods", "grpo"],
            write("bench/bench.json", json.dumps(BENCH_SETTINGS) + "\n"),
            "second bench",
        ),
        Case(
            "bench-resume-other-settings",
            ["bench", "--out", "{d}/bench", "--methods", "grpo", "--resume", "--samples", "8"],
            write("bench/bench.json", json.dumps(BENCH_SETTINGS) + "\n"),
            "resume with other settings",
        ),
        Case("bench-methods-unknown", ["bench", "--out", "{d}/o", "--methods", "grpo,nope"], None, "unknown method"),
        Case("bench-baseline-not-run", ["bench", "--out", "{d}/o", "--methods", "darling"], None, "no baseline"),
        Case("bench-samples-0", ["bench", "--out", "{d}/o", "--samples", "0"], None, "zero samples"),
        Case("bench-seeds-0", ["bench", "--out", "{d}/o", "--seeds", "0"], None, "zero seeds"),
        Case("bench-workers-0", ["bench", "--out", "{d}/o", "--workers", "0"], None, "zero workers"),
        Case("bench-device-unknown", ["bench", "--out", "{d}/o", "--device", "tpu"], None, "unknown device"),
        Case("bench-split-path", ["bench", "--out", "{d}/o", "--split", "test,../x"], None, "a split that is a path"),
        Case(
            "bench-leaderboard-is-folder",
            ["bench", "--out", "{d}/o", "--leaderboard", "{d}/docs"],
            write("docs/keep.md", "mine"),
            "--leaderboard is a folder",
        ),
        # classifier (formerly `divrl partition`)
        Case("classifier-pairs-task", ["classifier", "pairs", "--out", "{d}/p.jsonl", "--task", "nope"], None, "task"),
        Case(
            "classifier-pairs-source",
            ["classifier", "pairs", "--out", "{d}/p.jsonl", "--source", "bogus"],
            None,
            "unknown source",
        ),
        Case(
            "classifier-train-missing",
            ["classifier", "train", "--pairs", "{d}/nope.jsonl", "--out", "{d}/clf"],
            None,
            "pairs file missing",
        ),
        Case(
            "classifier-train-bad-line",
            ["classifier", "train", "--pairs", "{d}/p.jsonl", "--out", "{d}/clf"],
            write("p.jsonl", '{"a": "x", "b": "y", "label": 1}\n{oops\n'),
            "bad JSONL line",
        ),
        Case(
            "classifier-train-kind",
            ["classifier", "train", "--pairs", "{d}/p.jsonl", "--out", "{d}/clf", "--kind", "bogus"],
            write("p.jsonl", '{"a": "x", "b": "y", "label": 1}\n'),
            "unknown kind",
        ),
        Case(
            "classifier-train-steps-0",
            ["classifier", "train", "--pairs", "{d}/p.jsonl", "--out", "{d}/clf", "--steps", "0"],
            write("p.jsonl", '{"a": "x", "b": "y", "label": 1}\n'),
            "zero steps",
        ),
        Case("classifier-agree-missing", ["classifier", "agree", "--checkpoint", "{d}/nope"], None, "no classifier"),
        Case(
            "classifier-agree-broken",
            ["classifier", "agree", "--checkpoint", "{d}/clf"],
            write("clf/config.json", "{oops"),
            "broken classifier config",
        ),
        # top level
        Case("cli-unknown-command", ["bogus"], None, "unknown subcommand"),
    ]
    return c


def both_damage(*damages: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        for d in damages:
            d(root)

    return damage


# ------------------------------------------------------------------------------------------------------------------
# running and checking

ENV = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class Result:
    case: Case
    ok: bool
    code: int | None
    seconds: float
    problem: str
    last_line: str


def check(
    case: Case, code: int | None, stderr: str, stdout: str, before: dict[str, str], after: dict[str, str]
) -> str:
    """What is wrong with how a case ended ("" = nothing)."""
    problems = []
    if code != 2:
        problems.append(f"exit code {code}")
    if "Traceback" in stderr or "Traceback" in stdout:
        problems.append("traceback")
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    elif lines[-1] != errors[0]:
        problems.append("error line is not the last")
    others = [line for line in lines if not line.startswith(("error: ", "warning: "))]
    if others:
        problems.append(f"{len(others)} other stderr lines")
    lost = [k for k in before if k not in after]
    changed = [k for k in before if k in after and after[k] != before[k]]
    if lost:
        problems.append(f"lost {len(lost)} files ({lost[0]})")
    if changed:
        problems.append(f"changed {len(changed)} files ({changed[0]})")
    return "; ".join(problems)


def run_case(case: Case, work: Path, fixtures: Fixtures, timeout: float) -> Result:
    d = work / case.name
    d.mkdir(parents=True)
    if case.setup is not None:
        case.setup(d, fixtures)
    before = snapshot(d)
    args = [a.replace("{d}", str(d)) for a in case.args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "divrl.cli", *args], cwd=d, env=ENV, capture_output=True, text=True, timeout=timeout
        )
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = None, str(exc.stdout or ""), f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - t0
    problem = check(case, code, stderr, stdout, before, snapshot(d))
    lines = [line for line in stderr.splitlines() if line.strip()]
    return Result(case, not problem, code, seconds, problem, lines[-1] if lines else "")


def run_cases(selected: list[Case], jobs: int = 2, timeout: float = 300.0, keep: Path | None = None) -> list[Result]:
    """Run ``selected`` (``jobs`` at a time) in a temporary folder (or ``keep``); return their results in order."""
    tmp = Path(tempfile.mkdtemp(prefix="divrl-fuzz-")) if keep is None else keep
    try:
        fixtures = Fixtures(tmp / "_fixtures")
        fixtures.root.mkdir(parents=True, exist_ok=True)
        work = tmp / "cases"
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(lambda case: run_case(case, work, fixtures, timeout), selected))
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def print_table(results: list[Result]) -> None:
    width = max(len(r.case.name) for r in results)
    print(f"{'case':<{width}}  {'result':<6}  {'exit':>4}  {'s':>5}  stderr's last line / problem")
    print(f"{'-' * width}  ------  ----  -----  {'-' * 40}")
    for r in results:
        text = r.last_line if r.ok else f"{r.problem} | {r.last_line}"
        print(f"{r.case.name:<{width}}  {'ok' if r.ok else 'FAIL':<6}  {r.code!s:>4}  {r.seconds:5.1f}  {text[:150]}")
    failed = sum(not r.ok for r in results)
    print(f"\n{len(results)} cases: {len(results) - failed} pass, {failed} fail")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="Comma-separated substrings; run the cases whose name has one.")
    parser.add_argument("--jobs", type=int, default=2, help="Cases run at a time.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds per case.")
    parser.add_argument("--keep", type=Path, default=None, help="Run in this (new) folder and keep it.")
    parser.add_argument("--list", action="store_true", help="Print the case names and exit.")
    args = parser.parse_args(argv)
    selected = cases()
    if args.only:
        wanted = [w for w in args.only.split(",") if w]
        selected = [c for c in selected if any(w in c.name for w in wanted)]
    if args.list:
        for c in selected:
            print(f"{c.name}: {c.why}")
        return 0
    if not selected:
        print("no case matches --only", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results = run_cases(selected, jobs=args.jobs, timeout=args.timeout, keep=args.keep)
    print_table(results)
    print(f"wall {time.perf_counter() - t0:.0f} s")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
