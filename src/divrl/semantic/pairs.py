"""Labelled response pairs from a task with an exact equivalence key (``divrl classifier pairs``).

For each problem we collect responses -- samples of a policy (default: the shipped ``builtin:countdown-tiny``)
and/or the task's solver reference completions (each a random solution class, spelled with random operand
orders) -- drop exact duplicates and responses without a key (no answer / unparsable: their class is undefined),
and pair every two remaining responses of the same problem. The label is 1 iff their keys are equal
(``task.equivalence_key``: on Countdown the canonical form of the extracted answer, right or wrong). Positives and
negatives are then balanced (or set to a given ratio) by subsampling the larger side (seeded).

DARLING labels its pairs with an LLM judge (App. 9); an exact key is what a verifiable task offers instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from divrl.semantic.train import Pair

__all__ = ["PairStats", "task_pairs"]

SOURCES = ("policy", "reference", "mix")


@dataclass
class PairStats:
    problems: int = 0
    responses: int = 0
    distinct: int = 0
    no_key: int = 0
    positives: int = 0
    negatives: int = 0
    kept_positives: int = 0
    kept_negatives: int = 0
    by_source: dict[str, int] = field(default_factory=dict)


def task_pairs(
    task_name: str = "countdown",
    *,
    problems: int = 400,
    split: str = "train",
    source: str = "mix",
    samples: int = 8,
    references: int = 8,
    model: str = "builtin:countdown-tiny",
    temperature: float = 1.0,
    max_new_tokens: int = 56,
    neg_ratio: float = 1.0,
    seed: int = 0,
    task_options: dict[str, Any] | None = None,
) -> tuple[list[Pair], PairStats]:
    """Generate labelled pairs (see the module docstring). Each pair's ``group`` is the stripped prompt.

    Args:
        task_name: a task in :data:`divrl.tasks.TASKS` with ``equivalence_key`` (and ``reference_completion``
            for ``source`` ``reference``/``mix``).
        problems: how many problems of ``split`` to use.
        source: ``policy`` (samples only), ``reference`` (solver completions only) or ``mix`` (both).
        samples: policy samples per problem (G).
        references: reference completions drawn per problem.
        model: the policy (folder, hub id in the local cache, or ``builtin:...``).
        neg_ratio: keep at most this many negatives per positive (1 = balanced, the default; 0 = keep all);
            when positives outnumber ``neg_ratio`` × negatives, positives are subsampled instead.
    """
    from divrl.tasks import get_task

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if problems < 1 or samples < 1 or references < 1:
        raise ValueError("problems, samples and references must be >= 1")
    task: Any = get_task(task_name, **(task_options or {}))
    if not hasattr(task, "equivalence_key"):
        raise ValueError(f"task {task_name!r} has no equivalence_key; pairs cannot be labelled")
    if source != "policy" and not hasattr(task, "reference_completion"):
        raise ValueError(f"task {task_name!r} has no reference_completion; use --source policy")
    probs = task.problems(split, n=problems, seed=seed)
    prompts = [task.prompt(p) for p in probs]
    per_problem: list[list[tuple[str, str]]] = [[] for _ in probs]  # (text, source)

    if source in ("policy", "mix"):
        from divrl.models import load_policy
        from divrl.models.builtin import resolve_model_path
        from divrl.rollout import sample

        policy, tokenizer = load_policy(resolve_model_path(model))
        ro = sample(
            policy,
            tokenizer,
            prompts,
            num_samples=samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=task.stop,
            seed=seed,
        )
        for p in range(len(probs)):
            per_problem[p] += [(t, "policy") for t in ro.texts[p * samples : (p + 1) * samples]]
    if source in ("reference", "mix"):
        rng = random.Random(f"pairs/{seed}")
        for p, problem in enumerate(probs):
            per_problem[p] += [(task.reference_completion(problem, rng), "reference") for _ in range(references)]

    stats = PairStats(problems=len(probs))
    positives: list[Pair] = []
    negatives: list[Pair] = []
    order_rng = random.Random(f"pairs/order/{seed}")
    for problem, prompt, items in zip(probs, prompts, per_problem, strict=True):
        stats.responses += len(items)
        seen: dict[str, str] = {}
        for text, src in items:
            seen.setdefault(text, src)
        stats.distinct += len(seen)
        keyed: list[tuple[str, str]] = []
        for text, src in seen.items():
            key = task.equivalence_key(problem, text)
            if key is None:
                stats.no_key += 1
                continue
            keyed.append((text, key))
            stats.by_source[src] = stats.by_source.get(src, 0) + 1
        group = prompt.strip()
        for i in range(len(keyed)):
            for j in range(i + 1, len(keyed)):
                (ta, ka), (tb, kb) = keyed[i], keyed[j]
                if order_rng.random() < 0.5:
                    ta, tb = tb, ta
                pair = Pair(ta, tb, int(ka == kb), group)
                (positives if pair.label else negatives).append(pair)
    stats.positives, stats.negatives = len(positives), len(negatives)
    if neg_ratio < 0:
        raise ValueError(f"neg_ratio must be >= 0, got {neg_ratio}")
    if neg_ratio > 0 and positives and negatives:
        rng = random.Random(f"pairs/balance/{seed}")
        n_neg = min(len(negatives), int(neg_ratio * len(positives)))
        n_pos = min(len(positives), max(1, int(len(negatives) / neg_ratio)))
        positives = rng.sample(positives, n_pos) if n_pos < len(positives) else positives
        negatives = rng.sample(negatives, n_neg) if n_neg < len(negatives) else negatives
    stats.kept_positives, stats.kept_negatives = len(positives), len(negatives)
    out = positives + negatives
    random.Random(f"pairs/shuffle/{seed}").shuffle(out)
    return out, stats
