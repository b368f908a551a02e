"""Tiny causal-LM policies built from transformers configs, and saving/loading them as plain HF folders.

``build_policy("tiny")`` is a randomly initialised Llama (or Qwen2) sized for CPU RL runs; the numbers behind the two
named sizes are in ``shared/research/cpu-feasibility.md`` §2-§6 (H=128: about 75 GRPO steps per 5 minutes on 2 cores,
H=256: about 28). A saved policy is an ordinary ``save_pretrained`` folder, so ``AutoModelForCausalLM.from_pretrained``
and ``AutoTokenizer.from_pretrained`` open it without divrl (see :func:`save_policy` for a qwen2 caveat), and
:func:`load_policy` opens any local HF causal LM, or a LoRA adapter folder on top of one (:mod:`divrl.models.lora`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from divrl.models.lora import adapter_base_path, is_adapter_folder, load_adapter
from divrl.models.tokenizer import build_char_tokenizer

Arch = Literal["llama", "qwen2"]


@dataclass(frozen=True)
class PolicySize:
    """Shape of a decoder-only policy (fields map 1:1 onto ``LlamaConfig`` / ``Qwen2Config``).

    Attributes:
        hidden_size: model width H.
        num_hidden_layers: decoder blocks.
        num_attention_heads: query heads (head dim = H / heads).
        num_key_value_heads: key/value heads (= heads: plain multi-head attention; fewer: GQA).
        intermediate_size: SwiGLU MLP width.
        max_position_embeddings: longest prompt + completion the RoPE config is declared for.
        tie_word_embeddings: share the input embedding and the LM head (the vocab is tiny, so this barely matters).
    """

    hidden_size: int
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 256
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "tie_word_embeddings" and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"PolicySize.{f.name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"PolicySize.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"PolicySize.num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )


SIZES: dict[str, PolicySize] = {
    # about 1.06 M parameters with the 100-token char vocab (Llama); ~9 k generated tok/s at B=256 on 2 cores
    "tiny": PolicySize(hidden_size=128, intermediate_size=512),
    # about 4.2 M parameters; ~3.3 k generated tok/s at B=256 on 2 cores
    "small": PolicySize(hidden_size=256, intermediate_size=1024),
}

_ARCHS: dict[str, tuple[Any, Any]] = {  # (config class, model class)
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}


def build_policy(
    size: str | PolicySize = "tiny",
    arch: Arch = "llama",
    tokenizer: PreTrainedTokenizerBase | None = None,
    seed: int | None = None,
    **overrides: Any,
) -> PreTrainedModel:
    """A randomly initialised causal LM of a named size.

    Args:
        size: a key of :data:`SIZES` or a :class:`PolicySize`.
        arch: ``"llama"`` (``LlamaForCausalLM``) or ``"qwen2"`` (``Qwen2ForCausalLM``: same block plus q/k/v biases).
        tokenizer: fixes ``vocab_size`` (``len(tokenizer)``) and the pad/bos/eos ids; default
            :func:`~divrl.models.tokenizer.build_char_tokenizer`.
        seed: seeds the weight initialisation without touching the global RNG state; ``None`` uses the global RNG.
        **overrides: :class:`PolicySize` fields to replace, e.g. ``hidden_size=32`` for tests.

    Raises:
        ValueError: unknown ``size`` (the message lists the known ones), unknown ``arch``, or a bad override.
    """
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown policy size {size!r}; known sizes: {', '.join(sorted(SIZES))}")
        shape = SIZES[size]
    elif isinstance(size, PolicySize):
        shape = size
    else:
        raise ValueError(f"size must be a name in {sorted(SIZES)} or a PolicySize, got {type(size).__name__}")
    if arch not in _ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known archs: {', '.join(sorted(_ARCHS))}")
    if overrides:
        known = {f.name for f in dataclasses.fields(PolicySize)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown build_policy override(s) {unknown}; PolicySize fields: {sorted(known)}")
        shape = dataclasses.replace(shape, **overrides)

    tok = tokenizer if tokenizer is not None else build_char_tokenizer()
    config_cls, model_cls = _ARCHS[arch]
    config = config_cls(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **dataclasses.asdict(shape),
    )
    if seed is None:
        model: PreTrainedModel = model_cls(config)
        return model
    with torch.random.fork_rng(devices=[]):  # seed the init only; leave the caller's RNG stream alone
        torch.manual_seed(seed)
        model = model_cls(config)
    return model


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters, each shared (tied) tensor counted once."""
    params = {id(p): p for p in model.parameters() if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in params.values())


def save_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """``save_pretrained`` the model and tokenizer into one folder (created if needed); returns the folder.

    The folder opens with ``AutoModelForCausalLM.from_pretrained`` and, for ``arch="llama"``,
    ``AutoTokenizer.from_pretrained``. Caveat (transformers 5): for a ``qwen2`` config, ``AutoTokenizer`` ignores the
    saved ``tokenizer_class`` and builds a ``Qwen2Tokenizer``, which mangles the char tokenizer (it drops spaces and
    newlines); :func:`load_policy`, or ``PreTrainedTokenizerFast.from_pretrained(path)``, loads it correctly.
    """
    from divrl.models.lora import save_weights

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out)
    tokenizer.save_pretrained(out)
    return out


