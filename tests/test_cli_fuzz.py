"""A fast subset of benchmarks/fuzz_cli.py (the whole script: ~100 cases, minutes): each case runs `python -m
divrl.cli` in a subprocess and must end with exit code 2, one `error:` line on stderr and no file of its folder lost."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz_cli.py"
SMOKE = ["train-yaml-mapping-in-value", "train-set-bad-yaml", "train-usage-steps-type", "demo-out-holds-demo"]


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_cli", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_cli"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("fuzz_cli", None)


def test_smoke_cases_end_with_one_error_line(fuzz, tmp_path):
    by_name = {case.name: case for case in fuzz.cases()}
    results = fuzz.run_cases([by_name[name] for name in SMOKE], jobs=2, timeout=120, keep=tmp_path)
    for r in results:
        assert r.ok, f"{r.case.name}: {r.problem} | {r.last_line}"
    lines = {r.case.name: r.last_line for r in results}
    bad_yaml = tmp_path / "cases" / "train-yaml-mapping-in-value" / "bad.yaml"
    assert lines["train-yaml-mapping-in-value"] == (
        f"error: {bad_yaml}: invalid YAML at line 2, column 20: mapping values are not allowed here"
    )
    assert lines["train-set-bad-yaml"].startswith("error: --set 'loss.0.options={lam: 0.1': invalid YAML value")
    assert lines["train-usage-steps-type"].startswith("error: Invalid value for '--steps'")
    assert lines["demo-out-holds-demo"].endswith("use --resume to continue it or --overwrite to start over")


def test_the_checker_catches_a_traceback_and_a_lost_file(fuzz):
    """The fuzz script's own check: it must fail a case that crashed or lost a file."""
    case = fuzz.Case("x", [])
    before = {"run/metrics.jsonl": "a"}
    assert fuzz.check(case, 2, "error: bad\n", "", before, before) == ""
    crashed = fuzz.check(case, 1, "Traceback (most recent call last):\n  ...\nValueError: x\n", "", before, before)
    assert "exit code 1" in crashed and "traceback" in crashed and "0 error lines" in crashed
    assert "lost 1 files" in fuzz.check(case, 2, "error: bad\n", "", before, {})
    assert "changed 1 files" in fuzz.check(case, 2, "error: bad\n", "", before, {"run/metrics.jsonl": "b"})
    assert "error line is not the last" in fuzz.check(case, 2, "error: bad\nwarning: w\n", "", {}, {})
