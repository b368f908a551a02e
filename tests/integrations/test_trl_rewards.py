"""divrl's verifiers as TRL reward functions (divrl.rewards.trl_rewards): hand-computed cases, properties on arbitrary
text, and one real GRPOTrainer step that calls them. Only the last test needs TRL."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from divrl.rewards.math_verify import MathVerifier
from divrl.rewards.pool import Outcome
from divrl.rewards.trl_rewards import (
    CountdownReward,
    MathAccuracyReward,
    boxed_format_reward,
    countdown_reward,
    math_answer_key,
    think_boxed_format_reward,
)


def chat(text: str) -> list[dict[str, str]]:
    """A conversational completion (TRL's format for chat datasets)."""
    return [{"role": "assistant", "content": text}]


class Hooks:
    """Stands in for TRL's ``log_extra`` / ``log_metric`` keyword arguments."""

    def __init__(self) -> None:
        self.extra: dict[str, list[Any]] = {}
        self.metrics: dict[str, float] = {}

    def kwargs(self) -> dict[str, Any]:
        return {"log_extra": self.extra.__setitem__, "log_metric": self.metrics.__setitem__, "trainer_state": None}


@pytest.fixture(scope="module")
def accuracy():
    """One MathAccuracyReward (one verifier pool) for the module; math-verify runs in its workers."""
    reward = MathAccuracyReward(timeout=20.0, workers=1)
    yield reward
    reward.close()


# ---------------------------------------------------------------------------------------------
# Maths accuracy


def test_math_accuracy_hand_computed(accuracy) -> None:
    completions = [
        r"so \boxed{0.5}",  # 1/2 == 0.5: exact numbers, in-process
        chat(r"<think>...</think> \boxed{\sqrt{50}}"),  # 5\sqrt{2}: math-verify, in the pool
        "The answer is 18.\n#### 18",  # GSM8K marker
        r"\boxed{19}",  # wrong
        "eighteen",  # no final answer
        r"\boxed{3}",  # reference unreadable
        42,  # not text
        [{"role": "assistant", "content": [{"type": "text", "text": r"\boxed{7}"}]}],  # content blocks
    ]
    solution = [r"\frac{1}{2}", r"The side is \boxed{5\sqrt{2}}.", "Natalia sold ... #### 18", "18", "18", "", "1", 7]
    hooks = Hooks()
    got = accuracy(prompts=["p"] * 8, completions=completions, solution=solution, **hooks.kwargs())
    assert got == [1.0, 1.0, 1.0, 0.0, 0.0, None, None, 1.0]
    reasons = hooks.extra["math_accuracy_reward_reason"]
    assert reasons[:3] == ["ok", "ok", "ok"] and reasons[7] == "ok"
    assert reasons[3] == "wrong answer: '19' vs '18'" and reasons[4] == "no final answer"
    assert reasons[5].startswith("bad reference: empty answer") and reasons[6] == "completion is not text: int"
    assert hooks.metrics == {"math_accuracy_reward/unscorable_frac": 2 / 8}


def test_math_accuracy_columns() -> None:
    reward = MathAccuracyReward()  # no pool needed below: plain numbers are graded in-process
    assert reward(prompts=["p"], completions=[r"\boxed{4}"], answer=["#### 4"]) == [1.0]  # GSM8K's column name
    assert reward(prompts=["p"], completions=[r"\boxed{4}"], solution=["4"], answer=["5"]) == [1.0]  # solution first
    own = MathAccuracyReward(answer_column="gold")
    assert own(prompts=["p"], completions=[r"\boxed{4}"], gold=[4.0]) == [1.0]
    with pytest.raises(KeyError, match=r"no column 'gold' \(columns passed: \['answer'\]\)"):
        own(prompts=["p"], completions=[r"\boxed{4}"], answer=["4"], trainer_state=None, log_extra=None)
    with pytest.raises(ValueError, match=r"column 'solution' must hold one value per completion \(2\), got 1"):
        reward(prompts=["p", "p"], completions=["a", "b"], solution=["4"])
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        MathAccuracyReward(timeout=0)


class StuckPool:
    """A verifier pool whose every call times out (as a pathological answer does in the real TimeoutPool)."""

    def call(self, fn: Any, *args: Any, timeout: float) -> Outcome:
        return Outcome(False, None, f"timeout: no result within {timeout:g}s")

    def map(self, fn: Any, arg_tuples: list[tuple[Any, ...]], timeout: float) -> list[Outcome]:
        return [self.call(fn, *args, timeout=timeout) for args in arg_tuples]

    def close(self) -> None:
        pass


def stuck_verifier() -> MathVerifier:
    verifier = MathVerifier(workers=1)  # its own pool never starts: replaced before any call
    verifier.pool = StuckPool()  # type: ignore[assignment]
    return verifier


def test_math_accuracy_timeout_is_none_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    reward = MathAccuracyReward(timeout=3.0, verifier=stuck_verifier(), name="acc")
    hooks = Hooks()
    completions = [r"\boxed{9^{9^{9}}}", r"\boxed{2}", "none", r"\boxed{x}"]
    with caplog.at_level(logging.WARNING, logger="divrl.rewards.trl"):
        got = reward(prompts=["p"] * 4, completions=completions, solution=["x+1", "2", "2", "y"], **hooks.kwargs())
    assert got == [None, 1.0, 0.0, None]  # numbers and missing answers never reach the verifier
    assert hooks.extra["acc_reason"][0] == "timeout: no result within 3s"
    assert hooks.metrics == {"acc/unscorable_frac": 0.5}
    assert [r.getMessage() for r in caplog.records] == [
        "acc: 2 of 4 completions unscorable (reward None; timeout x2): timeout: no result within 3s"
    ]


def test_math_accuracy_format_bonus_counts_only_for_scored_completions() -> None:
    reward = MathAccuracyReward(format_reward=0.1, verifier=stuck_verifier())  # think=True: </think> then \boxed
    completions = [r"a</think> \boxed{2}", r"\boxed{2}", r"a</think> \boxed{3}", r"a</think> \boxed{x}"]
    got = reward(prompts=["p"] * 4, completions=completions, solution=["2", "2", "2", "y"])
    assert got == pytest.approx([1.1, 1.0, 0.1, None])  # the timed-out completion stays None, bonus and all
    plain = MathAccuracyReward(format_reward=0.1, think=False)
    assert plain(prompts=["p"], completions=[r"\boxed{2}"], solution=["2"]) == pytest.approx([1.1])


def test_math_accuracy_pickles_without_its_pool(accuracy) -> None:
    assert accuracy(prompts=["p"], completions=[r"\boxed{\sqrt{4}}"], solution=["2"]) == [1.0]  # pool started
    clone = pickle.loads(pickle.dumps(accuracy))
    assert clone.__name__ == "math_accuracy_reward" and clone._task is None
    assert clone(prompts=["p"], completions=[r"\boxed{\sqrt{4}}"], solution=["2"]) == [1.0]
    clone.close()


def test_math_answer_key() -> None:
    assert math_answer_key(r"so \boxed{0.5}") == math_answer_key(chat(r"\boxed{\dfrac{1}{2}}")) == "1/2"
    assert math_answer_key("#### 1,234") == "1234"
    assert math_answer_key(r"\boxed{x^2+2x+1}") != math_answer_key(r"\boxed{(x+1)^2}")  # syntactic
    assert math_answer_key("no answer") is None and math_answer_key(3) is None


# ---------------------------------------------------------------------------------------------
# Format rewards


def test_format_rewards_hand_computed() -> None:
    completions = [
        r"<think>a</think> so \boxed{4}",
        r"so \boxed{4}",  # no </think>
        r"a</think> b</think> \boxed{4}",  # two </think>
        r"\boxed{4} a</think> done",  # the box comes before </think>
        r"a</think> \boxed{}",  # empty box
        chat(r"a</think> \fbox{4}"),
        None,
    ]
    assert boxed_format_reward(["p"] * 7, completions) == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, None]
    assert think_boxed_format_reward(["p"] * 7, completions) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, None]
    hooks = Hooks()
    think_boxed_format_reward(["p"] * 2, completions[:2], **hooks.kwargs())
    assert hooks.extra == {"think_boxed_format_reward_reason": ["ok", "bad format"]}


