"""A verl reward function for DARLING on maths (docs/scale-out.md, "A DARLING run"): the score, DARLING's class key
and the correctness flag divrl's verl estimators read from the reward's extra info.

    python -m verl.trainer.main_ppo ... reward.custom_reward_function.path=examples/verl_math_reward.py \\
        trainer.v1.trainer_mode=divrl_sync algorithm.adv_estimator=divrl_darling      # see verl_darling.sh

It grades with divrl's maths verifier (``MathAccuracyReward``: exact numbers in-process, math-verify in a worker pool
with a timeout) and keys with ``math_answer_key`` (the normalised final answer), the same pieces as the TRL script
``trl_darling_math.py``. Exercised by tests/test_examples.py (the function itself; verl is not run there).
"""

from __future__ import annotations

from typing import Any

from divrl.rewards.trl_rewards import MathAccuracyReward, math_answer_key

_accuracy = MathAccuracyReward(timeout=5.0)


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    score = _accuracy(prompts=[""], completions=[solution_str], solution=[ground_truth])[0]
    return {
        "score": float("nan") if score is None else score,  # NaN: unscorable (a verifier timeout), advantage 0
        "divrl_key": math_answer_key(solution_str),  # DARLING class key, a string (None = its own class)
        "divrl_correct": score == 1.0,  # optional; default: score >= 1.0
    }
