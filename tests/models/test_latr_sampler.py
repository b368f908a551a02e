"""The LATR sampler (divrl.rollout.latr): a hand-computed tree on a scripted model, and invariants on the tiny
Countdown policy (no forks = greedy copies; eta = 0 = the standard sampler; determinism; row order)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from divrl.models import build_char_tokenizer, load_policy
from divrl.rollout import sample
from divrl.rollout.latr import LatrOptions, latr_sample


class _Cache:
    """A stand-in KV cache: each row's full token history (what batch_select_indices must carry)."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids  # (B, L)

    def batch_select_indices(self, index: torch.Tensor) -> None:
        self.ids = self.ids[index]


class _Scripted(torch.nn.Module):
    """Next-token probabilities scripted on the text generated after the prompt (see ``_SCRIPT``)."""

    def __init__(self, tok, prompt_len: int, second: str = "c") -> None:
        super().__init__()
        self.tok, self.prompt_len, self.second = tok, prompt_len, second
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True):
        ids = input_ids if past_key_values is None else torch.cat([past_key_values.ids, input_ids], dim=1)
        v = len(self.tok)
        logits = torch.full((ids.shape[0], 1, v), math.log(1e-9))
        for row in range(ids.shape[0]):
            text = self.tok.decode(ids[row, self.prompt_len :].tolist())
            for ch, p in _script(text, self.second).items():
                logits[row, 0, self.tok.convert_tokens_to_ids(ch)] = math.log(p)
        return SimpleNamespace(logits=logits, past_key_values=_Cache(ids))


def _script(generated: str, second: str = "c") -> dict[str, float]:
    if generated == "":
        return {"a": 0.45, "b": 0.40, "c": 0.15}  # fork: 0.40 > 0.25 and 0.45 - 0.40 < 0.15
    if generated == "b":
        return {second: 0.45, "x": 0.42, "a": 0.13}  # fork again (the parent takes ``second``)
    return {"a": 0.9, "c": 0.1} if generated[-1] == "a" else {"c": 0.9, "a": 0.1}


def test_hand_computed_tree_with_one_pruned_fork():
    """G = 4, all tree; windows [2], tau_ed 0.6, tree phase to the end (return_on_full off):

    step 0: root "a", fork R1 "b" (birth 0); step 1: root "aa", R1 "bc" + fork R2 "bx" (birth 1); after step 1 R1 is
    compared with the root over 2 tokens ("bc" vs "aa": 2/2 = 1, kept); after step 2 R2 with R1 ("xc" vs "cc":
    1/2 = 0.5 < 0.6, pruned); the tree ends with 2 rows and is topped up with 2 copies of the root."""
    tok = build_char_tokenizer()
    model = _Scripted(tok, prompt_len=1)
    opts = LatrOptions(windows=[2], edit_dist=0.6, keep_math_symbols=False, return_on_full=False)
    out = latr_sample(model, tok, ["p"], num_samples=4, max_new_tokens=4, seed=0, options=opts)
    assert out.texts == ["aaaa", "bccc", "aaaa", "aaaa"]
    assert out.stats == {"forks": 2.0, "pruned": 1.0, "tree_steps": 4.0, "tree_rows": 4.0}
    assert out.completion_mask.all() and not out.finished.any()
    # with a looser threshold nothing is pruned and the third row is the fork "bx.."
    keep_all = LatrOptions(windows=[2], edit_dist=0.4, keep_math_symbols=False, return_on_full=False)
    assert latr_sample(model, tok, ["p"], num_samples=4, max_new_tokens=4, options=keep_all).texts == [
        "aaaa",
        "bccc",
        "bxcc",
        "aaaa",
    ]  # the tree's rows in creation order, then the copy of the root that fills it
    # the capacity: with G = 2 the first fork fills the tree and the second never happens
    two = latr_sample(model, tok, ["p"], num_samples=2, max_new_tokens=4, options=keep_all)
    assert two.texts == ["aaaa", "bccc"] and two.stats["forks"] == 1.0


