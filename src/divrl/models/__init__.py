"""Policy and tokenizer creation, saving and loading (transformers)."""

from divrl.models.policy import SIZES, PolicySize, build_policy, count_parameters, load_policy, save_policy
from divrl.models.tokenizer import build_char_tokenizer

__all__ = [
    "SIZES",
    "PolicySize",
    "build_char_tokenizer",
    "build_policy",
    "count_parameters",
    "load_policy",
    "save_policy",
]
