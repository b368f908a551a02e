"""Per-token log-probabilities of completions under a causal LM, and any other statistic of the same forward pass
(entropies, UCAS's self-certainty and raw token logits, ROVER's vocabulary-mean log-prob, RepExp's mean completion
and FlowRL's mean prompt hidden state): :func:`token_statistics`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from divrl.rollout._hf import accepts


def token_logprobs(
    model: Any,
    input_ids: Tensor,
    completion_start: int,
    completion_mask: Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    attention_mask: Tensor | None = None,
    length_buckets: int = 1,
    group_size: int = 1,
) -> tuple[Tensor, Tensor | None]:
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
        with_entropy: also return entropies.
        attention_mask: (N, L) 1 for real tokens, for left-padded prompts; position ids then count real tokens only
            (``cumsum - 1``), exactly as the sampler fed them. ``None``: no padding before any real token.
        length_buckets: > 1 sorts the rows by completion length, splits them into this many equal sub-batches and
            runs each cut to its own longest completion, so the trailing padding of short completions is not
            computed (33% less forward/backward time on the Countdown testbed; docs/results.md). The causal
            mask makes the real positions' values independent of what follows them, so the result is the same
            up to float rounding (~1e-6 here). Completions must be right-padded (the sampler's layout).
        group_size: > 1 declares that rows come in consecutive runs of this many sharing one prompt (the sampler's
            layout: prompt ``p``'s group at rows ``p*G .. p*G+G-1``; checked). Each prompt then goes through the model
            once per length bucket, and its KV cache serves its rows' completions (a prefix-shared forward: on the
            Countdown testbed 27% less forward/backward time; docs/results.md). Same values up to float rounding
            (cached vs full attention, as in the sampler). Needs a transformers ``Cache`` (``batch_select_indices``):
            a model without one runs the plain forward.

    Returns:
        ``(logprobs, entropies)``: (N, Lc) float32 each; ``entropies`` is ``None`` unless ``with_entropy``.
    """
    fields = ("logprobs", "entropies") if with_entropy else ("logprobs",)
    out = token_statistics(
        model,
        input_ids,
        completion_start,
        completion_mask,
        fields,
        temperature=temperature,
        attention_mask=attention_mask,
        length_buckets=length_buckets,
        group_size=group_size,
    )
    return out["logprobs"], out.get("entropies")


TOKEN_FIELDS = ("logprobs", "entropies", "self_certainty", "token_logits", "vocab_mean_logprobs")
"""The per-token statistics :func:`token_statistics` computes from one forward pass, (N, Lc) each."""

ROW_FIELDS = ("hidden", "prompt_hidden")
"""The per-completion statistics :func:`token_statistics` computes from the same forward pass, (N, H) each."""

FIELDS = TOKEN_FIELDS + ROW_FIELDS
"""Every field :func:`token_statistics` can return. A new statistic of the forward is one more name here (and its
lines below); a trainer maps them to ``GroupBatch`` fields (``divrl.trainer.rl.PASS_FIELDS``)."""


