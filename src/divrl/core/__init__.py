"""The pure group layer: GroupBatch, diversity signals, advantage estimators, policy losses, metrics.

Imports only torch, numpy and the standard library (``self_bleu`` imports sacrebleu lazily).
"""

from divrl.core.batch import GroupBatch
from divrl.core.registry import Registry, UnknownNameError

__all__ = ["GroupBatch", "Registry", "UnknownNameError"]
