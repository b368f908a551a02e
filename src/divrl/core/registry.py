"""Named registries with one signature each (advantage estimators, policy losses, ...).

The mechanics follow verl's ``register_adv_est``: a module-level mapping filled by a decorator.
Registering a *different* object under a name that is taken raises; registering the same object
again is a no-op (so re-importing a module is harmless). Looking up an unknown name raises
:class:`UnknownNameError` listing the known names.

Each entry is registered with its declared needs (:mod:`divrl.core.needs`): a function of the entry's options
saying which ``GroupBatch`` fields it reads. :meth:`Registry.needs` is the one place every caller asks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from divrl.core.needs import Needs, NeedsFn, no_needs

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
        self._needs: dict[str, NeedsFn] = {}

    def register(self, name: str, needs: NeedsFn | None = None) -> Callable[[F], F]:
        """Decorator registering ``fn`` under ``name``, with ``needs(options) -> Needs`` declaring what it reads
        (default: only ``rewards``)."""

        def decorator(fn: F) -> F:
            existing = self._entries.get(name)
            if existing is not None and existing is not fn:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered to {_qualname(existing)}; "
                    f"refusing to replace it with {_qualname(fn)}"
                )
            self._entries[name] = fn
            if needs is not None or name not in self._needs:
                self._needs[name] = needs if needs is not None else no_needs
            return fn

        return decorator

    def get(self, name: str) -> F:
        """The entry registered under ``name``; raises :class:`UnknownNameError` listing known names."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {sorted(self._entries)}") from None

    def needs(self, name: str, options: Mapping[str, Any] | None = None) -> Needs:
        """What entry ``name`` reads with ``options`` (its declared needs); an unknown name raises listing known ones."""
        self.get(name)
        return self._needs[name](dict(options or {}))

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