def token_statistics(
    model: Any,
    input_ids: Tensor,
    completion_start: int,
    completion_mask: Tensor,
    fields: Sequence[str] = ("logprobs",),
    temperature: float = 1.0,
    attention_mask: Tensor | None = None,
    length_buckets: int = 1,
    group_size: int = 1,
) -> dict[str, Tensor]:
    """Statistics ``fields`` of the completions, all from **one** forward pass: (N, Lc) per token (:data:`TOKEN_FIELDS`),
    (N, H) per completion (:data:`ROW_FIELDS`).

    With ``z`` the logits at the position predicting completion token ``j`` and ``T`` the temperature:

    - ``logprobs``: ``log softmax(z / T)[token]`` (see :func:`token_logprobs`);
    - ``entropies``: ``-sum_v p_v log p_v`` of ``softmax(z / T)``;
    - ``self_certainty``: ``logsumexp(z / T) - mean_v(z / T)`` (= ``KL(U || p) + log |V|``), UCAS's per-token
      confidence (``xvolcano02/UCAS`` ``verl/utils/torch_functional.py::self_certainty_from_logits``, applied to the
      temperature-scaled logits as its ``dp_actor.py`` does);
    - ``token_logits``: the raw logit ``z[token]`` of the sampled token, **before** temperature (UCAS's
      ``actual_token_logits``);
    - ``vocab_mean_logprobs``: ``mean_v log softmax(z / T)_v = mean(z / T) - logsumexp(z / T)``, the uniform-policy
      expectation of the log-probability at each completion position (ROVER's ``sum_log_softmax`` / V);
    - ``hidden``: ``mean over the real completion tokens j of h_L(input_ids[n, :completion_start + j + 1])``, the
      final hidden state (after the model's final norm, ``output_hidden_states[-1]``, what ``AutoModel`` returns as
      ``last_hidden_state``) at each completion token's own position, float32, as RepExp's official recipe averages
      it (verl-recipe ``rep_exp/workers/elliptical_reward_model_worker.py``, ``_forward_micro_batch``); a
      completion with no real token gets zeros;
    - ``prompt_hidden``: the same last hidden layer averaged over the prompt's real positions except its last one,
      float32 (FlowRL's representation of the prompt for its log Z head: the official pooling
      ``hidden[:, : -response_length - 1]`` with the prompt's attention mask); a one-token prompt gets zeros.

    Asking for ``hidden`` or ``prompt_hidden`` makes the model return its hidden states (``output_hidden_states``),
    which the forward computes anyway.

    The full-vocabulary ones cost a reduction over the (N, Lc, V) logits the forward already produced; none takes
    a second pass. Masked positions get 0. Arguments as in :func:`token_logprobs`; ``fields`` must be a subset of
    :data:`FIELDS` (runs with grad unless called under ``torch.no_grad()``); the result has exactly ``fields``.
    """
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"token_statistics: unknown field(s) {unknown}; known: {list(FIELDS)}")
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
    share = group_size > 1
    if share:
        _check_groups(input_ids[:, :completion_start], attention_mask, group_size)
        share = _can_share_prompts(model)
    if share or (length_buckets > 1 and n > 1):
        request = _Request(model, input_ids, completion_start, completion_mask.bool(), temperature, tuple(fields))
        part = _shared_part if share else _plain_part
        return _by_length(request, attention_mask, group_size, max(1, min(length_buckets, n)), part)

    kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": False}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.long()
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, L)
    if accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = lc + 1
    if "hidden" in fields or "prompt_hidden" in fields:
        kwargs["output_hidden_states"] = True
    output = model(**kwargs)
    out: dict[str, Tensor] = {}
    if "hidden" in fields:
        out["hidden"] = _completion_mean(output.hidden_states[-1][:, completion_start:, :], completion_mask)  # (N, H)
    if "prompt_hidden" in fields:
        out["prompt_hidden"] = _prompt_mean(output.hidden_states[-1], completion_start, attention_mask)  # (N, H)
    raw = output.logits[:, -(lc + 1) : -1, :]  # (N, Lc, V): position i predicts token i + 1
    out.update(_from_logits(raw, input_ids[:, completion_start:], completion_mask.bool(), temperature, fields))
    return {f: out[f] for f in fields}


def _from_logits(
    raw: Tensor, targets: Tensor, mask: Tensor, temperature: float, fields: Sequence[str]
) -> dict[str, Tensor]:
    """The per-token fields (:data:`TOKEN_FIELDS` among ``fields``) from the (N, Lc, V) logits ``raw`` predicting the
    (N, Lc) ``targets``; 0 where the bool ``mask`` is False."""
    raw = raw.float()  # (N, Lc, V)
    out: dict[str, Tensor] = {}
    if "token_logits" in fields:
        out["token_logits"] = raw.gather(-1, targets.unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0)  # (N, Lc)
    logits = raw / temperature  # (N, Lc, V)
    del raw  # only the scaled logits are needed from here on (peak memory as before)
    lse = logits.logsumexp(-1)  # (N, Lc)
    if "logprobs" in fields:
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse  # (N, Lc)
        out["logprobs"] = logp.masked_fill(~mask, 0.0)
    if "entropies" in fields:
        out["entropies"] = entropy_of(logits, lse).masked_fill(~mask, 0.0)  # (N, Lc)
    if "self_certainty" in fields:
        out["self_certainty"] = (lse - logits.mean(-1)).masked_fill(~mask, 0.0)  # (N, Lc)
    if "vocab_mean_logprobs" in fields:
        out["vocab_mean_logprobs"] = (logits.mean(-1) - lse).masked_fill(~mask, 0.0)  # (N, Lc): mean_v log p_v
    return out


