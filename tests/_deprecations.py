"""Deprecation warnings caused by divrl's own calls: found by the caller's frame, not by the warning's module.

A filter such as ``error::FutureWarning:divrl`` (``pyproject.toml``) matches the module a warning is *attributed* to,
the frame its ``stacklevel`` points at, and transformers attributes its deprecations elsewhere: a deprecated
``forward`` keyword (``past_key_values`` in 5.24) warns with ``stacklevel=2`` from its decorator, which points at
torch's ``Module.__call__``; a deprecated property (``is_gradient_checkpointing``) warns with the default stacklevel,
from transformers itself. The module filter misses exactly these two. So :func:`record_ours` looks at the stack when
a deprecation warning is shown: from the frame that issued it, out of the issuing package and through call plumbing
(``torch.nn.Module.__call__``, ``functools``/``contextlib`` wrappers) to the first other frame, the code that used
the deprecated API. When that frame is in divrl's source or in the tests, the warning is ours; when it is another
library (TRL reading ``is_gradient_checkpointing`` inside its own generation helper), it is not.

``tests/conftest.py`` fails a test that caused one; ``tests/test_deprecations.py`` checks both directions on the
real transformers deprecations. The hook sits where ``warnings.warn`` shows a warning, so it also sees warnings inside
``warnings.catch_warnings(record=True)`` and ``pytest.warns``; a test that means to trigger one of divrl's own
deprecations wraps it in ``record_ours(passthrough=False)``. Not seen: warnings a filter ignores, and transformers'
``logger.warning_once`` messages (logging, once per process): the output attribute ``.past_key_values`` warns only
that way, so ``tests/models/test_sampler.py`` checks that the sampler never reads it from a model that takes
``cache``. A library that warns about its own internal use, reached from divrl without another package's frame in
between, would be blamed on divrl: ignore that one warning in pyproject's ``filterwarnings``, with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
# Frames that only pass a call on: a deprecated forward() keyword reaches transformers through Module.__call__, and
# through the forward() of a peft wrapper (PeftModel, LoraModel) or an accelerate hook around the model.
PLUMBING = frozenset({"torch.nn.modules.module", "torch.utils._contextlib", "functools", "contextlib"})
PASS_THROUGH = {"peft": frozenset({"forward"}), "accelerate": frozenset({"new_forward"})}
_HERE = frozenset({"warnings", __name__})


def _roots() -> tuple[str, ...]:
    spec = importlib.util.find_spec("divrl")
    assert spec is not None and spec.origin is not None, "divrl is not importable"
    return (str(Path(spec.origin).parent) + os.sep, str(Path(__file__).parent) + os.sep)


OURS = _roots()
"""divrl's source folder and the tests folder (path prefixes)."""


def _module(frame: FrameType) -> str:
    return str(frame.f_globals.get("__name__", ""))


def _plumbing(frame: FrameType) -> bool:
    module = _module(frame)
    return module in PLUMBING or frame.f_code.co_name in PASS_THROUGH.get(module.partition(".")[0], ())


def user_frame(issuer: FrameType) -> FrameType | None:
    """The frame that used the deprecated API: from ``issuer`` (the frame that called ``warnings.warn``) outward,
    the first frame outside the issuer's top-level package and outside the plumbing (:data:`PLUMBING`,
    :data:`PASS_THROUGH`)."""
    package = _module(issuer).partition(".")[0]
    frame: FrameType | None = issuer
    while frame is not None and (_module(frame).partition(".")[0] == package or _plumbing(frame)):
        frame = frame.f_back
    return frame


@contextlib.contextmanager
def record_ours(passthrough: bool = True) -> Iterator[list[str]]:
    """Yield a list that collects ``"file:line: Category: message"`` for each deprecation warning shown in the block
    whose :func:`user_frame` lies in :data:`OURS`. The warnings are still shown (or recorded by pytest) as before,
    except the collected ones when ``passthrough`` is false."""
    found: list[str] = []
    show = warnings._showwarnmsg  # type: ignore[attr-defined]  # what warnings.warn calls to show a warning

    def blame(msg: Any) -> None:
        if issubclass(msg.category, DEPRECATIONS):
            frame: FrameType | None = sys._getframe(1)
            while frame is not None and _module(frame) in _HERE:
                frame = frame.f_back
            user = user_frame(frame) if frame is not None else None
            if user is not None and user.f_code.co_filename.startswith(OURS):
                where = os.path.relpath(user.f_code.co_filename)
                found.append(f"{where}:{user.f_lineno}: {msg.category.__name__}: {msg.message}")
                if not passthrough:
                    return
        show(msg)

    warnings._showwarnmsg = blame  # type: ignore[attr-defined]
    try:
        yield found
    finally:
        warnings._showwarnmsg = show  # type: ignore[attr-defined]