@pytest.mark.parametrize("keep_math_symbols, pruned", [(True, 0.0), (False, 1.0)])
def test_a_fork_at_a_math_symbol_is_exempt(keep_math_symbols, pruned):
    """The second fork's parent takes "1" (a math symbol): "xc" vs "1c" is a near-duplicate (0.5 < 0.6), pruned
    only when the exemption is off."""
    tok = build_char_tokenizer()
    model = _Scripted(tok, prompt_len=1, second="1")
    opts = LatrOptions(windows=[2], edit_dist=0.6, keep_math_symbols=keep_math_symbols, return_on_full=False)
    out = latr_sample(model, tok, ["p"], num_samples=4, max_new_tokens=4, options=opts)
    assert out.stats["pruned"] == pruned
    assert out.texts == (["aaaa", "b1cc", "bxcc", "aaaa"] if pruned == 0 else ["aaaa", "b1cc", "aaaa", "aaaa"])


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_policy("builtin:countdown-tiny")
    return model, tok


PROMPTS = ["    nums 9 2 10 target 1:", "    nums 3 5 7 target 15:"]
STOP = ("</answer>",)


def test_no_forks_and_no_early_return_gives_greedy_copies(tiny):
    model, tok = tiny
    opts = LatrOptions(prob_abs=1.0, return_on_full=False)
    out = latr_sample(model, tok, PROMPTS, num_samples=3, max_new_tokens=56, stop=STOP, options=opts)
    greedy = sample(model, tok, PROMPTS, num_samples=1, max_new_tokens=56, stop=STOP, greedy=True)
    assert out.texts == [greedy.texts[0]] * 3 + [greedy.texts[1]] * 3
    assert out.stats["forks"] == 0.0


def test_zero_tree_share_is_the_standard_sampler(tiny):
    model, tok = tiny
    opts = LatrOptions(mix_ratio_schedule={0: 1.0, 5: 0.0})
    out = latr_sample(model, tok, PROMPTS, num_samples=4, max_new_tokens=56, stop=STOP, seed=3, step=5, options=opts)
    ref = sample(model, tok, PROMPTS, num_samples=4, max_new_tokens=56, stop=STOP, seed=3)
    assert out.texts == ref.texts and torch.equal(out.completion_ids, ref.completion_ids)


def test_recipe_options_give_full_groups_deterministically(tiny):
    model, tok = tiny
    opts = {
        "windows": [4, 6, 10],
        "keep_math_symbols": False,
        "force_return_step": 12,
        "mix_ratio_schedule": {0: 0.75},
    }
    a = latr_sample(
        model, tok, PROMPTS, num_samples=8, max_new_tokens=56, stop=STOP, seed=1, batch_size=8, options=opts
    )
    b = latr_sample(
        model, tok, PROMPTS, num_samples=8, max_new_tokens=56, stop=STOP, seed=1, batch_size=8, options=opts
    )
    assert a.texts == b.texts and torch.equal(a.completion_ids, b.completion_ids)
    assert len(a.texts) == 16 and a.stats["tree_rows"] == 6.0 and a.stats["forks"] > 0
    assert a.prompt_ids.shape[0] == 16 and torch.equal(a.completion_mask.sum(-1) > 0, torch.ones(16, dtype=torch.bool))
    for p, prompt in enumerate(PROMPTS):  # row order: prompt p's group at rows p*G .. p*G+G-1
        rows = a.prompt_ids[p * 8 : (p + 1) * 8][a.prompt_mask[p * 8 : (p + 1) * 8]].view(8, -1)
        assert all(tok.decode(r.tolist()) == prompt for r in rows)
    for text, done in zip(a.texts, a.finished.tolist(), strict=True):
        assert done == text.endswith("</answer>")


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="^windows:"):
        LatrOptions(windows=[])
    with pytest.raises(ValueError, match="^prob_abs:"):
        LatrOptions(prob_abs=1.5)
    with pytest.raises(ValueError, match="^mix_ratio_schedule:"):
        LatrOptions(mix_ratio_schedule={0: 2.0})