def load_policy(
    path_or_id: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    *,
    local_files_only: bool = False,
    trainable_adapter: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` from a ``save_pretrained`` folder or a hub id, in eval mode on ``device``.

    Args:
        path_or_id: a local folder (e.g. written by :func:`save_policy`), a LoRA adapter folder (a peft
            ``save_pretrained`` with ``adapter_config.json``, e.g. a ``model.lora_r > 0`` RL checkpoint),
            ``builtin:countdown-tiny`` (a policy shipped with divrl, see :mod:`divrl.models.builtin`) or a hub id
            already in the local HF cache.
        device: where to put the model.
        dtype: ``torch.float32`` / ``"bfloat16"`` / ...; ``None`` keeps the dtype stored in the checkpoint's config.
        local_files_only: never touch the network for a hub id (set ``HF_HUB_OFFLINE=1`` for the same effect).
        trainable_adapter: for an adapter folder only: return the ``peft.PeftModel`` with trainable adapters (the RL
            trainer's resume) instead of the adapters merged into a plain transformers model (``merge_and_unload``,
            for eval). The base is loaded with this function from the adapter's ``base_model_name_or_path``; the
            tokenizer comes from the adapter folder when it holds one, else from the base.

    Raises:
        FileNotFoundError: a path-like argument that does not exist, or a folder without ``config.json`` (or
            ``adapter_config.json``).
        OSError: a hub id that cannot be loaded (not cached and offline); the message names the id.
        ValueError: an adapter folder whose ``adapter_config.json`` names no base model.
    """
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype name (e.g. 'float32', 'bfloat16')")
        dtype = resolved
    from divrl.models.builtin import resolve_model_path

    path_or_id = resolve_model_path(str(path_or_id))  # builtin:<name> -> the shipped folder
    source = Path(path_or_id).expanduser()
    if source.is_dir() and is_adapter_folder(source):
        return _load_adapter_folder(source, device, dtype, local_files_only, trainable_adapter)
    if source.is_dir():
        if not (source / "config.json").is_file():
            raise FileNotFoundError(
                f"{str(source)!r} has no config.json (nor adapter_config.json); expected a save_pretrained folder"
            )
        model, tokenizer = _from_pretrained(str(source), dtype, local_files_only=True)
    elif source.exists() or _looks_like_path(str(path_or_id)):
        raise FileNotFoundError(f"policy folder {str(path_or_id)!r} does not exist (or is not a folder)")
    else:
        hub_id = str(path_or_id)
        try:
            # the local HF cache first: an online lookup with no network retries for ~45 s before it gives up
            model, tokenizer = _from_pretrained(hub_id, dtype, local_files_only=True)
        except OSError as cache_miss:
            if local_files_only:
                raise OSError(
                    f"could not load policy {hub_id!r}: it is not in the local HF cache and local_files_only=True; "
                    f"pass a local save_pretrained folder instead. Cause: {cache_miss}"
                ) from cache_miss
            try:
                model, tokenizer = _from_pretrained(hub_id, dtype, local_files_only=False)
            except OSError as err:
                raise OSError(
                    f"could not load policy {hub_id!r} from the hub or the local HF cache (offline?); "
                    f"pass a local save_pretrained folder instead. Cause: {err}"
                ) from err
    loaded: Any = model  # transformers' decorated .to() confuses mypy
    loaded.to(device)
    loaded.eval()
    return model, tokenizer


def _load_adapter_folder(
    folder: Path,
    device: str | torch.device,
    dtype: torch.dtype | None,
    local_files_only: bool,
    trainable: bool,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Base (from ``base_model_name_or_path``, itself possibly an adapter folder) + the adapter of ``folder``."""
    base, tokenizer = load_policy(adapter_base_path(folder), device, dtype, local_files_only=local_files_only)
    if (folder / "tokenizer_config.json").is_file():
        tokenizer = _load_tokenizer(str(folder), local_files_only=True)
    model: Any = load_adapter(base, folder, trainable=trainable)
    model.to(device)
    model.eval()
    return model, tokenizer


_GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def _from_pretrained(
    target: str, dtype: torch.dtype | None, *, local_files_only: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = _load_tokenizer(target, local_files_only=local_files_only)
    model = AutoModelForCausalLM.from_pretrained(
        target, dtype=dtype if dtype is not None else "auto", local_files_only=local_files_only
    )
    return model, tokenizer


def _load_tokenizer(target: str, *, local_files_only: bool) -> PreTrainedTokenizerBase:
    tokenizer_config = Path(target) / "tokenizer_config.json"
    declared = json.loads(tokenizer_config.read_text()).get("tokenizer_class") if tokenizer_config.is_file() else None
    if declared in _GENERIC_TOKENIZER_CLASSES:
        # transformers 5's AutoTokenizer swaps in the model type's own class for some types (qwen2 -> Qwen2Tokenizer,
        # which rebuilds the normaliser/pre-tokeniser and breaks divrl's char tokenizer); the generic class loads
        # tokenizer.json exactly as saved.
        tokenizer: PreTrainedTokenizerBase = PreTrainedTokenizerFast.from_pretrained(
            target, local_files_only=local_files_only
        )
    else:
        tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=local_files_only)
    return tokenizer


def _looks_like_path(s: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else (``./x``, ``/x``, ``a/b/c``, ``~/x``) is a path."""
    return s.startswith((".", "/", "~")) or s.count("/") > 1 or "\\" in s
