"""Pairwise semantic-equivalence classifiers: P(two responses are equivalent), DARLING's "partition function".

DARLING (arXiv 2509.02534, App. 9; seed-methods.md §2.2) fine-tunes ``Qwen3-Embedding-4B`` as a 2-label sequence
classifier on LLM-labelled pairs and calls two responses equivalent iff ``P_sim > 0.5`` (the math threshold); short
responses are decided by a unigram rule first (:mod:`divrl.semantic.rules`). Neither of its classifiers is released,
so divrl trains its own, small ones:

* ``kind="bi"`` (:class:`BiEncoderClassifier`, the fast default; our design): frozen sentence embeddings
  ``e_a, e_b`` (:mod:`divrl.semantic.embedder`), features ``[|e_a - e_b|, e_a * e_b]`` (symmetric in a and b, so
  the classifier is too), a two-layer MLP head to 2 logits. One embedding per distinct text, so a group of G
  responses costs G encoder passes plus C(G, 2) tiny MLP rows.
* ``kind="cross"`` (:class:`CrossEncoderClassifier`; slower): a small encoder (by default the packaged MiniLM)
  fine-tuned as ``AutoModelForSequenceClassification`` with 2 labels on the pair ``[CLS] a [SEP] b [SEP]``, as
  DARLING does with its larger model. DARLING queries one ordering; we average both orderings so that the decision
  is symmetric (our choice), at twice the cost.

Decision order for a pair (:meth:`EquivalenceClassifier.proba`): identical texts are equivalent (our shortcut; it
only skips a classifier call), then DARLING's short-answer rule when ``short_rule`` is on and both texts are short,
then the model's probability. :meth:`~EquivalenceClassifier.equivalent` is ``proba > threshold`` (strict, as in
DARLING's code).

A checkpoint is a folder: ``config.json`` (kind, embedder, threshold, short_rule, sizes), the weights
(``head.safetensors`` for ``bi``; a ``save_pretrained`` folder ``model/`` for ``cross``) and, after
``divrl classifier train``, ``eval.json``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from divrl.semantic.embedder import DEFAULT_EMBEDDER, Embedder, load_embedder
from divrl.semantic.rules import short_answer_equivalent

__all__ = [
    "KINDS",
    "BiEncoderClassifier",
    "ClassifierConfig",
    "CrossEncoderClassifier",
    "EquivalenceClassifier",
    "PairHead",
    "load_classifier",
    "pair_features",
]

KINDS = ("bi", "cross")
CONFIG_FILE = "config.json"
HEAD_FILE = "head.safetensors"
CROSS_DIR = "model"
FORMAT = "divrl-equivalence-classifier/1"


@dataclass(frozen=True)
class ClassifierConfig:
    """What a checkpoint's ``config.json`` holds."""

    kind: str = "bi"
    """``bi`` (frozen embeddings + MLP head) or ``cross`` (fine-tuned sequence-pair classifier)."""
    embedder: str = DEFAULT_EMBEDDER
    """``bi``: the embedder spec (:func:`~divrl.semantic.embedder.load_embedder`). ``cross``: the base encoder."""
    threshold: float = 0.5
    """Equivalent iff probability > threshold (DARLING's math value: 0.5)."""
    short_rule: bool = True
    """Apply DARLING's short-answer rule before the model (see :mod:`divrl.semantic.rules`)."""
    dim: int = 384
    """``bi``: embedding width D."""
    hidden: int = 256
    """``bi``: MLP hidden width."""
    max_length: int = 256
    """``cross``: most tokens of a tokenised pair."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.threshold, (int, float)) or not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold!r}")
        if not isinstance(self.short_rule, bool):
            raise ValueError(f"short_rule must be a bool, got {self.short_rule!r}")
        for name in ("dim", "hidden", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> ClassifierConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object")
        if data.get("format") != FORMAT:
            raise ValueError(f"{where}: field 'format' must be {FORMAT!r}, got {data.get('format')!r}")
        accepted = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - accepted - {"format"})
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; accepted: {sorted(accepted)}")
        try:
            return cls(**{k: v for k, v in data.items() if k in accepted})
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err


def pair_features(ea: Tensor, eb: Tensor) -> Tensor:
    """``[|e_a - e_b|, e_a * e_b]``: symmetric pair features (the InferSent/Sentence-BERT feature set without the
    order-dependent ``e_a, e_b`` blocks). (N, D), (N, D) -> (N, 2D)."""
    return torch.cat([(ea - eb).abs(), ea * eb], dim=-1)  # (N, 2D)


class PairHead(nn.Module):
    """Two-layer MLP on :func:`pair_features`: ``Linear(2D, H) -> GELU -> Linear(H, 2)``; logit 1 = equivalent."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 2))

    def forward(self, ea: Tensor, eb: Tensor) -> Tensor:
        logits: Tensor = self.net(pair_features(ea, eb))  # (N, 2)
        return logits


