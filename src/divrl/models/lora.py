"""Optional LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") through ``peft``.

``apply_lora(model, cfg)`` wraps a loaded policy so that only the low-rank adapters train; the frozen base can then
serve as the KL reference (:class:`AdaptersDisabled`) instead of a second copy of the weights. A LoRA checkpoint is
peft's adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) plus the tokenizer;
:func:`divrl.models.load_policy` opens it. ``peft`` is an optional dependency (``pip install divrl[lora]``), imported
only when LoRA is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from divrl.trainer.config import ModelConfig

ADAPTER_CONFIG = "adapter_config.json"


def _import_peft() -> Any:
    try:
        import peft
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("model.lora_r > 0 needs peft: pip install 'divrl[lora]' (or pip install peft)") from exc
    return peft


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (False when peft is not installed)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def save_weights(model: Any, path: str | Path) -> None:
    """``model.save_pretrained(path)``; for a peft model without the embedding-layer check (divrl never resizes
    the vocabulary, and peft would look for the base's config.json, which a ``builtin:`` base does not have)."""
    if is_peft_model(model):
        model.save_pretrained(path, save_embedding_layers=False)
    else:
        model.save_pretrained(path)


def is_adapter_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by a peft model's ``save_pretrained`` (it holds ``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def portable_base_path(path: str) -> str:
    """The base reference stored in a checkpoint's ``adapter_config.json``: ``builtin:<name>`` and hub ids unchanged,
    an existing local folder as an absolute path (so the checkpoint loads from any working directory)."""
    from divrl.models.builtin import PREFIX

    if path.startswith(PREFIX):
        return path
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else path


def validate_lora(cfg: ModelConfig) -> None:
    """Raise ``ValueError`` naming the ``model.lora_*`` field that is out of range."""
    if not isinstance(cfg.lora_r, int) or isinstance(cfg.lora_r, bool) or cfg.lora_r < 0:
        raise ValueError(f"model.lora_r must be an int >= 0 (0 = full fine-tuning), got {cfg.lora_r!r}")
    if cfg.lora_r == 0:
        return
    if not cfg.lora_alpha > 0:
        raise ValueError(f"model.lora_alpha must be > 0, got {cfg.lora_alpha!r}")
    if not 0.0 <= cfg.lora_dropout < 1.0:
        raise ValueError(f"model.lora_dropout must be in [0, 1), got {cfg.lora_dropout!r}")
    if not cfg.lora_target_modules:
        raise ValueError("model.lora_target_modules must name at least one module when model.lora_r > 0")


def apply_lora(model: Any, cfg: ModelConfig) -> Any:
    """Wrap ``model`` with fresh LoRA adapters when ``cfg.lora_r > 0``; otherwise return it unchanged.

    The adapters are ``peft.LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
    target_modules=lora_target_modules, task_type="CAUSAL_LM")``: each targeted linear layer computes
    ``W x + (lora_alpha / r) · B A x`` with ``B`` initialised to zero (so the wrapped model starts equal to the base)
    and ``A`` drawn from the global torch RNG (seed it first for a reproducible run). Only ``A`` and ``B`` require
    grad. A model that already carries adapters (a resumed checkpoint loaded with ``trainable_adapter=True``) is
    returned unchanged.

    ``model`` must have been loaded from ``cfg.path``: the checkpoint's ``adapter_config.json`` records
    :func:`portable_base_path` of it as ``base_model_name_or_path``, and :func:`divrl.models.load_policy` reloads the
    base from there.

    Raises:
        ValueError: a ``model.lora_*`` field out of range, or target modules that the model does not have.
    """
    validate_lora(cfg)
    if cfg.lora_r == 0 or is_peft_model(model):
        return model
    peft = _import_peft()
    config = peft.LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        wrapped = peft.get_peft_model(model, config)
    except ValueError as exc:
        raise ValueError(f"model.lora_target_modules={list(cfg.lora_target_modules)!r}: {exc}") from exc
    # peft records the base's resolved name_or_path; keep ``builtin:...`` / an absolute folder instead
    wrapped.peft_config["default"].base_model_name_or_path = portable_base_path(cfg.path)
    return wrapped


def load_adapter(base: Any, folder: str | Path, *, trainable: bool) -> Any:
    """``PeftModel.from_pretrained(base, folder)``: trainable adapters (for resuming) or, with ``trainable=False``,
    the adapters merged into the base weights (``merge_and_unload``: a plain transformers model for eval)."""
    peft = _import_peft()
    model = peft.PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)
    return model if trainable else model.merge_and_unload()


def adapter_base_path(folder: str | Path) -> str:
    """``base_model_name_or_path`` of an adapter folder (``ValueError`` naming the file when it is missing)."""
    import json

    config_file = Path(folder) / ADAPTER_CONFIG
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{str(config_file)!r} has no base_model_name_or_path; cannot tell which base to load")
    return str(base)


class AdaptersDisabled:
    """The frozen base of a peft model, seen through ``disable_adapter()``: a KL reference without a second copy.

    Calling it runs the wrapped model in eval mode with its adapters switched off (for LoRA exactly the base's
    ``W x``), then restores the adapters and the train/eval mode. It is not an ``nn.Module`` and owns no parameters,
    so nothing here is trained, saved or counted twice.
    """

    def __init__(self, peft_model: Any) -> None:
        if not is_peft_model(peft_model):
            raise TypeError(f"AdaptersDisabled needs a peft.PeftModel, got {type(peft_model).__name__}")
        self.peft_model = peft_model

    @property
    def device(self) -> torch.device:
        return torch.device(self.peft_model.device)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        model = self.peft_model
        was_training = model.training
        model.eval()
        try:
            with model.disable_adapter():
                return model(*args, **kwargs)
        finally:
            model.train(was_training)

    __call__ = forward
