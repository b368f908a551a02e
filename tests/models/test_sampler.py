"""The batched sampler and token log-probs: shapes, masks, stops, EOS, seeding, diversity, mixed lengths, naive parity.

Two kinds of models: mocks with scripted logits (through the same forward interface) where the exact output must be
forced, and tiny random Llama/Qwen2 policies (hidden 32) where real attention, KV caches and padding matter. The random
weights are scaled up (``sharp``) so greedy decoding has clear margins and varied output.
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, trainers
from transformers import PreTrainedTokenizerFast

import divrl.rollout.sampler as sampler_module
from divrl.models import build_char_tokenizer, build_policy
from divrl.rollout import Rollouts, concat_rollouts, sample, token_logprobs, token_statistics
from divrl.rollout._hf import cache_arg

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
MIXED = ["1+2=", "(3*4)-5=", "7", "12+30=4"]  # 4, 8, 1 and 7 tokens


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def sharp(tok, arch="llama", seed=0, scale=25.0):
    """A tiny random policy with weights scaled up: confident, varied greedy output."""
    model = build_policy("tiny", arch, tok, seed=seed, **TINY)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(scale)
    return model


@pytest.fixture(scope="module")
def llama(tok):
    return sharp(tok)


class MockLM(torch.nn.Module):
    """Logits = ``bias`` + 50 at ``table[last token]`` (a forced successor, where the table has one).

    Has no KV cache (returns ``past_key_values=None``), so it also exercises the sampler's generic-cache path.
    """

    def __init__(self, vocab: int = 100, table: dict[int, int] | None = None, bias: torch.Tensor | None = None):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.register_buffer("bias", torch.zeros(vocab) if bias is None else bias.float())
        lut = torch.full((vocab,), -1, dtype=torch.long)
        for src, dst in (table or {}).items():
            lut[src] = dst
        self.register_buffer("lut", lut)
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None):
        self.calls += 1
        b, length = input_ids.shape
        logits = self.bias.expand(b, length, -1).clone()  # (B, L, V)
        nxt = self.lut[input_ids]  # (B, L)
        logits.scatter_add_(-1, nxt.clamp(min=0)[..., None], 50.0 * (nxt >= 0)[..., None].float())
        return SimpleNamespace(logits=logits, past_key_values=None)


def chain(tok, text: str, end: str | None = "<eos>") -> MockLM:
    """A mock that, after each character of ``text``, emits the next one (and ``end`` after the last)."""
    ids = tok.encode(text)
    table = dict(itertools.pairwise(ids))
    if end is not None:
        table[ids[-1]] = tok.convert_tokens_to_ids(end)
    return MockLM(table=table)


class ScriptedLM(MockLM):
    """Emits ``script[k]`` at the k-th forward call (one row), whatever the input."""

    def __init__(self, vocab: int, script: list[int]):
        super().__init__(vocab=vocab)
        self.script = script

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None):
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], len(self.bias))  # (B, L, V)
        logits[:, -1, self.script[min(self.calls, len(self.script) - 1)]] = 50.0
        self.calls += 1
        return SimpleNamespace(logits=logits, past_key_values=None)


def ends_with_any(ids: list[int], stop_ids: list[list[int]]) -> bool:
    return any(len(ids) >= len(s) and ids[len(ids) - len(s) :] == s for s in stop_ids)


def rows_of(r: Rollouts) -> list[list[int]]:
    """The real completion ids of each row."""
    return [ids[:n] for ids, n in zip(r.completion_ids.tolist(), r.completion_mask.sum(-1).tolist(), strict=True)]


def check_invariants(r: Rollouts, tok, prompts, g, max_new, stop=()):
    n = len(prompts) * g
    lp, lc = r.prompt_ids.shape[1], r.completion_ids.shape[1]
    assert r.prompt_ids.shape == r.prompt_mask.shape == (n, lp) and lp == max(len(tok.encode(p)) for p in prompts)
    assert r.completion_ids.shape == r.completion_mask.shape == (n, lc) and 1 <= lc <= max_new
    assert r.finished.shape == (n,) and len(r.texts) == n
    lengths = r.completion_mask.sum(-1)
    assert torch.equal(r.completion_mask, torch.arange(lc) < lengths[:, None])  # a prefix of each row
    assert int(lengths.max()) == lc and int(lengths.min()) >= 1
    assert (r.completion_ids[~r.completion_mask] == tok.pad_token_id).all()
    for i, (ids, text) in enumerate(zip(rows_of(r), r.texts, strict=True)):
        prompt = tok.encode(prompts[i // g])
        assert r.prompt_ids[i, lp - len(prompt) :].tolist() == prompt and r.prompt_mask[i].sum() == len(prompt)
        ended_by_eos = ids[-1] == tok.eos_token_id
        assert tok.eos_token_id not in ids[:-1]
        assert text == tok.decode(ids[:-1] if ended_by_eos else ids)
        # stops are matched on ids (char tokenizer): a stop may only end at the last token
        stop_ids = [tok.encode(s) for s in stop]
        hits = [k for k in range(1, len(ids) + 1) if ends_with_any(ids[:k], stop_ids)]
        assert hits in ([], [len(ids)])
        assert bool(r.finished[i]) == (ended_by_eos or bool(hits))
        if not r.finished[i]:
            assert len(ids) == max_new


# ---------------------------------------------------------------------------------------------- shapes and order


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_invariants_with_mixed_lengths_and_stops(tok, seed):
    model = build_policy("tiny", tokenizer=tok, seed=seed, **TINY)
    stop = ("a", "b", "cd", "=")
    r = sample(model, tok, MIXED, num_samples=3, max_new_tokens=20, stop=stop, seed=seed, batch_size=5)
    check_invariants(r, tok, MIXED, 3, 20, stop)
    assert 0 < int(r.finished.sum()) < len(r.finished)  # both kinds of row occur here


def test_rows_are_grouped_by_prompt(tok):
    r = sample(MockLM(), tok, ["ab", "cd", "ef"], num_samples=4, max_new_tokens=3, seed=0)
    expected = torch.tensor(tok(["ab", "cd", "ef"])["input_ids"]).repeat_interleave(4, dim=0)  # (12, 2)
    assert torch.equal(r.prompt_ids, expected)
    assert r.attention_mask is None and r.completion_start == 2
    assert torch.equal(r.input_ids, torch.cat([expected, r.completion_ids], dim=1))


def test_left_padding_and_attention_mask(tok):
    r = sample(MockLM(), tok, ["abc", "d"], max_new_tokens=2, seed=0)
    assert r.prompt_ids.tolist()[1][:2] == [0, 0] and r.prompt_mask.tolist() == [[True] * 3, [False, False, True]]
    assert r.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]


# ---------------------------------------------------------------------------------------------- stops and EOS


@pytest.mark.parametrize(
    ("stop", "text", "finished"),
    [
        ((), "12=\n", True),  # ended by EOS: in the mask, not in the text
        (("2=",), "12=", True),
        (("=\n", "2="), "12=", True),  # the first stop reached wins
        (("\n",), "12=\n", True),
        (("9",), "12=\n", True),  # never matched: EOS ends it
    ],
)
def test_stop_strings_and_eos(tok, stop, text, finished):
    r = sample(chain(tok, "x12=\n"), tok, ["x"], max_new_tokens=10, stop=stop, seed=0)
    assert r.texts == [text] and r.finished.tolist() == [finished]
    ids = tok.encode(text) + ([tok.eos_token_id] if not stop or stop == ("9",) else [])
    assert rows_of(r) == [ids] and r.completion_ids.shape == (1, len(ids))


def test_stop_string_is_matched_in_the_completion_only(tok):
    # the prompt ends with "1" and the model says "2": the text "12" is not generated text, so no stop
    r = sample(chain(tok, "x12=\n"), tok, ["x1"], max_new_tokens=10, stop=("12",), seed=0)
    assert r.texts == ["2=\n"] and r.finished.tolist() == [True]


def test_rows_finish_at_different_steps_and_hit_the_limit(tok):
    model = chain(tok, "x12=\n")
    model.lut[tok.convert_tokens_to_ids("a")] = tok.convert_tokens_to_ids("b")  # a -> b -> a -> ... never ends
    model.lut[tok.convert_tokens_to_ids("b")] = tok.convert_tokens_to_ids("a")
    r = sample(model, tok, ["x", "=", "a"], num_samples=2, max_new_tokens=6, seed=0)
    assert r.texts == ["12=\n", "12=\n", "\n", "\n", "bababa", "bababa"]
    assert r.finished.tolist() == [True, True, True, True, False, False]
    assert r.completion_mask.sum(-1).tolist() == [5, 5, 2, 2, 6, 6]
    assert r.completion_ids[2].tolist() == [tok.convert_tokens_to_ids("\n"), 2, 0, 0, 0, 0]


def test_exits_early_once_every_row_finished(tok):
    model = chain(tok, "x1")  # x -> 1 -> EOS
    r = sample(model, tok, ["x", "x"], max_new_tokens=50, seed=0)
    assert model.calls == 2  # prefill, then one decode step; the EOS step needs no forward
    assert r.completion_ids.shape == (2, 2) and r.texts == ["1", "1"]


def test_general_tokenizer_stop_matching_on_decoded_text():
    """A BPE vocabulary with multi-character tokens: stops are found in decoded text, even inside a token."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.decoder = decoders.Fuse()
    corpus = ["12+34=46", "2=3", "(7*8)-5=51", "12=12", "34=34"] * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=60, special_tokens=["<pad>", "<eos>", "<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    vocab = tok.get_vocab()
    assert "2=" in vocab and "=" in vocab  # "2=" can be generated as one token or two
    script = [vocab["1"], vocab["2="], vocab["1"], vocab["2"], vocab["="], vocab["4"], vocab["<eos>"]]  # "12=12=4"
    assert sampler_module._stop_token_ids(tok, ("2=",)) is None  # not a char-level vocabulary: decoded matching
    r = sample(ScriptedLM(len(tok), script), tok, ["1"], max_new_tokens=10, stop=("2=",), seed=0)
    assert r.texts == ["12="] and r.finished.tolist() == [True]  # found inside the single token "2="
    r = sample(ScriptedLM(len(tok), script), tok, ["1"], max_new_tokens=10, stop=("=4",), seed=0)
    assert r.texts == ["12=12=4"] and rows_of(r) == [script[:-1]]  # "=4" spans two tokens
    r = sample(ScriptedLM(len(tok), script), tok, ["1"], max_new_tokens=10, stop=("8",), seed=0)
    assert r.texts == ["12=12=4"] and rows_of(r) == [script] and r.finished.tolist() == [True]  # EOS


def test_bpe_tokenizer_with_qwen2_mixed_lengths_and_stops():
    """Any HF causal LM + tokenizer: a Qwen2 policy with a BPE tokenizer, left padding, decoded-text stops."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.decoder = decoders.Fuse()
    corpus = [f"{a}+{b}={a + b}" for a in range(12) for b in range(12)]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=80, special_tokens=["<pad>", "<eos>", "<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    model = sharp(tok, arch="qwen2", seed=1)
    prompts = ["1+2=", "10+11=21", "3"]
    free = sample(model, tok, prompts, max_new_tokens=12, greedy=True)
    alone = [sample(model, tok, [p], max_new_tokens=12, greedy=True) for p in prompts]
    assert free.texts == [a.texts[0] for a in alone]
    assert rows_of(free) == [rows_of(a)[0] for a in alone]
    # stops: each row must end at the first prefix of its free-running greedy text that contains a stop string
    candidates = sorted({t[k : k + 2] for t in free.texts for k in (2, 5)})
    stop = tuple(c for c in candidates if len(c) == 2 and tok.decode(tok.encode(c)) == c)
    assert stop
    r = sample(model, tok, prompts, max_new_tokens=12, greedy=True, stop=stop)
    for ids, got, text, done in zip(rows_of(free), rows_of(r), r.texts, r.finished.tolist(), strict=True):
        cut = next((k for k in range(1, len(ids) + 1) if any(s in tok.decode(ids[:k]) for s in stop)), None)
        assert done == (cut is not None or ids[-1] == tok.eos_token_id)
        assert got == ids[: cut or len(ids)]
        if cut is not None:
            assert text == tok.decode(ids[:cut])


# ---------------------------------------------------------------------------------------------- seeding and diversity


def test_same_seed_same_samples_and_global_rng_untouched(tok):
    state = torch.random.get_rng_state()
    a = sample(MockLM(), tok, ["ab", "cd"], num_samples=4, max_new_tokens=8, seed=7)
    b = sample(MockLM(), tok, ["ab", "cd"], num_samples=4, max_new_tokens=8, seed=7)
    c = sample(MockLM(), tok, ["ab", "cd"], num_samples=4, max_new_tokens=8, seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_same_seed_same_samples_real_model(tok, llama):
    a = sample(llama, tok, MIXED, num_samples=3, max_new_tokens=10, seed=3, stop=("a",))
    b = sample(llama, tok, MIXED, num_samples=3, max_new_tokens=10, seed=3, stop=("a",))
    assert a.texts == b.texts and torch.equal(a.completion_ids, b.completion_ids)


@pytest.mark.parametrize("model_kind", ["uniform_mock", "random_llama"])
def test_multi_sample_first_token_diversity(tok, model_kind):
    """Regression in the spirit of nanochat's test: the G samples of one prompt must not share a broadcast first
    token (the random Llama goes through the prefill-once-then-copy-the-cache path)."""
    model = MockLM() if model_kind == "uniform_mock" else build_policy("tiny", tokenizer=tok, seed=0, **TINY)
    r = sample(model, tok, ["12+3="], num_samples=16, max_new_tokens=2, seed=0)
    first = r.completion_ids[:, 0]
    assert len(set(first.tolist())) >= 8  # ~15 distinct of 100 near-uniform tokens expected


# ---------------------------------------------------------------------------------------------- sampling knobs

PROBS = {10: 0.5, 11: 0.3, 12: 0.15}  # the remaining 0.05 is spread over the other 97 ids


def peaked_mock() -> MockLM:
    p = torch.full((100,), 0.05 / 97)
    for i, q in PROBS.items():
        p[i] = q
    return MockLM(bias=p.log())


def first_tokens(tok, n=400, **kw) -> torch.Tensor:
    return sample(peaked_mock(), tok, ["a"], num_samples=n, max_new_tokens=1, seed=0, **kw).completion_ids[:, 0]


def test_top_k(tok):
    assert set(first_tokens(tok, top_k=2).tolist()) == {10, 11}
    assert set(first_tokens(tok, top_k=1).tolist()) == {10}


@pytest.mark.parametrize(("top_p", "kept"), [(0.3, {10}), (0.45, {10}), (0.7, {10, 11}), (0.9, {10, 11, 12})])
def test_top_p_keeps_the_smallest_set_reaching_p(tok, top_p, kept):
    assert set(first_tokens(tok, top_p=top_p).tolist()) == kept


def test_greedy_and_near_zero_temperature_pick_the_argmax(tok):
    assert set(first_tokens(tok, n=20, greedy=True).tolist()) == {10}
    assert set(first_tokens(tok, n=20, temperature=1e-3).tolist()) == {10}
    assert set(first_tokens(tok, n=20, greedy=True, temperature=0.0).tolist()) == {10}  # temperature unused


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sample_frequencies_follow_the_tempered_distribution(tok, temperature):
    n = 4000
    toks = first_tokens(tok, n=n, temperature=temperature)
    p = torch.full((100,), 0.05 / 97)
    for i, q in PROBS.items():
        p[i] = q
    expected = (p.log() / temperature).softmax(-1)
    for i in PROBS:
        freq = float((toks == i).float().mean())
        sd = math.sqrt(float(expected[i]) * (1 - float(expected[i])) / n)
        assert abs(freq - float(expected[i])) < 5 * sd


# ---------------------------------------------------------------------------------------------- batching


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_greedy_result_does_not_depend_on_batch_mates(tok, arch):
    """Unmasked path (a prompt alone) vs left-padded masked path (with prompts of other lengths)."""
    model = sharp(tok, arch=arch)
    together = sample(model, tok, MIXED, max_new_tokens=16, greedy=True)
    for i, p in enumerate(MIXED):
        alone = sample(model, tok, [p], max_new_tokens=16, greedy=True)
        assert alone.attention_mask is None
        assert alone.texts[0] == together.texts[i]
        assert rows_of(alone)[0] == rows_of(together)[i]
    assert together.attention_mask is not None


def test_chunking_across_groups_gives_the_same_greedy_result(tok, llama):
    prompts = ["1+2=", "3*4=", "5-6=", "7+8="]
    whole = sample(llama, tok, prompts, num_samples=3, max_new_tokens=12, greedy=True)
    for batch_size in (1, 5, 7):  # chunks that split groups and mix widths
        chunked = sample(llama, tok, prompts, num_samples=3, max_new_tokens=12, greedy=True, batch_size=batch_size)
        assert chunked.texts == whole.texts and torch.equal(chunked.prompt_ids, whole.prompt_ids)


def test_concat_rollouts_equals_sampling_the_kept_prompts_together(tok, llama):
    """Greedy output does not depend on batch mates, so the kept rows of two sampling calls, concatenated, are
    exactly one greedy call on the kept prompts: ids, masks, widths, texts, finished, entropies."""
    a = sample(llama, tok, ["abc", "d"], max_new_tokens=16, greedy=True, with_entropy=True)
    b = sample(llama, tok, MIXED, max_new_tokens=16, greedy=True, with_entropy=True)
    got = concat_rollouts([a, b], [[1], [3, 1]], pad_id=tok.pad_token_id)
    want = sample(llama, tok, ["d", "12+30=4", "(3*4)-5="], max_new_tokens=16, greedy=True, with_entropy=True)
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "finished"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert got.texts == want.texts and got.stats == {}
    torch.testing.assert_close(got.entropies, want.entropies)
    check_invariants(got, tok, ["d", "12+30=4", "(3*4)-5="], 1, 16)


def test_concat_rollouts_drops_unused_columns(tok, llama):
    """Only short prompts kept: the prompt width shrinks to theirs and no attention mask is needed any more; a
    part without entropies makes the result carry none."""
    a = sample(llama, tok, MIXED, num_samples=2, max_new_tokens=16, greedy=True)  # widths 8, masked
    assert a.attention_mask is not None and a.prompt_ids.shape[1] == 8
    got = concat_rollouts([a, a], [[0, 1], [7]], pad_id=tok.pad_token_id)  # "1+2=" twice, then "12+30=4"
    assert got.prompt_ids.shape[1] == 7 and got.entropies is None
    assert got.texts == [a.texts[0], a.texts[1], a.texts[7]]
    lengths = got.completion_mask.sum(-1)
    assert got.completion_ids.shape[1] == int(lengths.max())
    only_short = concat_rollouts([a], [[0, 1]], pad_id=tok.pad_token_id)
    assert only_short.attention_mask is None and only_short.prompt_ids.shape[1] == 4
    with pytest.raises(ValueError, match="no rows to keep"):
        concat_rollouts([a], [[]], pad_id=0)
    with pytest.raises(ValueError, match="one row list per part"):
        concat_rollouts([a, a], [[0]], pad_id=0)


def test_dropping_finished_rows_changes_nothing(tok, llama, monkeypatch):
    """Stops cut the free-running greedy text at the first stop; pruning finished rows from the KV cache or not."""
    free = sample(llama, tok, MIXED, num_samples=2, max_new_tokens=16, greedy=True)
    chars = [[i for i in ids if i > 3] for ids in rows_of(free)]  # character ids only
    stop_ids = [c[k : k + 2] for c, k in zip(chars, (1, 3, 5, 8, 2, 10, 4, 6), strict=True) if len(c) >= k + 2]
    stop = tuple(tok.decode(s) for s in stop_ids)
    pruned = sample(llama, tok, MIXED, num_samples=2, max_new_tokens=16, greedy=True, stop=stop)
    monkeypatch.setattr(sampler_module, "_PRUNE_FRACTION", math.inf)
    kept = sample(llama, tok, MIXED, num_samples=2, max_new_tokens=16, greedy=True, stop=stop)
    assert pruned.texts == kept.texts and torch.equal(pruned.completion_ids, kept.completion_ids)
    for ids, got in zip(rows_of(free), rows_of(pruned), strict=True):
        cut = next((k for k in range(1, len(ids) + 1) if ends_with_any(ids[:k], stop_ids)), len(ids))
        assert got == ids[:cut]
    assert len(set(map(len, rows_of(pruned)))) > 2  # rows really finished at different steps


class _NamedCacheLM(torch.nn.Module):
    """A real policy behind a ``forward`` that takes and returns its KV cache under one name only (``NAME``); the
    output has no attribute of the other name."""

    NAME = ""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def _run(self, cache, **kwargs):
        out = self.inner(**{cache_arg(self.inner): cache}, **kwargs)
        return SimpleNamespace(logits=out.logits, **{self.NAME: getattr(out, cache_arg(self.inner))})


class CacheLM(_NamedCacheLM):  # transformers >= 5.24
    NAME = "cache"

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=None):
        return self._run(cache, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache)  # fmt: skip


class PastLM(_NamedCacheLM):  # transformers < 5.24
    NAME = "past_key_values"

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None):
        return self._run(past_key_values, input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, use_cache=use_cache)  # fmt: skip


@pytest.mark.parametrize("cls", [CacheLM, PastLM])
def test_kv_cache_goes_by_the_name_forward_declares(tok, llama, cls):
    wrapped = cls(llama)
    assert cache_arg(wrapped) == cls.NAME
    direct = sample(llama, tok, MIXED, num_samples=2, max_new_tokens=12, greedy=True, stop=("^", "I"))
    got = sample(wrapped, tok, MIXED, num_samples=2, max_new_tokens=12, greedy=True, stop=("^", "I"))
    # the cache round-trips: same greedy rows as the model called directly
    assert got.texts == direct.texts and torch.equal(got.completion_ids, direct.completion_ids)
    assert len(set(map(len, rows_of(got)))) > 2  # rows finished at different steps: the pruned cache was used too


def test_train_mode_restored_and_outputs_usable_with_grad(tok):
    model = build_policy("tiny", tokenizer=tok, seed=0, **TINY)
    model.train()
    r = sample(model, tok, MIXED, max_new_tokens=6, seed=0)
    assert model.training
    assert not r.input_ids.is_inference() and not r.completion_mask.is_inference()
    lp, _ = token_logprobs(model, r.input_ids, r.completion_start, r.completion_mask, attention_mask=r.attention_mask)
    lp.sum().backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
    model.eval()
    sample(model, tok, MIXED, max_new_tokens=2, seed=0)
    assert not model.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompts": []}, "prompts must be a non-empty list"),
        ({"prompts": "1+2="}, "prompts must be a non-empty list"),
        ({"prompts": ["ok", 3]}, r"prompts\[1\] must be a str"),
        ({"prompts": ["ok", ""]}, r"prompts\[1\] is empty after tokenisation"),
        ({"num_samples": 0}, "num_samples must be a positive int"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive int"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -1}, "top_k must be an int >= 0"),
        ({"stop": "="}, "stop must be a sequence of strings"),
        ({"stop": ("=", "")}, r"stop\[1\] must be a non-empty string"),
        ({"stop": ("\t",)}, "does not survive an encode/decode round trip"),
    ],
)
def test_bad_arguments_name_the_field(tok, kwargs, match):
    args = {"prompts": ["1+2="], "max_new_tokens": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample(MockLM(), tok, args.pop("prompts"), **args)


# ---------------------------------------------------------------------------------------------- log-probs


def naive_logprobs(model, r: Rollouts, temperature: float):
    """One forward per (row, completion position) on the unpadded prefix."""
    n, lc = r.completion_ids.shape
    logp, ent = torch.zeros(n, lc), torch.zeros(n, lc)
    with torch.no_grad():
        for i in range(n):
            prompt = r.prompt_ids[i][r.prompt_mask[i]]
            for j in range(int(r.completion_mask[i].sum())):
                seq = torch.cat([prompt, r.completion_ids[i, :j]])[None]
                logits = model(seq).logits[0, -1] / temperature
                lsm = logits.log_softmax(-1)
                logp[i, j] = lsm[r.completion_ids[i, j]]
                ent[i, j] = -(lsm.exp() * lsm).sum()
    return logp, ent


class NoLogitsToKeep(torch.nn.Module):
    """Hides ``logits_to_keep`` from the signature: the full-logits fallback."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


@pytest.mark.parametrize("prompts", [MIXED, ["1+2=", "3*4="]], ids=["left_padded", "equal_lengths"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_match_naive(tok, prompts, temperature):
    model = build_policy("tiny", tokenizer=tok, seed=0, **TINY)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(5.0)  # non-trivial distributions
    r = sample(model, tok, prompts, num_samples=2, max_new_tokens=6, seed=0, stop=("a", "b", "c"))
    assert (r.attention_mask is None) == (prompts != MIXED)
    want_lp, want_ent = naive_logprobs(model, r, temperature)
    for m in (model, NoLogitsToKeep(model)):
        with torch.no_grad():
            lp, ent = token_logprobs(
                m, r.input_ids, r.completion_start, r.completion_mask, temperature, True, r.attention_mask
            )
        torch.testing.assert_close(lp, want_lp, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ent, want_ent, atol=1e-4, rtol=1e-4)
    assert (lp[~r.completion_mask] == 0).all() and (lp[r.completion_mask] < 0).all()
    assert token_logprobs(model, r.input_ids, r.completion_start, r.completion_mask)[1] is None


@pytest.mark.parametrize("prompts", [MIXED, ["1+2=", "3*4="]], ids=["left_padded", "equal_lengths"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_entropies_equal_the_log_prob_forwards(tok, prompts, temperature, monkeypatch):
    """``sample(with_entropy=True)`` gives, from its decode logits, the entropies a separate full forward gives
    (rows finishing at different steps, pruned from the cache or not), and draws the very same samples."""
    model = build_policy("tiny", tokenizer=tok, seed=0, **TINY)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(5.0)  # non-trivial distributions
    kw = dict(num_samples=3, max_new_tokens=8, temperature=temperature, seed=1, stop=("a", "b", "c"))
    plain = sample(model, tok, prompts, **kw)
    for prune in (True, False):
        if not prune:  # finished rows stay in the batch (other samples: the RNG then draws for more rows)
            monkeypatch.setattr(sampler_module, "_PRUNE_FRACTION", math.inf)
            plain = sample(model, tok, prompts, **kw)
        r = sample(model, tok, prompts, **kw, with_entropy=True)
        assert plain.entropies is None and r.texts == plain.texts
        assert torch.equal(r.completion_ids, plain.completion_ids)
        assert len(set(r.completion_mask.sum(1).tolist())) > 1  # rows ended at different steps
        with torch.no_grad():
            _, want = token_logprobs(
                model, r.input_ids, r.completion_start, r.completion_mask, temperature, True, r.attention_mask
            )
        torch.testing.assert_close(r.entropies, want, atol=1e-4, rtol=1e-4)
        assert (r.entropies[~r.completion_mask] == 0).all() and (r.entropies[r.completion_mask] > 0).all()


@pytest.mark.parametrize("prompts", [MIXED, ["1+2=", "3*4="]], ids=["left_padded", "equal_lengths"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_statistics_ucas_fields_from_one_forward(tok, prompts, temperature):
    """UCAS's per-token self-certainty logsumexp(z/T) - mean(z/T) and the raw sampled-token logit z (before the
    temperature) equal a naive per-position computation, come from the same single forward as the log-probs, and
    survive length bucketing."""
    model = build_policy("tiny", tokenizer=tok, seed=0, **TINY)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(5.0)
    r = sample(model, tok, prompts, num_samples=2, max_new_tokens=6, seed=0, stop=("a", "b", "c"))
    n, lc = r.completion_ids.shape
    want_sc, want_z = torch.zeros(n, lc), torch.zeros(n, lc)
    with torch.no_grad():
        for i in range(n):
            prompt = r.prompt_ids[i][r.prompt_mask[i]]
            for j in range(int(r.completion_mask[i].sum())):
                z = model(torch.cat([prompt, r.completion_ids[i, :j]])[None]).logits[0, -1]  # (V,)
                want_sc[i, j] = (z / temperature).logsumexp(-1) - (z / temperature).mean()
                want_z[i, j] = z[r.completion_ids[i, j]]
    want_lp, want_ent = naive_logprobs(model, r, temperature)
    fields = ("logprobs", "entropies", "self_certainty", "token_logits")
    recorder = ShapeRecorder(model)
    with torch.no_grad():
        out = token_statistics(
            recorder, r.input_ids, r.completion_start, r.completion_mask, fields, temperature, r.attention_mask
        )
        bucketed = token_statistics(
            model, r.input_ids, r.completion_start, r.completion_mask, fields, temperature, r.attention_mask, 3
        )
    assert len(recorder.shapes) == 1  # one forward for all four
    for got in (out, bucketed):
        torch.testing.assert_close(got["self_certainty"], want_sc, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got["token_logits"], want_z, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got["logprobs"], want_lp, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got["entropies"], want_ent, atol=1e-4, rtol=1e-4)
    vocab = model.config.vocab_size
    assert (out["self_certainty"][r.completion_mask] >= math.log(vocab) - 1e-4).all()  # KL(U || p) + log |V|
    assert list(out) == list(fields)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['hiddens'\]; known: \['logprobs'"):
        token_statistics(model, r.input_ids, r.completion_start, r.completion_mask, ("hiddens",))


def test_token_logprobs_bad_input(tok):
    ids = torch.zeros(2, 5, dtype=torch.long)
    model = MockLM()
    with pytest.raises(ValueError, match=r"completion_start must be in \[1, L-1\]"):
        token_logprobs(model, ids, 5, torch.ones(2, 0, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"completion_mask must have shape \(N, Lc\) = \(2, 3\)"):
        token_logprobs(model, ids, 2, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(N, L\)"):
        token_logprobs(model, ids, 2, torch.ones(2, 3, dtype=torch.bool), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_logprobs(model, ids, 2, torch.ones(2, 3, dtype=torch.bool), temperature=0.0)


class ShapeRecorder(torch.nn.Module):
    """Passes calls through to a model and records each call's input_ids shape."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.shapes = []

    def forward(self, input_ids, logits_to_keep=0, **kwargs):
        self.shapes.append(tuple(input_ids.shape))
        return self.model(input_ids=input_ids, logits_to_keep=logits_to_keep, **kwargs)


@pytest.mark.parametrize("prompts", [MIXED, ["1+2=", "3*4="]], ids=["left_padded", "equal_lengths"])
@pytest.mark.parametrize("buckets", [2, 3, 100])
def test_token_logprobs_length_buckets_match_one_pass(tok, prompts, buckets):
    model = sharp(tok, scale=5.0)
    r = sample(model, tok, prompts, num_samples=3, max_new_tokens=8, seed=1, stop=("a", "b", "c"))
    lengths = r.completion_mask.sum(-1)  # (N,)
    assert len(set(lengths.tolist())) > 1  # ragged completions, or the test proves nothing
    args = (r.input_ids, r.completion_start, r.completion_mask, 0.7, True, r.attention_mask)

    want_lp, want_ent = token_logprobs(model, *args)
    (want_lp.sum() + want_ent.sum()).backward()
    want_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    rec = ShapeRecorder(model)
    lp, ent = token_logprobs(rec, *args, length_buckets=buckets)
    (lp.sum() + ent.sum()).backward()

    torch.testing.assert_close(lp, want_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, want_ent, atol=1e-5, rtol=1e-5)
    for p, g in zip(model.parameters(), want_grad, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-4, rtol=1e-4)
    # each bucket (rows sorted by length, torch.chunk sizes) is cut to its own longest completion
    want_shapes = [(len(c), r.completion_start + max(int(c.max()), 1)) for c in lengths.sort().values.chunk(buckets)]
    assert rec.shapes == want_shapes
    assert sum(a * b for a, b in want_shapes) < r.input_ids.numel() or buckets == 2  # 2: may be no saving


@pytest.mark.parametrize("prompts", [MIXED, ["1+2=", "3*4="]], ids=["left_padded", "equal_lengths"])
def test_mean_hidden_states_from_the_log_prob_forward(tok, prompts):
    """token_statistics' ``hidden``: the same log-probs and entropies as token_logprobs from the same one forward, plus
    each completion's mean final hidden state (the base model's last_hidden_state at the completion tokens, RepExp's
    feature); length buckets give the same values."""
    model = sharp(tok, scale=5.0)
    r = sample(model, tok, prompts, num_samples=3, max_new_tokens=8, seed=1, stop=("a", "b", "c"))
    args = (r.input_ids, r.completion_start, r.completion_mask)
    want_lp, want_ent = token_logprobs(model, *args, 0.7, True, r.attention_mask)
    fields = ("logprobs", "entropies", "hidden")
    recorder = ShapeRecorder(model)
    with torch.no_grad():
        out = token_statistics(recorder, *args, fields, 0.7, r.attention_mask)
        lp, ent, hidden = out["logprobs"], out["entropies"], out["hidden"]
        am = r.attention_mask
        kwargs = {} if am is None else {"attention_mask": am, "position_ids": (am.long().cumsum(-1) - 1).clamp(min=0)}
        states = model.model(input_ids=r.input_ids, **kwargs).last_hidden_state[:, r.completion_start :]  # (N, Lc, H)
    torch.testing.assert_close(lp, want_lp.detach())
    torch.testing.assert_close(ent, want_ent.detach())
    m = r.completion_mask.float()  # (N, Lc)
    want = (states * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)  # (N, H)
    torch.testing.assert_close(hidden, want, atol=1e-5, rtol=1e-5)
    assert hidden.shape == (r.input_ids.shape[0], model.config.hidden_size) and float(hidden.std(0).mean()) > 0
    assert len(recorder.shapes) == 1 and hidden.dtype == torch.float32  # one forward for all three
    with torch.no_grad():
        bucketed = token_statistics(model, *args, ("hidden",), 0.7, r.attention_mask, 3)
    assert list(bucketed) == ["hidden"]  # only what was asked
    torch.testing.assert_close(bucketed["hidden"], hidden, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("buckets", [1, 3])
def test_token_statistics_vocab_means_and_prompt_hidden_match_naive(tok, buckets):
    """ROVER's ``mean_v log p_v`` and FlowRL's prompt representation come from the same forward as the log-probs and
    equal the values of one unpadded forward per prefix (left-padded prompts, ragged completions); only the asked
    fields are computed."""
    model = sharp(tok, scale=5.0)
    r = sample(model, tok, MIXED, num_samples=2, max_new_tokens=8, seed=1, stop=("a", "b", "c"))
    n, lc = r.completion_ids.shape
    want_means, want_hidden = torch.zeros(n, lc), []
    with torch.no_grad():
        for i in range(n):
            prompt = r.prompt_ids[i][r.prompt_mask[i]]
            out = model(prompt[None], output_hidden_states=True)
            keep = len(prompt) - 1  # every prompt token but the last (the official pooling); none: zeros
            hidden = out.hidden_states[-1][0, :keep]
            want_hidden.append(hidden.mean(0) if keep else torch.zeros(hidden.shape[-1]))
            for j in range(int(r.completion_mask[i].sum())):
                z = model(torch.cat([prompt, r.completion_ids[i, :j]])[None]).logits[0, -1] / 0.7
                want_means[i, j] = z.log_softmax(-1).mean()
        recorder = ShapeRecorder(model)
        stats = token_statistics(
            recorder,
            r.input_ids,
            r.completion_start,
            r.completion_mask,
            ("logprobs", "vocab_mean_logprobs", "prompt_hidden"),
            temperature=0.7,
            attention_mask=r.attention_mask,
            length_buckets=buckets,
        )
    assert list(stats) == ["logprobs", "vocab_mean_logprobs", "prompt_hidden"]  # no entropies: not asked
    assert len(recorder.shapes) == min(buckets, n)  # one forward (per length bucket)
    torch.testing.assert_close(stats["vocab_mean_logprobs"], want_means, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(stats["prompt_hidden"], torch.stack(want_hidden), atol=1e-4, rtol=1e-4)
    assert stats["prompt_hidden"].dtype == torch.float32
    lp, _ = token_logprobs(model, r.input_ids, r.completion_start, r.completion_mask, 0.7, False, r.attention_mask)
    torch.testing.assert_close(stats["logprobs"], lp, atol=1e-5, rtol=1e-5)


ALL_FIELDS = (
    "logprobs",
    "entropies",
    "self_certainty",
    "token_logits",
    "vocab_mean_logprobs",
    "hidden",
    "prompt_hidden",
)


def _input_shapes(model):
    """Record the input_ids shape of every forward call of ``model`` (a pre-hook: the signature stays the model's)."""
    shapes = []
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    return shapes, handle


@pytest.mark.parametrize("prompts", [MIXED, ["1+2=", "3*4="]], ids=["left_padded", "equal_lengths"])
@pytest.mark.parametrize("buckets", [1, 3])
def test_prefix_shared_forward_matches_the_plain_one(tok, prompts, buckets):
    """``group_size``: each prompt runs once per length bucket and its KV cache serves its rows. Every field and the
    parameter gradients equal the plain forward's up to float rounding, and the calls are the ones described: per
    bucket, one forward of its distinct prompts, one of its completions' first width - 1 tokens (width with hidden)."""
    model = sharp(tok, scale=5.0)
    g = 3
    r = sample(model, tok, prompts, num_samples=g, max_new_tokens=8, seed=1, stop=("a", "b", "c"))
    lengths = r.completion_mask.sum(-1)  # (N,)
    assert len(set(lengths.tolist())) > 1  # ragged completions, or the buckets prove nothing
    args = (r.input_ids, r.completion_start, r.completion_mask)
    kwargs = {"temperature": 0.7, "attention_mask": r.attention_mask, "length_buckets": buckets}
    want = token_statistics(model, *args, ALL_FIELDS, **kwargs)
    sum(v.sum() for v in want.values()).backward()
    want_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    shapes, handle = _input_shapes(model)
    got = token_statistics(model, *args, ALL_FIELDS, group_size=g, **kwargs)
    handle.remove()
    sum(v.sum() for v in got.values()).backward()
    assert list(got) == list(ALL_FIELDS)
    for f in ALL_FIELDS:
        torch.testing.assert_close(got[f], want[f], atol=1e-5, rtol=1e-5, msg=f)
    for p, w in zip(model.parameters(), want_grad, strict=True):
        torch.testing.assert_close(p.grad, w, atol=1e-4, rtol=1e-4)
    expected = []
    for rows in torch.argsort(lengths, stable=True).chunk(buckets):
        width = max(int(lengths[rows].max()), 1)
        expected += [(len(set((rows // g).tolist())), r.completion_start), (len(rows), width)]  # hidden: width fed
    assert shapes == expected

    shapes, handle = _input_shapes(model)  # without hidden states the last completion token is not fed
    with torch.no_grad():
        lp = token_statistics(model, *args, ("logprobs",), group_size=g, **kwargs)["logprobs"]
    handle.remove()
    torch.testing.assert_close(lp, want["logprobs"].detach(), atol=1e-5, rtol=1e-5)
    lean = []
    for prompt_call, (n, width) in zip(expected[::2], expected[1::2], strict=True):
        lean += [prompt_call] + ([(n, width - 1)] if width > 1 else [])  # width 1: the prompt's logits suffice
    assert shapes == lean


def test_prefix_sharing_refuses_rows_that_do_not_share_prompts_and_falls_back_without_a_cache(tok):
    model = sharp(tok, scale=5.0)
    r = sample(model, tok, MIXED, num_samples=2, max_new_tokens=6, seed=1)
    args = (r.input_ids, r.completion_start, r.completion_mask)
    with pytest.raises(ValueError, match=r"group_size=3 does not divide the number of rows N=8"):
        token_logprobs(model, *args, attention_mask=r.attention_mask, group_size=3)
    with pytest.raises(ValueError, match=r"group_size=4: rows p\*G .. p\*G\+G-1 must share one prompt"):
        token_logprobs(model, *args, attention_mask=r.attention_mask, group_size=4)
    mock = chain(tok, "12+3")  # returns no KV cache: the plain forward, exactly
    want, _ = token_logprobs(mock, *args, attention_mask=r.attention_mask, length_buckets=2)
    got, _ = token_logprobs(mock, *args, attention_mask=r.attention_mask, length_buckets=2, group_size=2)
    assert torch.equal(got, want) and float(want.abs().sum()) > 0


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("prompts", [MIXED, ["1+2=", "3*4="]], ids=["left_padded", "equal_lengths"])
def test_reserved_kv_cache_changes_no_sample(tok, arch, prompts, monkeypatch):
    """The decode loop writes each step's keys and values into preallocated room (``reserve_cache``) instead of
    concatenating the cache: the samples, lengths and entropies are bit for bit those of the stock cache, with rows
    finishing at different steps (pruned from the cache) and a batch split into chunks."""
    model = sharp(tok, arch=arch, scale=5.0)
    kwargs = {"num_samples": 5, "max_new_tokens": 10, "seed": 4, "stop": tuple("0123456789"), "with_entropy": True}
    reserved = []
    real = sampler_module.reserve_cache
    monkeypatch.setattr(sampler_module, "reserve_cache", lambda past, room: reserved.append(real(past, room) or room))
    got = sample(model, tok, prompts, batch_size=7, **kwargs)
    assert reserved == [9] * math.ceil(len(prompts) * 5 / 7)  # once per chunk, room for the steps after the first
    monkeypatch.setattr(sampler_module, "reserve_cache", lambda past, room: None)
    want = sample(model, tok, prompts, batch_size=7, **kwargs)
    assert len(set(want.completion_mask.sum(-1).tolist())) > 1  # rows end at different steps
    assert torch.equal(got.completion_ids, want.completion_ids) and got.texts == want.texts
    assert torch.equal(got.completion_mask, want.completion_mask) and torch.equal(got.entropies, want.entropies)


def _two_caches(tok, room: int):
    """The KV caches of the same two prompts from a tiny Llama: one stock, one given ``room`` by ``reserve_cache``."""
    from divrl.rollout._hf import reserve_cache

    model = sharp(tok, scale=1.0)
    ids = torch.tensor(tok(["1+2=", "3*4="])["input_ids"])  # (2, 4)
    name = cache_arg(model)
    stock = getattr(model(input_ids=ids, use_cache=True), name)
    mine = getattr(model(input_ids=ids, use_cache=True), name)
    reserve_cache(mine, room)
    return stock, mine


def test_reserved_cache_layer_matches_concatenation(tok):
    """``reserve_cache`` on a real transformers cache: updates past the reserved room (the buffer doubles) and row
    selection with repeats (LATR's forks) give exactly the keys and values of the stock concatenating layer."""
    stock, mine = _two_caches(tok, room=2)
    assert {type(layer).__name__ for layer in mine.layers} == {"_ReservedLayer"}
    torch.manual_seed(0)
    for step, cache_rows in enumerate([None, torch.tensor([1, 0, 0]), None, torch.tensor([2, 1])]):
        if cache_rows is not None:
            stock.batch_select_indices(cache_rows)
            mine.batch_select_indices(cache_rows)
        rows = stock.layers[0].keys.shape[0]
        for i, (a, b) in enumerate(zip(stock.layers, mine.layers, strict=True)):
            k = torch.randn(rows, a.keys.shape[1], 1 + step % 2, a.keys.shape[-1])  # (B, H, q, D)
            v = torch.randn_like(k)
            want = a.update(k, v)
            got = b.update(k, v)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (step, i)
    assert mine.get_seq_length() == stock.get_seq_length() == 4 + 1 + 2 + 1 + 2
    assert mine.layers[0]._key_buffer.shape[-2] > 4 + 2  # it grew past the reserved room


def test_reserved_cache_layer_hands_other_calls_to_the_stock_layer(tok):
    """A call a decode loop does not make (crop, reset, beam reordering, ...) turns the layer back into a stock
    ``DynamicLayer`` with the same values, then runs the stock code: cropping then updating gives the stock result."""
    from transformers.cache_utils import DynamicLayer

    stock, mine = _two_caches(tok, room=8)
    k = torch.randn(2, *stock.layers[0].keys.shape[1:2], 1, stock.layers[0].keys.shape[-1])  # (B, H, 1, D)
    for cache in (stock, mine):
        cache.layers[0].update(k, k)
        cache.crop(-2)  # drop the last two positions
        cache.layers[0].update(k + 1, k + 1)
    assert type(mine.layers[0]) is DynamicLayer and mine.get_seq_length() == stock.get_seq_length() == 4
    for a, b in zip(stock.layers, mine.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
