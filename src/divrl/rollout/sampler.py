"""Batched sampling of G completions per prompt with a hand-written KV-cache decode loop.

Why not ``model.generate``: the loop is as fast as ``generate`` (``shared/research/cpu-feasibility.md`` §3), and owning it
lets us (1) skip the attention mask when every prompt has the same token length (a mask costs ~35 % on CPU because SDPA
leaves its unmasked causal fast path), (2) prefill each distinct prompt once and copy its KV cache to its G samples,
(3) drop finished rows from the batch as they finish, (4) match stop strings on token ids for a char tokenizer, and (5)
write each step's keys and values into room reserved after the prefill (:func:`divrl.rollout._hf.reserve_cache`)
instead of concatenating the whole cache every step (the same samples bit for bit, 16-19% less CPU time).

Row order: prompt ``p``'s group is rows ``p*G .. p*G+G-1`` (``G = num_samples``), as :class:`divrl.core.batch.GroupBatch`
expects after ``view(P, G, ...)``.

Works with any HF causal LM whose ``forward`` takes ``input_ids``, ``attention_mask``, ``position_ids``, a KV cache
and ``use_cache`` and returns ``.logits`` and the cache. The cache is passed and read under the name the model's
``forward`` declares (:func:`divrl.rollout._hf.cache_arg`): ``cache`` from transformers 5.24 on, which deprecates
``past_key_values`` and removes it in 5.40; ``past_key_values`` before, and for models that do not name ``cache``.
Cache tricks (2)-(3) need a transformers ``Cache`` (``batch_select_indices``); other caches are simply carried along
at full batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from divrl.rollout._hf import accepts, cache_arg, model_device, reserve_cache
from divrl.rollout.logprobs import entropy_of

_PRUNE_FRACTION = 0.25  # drop finished rows from the KV cache once they are at least this share of the batch


@dataclass
class Rollouts:
    """The output of :func:`sample`: N = P * G rows, prompt ``p``'s group at rows ``p*G .. p*G+G-1``.

    Attributes:
        prompt_ids: (N, Lp) the prompt ids actually fed, left-padded with the pad id to the longest prompt.
        completion_ids: (N, Lc) sampled ids, padded with the pad id after each row's end; Lc is the longest
            completion (<= ``max_new_tokens``). Use ``completion_mask``, not the ids, to find the end: a model may
            sample the pad id itself.
        completion_mask: (N, Lc) bool, True for real completion tokens, the final stop/EOS token included.
        texts: N decoded completions (stop string included; EOS and padding excluded).
        finished: (N,) bool, True where a stop string or EOS ended the row (False: it hit ``max_new_tokens``).
        prompt_mask: (N, Lp) bool, True for real prompt tokens (False for left padding).
        stats: numbers a sampler reports about itself (e.g. LATR's forks and pruned branches); the trainer logs them
            as ``sampler/<name>``. Empty for :func:`sample`.
        entropies: (N, Lc) float32 token entropies of the sampling distribution (``sample(with_entropy=True)``; 0
            where ``completion_mask`` is False), else ``None``.
    """

    prompt_ids: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    texts: list[str]
    finished: Tensor
    prompt_mask: Tensor
    stats: dict[str, float] = field(default_factory=dict)
    entropies: Tensor | None = None

    @property
    def completion_start(self) -> int:
        """Column where completions start in :attr:`input_ids` (= Lp)."""
        return int(self.prompt_ids.shape[1])

    @property
    def input_ids(self) -> Tensor:
        """(N, Lp + Lc) prompt and completion ids side by side (the input of a training forward pass)."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor | None:
        """(N, Lp + Lc) long mask hiding the left padding, or ``None`` when no prompt is padded.

        Padding *after* a completion needs no mask: under causal attention no real token attends to it, and its own
        positions are masked out of every loss by ``completion_mask``. Pass this to
        :func:`divrl.rollout.logprobs.token_logprobs` to see the positions the sampler used.
        """
        if bool(self.prompt_mask.all()):
            return None
        ones = torch.ones_like(self.completion_ids, dtype=torch.long)  # (N, Lc)
        return torch.cat([self.prompt_mask.long(), ones], dim=1)


def concat_rollouts(parts: Sequence[Rollouts], rows: Sequence[Sequence[int]], pad_id: int) -> Rollouts:
    """The rows ``rows[i]`` of ``parts[i]``, in that order, as one :class:`Rollouts` (e.g. the groups that DAPO's
    dynamic sampling keeps from several generation rounds, ``rollout.filter_groups``).

    Prompts are left-padded with ``pad_id`` to the longest kept prompt and completions right-padded with it to the
    longest kept completion (columns no kept row uses are dropped, so ``attention_mask`` is ``None`` again when the
    kept prompts have one length); each row's real tokens, masks, text, ``finished`` and entropies are unchanged.
    ``stats`` stays empty (the caller merges the parts' own). Entropies: kept when every part has them, else
    ``None``."""
    if len(parts) != len(rows) or not parts:
        raise ValueError(f"concat_rollouts needs one row list per part, got {len(parts)} parts and {len(rows)} lists")
    picked = [(part, torch.as_tensor(list(r), dtype=torch.long)) for part, r in zip(parts, rows, strict=True)]
    picked = [(part, r) for part, r in picked if len(r)]
    if not picked:
        raise ValueError("concat_rollouts: no rows to keep")
    device = picked[0][0].prompt_ids.device
    prompt_lens = [part.prompt_mask[r.to(device)].sum(-1) for part, r in picked]  # (n_i,) each
    completion_lens = [part.completion_mask[r.to(device)].sum(-1) for part, r in picked]  # (n_i,) each
    lp = int(torch.cat(prompt_lens).max())
    lc = max(1, int(torch.cat(completion_lens).max()))
    with_entropy = all(part.entropies is not None for part, _ in picked)
    prompt_ids, prompt_mask, completion_ids, completion_mask, finished, entropies = [], [], [], [], [], []
    texts: list[str] = []
    for part, r in picked:
        rd = r.to(device)
        n, width = len(r), part.prompt_ids.shape[1]
        ids = torch.full((n, lp), pad_id, dtype=torch.long, device=device)  # (n, Lp)
        keep = min(lp, width)  # a row's prompt is right-aligned: its last ``keep`` columns hold every real token
        ids[:, lp - keep :] = part.prompt_ids[rd, width - keep :]
        mask = torch.zeros(n, lp, dtype=torch.bool, device=device)  # (n, Lp)
        mask[:, lp - keep :] = part.prompt_mask[rd, width - keep :]
        prompt_ids.append(ids)
        prompt_mask.append(mask)
        c_width = min(lc, part.completion_ids.shape[1])
        c_ids = torch.full((n, lc), pad_id, dtype=torch.long, device=device)  # (n, Lc)
        c_ids[:, :c_width] = part.completion_ids[rd, :c_width]
        c_mask = torch.zeros(n, lc, dtype=torch.bool, device=device)  # (n, Lc)
        c_mask[:, :c_width] = part.completion_mask[rd, :c_width]
        completion_ids.append(c_ids.masked_fill(~c_mask, pad_id))
        completion_mask.append(c_mask)
        finished.append(part.finished[rd])
        texts.extend(part.texts[i] for i in r.tolist())
        if with_entropy:
            ent = torch.zeros(n, lc, dtype=torch.float32, device=device)  # (n, Lc)
            ent[:, :c_width] = part.entropies[rd, :c_width]  # type: ignore[index]
            entropies.append(ent.masked_fill(~c_mask, 0.0))
    return Rollouts(
        prompt_ids=torch.cat(prompt_ids),
        completion_ids=torch.cat(completion_ids),
        completion_mask=torch.cat(completion_mask),
        texts=texts,
        finished=torch.cat(finished),
        prompt_mask=torch.cat(prompt_mask),
        entropies=torch.cat(entropies) if with_entropy else None,
    )


def sample(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    num_samples: int = 1,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    batch_size: int = 512,
    greedy: bool = False,
    with_entropy: bool = False,
) -> Rollouts:
    """Sample ``num_samples`` completions for every prompt.

    Args:
        model: a causal LM (see the module docstring); put in eval mode for the call and restored afterwards.
        tokenizer: its tokenizer. Prompts are encoded with the tokenizer's defaults (a BOS is added only if the
            tokenizer adds one itself; divrl's char tokenizer adds none).
        prompts: P prompt strings, each non-empty after tokenisation.
        num_samples: G completions per prompt.
        max_new_tokens: longest completion, in tokens.
        temperature: softmax temperature (> 0); ignored when ``greedy``.
        top_p: nucleus sampling: keep the smallest set of tokens whose probability reaches ``top_p`` (1 = off).
        top_k: keep the ``top_k`` most likely tokens (0 = off). Applied before ``top_p``.
        stop: a row ends once its generated text ends with one of these strings (kept in the text and the mask).
            Only completion text counts, never the prompt. With a tokenizer whose vocabulary is single characters
            (divrl's char tokenizer, byte-level vocabularies) the match is exact on token ids; otherwise the tail of
            each row is decoded every step and a row stops once a stop string ends inside its newest token (that
            token's remaining characters then stay in the text).
        seed: seeds a private ``torch.Generator``: same seed, model and inputs give identical samples; the global
            RNG is neither used nor advanced. ``None`` samples from the global RNG.
        batch_size: most rows decoded at once; rows are processed in consecutive chunks of this size.
        greedy: argmax decoding (temperature/top-p/top-k ignored).
        with_entropy: also return :attr:`Rollouts.entropies`: at each completion token, ``-sum_v p_v log p_v`` over
            the full vocabulary of ``softmax(logits / temperature)`` (before top-k/top-p; ``temperature`` 1 when
            ``greedy``), from the logits the token was drawn from. This is
            :func:`divrl.rollout.logprobs.token_logprobs`'s ``with_entropy`` without a second forward pass; the two
            differ only by floating-point rounding (cached vs full attention).

    EOS: the tokenizer's ``eos_token_id`` plus any ``model.generation_config.eos_token_id``; a row that samples one
    is finished, with the EOS in ``completion_mask`` but not in ``texts``.
    """
    _check_sample_args(prompts, num_samples, max_new_tokens, temperature, top_p, top_k, stop, batch_size, greedy)
    device = model_device(model)
    pad_id, eos_ids = special_ids(model, tokenizer)
    encoded: list[list[int]] = tokenizer(list(prompts))["input_ids"]
    for i, ids in enumerate(encoded):
        if len(ids) == 0:
            raise ValueError(f"prompts[{i}] is empty after tokenisation; the model needs at least one token")
    stop_ids = _stop_token_ids(tokenizer, stop)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    decoder = _Decoder(
        model=model,
        tokenizer=tokenizer,
        device=device,
        pad_id=pad_id,
        eos_ids=torch.tensor(sorted(eos_ids), dtype=torch.long, device=device),
        stop=tuple(stop),
        stop_ids=None if stop_ids is None else [i.to(device) for i in stop_ids],
        max_new_tokens=max_new_tokens,
        pick=_Picker(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator),
        entropy_temperature=(1.0 if greedy else temperature) if with_entropy else None,
    )

    lens = torch.tensor([len(ids) for ids in encoded], device=device)  # (P,)
    lp = int(lens.max())
    padded = torch.full((len(encoded), lp), pad_id, dtype=torch.long, device=device)  # (P, Lp)
    for i, ids in enumerate(encoded):
        padded[i, lp - len(ids) :] = torch.tensor(ids, dtype=torch.long, device=device)
    row_prompt = torch.arange(len(encoded), device=device).repeat_interleave(num_samples)  # (N,)
    prompt_ids = padded[row_prompt]  # (N, Lp)
    prompt_mask = torch.arange(lp, device=device) >= (lp - lens[row_prompt])[:, None]  # (N, Lp)

    chunks = []
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(row_prompt), batch_size):
                rows = slice(start, start + batch_size)
                width = int(lens[row_prompt[rows]].max())  # the chunk's longest prompt
                chunks.append(
                    decoder.run(prompt_ids[rows, lp - width :], prompt_mask[rows, lp - width :], row_prompt[rows])
                )
    finally:
        if was_training and hasattr(model, "train"):
            model.train(True)

    # Assembled outside inference mode: ordinary tensors, usable as inputs of a later forward pass with grad.
    lc = max(int(c.lengths.max()) for c in chunks)
    completion_ids = torch.cat([c.tokens[:, :lc] for c in chunks]).clone()  # (N, Lc)
    lengths = torch.cat([c.lengths for c in chunks]).clone()  # (N,)
    finished = torch.cat([c.finished for c in chunks]).clone()  # (N,)
    completion_mask = torch.arange(lc, device=device) < lengths[:, None]  # (N, Lc)
    entropies = None
    if with_entropy:
        parts = [c.entropies[:, :lc] for c in chunks if c.entropies is not None]  # every chunk has them
        entropies = torch.cat(parts).masked_fill(~completion_mask, 0.0)  # (N, Lc)
    last = completion_ids.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)  # (N,) final token
    text_lengths = lengths - (finished & torch.isin(last, decoder.eos_ids)).long()  # (N,) the EOS is not text
    rows_ids = completion_ids.tolist()
    texts = tokenizer.batch_decode(
        [r[:n] for r, n in zip(rows_ids, text_lengths.tolist(), strict=True)], skip_special_tokens=False
    )
    return Rollouts(
        prompt_ids=prompt_ids,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        texts=list(texts),
        finished=finished,
        prompt_mask=prompt_mask,
        entropies=entropies,
    )


