import subprocess
import sys

HEAVY = ["transformers", "trl", "verl", "vllm", "sentence_transformers", "sacrebleu", "datasets"]


def test_core_is_pure():
    code = (
        "import sys, divrl.core, divrl.core.advantages, divrl.core.losses, divrl.core.metrics, divrl.core.diversity\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_is_cheap():
    out = subprocess.run([sys.executable, "-m", "divrl.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("pretrain", "train", "eval", "compare", "demo", "partition"):
        assert command in out.stdout
