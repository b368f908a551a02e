"""TRL-ready datasets: prompts exactly as divrl's trainer formats them, and the columns the TRL rewards read."""

from __future__ import annotations

from pathlib import Path

import pytest

from divrl.integrations.trl_data import countdown_dataset, math_dataset, task_dataset
from divrl.rewards.trl_rewards import countdown_reward, math_accuracy_reward
from divrl.tasks import countdown, get_task
from divrl.trainer.common import load_task
from divrl.trainer.config import TaskConfig

DATA = Path(__file__).resolve().parents[1] / "data"


def test_countdown_dataset_matches_divrl_train_and_the_reward():
    ds = countdown_dataset("test", n=5)
    task, problems = load_task(TaskConfig(name="countdown", split="test"), n=5)  # what divrl train / eval use
    assert ds.column_names == ["prompt", "numbers", "target"]
    assert ds["prompt"] == [task.prompt(p) for p in problems]
    assert ds["prompt"][0] == countdown.format_prompt(problems[0], task.prompt_width)
    assert [(tuple(n), t) for n, t in zip(ds["numbers"], ds["target"], strict=True)] == [
        (p.numbers, p.target) for p in problems
    ]
    # the reward reads the columns: a reference solution scores 1, a wrong answer 0
    import random

    good = task.reference_completion(problems[0], random.Random(0))
    row = ds[0]
    kwargs = {"numbers": [row["numbers"]] * 2, "target": [row["target"]] * 2}
    assert countdown_reward(prompts=[row["prompt"]] * 2, completions=[good, "<answer>0</answer>"], **kwargs) == [
        1.0,
        0.0,
    ]
    # the partition key the docs name: equal up to commutativity
    assert countdown.equivalence_key("<answer>1+2</answer>") == countdown.equivalence_key("<answer>2+1</answer>")


def test_countdown_dataset_options_and_errors():
    small = countdown_dataset("train", n=3, num_numbers=4)
    assert all(len(n) == 4 for n in small["numbers"])  # the default is 3
    assert countdown_dataset("val", n=3)["prompt"] != countdown_dataset("test", n=3)["prompt"]
    with pytest.raises(ValueError, match="split must be"):
        countdown_dataset("nope", n=1)


def test_math_dataset_reads_a_local_file():
    ds = math_dataset(str(DATA / "gsm8k_mini.jsonl"), n=2, data=str(DATA / "gsm8k_mini.jsonl"))
    task = get_task("math", data=str(DATA / "gsm8k_mini.jsonl"))
    problems = task.problems(str(DATA / "gsm8k_mini.jsonl"), n=2)
    assert ds.column_names == ["prompt", "solution"]
    assert ds["prompt"] == [task.prompt(p) for p in problems]
    assert ds["solution"] == [p.answer for p in problems]
    right = f"so \\boxed{{{problems[0].answer}}}"
    assert math_accuracy_reward(prompts=[ds["prompt"][0]], completions=[right], solution=[ds["solution"][0]]) == [1.0]


def test_task_dataset_refuses_an_unknown_kind_of_task():
    class Other:
        def problems(self, split, n=None, seed=0):
            return [1]

        def prompt(self, p):
            return "x"

    with pytest.raises(ValueError, match="known: countdown, math"):
        task_dataset(Other(), "train")
