"""LATR, lookahead tree-based rollouts (Xing et al., arXiv 2510.24302), as a sampler of divrl's own decode loop.

Each prompt's group of G is split into a tree part of ``round(G * eta)`` rows (``eta`` from ``mix_ratio_schedule``
at the training step) and ``G - round(G * eta)`` rows sampled independently from the start (the standard way).
The tree starts as one row. Every decode step, while the tree phase lasts:

1. each unfinished tree row takes its most likely token (``sample_nk: none``); where its second most likely token
   passes :func:`divrl.core.latr.branch_mask` (``p_2 > prob_abs`` and ``p_1 - p_2 < prob_rel``) it also forks a new
   row that takes the second token, as long as the tree holds fewer than its share of rows
   (:func:`divrl.core.latr.apply_capacity`: a row's own continuation first, earlier rows' forks first);
2. a fork made ``r`` tokens ago (``r`` in ``windows``) is compared with its parent over those ``r`` tokens and
   pruned, with its descendants, when the normalised edit distance is below ``edit_dist`` (the lookahead); a
   comparison where either row has finished is skipped, and so is a fork whose parent token is a math symbol
   (``keep_math_symbols``);
3. the tree phase ends when the trees are full (:func:`divrl.core.latr.trees_full`), at ``force_return_step``, or
   when every row has finished; a tree with fewer rows than its share is topped up with copies of its first row
   (its root; official ``fill_return_sequences``, always on here: a group must hold G rows), and every unfinished row is then finished by ordinary sampling (temperature, top-p,
   top-k), which is what the official code's vLLM engine does after the tree phase (``return_on_full``).

Every default is the official code's (starreeze/latr @ 2adb0ed; see :mod:`divrl.core.latr` for the file names);
``LatrOptions`` names each one. Differences: rows end at the task's stop strings as well as EOS (divrl's sampler
contract), which is what "contains EOS" means in the official pruning and capacity rules here; a fork's cache is a
copy of its parent's rows of a transformers ``Cache`` (``batch_select_indices``), where the official code copies
``DynamicCache`` tensors.

Row order of the result: prompt ``p``'s group at rows ``p*G .. p*G+G-1``, the tree's rows first (in the order they
were made), then the copies that filled it, then the independently sampled rows (the official order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from divrl.core.latr import (
    MATH_SYMBOLS,
    apply_capacity,
    branch_mask,
    descendants,
    exempt_fork,
    mix_ratio_at,
    near_duplicate,
    tree_rows,
    trees_full,
)
from divrl.rollout._hf import accepts, cache_arg, model_device, reserve_cache
from divrl.rollout.sampler import (
    Rollouts,
    _check_sample_args,
    _Picker,
    _stop_token_ids,
    sample,
    special_ids,
)


@dataclass(frozen=True)
class LatrOptions:
    """Options of the ``latr`` sampler (``sampler.options``). Defaults: the official code (starreeze/latr @ 2adb0ed,
    ``model/utils.py``), unless a field says otherwise; the official Countdown script
    (``scripts/grpo-kt-countdown.sh``) changes ``mix_ratio_schedule``, ``full_decay`` and ``force_return_step``."""

    max_branch_per_token: int = 2
    """Candidates considered at a token (the top-m; ``max_n_branch_per_token``)."""
    prob_abs: float | None = 0.25
    """``tau_abs``: a candidate forks only if its probability exceeds this (``prob_filter_abs_thres``; None = off)."""
    prob_rel: float | None = 0.15
    """``tau_rel``: ... and if the top token's probability exceeds it by less than this (a difference, as in the
    official ``ProbFilter``; ``prob_filter_rel_thres``; None = off)."""
    branch_probs: Literal["raw", "tempered"] = "raw"
    """Probabilities the fork test reads: ``raw`` = softmax of the logits (official ``kt_probs_raw``), ``tempered`` =
    after ``rollout.temperature`` (ours)."""
    edit_dist: float | None = 0.4
    """``tau_ed``: a fork is pruned when its window's edit distance to its parent's, over the window length, is below
    this (``rollout_filter_edit_dist_thres``; None = no pruning)."""
    windows: list[int] = field(default_factory=lambda: [20, 30, 50])
    """``r``: lookahead windows in tokens; a fork is compared with its parent after each of them
    (``rollout_filter_steps``; tokens of the policy's tokenizer, so a character-level policy needs shorter ones)."""
    keep_math_symbols: bool = True
    """Never prune a fork whose parent token is a math symbol (``keep_math_symbols``; see
    :func:`divrl.core.latr.exempt_fork`)."""
    mix_ratio_schedule: dict[int, float] = field(default_factory=lambda: {0: 1.0})
    """``eta`` by training step: the share of each group grown as a tree (the rest sampled independently); the value
    of the largest key <= the step. Code default ``{0: 1.0}``; the official Countdown script uses
    ``{0: 1, 10: 0.75, 20: 0.5, 80: 0.25, 200: 0}``."""
    sample_nk: Literal["none", "full", "always"] = "none"
    """A tree row with a single candidate left takes its top token (``none``), or samples (``always``; ``full``: only
    once its tree holds its share) (``sample_nk``)."""
    return_on_full: bool = True
    """End the tree phase once the trees are full and finish the rows by sampling (the official mixed engine); False:
    tree rows decode to the end with their top tokens."""
    full_init: float = 0.98
    """Share of the trees' rows that counts as full at step 0 (``return_nb_thres_init``)."""
    full_decay: float = 0.0
    """Linear decay of that share over ``max_new_tokens`` (``return_nb_thres_decay``; the Countdown script: 0.05)."""
    force_return_step: int = -1
    """End the tree phase after this many tokens at the latest (-1 = never; the Countdown script: 512 of 1024)."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_branch_per_token, int) or self.max_branch_per_token < 1:
            raise ValueError(f"max_branch_per_token: must be an int >= 1, got {self.max_branch_per_token!r}")
        for name in ("prob_abs", "prob_rel", "edit_dist"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not 0 <= value <= 1):
                raise ValueError(f"{name}: must be a number in [0, 1] or null, got {value!r}")
        if self.branch_probs not in ("raw", "tempered"):
            raise ValueError(f"branch_probs: must be 'raw' or 'tempered', got {self.branch_probs!r}")
        if self.sample_nk not in ("none", "full", "always"):
            raise ValueError(f"sample_nk: must be 'none', 'full' or 'always', got {self.sample_nk!r}")
        if not self.windows or any(not isinstance(w, int) or w < 1 for w in self.windows):
            raise ValueError(f"windows: must be a non-empty list of ints >= 1, got {self.windows!r}")
        if not self.mix_ratio_schedule:
            raise ValueError("mix_ratio_schedule: must not be empty")
        for key, value in self.mix_ratio_schedule.items():
            if not isinstance(key, int) or key < 0 or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(
                    f"mix_ratio_schedule: keys must be steps >= 0 and values in [0, 1], got {key!r}: {value!r}"
                )
        if not isinstance(self.full_init, (int, float)) or not isinstance(self.full_decay, (int, float)):
            raise ValueError("full_init, full_decay: must be numbers")
        if not isinstance(self.force_return_step, int) or self.force_return_step < -1:
            raise ValueError(f"force_return_step: must be an int >= -1, got {self.force_return_step!r}")


@dataclass
class _Row:
    prompt: int
    tree: bool
    parent: int | None = None  # row index of the parent in the current list (tree rows; None: a root or a free row)
    birth: int = 0  # decode step of the fork (0 for roots)
    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    eos_end: bool = False
    fill: bool = False  # a copy that topped up a tree


def latr_sample(
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
    step: int = 0,
    options: LatrOptions | Mapping[str, Any] | None = None,
) -> Rollouts:
    """G = ``num_samples`` completions per prompt by LATR at training step ``step`` (see the module docstring); the
    other arguments as :func:`divrl.rollout.sample`. Prompts are decoded in chunks of ``batch_size // G`` (at least
    one prompt; a chunk's trees may grow to its G rows each). ``Rollouts.stats`` gets ``forks``, ``pruned``,
    ``tree_steps`` (tokens decoded in the tree phase, mean over chunks) and ``tree_rows`` (the tree share per group).
    With ``round(G * eta) = 0`` this is :func:`divrl.rollout.sample` itself."""
    opts = options if isinstance(options, LatrOptions) else LatrOptions(**dict(options or {}))
    _check_sample_args(prompts, num_samples, max_new_tokens, temperature, top_p, top_k, stop, batch_size, False)
    capacity = tree_rows(num_samples, mix_ratio_at(opts.mix_ratio_schedule, step))
    if capacity == 0:
        out = sample(
            model,
            tokenizer,
            prompts,
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            batch_size=batch_size,
        )
        out.stats = {"forks": 0.0, "pruned": 0.0, "tree_steps": 0.0, "tree_rows": 0.0}
        return out
    device = model_device(model)
    pad_id, eos_ids = special_ids(model, tokenizer)
    encoded: list[list[int]] = tokenizer(list(prompts))["input_ids"]
    for i, ids in enumerate(encoded):
        if len(ids) == 0:
            raise ValueError(f"prompts[{i}] is empty after tokenisation; the model needs at least one token")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    decoder = _TreeDecoder(
        model=model,
        tokenizer=tokenizer,
        device=device,
        pad_id=pad_id,
        eos_ids=set(eos_ids),
        stop=tuple(stop),
        stop_ids=_stop_token_ids(tokenizer, stop),
        max_new_tokens=max_new_tokens,
        group_size=num_samples,
        capacity=capacity,
        pick=_Picker(greedy=False, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator),
        temperature=temperature,
        opts=opts,
    )
    per_chunk = max(1, batch_size // num_samples)
    rows: list[_Row] = []
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(encoded), per_chunk):
                chunk = list(range(start, min(len(encoded), start + per_chunk)))
                rows.extend(decoder.run([encoded[p] for p in chunk], chunk))
    finally:
        if was_training and hasattr(model, "train"):
            model.train(True)
    chunks = max(1, -(-len(encoded) // per_chunk))
    out = _assemble(rows, encoded, num_samples, pad_id, tokenizer, device)
    out.stats = {
        "forks": float(decoder.forks),
        "pruned": float(decoder.pruned),
        "tree_steps": decoder.tree_steps / chunks,
        "tree_rows": float(capacity),
    }
    return out


@dataclass
class _TreeDecoder:
    model: Any
    tokenizer: Any
    device: torch.device
    pad_id: int
    eos_ids: set[int]
    stop: tuple[str, ...]
    stop_ids: list[Tensor] | None
    max_new_tokens: int
    group_size: int
    capacity: int
    pick: _Picker
    temperature: float
    opts: LatrOptions
    forks: int = 0
    pruned: int = 0
    tree_steps: int = 0
    _filled: bool = False

    def run(self, encoded: list[list[int]], prompt_index: list[int]) -> list[_Row]:
        """Decode the groups of one chunk of prompts; returns its rows (any order; ``_assemble`` orders them)."""
        opts, g, cap = self.opts, self.group_size, self.capacity
        lens = [len(ids) for ids in encoded]
        lp = max(lens)
        masked = len(set(lens)) > 1
        padded = torch.full((len(encoded), lp), self.pad_id, dtype=torch.long, device=self.device)  # (U, Lp)
        for i, ids in enumerate(encoded):
            padded[i, lp - len(ids) :] = torch.tensor(ids, dtype=torch.long, device=self.device)
        pmask = torch.arange(lp, device=self.device) >= (lp - torch.tensor(lens, device=self.device))[:, None]
        kwargs: dict[str, Any] = {"input_ids": padded, "use_cache": True}
        if masked:
            kwargs["attention_mask"] = pmask.long()
            kwargs["position_ids"] = (pmask.long().cumsum(-1) - 1).clamp(min=0)
        if accepts(self.model, "logits_to_keep"):
            kwargs["logits_to_keep"] = 1
        self.cache_name = cache_arg(self.model)
        out = self.model(**kwargs)
        past = getattr(out, self.cache_name)
        if not hasattr(past, "batch_select_indices"):
            raise ValueError("the latr sampler needs a transformers Cache with batch_select_indices (forks copy rows)")
        rows: list[_Row] = []
        source: list[int] = []  # prompt row of the prefill each row starts from
        for u, p in enumerate(prompt_index):
            rows.append(_Row(prompt=p, tree=True))
            source.append(u)
            for _ in range(g - cap):
                rows.append(_Row(prompt=p, tree=False))
                source.append(u)
        index = torch.tensor(source, device=self.device)  # (R,)
        past.batch_select_indices(index)
        reserve_cache(past, self.max_new_tokens)  # decode steps write in place (no cat per step)
        logits = out.logits[:, -1, :][index]  # (R, V)
        attn = pmask.long()[index] if masked else None  # (R, Lp + t)
        pos = torch.tensor(lens, device=self.device)[index]  # (R,)

        self._filled = False
        tree_phase = opts.force_return_step != 0
        if not tree_phase:  # no tree step at all: every row is a copy of the root, sampled
            rows, past, attn, pos, logits = self._fill(rows, past, attn, pos, logits)
        for t in range(self.max_new_tokens):
            if tree_phase:
                self.tree_steps += 1
                nxt, forks = self._tree_tokens(rows, logits)
            else:
                nxt, forks = self._free_tokens(rows, logits, everyone=True), []
            if forks:  # new rows copy their parent's cache, mask and position; they take the fork token
                sel = torch.tensor(list(range(len(rows))) + [parent for parent, _ in forks], device=self.device)
                past.batch_select_indices(sel)
                attn = attn[sel] if attn is not None else None
                pos = pos[sel]
                for parent, token in forks:
                    rows.append(
                        _Row(
                            prompt=rows[parent].prompt,
                            tree=True,
                            parent=parent,
                            birth=t,
                            tokens=list(rows[parent].tokens),
                        )
                    )
                    nxt.append(token)
                self.forks += len(forks)
            for row, token in zip(rows, nxt, strict=True):
                if row.finished:
                    continue
                row.tokens.append(token)
                if token in self.eos_ids:
                    row.finished = row.eos_end = True
                elif self.stop and self._stop_hit(row.tokens):
                    row.finished = True
            if tree_phase and opts.edit_dist is not None:
                keep = self._prune(rows, t + 1)
                if keep is not None:
                    sel = torch.tensor(keep, device=self.device)
                    past.batch_select_indices(sel)
                    attn = attn[sel] if attn is not None else None
                    pos = pos[sel]
                    rows = _compact(rows, keep)
            if all(r.finished for r in rows) or t + 1 == self.max_new_tokens:
                break
            if tree_phase and self._tree_phase_over(rows, t):
                tree_phase = False
                rows, past, attn, pos, _ = self._fill(rows, past, attn, pos, None)
            feed = torch.tensor(
                [self.pad_id if r.finished else r.tokens[-1] for r in rows], dtype=torch.long, device=self.device
            )  # (R,)
            kwargs = {"input_ids": feed[:, None], self.cache_name: past, "use_cache": True}
            if attn is not None:
                attn = torch.cat([attn, attn.new_ones(len(attn), 1)], dim=1)  # (R, Lp + t + 1)
                kwargs["attention_mask"] = attn
                kwargs["position_ids"] = pos[:, None]
            out = self.model(**kwargs)
            past, logits = getattr(out, self.cache_name), out.logits[:, -1, :]  # (R, V)
            pos = pos + 1
        if not self._filled:  # the tree phase lasted to the end (every row finished, or max_new_tokens)
            rows = self._fill(rows, None, None, None, None)[0]
        return rows

    # -- one step ----------------------------------------------------------------------------------------------
    def _free_tokens(self, rows: list[_Row], logits: Tensor, everyone: bool) -> list[int]:
        """Sampled tokens for the rows that sample now (free rows; every row after the tree phase); pad elsewhere."""
        live = [i for i, r in enumerate(rows) if not r.finished and (everyone or not r.tree)]
        out = [self.pad_id] * len(rows)
        if live:
            picked = self.pick(logits[live])  # (b,)
            for i, tok in zip(live, picked.tolist(), strict=True):
                out[i] = int(tok)
        return out

    def _tree_tokens(self, rows: list[_Row], logits: Tensor) -> tuple[list[int], list[tuple[int, int]]]:
        """The next token of every row in the tree phase, and the forks (parent row, token), in row order."""
        opts = self.opts
        nxt = self._free_tokens(rows, logits, everyone=False)
        tree = [i for i, r in enumerate(rows) if r.tree]
        if not tree:
            return nxt, []
        scores = logits[tree].float()  # (T, V)
        if opts.branch_probs == "tempered":
            scores = scores / self.temperature
        m = min(opts.max_branch_per_token, scores.shape[-1])
        top_p, top_i = (x.cpu() for x in scores.softmax(-1).topk(m, dim=-1))  # (T, m) each
        keep = branch_mask(top_p, opts.prob_abs, opts.prob_rel)  # (T, m)
        done = torch.tensor([rows[i].finished for i in tree], dtype=torch.bool)  # (T,)
        keep[:, 1:] &= ~done[:, None]
        by_prompt: dict[int, list[int]] = {}
        for j, i in enumerate(tree):
            by_prompt.setdefault(rows[i].prompt, []).append(j)
        for members in by_prompt.values():
            sel = torch.tensor(members)
            keep[sel] = apply_capacity(keep[sel], self.capacity)
        forks: list[tuple[int, int]] = []
        for j, i in enumerate(tree):
            if rows[i].finished:
                continue
            valid = top_i[j][keep[j]].tolist()
            size = len(by_prompt[rows[i].prompt])
            if len(valid) == 1 and (
                opts.sample_nk == "always" or (opts.sample_nk == "full" and size == self.capacity)
            ):
                nxt[i] = int(self.pick(logits[i : i + 1])[0])
                continue
            nxt[i] = int(valid[0])
            forks.extend((i, int(tok)) for tok in valid[1:])
        return nxt, forks

    def _prune(self, rows: list[_Row], current: int) -> list[int] | None:
        """Rows kept after the lookahead comparison at ``current`` generated tokens; None when nothing is pruned."""
        opts = self.opts
        remove: list[int] = []
        for i, row in enumerate(rows):
            if row.parent is None or current - row.birth not in opts.windows:
                continue
            parent = rows[row.parent]
            if row.finished or parent.finished:  # the official code skips a window holding an EOS
                continue
            fork_text = self.tokenizer.decode([parent.tokens[row.birth]], skip_special_tokens=False)
            if exempt_fork(fork_text, MATH_SYMBOLS if opts.keep_math_symbols else None):
                continue
            assert opts.edit_dist is not None
            if near_duplicate(row.tokens[row.birth : current], parent.tokens[row.birth : current], opts.edit_dist):
                remove.append(i)
        if not remove:
            return None
        gone = descendants([r.parent for r in rows], remove)
        self.pruned += len(gone)
        return [i for i in range(len(rows)) if i not in gone]

    def _tree_phase_over(self, rows: list[_Row], t: int) -> bool:
        opts = self.opts
        if opts.force_return_step > 0 and t + 1 >= opts.force_return_step:
            return True
        if not opts.return_on_full:
            return False
        trees: dict[int, list[_Row]] = {}
        for r in rows:
            if r.tree:
                trees.setdefault(r.prompt, []).append(r)
        groups = list(trees.values())
        return trees_full(
            [len(g) for g in groups],
            [all(r.finished for r in g) for g in groups],
            self.capacity,
            t,
            self.max_new_tokens,
            max(r.birth for g in groups for r in g),
            max(opts.windows),
            opts.full_init,
            opts.full_decay,
        )

    def _fill(self, rows: list[_Row], past: Any, attn: Any, pos: Any, logits: Any) -> tuple[Any, ...]:
        """Top up every tree to its share with copies of its root (the first tree row of its prompt), copying the
        cache rows (and mask, positions, logits when given) too; runs once per chunk (official
        ``fill_return_sequences``, applied when the tree phase ends)."""
        self._filled = True
        count: dict[int, int] = {}
        root: dict[int, int] = {}
        for i, r in enumerate(rows):
            if r.tree:
                count[r.prompt] = count.get(r.prompt, 0) + 1
                root.setdefault(r.prompt, i)
        extra = [root[p] for p in root for _ in range(self.capacity - count[p])]
        if not extra:
            return rows, past, attn, pos, logits
        for i in extra:
            src = rows[i]
            rows.append(
                _Row(
                    prompt=src.prompt,
                    tree=True,
                    birth=src.birth,
                    tokens=list(src.tokens),
                    finished=src.finished,
                    eos_end=src.eos_end,
                    fill=True,
                )
            )
        if past is not None:
            sel = torch.tensor(list(range(len(rows) - len(extra))) + extra, device=self.device)
            past.batch_select_indices(sel)
            attn = attn[sel] if attn is not None else None
            pos = pos[sel]
            logits = logits[sel] if logits is not None else None
        return rows, past, attn, pos, logits

    def _stop_hit(self, tokens: list[int]) -> bool:
        if self.stop_ids is not None:
            return any(len(s) <= len(tokens) and tokens[len(tokens) - len(s) :] == s.tolist() for s in self.stop_ids)
        window = max(len(s) for s in self.stop)
        tail = tokens[-window - 1 :]
        now = self.tokenizer.decode(tail, skip_special_tokens=False)
        before = self.tokenizer.decode(tail[:-1], skip_special_tokens=False)
        return any(now.find(s, max(0, len(before) - len(s) + 1)) >= 0 for s in self.stop)


def _compact(rows: list[_Row], keep: list[int]) -> list[_Row]:
    """The kept rows with their parent indices renumbered (a kept row's parent is always kept: pruning removes a
    row's descendants with it)."""
    new_index = {old: new for new, old in enumerate(keep)}
    out = []
    for old in keep:
        r = rows[old]
        r.parent = None if r.parent is None else new_index[r.parent]
        out.append(r)
    return out


def _assemble(
    rows: list[_Row], encoded: list[list[int]], g: int, pad_id: int, tokenizer: Any, device: torch.device
) -> Rollouts:
    """Rollouts in the standard row order: per prompt the tree rows (in creation order), then the fill copies,
    then the free rows."""
    groups: dict[int, list[_Row]] = {}
    for r in rows:
        groups.setdefault(r.prompt, []).append(r)
    ordered: list[_Row] = []
    for p in range(len(encoded)):
        members = groups.get(p, [])
        ordered.extend(r for r in members if r.tree and not r.fill)
        ordered.extend(r for r in members if r.fill)
        ordered.extend(r for r in members if not r.tree)
        if len(members) != g:
            raise RuntimeError(f"latr: prompt {p} has {len(members)} rows, expected {g}")
    lp = max(len(ids) for ids in encoded)
    lc = max(1, max(len(r.tokens) for r in ordered))
    n = len(ordered)
    prompt_ids = torch.full((n, lp), pad_id, dtype=torch.long, device=device)  # (N, Lp)
    prompt_mask = torch.zeros(n, lp, dtype=torch.bool, device=device)  # (N, Lp)
    completion_ids = torch.full((n, lc), pad_id, dtype=torch.long, device=device)  # (N, Lc)
    lengths = torch.zeros(n, dtype=torch.long, device=device)  # (N,)
    for i, r in enumerate(ordered):
        ids = encoded[r.prompt]
        prompt_ids[i, lp - len(ids) :] = torch.tensor(ids, dtype=torch.long, device=device)
        prompt_mask[i, lp - len(ids) :] = True
        if r.tokens:
            completion_ids[i, : len(r.tokens)] = torch.tensor(r.tokens, dtype=torch.long, device=device)
        lengths[i] = len(r.tokens)
    texts = tokenizer.batch_decode(
        [r.tokens[: len(r.tokens) - int(r.eos_end)] for r in ordered], skip_special_tokens=False
    )
    return Rollouts(
        prompt_ids=prompt_ids,
        completion_ids=completion_ids,
        completion_mask=torch.arange(lc, device=device) < lengths[:, None],
        texts=list(texts),
        finished=torch.tensor([r.finished for r in ordered], dtype=torch.bool, device=device),
        prompt_mask=prompt_mask,
    )


__all__ = ["LatrOptions", "latr_sample"]