# ---------------------------------------------------------------------------------------------
# Countdown


def test_countdown_hand_computed() -> None:
    completions = [
        "7*7=49,10+49=59<answer>10+7*7</answer>",
        chat("<answer>(7*7)+10</answer>"),
        "<answer>10*7</answer>",  # 70
        "<answer>10+7*7+7-7</answer>",  # a third 7
        "10+7*7",  # no tag
        "<answer>10+7*7</answer>",  # with a bad problem row
    ]
    hooks = Hooks()
    numbers = [[10, 7, 7]] * 5 + [[10, -7]]
    got = countdown_reward(["p"] * 6, completions, numbers=numbers, target=[59] * 6, **hooks.kwargs())
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0, None]
    reasons = hooks.extra["countdown_reward_reason"]
    assert reasons[2:5] == ["wrong value 70 != 59", "number reused: 7", "no answer tag"]
    assert reasons[5].startswith("bad reference: Problem.numbers must hold ints")
    # TinyZero's column name, numpy ints, and exact use of every number
    exact, hooks = CountdownReward(exact_use=True), Hooks()
    completions = ["<answer>3*4+5</answer>", "<answer>3*4</answer>"]
    got = exact(["p"] * 2, completions, nums=[np.array([3, 4, 5])] * 2, target=[17, 12], **hooks.kwargs())
    assert got == [1.0, 0.0] and hooks.extra["countdown_reward_reason"] == ["ok", "number unused: 5"]
    with pytest.raises(KeyError, match=r"no column 'numbers' or 'nums'"):
        countdown_reward(["p"], ["x"], target=[3])
    with pytest.raises(ValueError, match="exact_use must be a bool"):
        CountdownReward(exact_use=1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Properties: never raise on model output, one reward per completion, values in the documented set

_FRAGMENTS = st.sampled_from(
    ["\\boxed{", "}", "{", "</think>", "<answer>", "</answer>", "####", "\\frac{1}{2}", "9^{9^{9}}", "+", "7", " "]
)
_TEXT = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=12)), max_size=8).map("".join)
_COMPLETION = st.one_of(_TEXT, _TEXT.map(chat))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(completions=st.lists(_COMPLETION, min_size=1, max_size=4), data=st.data())
def test_rewards_never_raise_on_arbitrary_text(accuracy, completions, data) -> None:
    n = len(completions)
    solution = data.draw(
        st.lists(st.one_of(_TEXT, st.sampled_from(["2", "x+1", "\\frac{1}{2}"])), min_size=n, max_size=n)
    )
    for fn, kwargs, allowed in (
        (accuracy, {"solution": solution}, {0.0, 1.0, None}),
        (boxed_format_reward, {}, {0.0, 1.0}),
        (think_boxed_format_reward, {}, {0.0, 1.0}),
        (countdown_reward, {"numbers": [[10, 7, 7]] * n, "target": [59] * n}, {0.0, 1.0}),
    ):
        got = fn(prompts=["p"] * n, completions=completions, **kwargs)
        assert len(got) == n and set(got) <= allowed, (fn, got)
    for completion in completions:
        key = math_answer_key(completion)
        assert key is None or isinstance(key, str)


