"""Verifiers: reward functions that never raise (``None`` = unscorable) and the timeout pool they run in.

- :mod:`divrl.rewards.pool`: :class:`TimeoutPool`, a persistent process pool with per-call timeouts.
- :mod:`divrl.rewards.math_verify`: final-answer extraction/normalisation and :class:`MathVerifier`
  (exact numbers in-process, math-verify in the pool).

Importing this package is cheap; the math-verify library is imported only inside the worker processes.
"""

from divrl.rewards.math_verify import Grade, MathVerifier
from divrl.rewards.pool import Outcome, TimeoutPool

__all__ = ["Grade", "MathVerifier", "Outcome", "TimeoutPool"]