def _check_pairs(a: Sequence[str], b: Sequence[str]) -> None:
    if isinstance(a, str) or isinstance(b, str):
        raise ValueError("a and b must be sequences of str (one pair per position), got a single str")
    if len(a) != len(b):
        raise ValueError(f"a and b must have the same length, got {len(a)} and {len(b)}")
    for name, seq in (("a", a), ("b", b)):
        for i, text in enumerate(seq):
            if not isinstance(text, str):
                raise ValueError(f"{name}[{i}] must be str, got {type(text).__name__}")


class EquivalenceClassifier:
    """Base class: the rule-aware decision around a model probability (see the module docstring)."""

    config: ClassifierConfig

    def model_proba(self, a: Sequence[str], b: Sequence[str]) -> Tensor:
        """(N,) the model's P(equivalent) for N pairs, no rules applied, one batched call."""
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        raise NotImplementedError

    @property
    def threshold(self) -> float:
        return float(self.config.threshold)

    def rule_decisions(self, a: Sequence[str], b: Sequence[str]) -> list[bool | None]:
        """Per pair: ``True``/``False`` when a rule decides it (identical texts; the short-answer rule when on),
        ``None`` when the model must."""
        _check_pairs(a, b)
        out: list[bool | None] = []
        for x, y in zip(a, b, strict=True):
            if x == y:
                out.append(True)
            elif self.config.short_rule:
                out.append(short_answer_equivalent(x, y))
            else:
                out.append(None)
        return out

    def proba(self, a: Sequence[str], b: Sequence[str]) -> Tensor:
        """(N,) float P(equivalent): 1/0 where a rule decides, else the model's probability. The model sees only the
        undecided pairs, in one batched call."""
        rules = self.rule_decisions(a, b)
        out = torch.tensor([float(r) if r is not None else float("nan") for r in rules])  # (N,)
        ask = [i for i, r in enumerate(rules) if r is None]
        if ask:
            out[ask] = self.model_proba([a[i] for i in ask], [b[i] for i in ask]).to(out.dtype)
        return out

    def equivalent(self, a: Sequence[str], b: Sequence[str]) -> Tensor:
        """(N,) bool: ``proba > threshold``."""
        return self.proba(a, b) > self.threshold


class BiEncoderClassifier(EquivalenceClassifier):
    """Frozen embedder + :class:`PairHead` (``kind="bi"``)."""

    def __init__(self, embedder: Embedder, head: PairHead, config: ClassifierConfig) -> None:
        if config.kind != "bi":
            raise ValueError(f"BiEncoderClassifier needs config.kind 'bi', got {config.kind!r}")
        if embedder.dim != config.dim:
            raise ValueError(
                f"embedder {embedder.name!r} has width {embedder.dim} but the config says dim={config.dim}"
            )
        self.embedder = embedder
        self.head = head
        self.config = config
        self.head.eval()

    @classmethod
    def new(
        cls,
        embedder: str | Embedder | None = None,
        *,
        hidden: int = 256,
        threshold: float = 0.5,
        short_rule: bool = True,
    ) -> BiEncoderClassifier:
        """An untrained classifier (random head) over ``embedder``."""
        emb = load_embedder(embedder)
        config = ClassifierConfig(
            kind="bi", embedder=emb.name, threshold=threshold, short_rule=short_rule, dim=emb.dim, hidden=hidden
        )
        return cls(emb, PairHead(emb.dim, hidden), config)

    def model_proba(self, a: Sequence[str], b: Sequence[str]) -> Tensor:
        _check_pairs(a, b)
        if len(a) == 0:
            return torch.zeros(0)
        emb = self.embedder.encode(list(a) + list(b))  # (2N, D)  duplicates hit the cache
        n = len(a)
        with torch.no_grad():
            logits = self.head(emb[:n], emb[n:])  # (N, 2)
        proba: Tensor = logits.softmax(-1)[:, 1]  # (N,)
        return proba

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
        save_file(state, str(out / HEAD_FILE))
        (out / CONFIG_FILE).write_text(json.dumps(self.config.to_json(), indent=2) + "\n")
        return out


