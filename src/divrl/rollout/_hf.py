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


def reserve_cache(past: Any, room: int) -> None:
    """Give every plain ``DynamicLayer`` of the transformers cache ``past`` space for ``room`` more positions, so that
    each decode step writes its keys and values in place instead of concatenating the whole cache again
    (``torch.cat`` copies it every step: O(L^2) memory traffic over a completion). The values, and so every sample,
    are unchanged (tested bit for bit). Layers of other kinds (sliding windows, quantised, offloaded) and caches of
    other origin are left as they are.

    The layer's class becomes :class:`_ReservedLayer` (a ``DynamicLayer`` whose ``keys`` / ``values`` are views of a
    longer buffer); ``update`` and ``batch_select_indices``, the two calls a decode loop makes, keep the buffer."""
    layers = getattr(past, "layers", None)
    if room < 1 or not isinstance(layers, list) or getattr(past, "offloading", False):
        return
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # pragma: no cover - transformers without per-layer caches
        return
    for layer in layers:
        keys = getattr(layer, "keys", None)
        if type(layer) is DynamicLayer and isinstance(keys, torch.Tensor) and keys.dim() == 4:
            reserved: Any = layer
            reserved.__class__ = _reserved_layer_class(DynamicLayer)
            reserved.reserve(room)


_RESERVED: dict[Any, Any] = {}


def _reserved_layer_class(base: Any) -> Any:
    """:class:`DynamicLayer` with preallocated storage (built once, on first use: importing this module does not
    import transformers)."""
    if base in _RESERVED:
        return _RESERVED[base]

    class _ReservedLayer(base):  # type: ignore[misc]
        """``keys`` / ``values``: (B, H, length, D) views of (B, H, capacity, D) buffers."""

        keys: torch.Tensor
        values: torch.Tensor
        _length: int
        _key_buffer: torch.Tensor
        _value_buffer: torch.Tensor

        def reserve(self, room: int) -> None:
            self._length = int(self.keys.shape[-2])
            self._key_buffer = self._grown(self.keys, self._length + room)
            self._value_buffer = self._grown(self.values, self._length + room)
            self._views()

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            start, end = self._length, self._length + key_states.shape[-2]
            if end > self._key_buffer.shape[-2]:  # out of room: double it
                self._key_buffer = self._grown(self._key_buffer[:, :, :start], 2 * end)
                self._value_buffer = self._grown(self._value_buffer[:, :, :start], 2 * end)
            self._key_buffer[:, :, start:end] = key_states
            self._value_buffer[:, :, start:end] = value_states
            self._length = end
            self._views()
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._key_buffer = self._key_buffer[indices, ...]
            self._value_buffer = self._value_buffer[indices, ...]
            self._views()

        def _plain(self) -> None:
            """Back to a stock ``DynamicLayer`` holding the same values (for any other call on the cache)."""
            self.keys, self.values = self.keys.clone(), self.values.clone()
            del self._key_buffer, self._value_buffer, self._length
            self.__class__ = base

        def _views(self) -> None:
            self.keys = self._key_buffer[:, :, : self._length]  # (B, H, length, D)
            self.values = self._value_buffer[:, :, : self._length]  # (B, H, length, D)

        @staticmethod
        def _grown(states: torch.Tensor, capacity: int) -> torch.Tensor:
            b, h, length, d = states.shape
            buffer = states.new_empty(b, h, capacity, d)  # (B, H, capacity, D)
            buffer[:, :, :length] = states
            return buffer

    def fall_back(name: str) -> Any:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            self._plain()
            return getattr(self, name)(*args, **kwargs)

        call.__name__ = name
        return call

    for name in ("crop", "reset", "batch_repeat_interleave", "reorder_cache", "offload", "prefetch"):
        if hasattr(base, name):  # calls a decode loop does not make: the stock layer's own code, on its own storage
            setattr(_ReservedLayer, name, fall_back(name))
    _RESERVED[base] = _ReservedLayer
    return _ReservedLayer