def test_rewards_work_without_trl() -> None:
    code = (
        "import sys; sys.modules['trl'] = None\n"  # makes `import trl` raise ImportError
        "from divrl.rewards.trl_rewards import countdown_reward, math_accuracy_reward\n"
        "print(math_accuracy_reward(['p'], ['\\\\boxed{2}'], solution=['2']),"
        " countdown_reward(['p'], ['<answer>1+2</answer>'], numbers=[[1, 2]], target=[3]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[1.0]", "[1.0]"]


def test_completion_text_rule_matches_the_trl_module() -> None:
    trl_module = pytest.importorskip("divrl.integrations.trl")
    from divrl.rewards.trl_rewards import _completion_text

    messages = [{"role": "assistant", "content": "x="}, {"role": "tool", "content": [{"type": "text", "text": "4"}]}]
    for completion in ("a+b", messages, chat("y"), []):
        assert _completion_text(completion) == trl_module.completion_text(completion)


# ---------------------------------------------------------------------------------------------
# One real GRPOTrainer step


SCRIPT = {  # prompt -> its G = 4 completions, with (accuracy, think format, countdown) rewards
    "nums 1 2 target 3:": [
        ("a</think> \\boxed{3}<answer>1+2</answer>", (1.0, 1.0, 1.0)),
        ("\\boxed{4}<answer>1*2</answer>", (0.0, 0.0, 0.0)),
        ("<answer>2+1</answer>", (0.0, 0.0, 1.0)),
        ("a</think> \\boxed{3.0}", (1.0, 1.0, 0.0)),
    ],
    "nums 3 4 target 7:": [  # its reference answer is unreadable: accuracy None throughout
        ("<answer>3+4</answer>", (None, 0.0, 1.0)),
        ("a</think> \\boxed{7}", (None, 1.0, 0.0)),
        ("<answer>3*4</answer>", (None, 0.0, 0.0)),
        ("7", (None, 0.0, 0.0)),
    ],
}


