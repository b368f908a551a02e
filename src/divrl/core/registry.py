"""Named registries with one signature each (advantage estimators, policy losses, ...).

The mechanics follow verl's ``register_adv_est``: a module-level mapping filled by a decorator.
Registering a *different* object under a name that is taken raises; registering the same object
again is a no-op (so re-importing a module is harmless). Looking up an unknown name raises
:class:`UnknownNameError` listing the known names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would repr-quote the whole message
        return str(self.args[0])


class Registry(Generic[F]):
    """A name -> function mapping for one kind of component.

    Args:
        kind: what the entries are, used in error messages (e.g. ``"advantage estimator"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering ``fn`` under ``name``."""

        def decorator(fn: F) -> F:
            existing = self._entries.get(name)
            if existing is not None and existing is not fn:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered to {_qualname(existing)}; "
                    f"refusing to replace it with {_qualname(fn)}"
                )
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> F:
        """The entry registered under ``name``; raises :class:`UnknownNameError` listing known names."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {sorted(self._entries)}") from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def call(self, name: str, *args: Any, **options: Any) -> Any:
        """Call entry ``name`` with keyword ``options``, rejecting unknown options with a clear error."""
        fn = self.get(name)
        check_options(fn, options, f"{self.kind} {name!r}")
        return fn(*args, **options)


def check_options(fn: Callable[..., Any], options: dict[str, Any], what: str) -> None:
    """Raise ``ValueError`` naming the option if ``fn`` does not accept one of ``options``."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = sorted(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{what} got unknown option(s) {unknown}; accepted: {accepted}")


def _qualname(obj: object) -> str:
    module = getattr(obj, "__module__", "?")
    name = getattr(obj, "__qualname__", repr(obj))
    return f"{module}.{name}"
