"""DARLING's rule for short responses, applied before any classifier.

DARLING (arXiv 2509.02534), official code ``verl/verl/utils/reward_score/partition_reward_vllm_serve.py``
(read through /work/shared/research/seed-methods.md §2.1): when *both* responses have at most 5 whitespace tokens
the classifier is not asked; they are equivalent iff

    2 · |set(u_a) ∩ set(u_b)| >= max(len(u_a), len(u_b))

where ``u`` is the lowercased, whitespace-split unigram *list* (lengths count repeated words, the intersection
does not). Equivalently: shared distinct unigrams / longer length >= 0.5.

Caveat for Countdown: a completion such as ``7*7=49,10+49=59<answer>10+7*7</answer>`` has no whitespace, so it is
one "word" and every pair of completions is short: the rule then reduces to exact string equality and the
classifier is never consulted. Checkpoints therefore record whether the rule is on (``short_rule``).
"""

from __future__ import annotations

__all__ = ["SHORT_MAX_WORDS", "is_short", "short_answer_equivalent"]

SHORT_MAX_WORDS = 5
"""A response with at most this many whitespace tokens is *short* (DARLING's code)."""


def is_short(text: str, max_words: int = SHORT_MAX_WORDS) -> bool:
    """True when ``text`` has at most ``max_words`` whitespace-separated tokens."""
    return len(text.split()) <= max_words


def short_answer_equivalent(a: str, b: str, max_words: int = SHORT_MAX_WORDS) -> bool | None:
    """DARLING's short-response decision: ``True``/``False`` when both texts are short, else ``None`` (ask the
    classifier). Symmetric in ``a`` and ``b``; two empty texts are equivalent (0 >= 0)."""
    ua, ub = a.lower().split(), b.lower().split()
    if len(ua) > max_words or len(ub) > max_words:
        return None
    return 2 * len(set(ua) & set(ub)) >= max(len(ua), len(ub))