class CrossEncoderClassifier(EquivalenceClassifier):
    """A sequence-pair classifier (``kind="cross"``): ``AutoModelForSequenceClassification`` with 2 labels."""

    def __init__(self, model: Any, tokenizer: Any, config: ClassifierConfig, *, batch_size: int = 64) -> None:
        if config.kind != "cross":
            raise ValueError(f"CrossEncoderClassifier needs config.kind 'cross', got {config.kind!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.batch_size = batch_size
        self.model.eval()

    @classmethod
    def new(
        cls, base: str | None = None, *, threshold: float = 0.5, short_rule: bool = True, max_length: int = 256
    ) -> CrossEncoderClassifier:
        """A 2-label classifier initialised from a local encoder folder (default: the packaged MiniLM; its
        classification head is freshly initialised)."""
        base = base or DEFAULT_EMBEDDER
        folder = _encoder_folder(base)
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, local_files_only=True)
        config = ClassifierConfig(kind="cross", embedder=base, threshold=threshold, short_rule=short_rule)
        config = dataclasses.replace(config, max_length=max_length)
        return cls(model, tokenizer, config)

    def logits(self, a: Sequence[str], b: Sequence[str]) -> Tensor:
        """(N, 2) logits for the ordered pairs (a_i, b_i), with grad when the model is in training mode."""
        enc = self.tokenizer(
            list(a), list(b), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        device = next(self.model.parameters()).device
        logits: Tensor = self.model(**{k: v.to(device) for k, v in enc.items()}).logits.float()  # (N, 2)
        return logits

    def model_proba(self, a: Sequence[str], b: Sequence[str]) -> Tensor:
        _check_pairs(a, b)
        probs: list[Tensor] = []
        with torch.no_grad():
            for s in range(0, len(a), self.batch_size):
                xa, xb = list(a[s : s + self.batch_size]), list(b[s : s + self.batch_size])
                p_ab = self.logits(xa, xb).softmax(-1)[:, 1]  # (n,)
                p_ba = self.logits(xb, xa).softmax(-1)[:, 1]  # (n,)
                probs.append(((p_ab + p_ba) / 2).cpu())  # symmetrised (our choice)
        return torch.cat(probs) if probs else torch.zeros(0)

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out / CROSS_DIR)
        self.tokenizer.save_pretrained(out / CROSS_DIR)
        (out / CONFIG_FILE).write_text(json.dumps(self.config.to_json(), indent=2) + "\n")
        return out


def _encoder_folder(spec: str) -> str:
    from divrl.semantic.embedder import _MINILM_ALIASES, minilm_path

    if spec.lower() in _MINILM_ALIASES:
        return str(minilm_path())
    return spec


_CACHE: dict[tuple[str, str, int], EquivalenceClassifier] = {}


def load_classifier(path: str | Path, *, device: str = "cpu", reuse: bool = True) -> EquivalenceClassifier:
    """Load a checkpoint folder written by :meth:`EquivalenceClassifier.save` (or ``divrl classifier train``).

    With ``reuse`` (default) a folder already loaded in this process is returned from memory.

    Raises:
        FileNotFoundError: the folder or one of its files is missing (named).
        ValueError: a malformed ``config.json`` (the field is named).
    """
    folder = Path(path).expanduser()
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"classifier checkpoint {str(folder)!r} has no {CONFIG_FILE}")
    key = (str(folder.resolve()), device, cfg_path.stat().st_mtime_ns)  # a re-trained folder is loaded afresh
    if reuse and key in _CACHE:
        return _CACHE[key]
    try:
        data = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_path}: not valid JSON: {err}") from err
    config = ClassifierConfig.from_json(data, str(cfg_path))
    classifier: EquivalenceClassifier
    if config.kind == "bi":
        from safetensors.torch import load_file

        head_path = folder / HEAD_FILE
        if not head_path.is_file():
            raise FileNotFoundError(f"classifier checkpoint {str(folder)!r} has no {HEAD_FILE}")
        head = PairHead(config.dim, config.hidden)
        head.load_state_dict(load_file(str(head_path)))
        classifier = BiEncoderClassifier(load_embedder(config.embedder, device=device), head, config)
    else:
        model_dir = folder / CROSS_DIR
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"classifier checkpoint {str(folder)!r} has no {CROSS_DIR}/config.json")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True)
        model.to(device)
        classifier = CrossEncoderClassifier(model, tokenizer, config)
    _CACHE[key] = classifier
    return classifier
