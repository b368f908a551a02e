"""Per-token log-probabilities (and entropies) of completions under a causal LM, in one forward pass."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from divrl.rollout._hf import accepts


class TokenStats(NamedTuple):
    """What :func:`token_statistics` computes from one forward: each field ``None`` unless asked for.

    Attributes:
        logprobs: (N, Lc) log-probs of the completion tokens.
        entropies: (N, Lc) full-vocabulary entropies of the same distributions.
        vocab_means: (N, Lc) ``mean_v log softmax(z / T)_v = mean(z / T) - logsumexp(z / T)``: the uniform-policy
            expectation of the log-probability at each completion position (ROVER's ``sum_log_softmax``).
        prompt_hidden: (N, H) the last hidden layer averaged over the prompt's real tokens except its last one
            (FlowRL's representation of the prompt for log Z, as the official code pools it).
    """

    logprobs: Tensor
    entropies: Tensor | None = None
    vocab_means: Tensor | None = None
    prompt_hidden: Tensor | None = None


def token_logprobs(
    model: Any,
    input_ids: Tensor,
    completion_start: int,
    completion_mask: Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    attention_mask: Tensor | None = None,
    length_buckets: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """``(logprobs, entropies)`` of :func:`token_statistics` (``entropies`` is ``None`` unless ``with_entropy``)."""
    stats = token_statistics(
        model,
        input_ids,
        completion_start,
        completion_mask,
        temperature,
        entropy=with_entropy,
        attention_mask=attention_mask,
        length_buckets=length_buckets,
    )
    return stats.logprobs, stats.entropies


def token_statistics(
    model: Any,
    input_ids: Tensor,
    completion_start: int,
    completion_mask: Tensor,
    temperature: float = 1.0,
    *,
    entropy: bool = False,
    vocab_mean: bool = False,
    prompt_hidden: bool = False,
    attention_mask: Tensor | None = None,
    length_buckets: int = 1,
) -> TokenStats:
    """Log-probs of the completion tokens ``input_ids[:, completion_start:]`` under temperature-scaled logits.

    ``logp[n, j] = log softmax(z / T)[input_ids[n, completion_start + j]]`` where ``z`` are the logits at position
    ``completion_start + j - 1``; dividing by the sampling temperature before the softmax is what TRL's GRPOTrainer
    does before its per-token log-probs and entropies, so the ratio in the PPO loss
    compares the distribution that was actually sampled from (before top-k/top-p truncation, as in TRL).
    ``entropy[n, j] = -sum_v p_v log p_v`` over the full vocabulary of the same scaled distribution.

    Runs with grad unless called under ``torch.no_grad()`` / ``inference_mode()``. Only the Lc + 1 last positions go
    through the LM head (``logits_to_keep``, when the model accepts it), and the normaliser is a ``logsumexp``, so
    no (N, L, V) log-softmax is materialised. Logits are upcast to float32.

    Args:
        model: an HF causal LM (anything whose ``forward(input_ids=..., attention_mask=..., position_ids=...)``
            returns ``.logits`` of shape (N, L or fewer, V)).
        input_ids: (N, L) prompts then completions, e.g. :attr:`divrl.rollout.sampler.Rollouts.input_ids`.
        completion_start: first completion column (Lc = L - completion_start completion tokens).
        completion_mask: (N, Lc) bool/0-1; masked positions get log-prob (and entropy) 0.
        temperature: the sampling temperature (> 0).
        entropy: also return entropies.
        vocab_mean: also return ``mean_v log p_v`` per position (:attr:`TokenStats.vocab_means`), from the same
            logits (a mean and the logsumexp already computed; no extra pass).
        prompt_hidden: also return the mean last hidden state over the prompt (:attr:`TokenStats.prompt_hidden`);
            asks the model for its hidden states (``output_hidden_states``), which the forward computes anyway.
        attention_mask: (N, L) 1 for real tokens, for left-padded prompts; position ids then count real tokens only
            (``cumsum - 1``), exactly as the sampler fed them. ``None``: no padding before any real token.
        length_buckets: > 1 sorts the rows by completion length, splits them into this many equal sub-batches and
            runs each cut to its own longest completion, so the trailing padding of short completions is not
            computed (33% less forward/backward time on the Countdown testbed; docs/results.md). The causal
            mask makes the real positions' values independent of what follows them, so the result is the same
            up to float rounding (~1e-6 here). Completions must be right-padded (the sampler's layout).

    Returns:
        :class:`TokenStats`: (N, Lc) float32 each, ``prompt_hidden`` (N, H) in the model's dtype.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (N, L), got shape {tuple(input_ids.shape)}")
    n, length = input_ids.shape
    if not 1 <= completion_start < length:
        raise ValueError(f"completion_start must be in [1, L-1] = [1, {length - 1}], got {completion_start}")
    lc = length - completion_start
    if tuple(completion_mask.shape) != (n, lc):
        raise ValueError(f"completion_mask must have shape (N, Lc) = {(n, lc)}, got {tuple(completion_mask.shape)}")
    if attention_mask is not None and tuple(attention_mask.shape) != (n, length):
        raise ValueError(f"attention_mask must have shape (N, L) = {(n, length)}, got {tuple(attention_mask.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if length_buckets > 1 and n > 1:
        return _bucketed(
            model,
            input_ids,
            completion_start,
            completion_mask,
            temperature,
            (entropy, vocab_mean, prompt_hidden),
            attention_mask,
            min(length_buckets, n),
        )

    kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": False}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.long()
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, L)
    if accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = lc + 1
    if prompt_hidden:
        kwargs["output_hidden_states"] = True
    output = model(**kwargs)
    logits = output.logits  # (N, Lc + 1 or L, V)
    logits = logits[:, -(lc + 1) : -1, :].float() / temperature  # (N, Lc, V): position i predicts token i + 1
    targets = input_ids[:, completion_start:]  # (N, Lc)
    lse = logits.logsumexp(-1)  # (N, Lc)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse  # (N, Lc)
    mask = completion_mask.bool()
    logp = logp.masked_fill(~mask, 0.0)
    ent = means = hidden = None
    if entropy:
        ent = lse - (logits.softmax(-1) * logits).sum(-1)  # (N, Lc): -sum p log p with log p = z - lse
        ent = ent.masked_fill(~mask, 0.0)
    if vocab_mean:
        means = (logits.mean(-1) - lse).masked_fill(~mask, 0.0)  # (N, Lc): mean_v log p_v
    if prompt_hidden:
        hidden = _prompt_mean(output.hidden_states[-1], completion_start, attention_mask)  # (N, H)
    return TokenStats(logp, ent, means, hidden)


def _prompt_mean(last_hidden: Tensor, completion_start: int, attention_mask: Tensor | None) -> Tensor:
    """(N, H) mean of ``last_hidden`` (N, L, H) over the prompt's real positions ``0 .. completion_start - 2``: the
    official FlowRL pooling (``hidden[:, : -response_length - 1]`` with the prompt's attention mask), which leaves
    out the prompt's last token. A prompt of one token gets the zero vector (as in the official code)."""
    stop = completion_start - 1
    hidden = last_hidden[:, :stop]  # (N, Lp - 1, H)
    if attention_mask is None:
        keep = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)  # (N, Lp - 1)
    else:
        keep = attention_mask[:, :stop].to(hidden.dtype)  # (N, Lp - 1)
    total = (hidden * keep.unsqueeze(-1)).sum(1)  # (N, H)
    return total / keep.sum(1, keepdim=True).clamp_min(1)  # (N, H)


def _bucketed(
    model: Any,
    input_ids: Tensor,
    completion_start: int,
    completion_mask: Tensor,
    temperature: float,
    asked: tuple[bool, bool, bool],
    attention_mask: Tensor | None,
    buckets: int,
) -> TokenStats:
    """:func:`token_statistics` over length-sorted row buckets, each trimmed to its longest completion."""
    mask = completion_mask.bool()
    lc = mask.shape[1]
    columns = torch.arange(1, lc + 1, device=mask.device)  # (Lc,)
    ends = (mask * columns).amax(-1)  # (N,) one past the last real completion token (0 = empty)
    order = torch.argsort(ends, stable=True)  # (N,)
    parts: list[list[Tensor]] = [[], [], [], []]  # per field of TokenStats
    for rows in order.chunk(buckets):  # (n_b,) each
        width = max(int(ends[rows].max()), 1)
        cut = completion_start + width
        stats = token_statistics(
            model,
            input_ids[rows, :cut],  # (n_b, Ls + width)
            completion_start,
            mask[rows, :width],
            temperature=temperature,
            entropy=asked[0],
            vocab_mean=asked[1],
            prompt_hidden=asked[2],
            attention_mask=attention_mask[rows, :cut] if attention_mask is not None else None,
        )
        for i, value in enumerate(stats):
            if value is not None:
                parts[i].append(value if i == 3 else F.pad(value, (0, lc - width)))  # (n_b, Lc) or (n_b, H)
    inverse = torch.argsort(order)  # (N,)
    return TokenStats(*(torch.cat(p)[inverse] if p else None for p in parts))  # type: ignore[arg-type]
