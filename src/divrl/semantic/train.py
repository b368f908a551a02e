"""Training and evaluation of equivalence classifiers on labelled pairs (``divrl classifier train``).

Pairs come as JSONL, one object per line: ``{"a": str, "b": str, "label": 0|1}`` plus an optional ``"group"``
(e.g. the prompt). Held-out evaluation splits by group when every pair has one, so no prompt is in both halves.

The loss is cross-entropy on 2 logits with inverse-frequency class weights ``w_c = N / (2 N_c)`` (DARLING App. 9
and ``finetune_classifier.py``: "cross-entropy with inverse-frequency class weights"; the exact normalisation of
the weights is ours -- any positive rescaling gives the same minimiser). The evaluation reports accuracy, F1 of
the *equivalent* class, the confusion matrix and the majority-class baseline (the training set's majority label
predicted for every held-out pair).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from divrl.semantic.classifier import (
    KINDS,
    BiEncoderClassifier,
    CrossEncoderClassifier,
    EquivalenceClassifier,
)
from divrl.semantic.embedder import DEFAULT_EMBEDDER, Embedder

__all__ = [
    "Pair",
    "TrainOptions",
    "binary_metrics",
    "class_weights",
    "evaluate_classifier",
    "read_pairs",
    "split_pairs",
    "train_classifier",
    "write_pairs",
]


SWEEP_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
"""Thresholds at which :func:`evaluate_classifier` also reports the model's metrics (a partition's transitive closure
amplifies false positives, so a threshold above 0.5 can agree better with exact classes)."""


@dataclass(frozen=True)
class Pair:
    """One labelled pair: ``label`` 1 = equivalent."""

    a: str
    b: str
    label: int
    group: str | None = None


def read_pairs(path: str | Path) -> list[Pair]:
    """Read a pairs JSONL file (blank lines are skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line, as ``FILE:LINE: what is wrong`` (bad JSON, not an object, a missing or
            mistyped ``a``/``b``/``label``/``group``), or no pairs at all.
    """
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"pairs file {str(src)!r} does not exist")
    pairs: list[Pair] = []
    with src.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{src}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON: {err.msg}") from err
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object with fields a, b, label; got {type(obj).__name__}")
            for name in ("a", "b"):
                if name not in obj:
                    raise ValueError(f"{where}: missing field {name!r}")
                if not isinstance(obj[name], str):
                    raise ValueError(f"{where}: field {name!r} must be a string, got {type(obj[name]).__name__}")
            if "label" not in obj:
                raise ValueError(f"{where}: missing field 'label'")
            label = obj["label"]
            if isinstance(label, bool):
                label = int(label)
            if not isinstance(label, int) or label not in (0, 1):
                raise ValueError(f"{where}: field 'label' must be 0 or 1 (or true/false), got {obj['label']!r}")
            group = obj.get("group")
            if group is not None and not isinstance(group, (str, int)):
                raise ValueError(f"{where}: field 'group' must be a string or an int, got {type(group).__name__}")
            pairs.append(Pair(obj["a"], obj["b"], label, None if group is None else str(group)))
    if not pairs:
        raise ValueError(f"{src}: no pairs (the file is empty)")
    return pairs


def write_pairs(records: Iterable[Pair | dict[str, Any]], path: str | Path) -> int:
    """Write pairs (``Pair`` objects or dicts with at least a, b, label) as JSONL; returns the count."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for rec in records:
            obj = {"a": rec.a, "b": rec.b, "label": rec.label, "group": rec.group} if isinstance(rec, Pair) else rec
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    return n


def split_pairs(pairs: Sequence[Pair], eval_fraction: float, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out). By group when every pair has one (whole groups go to one side), else by pair.

    ``eval_fraction`` of the groups (or pairs), rounded, at least one when ``eval_fraction > 0`` and at least one
    left for training.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if eval_fraction == 0.0:
        return list(pairs), []
    rng = random.Random(seed)
    if all(p.group is not None for p in pairs):
        groups = sorted({p.group for p in pairs if p.group is not None})
        if len(groups) < 2:
            raise ValueError("held-out split: the pairs have a single group; pass --eval-pairs or more groups")
        rng.shuffle(groups)
        k = min(max(1, round(eval_fraction * len(groups))), len(groups) - 1)
        held = set(groups[:k])
        return [p for p in pairs if p.group not in held], [p for p in pairs if p.group in held]
    if len(pairs) < 2:
        raise ValueError("held-out split needs at least 2 pairs")
    order = list(range(len(pairs)))
    rng.shuffle(order)
    k = min(max(1, round(eval_fraction * len(pairs))), len(pairs) - 1)
    held_idx = set(order[:k])
    return [p for i, p in enumerate(pairs) if i not in held_idx], [p for i, p in enumerate(pairs) if i in held_idx]


def class_weights(labels: Tensor) -> Tensor:
    """Inverse-frequency weights ``w_c = N / (2 N_c)`` for labels in {0, 1} (balanced classes give 1, 1).

    Raises:
        ValueError: a class is absent (a classifier cannot learn it).
    """
    counts = torch.bincount(labels.long(), minlength=2).to(torch.float32)  # (2,)
    if counts.numel() != 2 or bool((counts == 0).any()):
        raise ValueError(f"training pairs need both labels 0 and 1, got counts {counts.tolist()}")
    return counts.sum() / (2 * counts)  # (2,)


def binary_metrics(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 of class 1 (0 where undefined) and the confusion matrix
    ``[[tn, fp], [fn, tp]]`` (rows: true label 0, 1; columns: predicted 0, 1)."""
    if len(labels) != len(predictions):
        raise ValueError(f"labels and predictions differ in length: {len(labels)} vs {len(predictions)}")
    tp = sum(1 for y, p in zip(labels, predictions, strict=True) if y == 1 and p == 1)
    tn = sum(1 for y, p in zip(labels, predictions, strict=True) if y == 0 and p == 0)
    fp = sum(1 for y, p in zip(labels, predictions, strict=True) if y == 0 and p == 1)
    fn = sum(1 for y, p in zip(labels, predictions, strict=True) if y == 1 and p == 0)
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": n,
        "accuracy": (tp + tn) / n if n else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion": [[tn, fp], [fn, tp]],
    }


@dataclass(frozen=True)
class TrainOptions:
    """Hyperparameters of :func:`train_classifier` (defaults: what ``divrl classifier train`` uses)."""

    kind: str = "bi"
    embedder: str = DEFAULT_EMBEDDER
    """``bi``: embedder spec; ``cross``: base encoder folder or ``all-MiniLM-L6-v2``."""
    hidden: int = 256
    steps: int = 400
    batch_size: int = 128
    lr: float | None = None
    """Default: 1e-3 for ``bi`` (head only), 3e-5 for ``cross`` (whole encoder)."""
    weight_decay: float = 0.01
    threshold: float = 0.5
    short_rule: bool = True
    seed: int = 0
    max_length: int = 128
    """``cross``: token limit of a pair."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("hidden", "steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def train_classifier(
    pairs: Sequence[Pair],
    options: TrainOptions | None = None,
    *,
    embedder: Embedder | None = None,
    log: Callable[[str], None] | None = None,
) -> EquivalenceClassifier:
    """Train a classifier of ``options.kind`` on ``pairs`` (class-weighted cross-entropy, AdamW).

    ``bi``: every distinct text is embedded once (the embedder is frozen), then the head is trained on random
    mini-batches of pairs. ``cross``: the whole encoder is fine-tuned on mini-batches, each pair in a random order
    (DARLING trains on both orders), with 10% linear warm-up then linear decay. ``embedder`` overrides
    ``options.embedder`` for ``bi`` (e.g. one already loaded).
    """
    opts = options or TrainOptions()
    if not pairs:
        raise ValueError("train_classifier: no training pairs")
    torch.manual_seed(opts.seed)
    labels = torch.tensor([p.label for p in pairs])  # (N,)
    weights = class_weights(labels)  # (2,)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    gen = torch.Generator().manual_seed(opts.seed)
    say = log or (lambda _msg: None)
    n = len(pairs)
    every = max(1, opts.steps // 5)

    if opts.kind == "bi":
        clf = BiEncoderClassifier.new(
            embedder if embedder is not None else opts.embedder,
            hidden=opts.hidden,
            threshold=opts.threshold,
            short_rule=opts.short_rule,
        )
        texts = list(dict.fromkeys([p.a for p in pairs] + [p.b for p in pairs]))
        index = {t: i for i, t in enumerate(texts)}
        emb = clf.embedder.encode(texts)  # (U, D)
        ia = torch.tensor([index[p.a] for p in pairs])  # (N,)
        ib = torch.tensor([index[p.b] for p in pairs])  # (N,)
        opt = torch.optim.AdamW(clf.head.parameters(), lr=opts.lr or 1e-3, weight_decay=opts.weight_decay)
        clf.head.train()
        threads = torch.get_num_threads()
        # The head's matrices are tiny: one thread avoids thread-sync overhead that, on a loaded 2-core machine,
        # made each step ~65x slower (0.17 s vs 2.6 ms measured).
        torch.set_num_threads(1)
        try:
            for step in range(opts.steps):
                idx = torch.randint(n, (min(opts.batch_size, n),), generator=gen)  # (B,)
                logits = clf.head(emb[ia[idx]], emb[ib[idx]])  # (B, 2)
                loss = loss_fn(logits, labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if (step + 1) % every == 0:
                    say(f"step {step + 1}/{opts.steps} loss {loss.item():.4f}")
        finally:
            torch.set_num_threads(threads)
        clf.head.eval()
        return clf

    clf_x = CrossEncoderClassifier.new(
        opts.embedder, threshold=opts.threshold, short_rule=opts.short_rule, max_length=opts.max_length
    )
    model = clf_x.model
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr or 3e-5, weight_decay=opts.weight_decay)
    warm = max(1, opts.steps // 10)

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (opts.steps - step) / max(1, opts.steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    for step in range(opts.steps):
        rows: list[int] = torch.randint(n, (min(opts.batch_size, n),), generator=gen).tolist()
        flip = torch.rand(len(rows), generator=gen) < 0.5  # (B,)
        xa = [pairs[i].b if f else pairs[i].a for i, f in zip(rows, flip.tolist(), strict=True)]
        xb = [pairs[i].a if f else pairs[i].b for i, f in zip(rows, flip.tolist(), strict=True)]
        logits = clf_x.logits(xa, xb)  # (B, 2)
        loss = loss_fn(logits, labels[rows].to(logits.device))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % every == 0:
            say(f"step {step + 1}/{opts.steps} loss {loss.item():.4f}")
    model.eval()
    return clf_x


def evaluate_classifier(
    classifier: EquivalenceClassifier, pairs: Sequence[Pair], *, majority_label: int | None = None
) -> dict[str, Any]:
    """Held-out metrics of a classifier on labelled pairs.

    Returns a JSON-ready dict: ``model`` (the classifier's own decisions, ``P > threshold``, no rules),
    ``with_rules`` (the decisions a partition uses: identical texts, then the short-answer rule when on, then the
    model), ``majority`` (every pair predicted ``majority_label``, normally the *training* majority; default: the
    majority label of ``pairs``), ``best_constant`` (the held-out majority predicted for every pair: the most
    accurate constant classifier, which matters when the training pairs were balanced and these are not),
    ``rule_coverage`` (share of pairs a rule decided), ``positive_rate`` and ``model_by_threshold`` (the model's
    metrics at each of :data:`SWEEP_THRESHOLDS`).
    """
    if not pairs:
        raise ValueError("evaluate_classifier: no pairs")
    a, b = [p.a for p in pairs], [p.b for p in pairs]
    y = [p.label for p in pairs]
    thr = classifier.threshold
    p_model = classifier.model_proba(a, b)  # (N,)
    rules = classifier.rule_decisions(a, b)
    p_full = torch.tensor(
        [float(r) if r is not None else float(pm) for r, pm in zip(rules, p_model.tolist(), strict=True)]
    )
    positives = sum(y)
    best = int(positives * 2 > len(y))  # the held-out majority (ties: 0), the best constant prediction
    if majority_label is None:
        majority_label = int(positives * 2 >= len(y))
    out: dict[str, Any] = {
        "n": len(y),
        "positive_rate": positives / len(y),
        "threshold": thr,
        "model": binary_metrics(y, (p_model > thr).long().tolist()),
        "with_rules": binary_metrics(y, (p_full > thr).long().tolist()),
        "majority": {"label": majority_label, **binary_metrics(y, [majority_label] * len(y))},
        "best_constant": {"label": best, **binary_metrics(y, [best] * len(y))},
        "rule_coverage": sum(r is not None for r in rules) / len(y),
    }
    mean_logloss = -sum(
        math.log(max(pm, 1e-7)) if yy else math.log(max(1 - pm, 1e-7))
        for yy, pm in zip(y, p_model.tolist(), strict=True)
    ) / len(y)
    out["model"]["log_loss"] = mean_logloss
    out["model_by_threshold"] = [
        {"threshold": t, **binary_metrics(y, (p_model > t).long().tolist())} for t in SWEEP_THRESHOLDS
    ]
    return out