@pytest.mark.parametrize("trainer_kind", ["GRPOTrainer", "DiversityGRPOTrainer"])
def test_grpo_trainer_step_with_divrl_rewards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trainer_kind) -> None:
    """A stock GRPOTrainer (and DiversityGRPOTrainer with DARLING over ``math_answer_key``, as in the README) calls
    the reward functions with the dataset's columns; TRL's reward matrix holds exactly their values (None as NaN),
    its logs carry their metric, and the step trains on the resulting advantages.

    The completions are scripted through TRL's ``rollout_func`` (a random tiny policy would score 0 everywhere);
    the prompts, reward calls, advantages, loss and optimizer step are TRL's own."""
    pytest.importorskip("trl")
    from _tiny import NO_CHECKPOINTING, char_tokenizer, tiny_llama
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from divrl.core.diversity import partition_by_key
    from divrl.integrations.trl import DiversityGRPOTrainer
    from divrl.integrations.trl import countdown_reward as exported_countdown
    from divrl.integrations.trl import math_accuracy_reward as exported_accuracy

    assert exported_countdown is countdown_reward and isinstance(exported_accuracy, MathAccuracyReward)
    base, divrl_args = GRPOTrainer, {}
    if trainer_kind == "DiversityGRPOTrainer":
        base, divrl_args = DiversityGRPOTrainer, {"advantage": "darling", "partition_key": math_answer_key}
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func's "experimental feature" notice
    g = 4
    tok = char_tokenizer()
    seen: dict[str, int] = {}

    def rollout(prompts: list[str], trainer: Any) -> dict[str, Any]:
        texts = []
        for p in prompts:  # TRL hands over each prompt once per completion
            texts.append(SCRIPT[p][seen.get(p, 0) % g][0])
            seen[p] = seen.get(p, 0) + 1
        return {
            "prompt_ids": [tok(p)["input_ids"] for p in prompts],
            "completion_ids": [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts],
            "logprobs": None,
        }

    recorded: list[tuple[list[Any], list[Any], torch.Tensor]] = []

    class Recorded(base):  # type: ignore[misc,valid-type]
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            recorded.append((list(prompts), list(completions), rewards.clone()))
            return rewards

    dataset = Dataset.from_dict(
        {
            "prompt": list(SCRIPT),
            "solution": ["3", ""],
            "numbers": [[1, 2], [3, 4]],
            "target": [3, 7],
        }
    )
    accuracy = MathAccuracyReward(workers=1)
    config = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2 * g, num_generations=g, max_completion_length=32,
        learning_rate=1e-2, max_steps=1, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        bf16=False, **NO_CHECKPOINTING, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Recorded(
        model=tiny_llama(tok), reward_funcs=[accuracy, think_boxed_format_reward, countdown_reward], args=config,
        train_dataset=dataset, processing_class=tok, rollout_func=rollout, **divrl_args,
    )  # fmt: skip
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    try:
        trainer.train()
    finally:
        accuracy.close()
    assert trainer.state.global_step == 1
    assert trainer.reward_func_names == ["math_accuracy_reward", "think_boxed_format_reward", "countdown_reward"]
    (prompts, completions, rewards) = recorded[0]
    assert rewards.shape == (2 * g, 3) and sorted(completions) == sorted(t for v in SCRIPT.values() for t, _ in v)
    for prompt, completion, row in zip(prompts, completions, rewards, strict=True):
        expected = dict(SCRIPT[prompt])[completion]
        assert [None if torch.isnan(v) else float(v) for v in row] == list(expected), completion
    logged = trainer.state.log_history[0]
    assert logged["math_accuracy_reward/unscorable_frac"] == pytest.approx(0.5)
    assert logged["rewards/math_accuracy_reward/mean"] == pytest.approx(0.5)  # nanmean over the 4 scored
    assert logged["rewards/countdown_reward/mean"] == pytest.approx(3 / 8)
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    assert not torch.equal(before, after)  # non-zero advantages reached the update
    if trainer_kind == "DiversityGRPOTrainer":  # DARLING's classes are the normalised final answers
        batch = trainer.last_group_batch
        assert batch is not None and batch.texts is not None and batch.partition is not None
        for texts, labels in zip(batch.texts, batch.partition.tolist(), strict=True):
            assert labels == partition_by_key([math_answer_key(t) for t in texts])
        assert any(len(set(row)) < g for row in batch.partition.tolist())  # "\\boxed{3}" twice: one class
