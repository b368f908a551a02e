#!/usr/bin/env bash
# DARLING + R1-zero-Div's term in verl 0.9 on one 8-GPU node (docs/scale-out.md, "A DARLING run").
# DATA holds train.parquet / test.parquet in verl's format; the reward function is examples/verl_math_reward.py.
# Not run by the test suite (it needs GPUs and verl); tests/test_examples.py checks its syntax and the paths it names,
# tests/integrations/verl/test_verl_launch.py composes its overrides with verl's own config (as main_ppo would).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="${DATA:?set DATA to the folder with train.parquet and test.parquet}"
# The positive-entropy term's gate, read by the actor workers (Ray workers inherit it). It must be set: verl cannot
# serve divrl.core's default gate=correct (its policy loss receives no correctness). gate=all is the other choice.
export DIVRL_VERL_POSITIVE_ENTROPY="${DIVRL_VERL_POSITIVE_ENTROPY:-gate=positive_advantage}"

python -m verl.trainer.main_ppo \
    data.train_files="$DATA/train.parquet" data.val_files="$DATA/test.parquet" \
    actor_rollout_ref.model.path=Qwen/Qwen2.5-Math-1.5B \
    actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.n=8 \
    reward.custom_reward_function.path="$HERE/verl_math_reward.py" \
    trainer.v1.trainer_mode=divrl_sync \
    algorithm.adv_estimator=divrl_darling \
    +algorithm.divrl_options.floor=0.1 \
    actor_rollout_ref.actor.policy_loss.loss_mode=divrl_positive_entropy \
    actor_rollout_ref.actor.entropy_coeff=0 \
    trainer.nnodes=1 trainer.n_gpus_per_node=8 \
    "$@"