@dataclass
class _Chunk:
    tokens: Tensor  # (B, max_new_tokens) pad after each row's end
    lengths: Tensor  # (B,) completion lengths
    finished: Tensor  # (B,) bool
    entropies: Tensor | None = None  # (B, max_new_tokens) float32 when asked for, else None


@dataclass
class _Picker:
    """Next-token choice from last-position logits: greedy, or temperature -> top-k -> top-p -> multinomial."""

    greedy: bool
    temperature: float
    top_k: int
    top_p: float
    generator: torch.Generator | None

    def __call__(self, logits: Tensor) -> Tensor:  # (b, V) -> (b,)
        if self.greedy:
            return logits.argmax(-1)
        logits = logits.float() / self.temperature  # (b, V)
        if 0 < self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]  # (b, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)  # (b, V)
            probs = sorted_logits.softmax(-1)  # (b, V)
            drop = probs.cumsum(-1) - probs >= self.top_p  # mass of the better tokens already reaches top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = logits.softmax(-1)  # (b, V)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)  # (b,)


@dataclass
class _Decoder:
    model: Any
    tokenizer: Any
    device: torch.device
    pad_id: int
    eos_ids: Tensor  # (E,)
    stop: tuple[str, ...]
    stop_ids: list[Tensor] | None  # token ids per stop string when matching on ids is exact, else None
    max_new_tokens: int
    pick: _Picker
    entropy_temperature: float | None = None  # token entropies of softmax(logits / this), or none

    def run(self, prompt_ids: Tensor, prompt_mask: Tensor, row_prompt: Tensor) -> _Chunk:
        """Decode one chunk: (B, Lb) left-padded prompts, their (B, Lb) mask, (B,) prompt index of each row
        (rows of one prompt adjacent)."""
        b = prompt_ids.shape[0]
        lens = prompt_mask.long().sum(-1)  # (B,)
        masked = not bool(prompt_mask.all())  # equal lengths: no mask, SDPA's causal fast path

        # Prefill each distinct prompt once, then copy its cache and last logits to its rows.
        _, first, inverse = _unique_consecutive(row_prompt)
        kwargs: dict[str, Any] = {"input_ids": prompt_ids[first], "use_cache": True}
        if masked:
            kwargs["attention_mask"] = prompt_mask[first].long()
            kwargs["position_ids"] = (prompt_mask[first].long().cumsum(-1) - 1).clamp(min=0)
        if accepts(self.model, "logits_to_keep"):
            kwargs["logits_to_keep"] = 1
        cache_name = cache_arg(self.model)  # the KV cache's name in forward() and in its output
        out = self.model(**kwargs)
        past = getattr(out, cache_name)
        logits = out.logits[:, -1, :]  # (U, V)
        can_select = hasattr(past, "batch_select_indices")
        if len(first) < b:
            if can_select:
                past.batch_select_indices(inverse)
                logits = logits[inverse]  # (B, V)
            else:  # unknown cache type: prefill every row
                kwargs["input_ids"] = prompt_ids
                if masked:
                    kwargs["attention_mask"] = prompt_mask.long()
                    kwargs["position_ids"] = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
                out = self.model(**kwargs)
                past, logits = getattr(out, cache_name), out.logits[:, -1, :]
        reserve_cache(past, self.max_new_tokens - 1)  # decode steps write in place (no cat per step)

        tokens = torch.full((b, self.max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)  # (B, T)
        lengths = torch.zeros(b, dtype=torch.long, device=self.device)  # (B,)
        finished = torch.zeros(b, dtype=torch.bool, device=self.device)  # (B,)
        entropies = None
        temperature = self.entropy_temperature
        if temperature is not None:
            entropies = torch.zeros(b, self.max_new_tokens, dtype=torch.float32, device=self.device)  # (B, T)
        active = torch.arange(b, device=self.device)  # (b,) chunk rows still in the batch
        done = torch.zeros(b, dtype=torch.bool, device=self.device)  # (b,) finished rows not yet pruned
        attn = prompt_mask.long() if masked else None  # (b, Lb + t)
        pos = lens.clone()  # (b,) position of the next fed token
        for t in range(self.max_new_tokens):
            if entropies is not None and temperature is not None:
                entropies[active, t] = _entropy(logits, temperature)  # (b,) masked at the end
            nxt = self.pick(logits).masked_fill(done, self.pad_id)  # (b,)
            tokens[active, t] = nxt
            lengths[active] += (~done).long()
            ended = ~done & torch.isin(nxt, self.eos_ids)  # (b,)
            if self.stop:
                ended |= ~done & self._stop_hit(tokens[active, : t + 1])
            finished[active[ended]] = True
            done |= ended
            if bool(done.all()) or t + 1 == self.max_new_tokens:
                break
            if can_select and int(done.sum()) >= _PRUNE_FRACTION * len(done):
                keep = (~done).nonzero().squeeze(1)  # (b',)
                past.batch_select_indices(keep)
                active, done, nxt, pos = active[keep], done[keep], nxt[keep], pos[keep]
                attn = attn[keep] if attn is not None else None
            kwargs = {"input_ids": nxt[:, None], cache_name: past, "use_cache": True}
            if attn is not None:
                attn = torch.cat([attn, attn.new_ones(len(attn), 1)], dim=1)  # (b, Lb + t + 1)
                kwargs["attention_mask"] = attn
                kwargs["position_ids"] = pos[:, None]
            out = self.model(**kwargs)
            past, logits = getattr(out, cache_name), out.logits[:, -1, :]  # (b, V)
            pos = pos + 1
        return _Chunk(tokens, lengths, finished, entropies)

    def _stop_hit(self, generated: Tensor) -> Tensor:  # (b, t) -> (b,) bool
        """Whether each row's generated text now ends with a stop string."""
        b, t = generated.shape
        if self.stop_ids is not None:  # exact on ids: one token per character
            hit = torch.zeros(b, dtype=torch.bool, device=generated.device)
            for ids in self.stop_ids:
                if len(ids) <= t:
                    hit |= (generated[:, t - len(ids) :] == ids).all(-1)
            return hit
        # General tokenizer: decode a window of the newest tokens (a stop string of c characters ends in the newest
        # token and starts within the last c tokens, assuming every token decodes to at least one character).
        window = max(len(s) for s in self.stop)
        tails = generated[:, max(0, t - window) :].tolist()
        now = self.tokenizer.batch_decode(tails, skip_special_tokens=False)
        before = self.tokenizer.batch_decode([r[:-1] for r in tails], skip_special_tokens=False)
        flags = [
            any(text.find(s, max(0, len(prev) - len(s) + 1)) >= 0 for s in self.stop)
            for text, prev in zip(now, before, strict=True)
        ]
        return torch.tensor(flags, dtype=torch.bool, device=generated.device)


def _entropy(logits: Tensor, temperature: float) -> Tensor:  # (b, V) -> (b,)
    """``-sum_v p_v log p_v`` of ``softmax(logits / temperature)``."""
    z = logits.float() / temperature  # (b, V)
    return entropy_of(z, z.logsumexp(-1))  # (b,)


def _check_sample_args(
    prompts: list[str],
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    stop: Sequence[str],
    batch_size: int,
    greedy: bool,
) -> None:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompts[{i}] must be a str, got {type(p).__name__}")
    for name, value in (("num_samples", num_samples), ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k!r}")
    if isinstance(stop, str):
        raise ValueError(f"stop must be a sequence of strings, not a single string; use stop=({stop!r},)")
    for i, s in enumerate(stop):
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop[{i}] must be a non-empty string, got {s!r}")


def special_ids(model: Any, tokenizer: Any) -> tuple[int, set[int]]:
    """The pad id (falling back to EOS, then 0) and the set of EOS ids of tokenizer and generation config."""
    eos: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            eos.add(source)
        elif isinstance(source, (list, tuple)):
            eos.update(int(i) for i in source)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = min(eos) if eos else 0
    return int(pad), eos


def _stop_token_ids(tokenizer: Any, stop: Sequence[str]) -> list[Tensor] | None:
    """Token ids per stop string if every non-special vocabulary entry is one character (then a text ends with a
    stop string exactly when its ids end with the stop string's ids), else ``None`` (match on decoded text)."""
    if not stop:
        return None
    ids = [tokenizer.encode(s, add_special_tokens=False) for s in stop]
    for s, i in zip(stop, ids, strict=True):
        if tokenizer.decode(i, skip_special_tokens=False) != s:
            raise ValueError(f"stop string {s!r} does not survive an encode/decode round trip with this tokenizer")
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    char_level = all(len(tok) == 1 for tok in tokenizer.get_vocab() if tok not in special)
    return [torch.tensor(i, dtype=torch.long) for i in ids] if char_level else None


def _unique_consecutive(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Values, index of first occurrence, and inverse for runs of equal values in a 1-D tensor."""
    values, inverse, counts = torch.unique_consecutive(x, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # (U,)
    return values, first, inverse
