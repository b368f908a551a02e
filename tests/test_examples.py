"""Every file in examples/ is exercised: the Python scripts run one tiny CPU step in a subprocess (``--smoke``), the
verl reward function is called, the GPU launch scripts are syntax-checked (they need GPUs, TRL's vLLM server or verl,
which the test suite does not have), the TRL one's accelerate config is found in the installed TRL, and the verl one's
overrides compose with verl's config (tests/integrations/verl/test_verl_launch.py, in verl's environment). A new file in examples/ fails :func:`test_every_example_is_exercised`."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import divrl

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EXERCISED = {
    "trl_countdown_cpu.py",
    "trl_darling_math.py",
    "verl_math_reward.py",
    "verl_darling.sh",
    "trl_launch_8gpu.sh",
}


def run_example(name: str, *args: str, cwd: Path, processes: int = 1) -> str:
    """Run ``examples/<name>`` (under ``torch.distributed.run`` with ``processes`` > 1, on CPU); return stdout."""
    env = dict(os.environ)
    src = str(Path(divrl.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    launch = (
        [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    )
    proc = subprocess.run(
        [sys.executable, *launch, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_every_example_is_exercised():
    assert {p.name for p in EXAMPLES.iterdir() if p.is_file()} == EXERCISED


def test_trl_countdown_cpu_smoke(tmp_path):
    out = run_example("trl_countdown_cpu.py", "--smoke", "--out", str(tmp_path / "run"), cwd=tmp_path)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["steps"] == 1
    assert 0.0 <= result["reward"] <= 1.0
    first, last = result["pass@1 (first -> last eval)"]
    assert 0.0 <= first <= 1.0 and 0.0 <= last <= 1.0


def test_trl_countdown_cpu_two_processes(tmp_path):
    """The same script under two CPU processes: DiversityGRPOTrainer gathers whole groups, and every rank's
    DivrlEvalCallback evaluates the whole held-out set, so both ranks report the same evaluation."""
    out = run_example("trl_countdown_cpu.py", "--smoke", "--out", str(tmp_path / "run"), cwd=tmp_path, processes=2)
    assert len([line for line in out.strip().splitlines() if line.startswith('{"steps"')]) == 1  # rank 0 prints
    results = [json.loads((tmp_path / "run" / f"summary-rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1]
    assert results[0]["steps"] == 1


def test_trl_darling_math_smoke(tmp_path):
    out = run_example("trl_darling_math.py", "--smoke", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert out.strip().splitlines()[-1] == "done: 1 steps"


def test_verl_math_reward():
    spec = importlib.util.spec_from_file_location("verl_math_reward", EXAMPLES / "verl_math_reward.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    right = module.compute_score("gsm8k", "so \\boxed{27}", "36-9=27\n#### 27")
    assert right == {"score": 1.0, "divrl_key": "27", "divrl_correct": True}
    wrong = module.compute_score("gsm8k", "so \\boxed{0.5}", "#### 27")
    assert wrong["score"] == 0.0 and wrong["divrl_key"] == module.math_answer_key("\\boxed{1/2}")
    assert not wrong["divrl_correct"]
    none = module.compute_score("gsm8k", "no answer", "#### 27")
    assert none["divrl_key"] is None and not math.isnan(none["score"])


def test_trl_launch_uses_an_accelerate_config_that_trl_ships():
    """The script finds TRL's accelerate configs with a one-line Python command; run it, and the file it passes to
    ``accelerate launch --config_file`` exists in the installed TRL."""
    pytest.importorskip("trl")
    text = (EXAMPLES / "trl_launch_8gpu.sh").read_text()
    command = re.search(r'CFG=\$\(python -c "([^"]+)"\)', text)
    assert command, "the script no longer sets CFG with python -c"
    folder = subprocess.run([sys.executable, "-c", command.group(1)], capture_output=True, text=True, check=True)
    used = re.findall(r'--config_file "\$CFG/([\w.]+)"', text)
    assert used and all((Path(folder.stdout.strip()) / name).is_file() for name in used), (folder.stdout, used)


@pytest.mark.parametrize("name", ["verl_darling.sh", "trl_launch_8gpu.sh"])
def test_launch_scripts_parse_and_name_real_files(name):
    subprocess.run(["bash", "-n", str(EXAMPLES / name)], check=True)
    text = (EXAMPLES / name).read_text()
    for ref in re.findall(r"\$HERE/([\w.]+)", text):
        assert (EXAMPLES / ref).is_file(), ref


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


@pytest.mark.parametrize(
    ("doc", "example", "marker"),
    [
        ("docs/scale-out.md", "trl_darling_math.py", "train = math_dataset("),
        ("docs/scale-out.md", "verl_math_reward.py", "def compute_score"),
    ],
)
def test_docs_quote_the_examples_verbatim(doc, example, marker):
    """The code the docs show is the code the test suite runs: every line of the quoting block is a line of the
    example (up to indentation)."""
    source = {line.strip() for line in (EXAMPLES / example).read_text().splitlines()}
    blocks = [b for b in _python_blocks((ROOT / doc).read_text()) if marker in b]
    assert len(blocks) == 1, f"{doc}: no single block quoting {example}"
    missing = [line for line in blocks[0].splitlines() if line.strip() and not line.lstrip().startswith("#")]
    missing = [line for line in missing if line.strip() not in source]
    assert not missing, f"{doc} shows lines that {example} does not have: {missing}"
