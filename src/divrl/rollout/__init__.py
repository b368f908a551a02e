"""Batched sampling (hand-written KV-cache loop) and per-token log-probs of completions."""

from divrl.rollout.logprobs import token_logprobs, token_statistics
from divrl.rollout.sampler import Rollouts, sample

__all__ = ["Rollouts", "sample", "token_logprobs", "token_statistics"]
