"""The TRL and verl adapters say, in one line before training, which divrl policy losses they run: rover and flowrl
(full-vocabulary means, a learned log Z head) are refused with the reason; positive_entropy is served."""

from __future__ import annotations

import pytest

from divrl.core.losses import loss_names


def _adapters() -> list[tuple[str, object]]:
    from divrl.integrations import verl

    found = [("verl", verl.check_loss)]
    try:
        from divrl.integrations import trl
    except ImportError:  # pragma: no cover - trl is a dev dependency
        return found
    return [*found, ("trl", trl.check_loss)]


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("rover", None, "full-vocabulary means"),
        ("rover", {"clip_eps": 0.2}, "full-vocabulary means"),
        ("flowrl", None, "log Z head"),
        ("flowrl", {"reference": False}, "log Z head"),
        ("ppo", None, "own"),
    ],
)
def test_refused_in_one_line(name, options, match):
    for adapter, check in _adapters():
        with pytest.raises(ValueError, match=match) as info:
            check(name, options)
        message = str(info.value)
        assert "\n" not in message and f"{name!r}" in message and "divrl train" in message, adapter


def test_positive_entropy_is_served_and_unknown_names_list_the_known_ones():
    for _, check in _adapters():
        check("positive_entropy", {"lam": 0.02, "gate": "positive_advantage"})  # verl: core's gate=correct is refused
        with pytest.raises(KeyError, match="rover"):
            check("nope")
    assert {"rover", "flowrl"} <= set(loss_names())
