"""The suite's guard against deprecated APIs (tests/conftest.py, tests/_deprecations.py, pyproject's filterwarnings)
catches divrl's own deprecated calls, including the two transformers deprecations a module filter cannot see, and
lets third-party ones through."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from _deprecations import record_ours
from divrl.models import build_char_tokenizer, build_policy
from divrl.rollout import sample

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}


@pytest.fixture(scope="module")
def model():
    return build_policy("tiny", tokenizer=build_char_tokenizer(), seed=0, **TINY)


def _caught(fn) -> tuple[list[str], list[str]]:
    """(warnings blamed on us, the other warnings shown) while ``fn()`` runs."""
    with warnings.catch_warnings(record=True) as shown, record_ours(passthrough=False) as found:
        warnings.simplefilter("always")
        fn()
    return found, [str(w.message) for w in shown]


def test_module_filter_makes_a_divrl_attributed_deprecation_an_error() -> None:
    with pytest.raises(FutureWarning, match="old"):
        warnings.warn_explicit("old", FutureWarning, "sampler.py", 1, module="divrl.rollout.sampler")
    with pytest.raises(DeprecationWarning, match="old"):
        warnings.warn_explicit("old", DeprecationWarning, "x.py", 1, module="divrl")
    with warnings.catch_warnings(record=True) as shown:  # another package's module: shown, not raised
        warnings.warn_explicit("old", FutureWarning, "x.py", 1, module="divrlx.sampler")
    assert len(shown) == 1


def test_deprecated_forward_keyword_is_ours_when_we_pass_it(model) -> None:
    """transformers >= 5.24 warns from its decorator with stacklevel=2, i.e. from torch's Module.__call__."""
    if "cache" not in inspect.signature(type(model).forward).parameters:
        pytest.skip("this transformers has no `cache` keyword, so `past_key_values` is not deprecated")
    ids = torch.tensor([[5, 6, 7]])
    found, _ = _caught(lambda: model(input_ids=ids, past_key_values=None, use_cache=True))
    assert len(found) == 1 and "`past_key_values` is deprecated" in found[0] and "test_deprecations.py:" in found[0]
    assert _caught(lambda: model(input_ids=ids, cache=None, use_cache=True))[0] == []


def test_sampling_uses_no_deprecated_api(model) -> None:
    tok = build_char_tokenizer()
    found, shown = _caught(lambda: sample(model, tok, ["1+2=", "33="], num_samples=3, max_new_tokens=4, seed=0))
    assert found == [] and shown == []


def test_deprecated_property_is_ours_when_we_read_it_and_not_when_trl_does(model) -> None:
    """transformers 5.24 warns from the property itself (default stacklevel), i.e. from transformers."""
    found, _ = _caught(lambda: model.is_gradient_checkpointing)
    if not found:
        pytest.skip("this transformers does not deprecate is_gradient_checkpointing")
    assert len(found) == 1 and "is_gradient_checkpointing" in found[0] and "test_deprecations.py:" in found[0]
    utils = pytest.importorskip("trl.models.utils")

    def trl_reads_it() -> None:
        with utils.disable_gradient_checkpointing(model):  # reads model.is_gradient_checkpointing inside TRL
            pass

    found, shown = _caught(trl_reads_it)
    assert found == [] and any("is_gradient_checkpointing" in m for m in shown)  # warned, but not ours
