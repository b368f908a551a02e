"""Issue 5's end-to-end path on CPU: a local tiny Qwen2 with a chat template, local GSM8K/MATH-format files,
`divrl train --model ... --data ... --steps 2` and `divrl eval` on the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from divrl.cli import app
from divrl.models import build_char_tokenizer, build_policy, save_policy
from divrl.trainer.common import read_metrics

DATA = Path(__file__).resolve().parent.parent / "data"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qwen2")
    tok = build_char_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    model = build_policy(
        "tiny", arch="qwen2", tokenizer=tok, seed=0, hidden_size=32, num_hidden_layers=2, intermediate_size=64
    )
    save_policy(model, tok, path)
    return path


@pytest.mark.parametrize(("data", "dataset"), [("gsm8k_mini.jsonl", "gsm8k"), ("math_mini.jsonl", "math")])
def test_train_then_eval_on_local_math_data(qwen_folder, tmp_path, data, dataset):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--model", str(qwen_folder),
            "--data", str(DATA / data),
            "--steps", "2",
            "--out", str(run),
            "--set", f"task.options.dataset={dataset}",
            "--set", "task.options.template=chat",
            "--set", "rollout.prompts_per_step=2",
            "--set", "rollout.group_size=2",
            "--set", "rollout.max_new_tokens=12",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2]
    assert all(0.0 <= r["reward"] <= 1.0 for r in records)

    out = tmp_path / "metrics.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "--model", str(run / "checkpoint-000002"),
            "--data", str(DATA / data),
            "--task-option", f"dataset={dataset}",
            "--task-option", "template=chat",
            "--split", "train",
            "--n", "2",
            "--problems", "3",
            "--max-new-tokens", "12",
            "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["num_problems"] == 3 and metrics["n"] == 2
    assert 0.0 <= metrics["pass@1"] <= metrics["pass@2"] <= 1.0
