"""docs/architecture.md's "Add a method" walkthrough works as written.

Its two code blocks (the estimator's file and its test) are copied out of the document unchanged into a temporary
folder and the test runs there with pytest, in a subprocess (the example estimator registers itself in the global
registry, which must not leak into this test session).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import divrl

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def walkthrough_blocks() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### Add a method") : text.index("## Token-level advantages")]
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)\n\s*```", section, flags=re.S)]


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    module, test = walkthrough_blocks()
    assert '@register_advantage("rare_class"' in module and "def test_one_training_step" in test
    (tmp_path / "rare_class.py").write_text(module, encoding="utf-8")
    (tmp_path / "test_rare_class.py").write_text(test, encoding="utf-8")
    src = str(Path(divrl.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), src]), "HF_HUB_OFFLINE": "1"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_rare_class.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "4 passed" in proc.stdout