def entropy_of(z: Tensor, lse: Tensor) -> Tensor:  # (..., V), (...) -> (...)
    """``-sum_v p_v log p_v`` of ``softmax(z)`` given ``lse = logsumexp(z)`` (``log p = z - lse``); the one formula of
    the training forward's entropies and the sampler's (``sample(with_entropy=True)``)."""
    return lse - (z.softmax(-1) * z).sum(-1)


def _prompt_mean(last_hidden: Tensor, completion_start: int, attention_mask: Tensor | None) -> Tensor:
    """(N, H) float32 mean of ``last_hidden`` (N, L, H) over the prompt's real positions ``0 .. completion_start - 2``:
    the official FlowRL pooling (``hidden[:, : -response_length - 1]`` with the prompt's attention mask), which leaves
    out the prompt's last token. A prompt of one token gets the zero vector (as in the official code)."""
    stop = completion_start - 1
    hidden = last_hidden[:, :stop].float()  # (N, Lp - 1, H)
    if attention_mask is None:
        keep = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)  # (N, Lp - 1)
    else:
        keep = attention_mask[:, :stop].to(hidden.dtype)  # (N, Lp - 1)
    total = (hidden * keep.unsqueeze(-1)).sum(1)  # (N, H)
    return total / keep.sum(1, keepdim=True).clamp_min(1)  # (N, H)


@dataclass(frozen=True)
class _Request:
    """What :func:`token_statistics` was asked, for the per-bucket parts: the (N, L) ids, the completions' first
    column, their (N, Lc) bool mask, the temperature and the fields."""

    model: Any
    input_ids: Tensor
    completion_start: int
    mask: Tensor
    temperature: float
    fields: tuple[str, ...]


_Part = Callable[[_Request, Tensor, int, Tensor | None, int], dict[str, Tensor]]


def _by_length(
    request: _Request, attention_mask: Tensor | None, group_size: int, buckets: int, part: _Part
) -> dict[str, Tensor]:
    """:func:`token_statistics` over length-sorted row buckets: ``part(request, rows, width, attention_mask,
    group_size)`` computes the (n_b,) ``rows`` cut to their longest completion ``width``; the results are padded back
    to Lc and put back in row order."""
    mask, fields = request.mask, request.fields
    lc = mask.shape[1]
    columns = torch.arange(1, lc + 1, device=mask.device)  # (Lc,)
    ends = (mask * columns).amax(-1)  # (N,) one past the last real completion token (0 = empty)
    order = torch.argsort(ends, stable=True)  # (N,)
    parts: dict[str, list[Tensor]] = {f: [] for f in fields}
    for rows in order.chunk(buckets):  # (n_b,) each
        width = max(int(ends[rows].max()), 1)
        out = part(request, rows, width, attention_mask, group_size)
        for f in fields:
            parts[f].append(out[f] if f in ROW_FIELDS else F.pad(out[f], (0, lc - width)))  # (n_b, H) or (n_b, Lc)
    inverse = torch.argsort(order)  # (N,)
    return {f: torch.cat(parts[f])[inverse] for f in fields}  # (N, Lc) or (N, H) each


def _plain_part(
    request: _Request, rows: Tensor, width: int, attention_mask: Tensor | None, group_size: int
) -> dict[str, Tensor]:
    """One bucket by the plain forward: its rows cut to prompt + ``width`` columns."""
    cut = request.completion_start + width
    return token_statistics(
        request.model,
        request.input_ids[rows, :cut],  # (n_b, Ls + width)
        request.completion_start,
        request.mask[rows, :width],
        request.fields,
        temperature=request.temperature,
        attention_mask=attention_mask[rows, :cut] if attention_mask is not None else None,
    )


def _completion_mean(states: Tensor, completion_mask: Tensor) -> Tensor:
    """(N, H) float32 mean of the (N, Lc, H) hidden states at the real completion tokens (zeros for an empty one)."""
    states = states.float()  # (N, Lc, H)
    weights = completion_mask.to(states.dtype)  # (N, Lc)
    return (states * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)  # (N, H)


