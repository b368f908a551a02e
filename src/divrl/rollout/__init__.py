"""Batched sampling (hand-written KV-cache loop) and per-token log-probs of completions."""

from divrl.rollout.logprobs import token_logprobs, token_statistics
from divrl.rollout.sampler import Rollouts, concat_rollouts, sample

__all__ = ["Rollouts", "concat_rollouts", "sample", "token_logprobs", "token_statistics"]
