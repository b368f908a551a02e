"""Suite-wide: a test fails when divrl's own code (or the test) calls a deprecated API (see tests/_deprecations.py).

Warnings attributed to a divrl module are errors at once (``filterwarnings`` in pyproject.toml); this catches the
rest, e.g. transformers' deprecated ``forward`` keywords, which are attributed to torch's ``Module.__call__``.
Third-party code calling deprecated APIs of other packages does not fail the suite.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from _deprecations import record_ours


def _check(phase: str) -> Generator[None, Any, Any]:
    with record_ours() as found:
        result = yield
    if found:
        lines = "\n  ".join(dict.fromkeys(found))
        pytest.fail(
            f"deprecated API used by divrl's own code during {phase} (move to its replacement):\n  {lines}",
            pytrace=False,
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _check("setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _check("the test"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    return (yield from _check("teardown"))