def _check_groups(prompt_ids: Tensor, attention_mask: Tensor | None, group_size: int) -> None:
    """Refuse a ``group_size`` the rows do not follow: N a multiple of it, one prompt (and padding) per run of rows."""
    n, lp = prompt_ids.shape
    if n % group_size:
        raise ValueError(f"group_size={group_size} does not divide the number of rows N={n}")
    runs = prompt_ids.view(n // group_size, group_size, lp)  # (P, G, Lp)
    same = (runs == runs[:, :1]).all()
    if attention_mask is not None:
        pm = attention_mask[:, :lp].view(n // group_size, group_size, lp)  # (P, G, Lp)
        same = same & (pm == pm[:, :1]).all()
    if not bool(same):
        raise ValueError(
            f"group_size={group_size}: rows p*G .. p*G+G-1 must share one prompt (the sampler's layout), "
            "and some run of rows has different prompt ids or padding"
        )


def _can_share_prompts(model: Any) -> bool:
    """Whether a prefix-shared forward can run: the model's forward takes a KV cache (and returns one with
    ``batch_select_indices``, checked after the prompt pass)."""
    return accepts(model, "cache") or accepts(model, "past_key_values")


def _shared_part(
    request: _Request, rows: Tensor, width: int, attention_mask: Tensor | None, group_size: int
) -> dict[str, Tensor]:
    """One bucket with each of its distinct prompts run once (``group_size`` rows per prompt).

    One forward of the bucket's distinct prompts (with cache; its last logits predict completion token 0), the cache
    indexed to the bucket's rows (``batch_select_indices``, differentiable), then one forward of the completions'
    first ``width - 1`` tokens (``width``: every one with ``hidden``) on that cache, positions continuing each
    prompt's own. A model that returns no transformers ``Cache`` gets the plain forward."""
    from divrl.rollout._hf import cache_arg

    model, ids, start, fields = request.model, request.input_ids, request.completion_start, request.fields
    mask = request.mask[rows, :width]  # (n_b, width)
    hidden_states = {"output_hidden_states": True} if "hidden" in fields or "prompt_hidden" in fields else {}
    groups, inverse = torch.unique(rows // group_size, return_inverse=True)  # (u,), (n_b,)
    first = groups * group_size  # (u,) a row of each distinct prompt
    kwargs: dict[str, Any] = {"input_ids": ids[first, :start], "use_cache": True, **hidden_states}
    prompt_mask = attention_mask[first, :start].long() if attention_mask is not None else None  # (u, Lp)
    if prompt_mask is not None:
        kwargs["attention_mask"] = prompt_mask
        kwargs["position_ids"] = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # (u, Lp)
    if accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    name = cache_arg(model)
    head = model(**kwargs)
    cache = getattr(head, name, None)
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return _plain_part(request, rows, width, attention_mask, group_size)
    out: dict[str, Tensor] = {}
    if "prompt_hidden" in fields:
        out["prompt_hidden"] = _prompt_mean(head.hidden_states[-1], start, prompt_mask)[inverse]  # (n_b, H)
    logits = [head.logits[:, -1:, :][inverse]]  # (n_b, 1, V): predicts completion token 0
    feed = width if "hidden" in fields else width - 1  # completion tokens fed on the prompts' cache
    if feed > 0:
        cache.batch_select_indices(inverse)
        step: dict[str, Any] = {"input_ids": ids[rows, start : start + feed], name: cache, "use_cache": True}
        offsets = torch.arange(feed, device=ids.device)  # (feed,)
        if prompt_mask is not None:
            ones = torch.ones(len(rows), feed, dtype=torch.long, device=ids.device)  # (n_b, feed)
            step["attention_mask"] = torch.cat([prompt_mask[inverse], ones], dim=1)  # (n_b, Lp + feed)
            step["position_ids"] = prompt_mask.sum(-1)[inverse][:, None] + offsets  # (n_b, feed)
        else:
            step["position_ids"] = (start + offsets).expand(len(rows), feed)  # (n_b, feed)
        tail = model(**step, **hidden_states)
        logits.append(tail.logits[:, : width - 1, :])  # (n_b, width - 1, V)
        if "hidden" in fields:
            out["hidden"] = _completion_mean(tail.hidden_states[-1], mask)  # (n_b, H)
    targets = ids[rows, start : start + width]  # (n_b, width)
    out.update(_from_logits(torch.cat(logits, dim=1), targets, mask, request.temperature, fields))
    return out
