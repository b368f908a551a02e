"""Small helpers for driving arbitrary HF-style causal LMs."""

from __future__ import annotations

import inspect
from typing import Any

import torch


def model_device(model: Any) -> torch.device:
    """The device of the model's parameters (CPU for a parameter-free model)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return torch.device(next(model.parameters()).device)
    except (AttributeError, StopIteration):
        return torch.device("cpu")


_ACCEPTS: dict[tuple[type, str], bool] = {}


def accepts(model: Any, arg: str) -> bool:
    """Whether ``model.forward`` names ``arg`` in its signature (cached per class). A peft wrapper's forward
    takes ``**kwargs`` and passes them through, so its base model's signature is the one that counts; likewise
    the module inside a ``torch.compile`` wrapper."""
    model = getattr(model, "_orig_mod", model)
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    key = (type(base), arg)
    if key not in _ACCEPTS:
        try:
            _ACCEPTS[key] = arg in inspect.signature(base.forward).parameters
        except (TypeError, ValueError):
            _ACCEPTS[key] = False
    return _ACCEPTS[key]


def cache_arg(model: Any) -> str:
    """The name under which ``model.forward`` takes its KV cache, and its output returns it: ``"cache"`` when the
    signature names it (transformers >= 5.24, which deprecates ``past_key_values`` and removes it in 5.40), else
    ``"past_key_values"`` (older transformers, and models of other origin)."""
    return "cache" if accepts(model, "cache") else "past_key_values"
