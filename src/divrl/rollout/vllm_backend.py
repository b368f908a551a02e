"""A vLLM rollout backend (GPU machines): a colocated vLLM engine that samples the G completions per prompt.

**Status: written against vLLM's public ``LLM`` / ``SamplingParams`` API and the weight-sync path that TRL 1.16 uses in
its colocate mode (``trl/generation/vllm_generation.py``); it has never been run against a real vLLM here**, as vLLM
needs a GPU and divrl's CI has none. The tests drive it through a fake ``vllm`` module that checks the calls and
returns vLLM-shaped outputs, so what is tested is divrl's side: the requests it builds, the weight names it pushes and
the :class:`~divrl.rollout.sampler.Rollouts` it assembles. docs/scale-out.md says the same.

How it works, step by step (the trainer does this when ``rollout.backend: vllm``):

1. ``VLLMSampler(path, tokenizer, ...)`` starts ``vllm.LLM(model=path, distributed_executor_backend=
   "external_launcher", ...)`` in this process, like TRL's colocate mode, so the engine's model is reachable for
   weight updates (vLLM's default multiprocess engine keeps it in another process).
2. Before sampling, :meth:`VLLMSampler.sync_weights` pushes the policy's current parameters into the engine with
   ``model.load_weights([(name, tensor)])``, one tensor at a time (a peft model is merged first and its adapter
   names are mapped back to the base names, then unmerged), and resets the prefix cache.
3. :meth:`VLLMSampler.sample` sends each prompt's token ids once with ``SamplingParams(n=G, ...)``; the stop strings
   are kept in the output (``include_stop_str_in_output``) as the HF sampler keeps them, and a per-request seed makes
   a step reproducible on the same engine.
4. The outputs become a :class:`Rollouts` with the HF sampler's layout (prompts left-padded, completions right-padded,
   the final EOS/stop token inside ``completion_mask``), so everything downstream (verifier, partitions, log-probs
   from the training model) is unchanged. vLLM's own log-probs are not used: the loss recomputes them on the policy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from divrl.rollout.sampler import Rollouts, _check_sample_args, special_ids


def rollouts_from_ids(
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    texts: Sequence[str],
    finished: Sequence[bool],
    num_samples: int,
    pad_id: int,
) -> Rollouts:
    """Assemble :class:`Rollouts` from per-row token lists (any backend's output).

    Args:
        prompt_ids: P prompts' token ids (prompt ``p``'s G rows all use ``prompt_ids[p]``).
        completion_ids: N = P * G completions' token ids, prompt ``p``'s group at rows ``p*G .. p*G+G-1``;
            the final EOS or stop token included.
        texts: N decoded completions.
        finished: N flags, True where EOS or a stop string ended the row.
        num_samples: G.
        pad_id: id written into padding (masked out by ``prompt_mask`` / ``completion_mask``).
    """
    p_count, n = len(prompt_ids), len(completion_ids)
    if n != p_count * num_samples or len(texts) != n or len(finished) != n:
        raise ValueError(
            f"expected P * G = {p_count} * {num_samples} = {p_count * num_samples} completions, texts and finished "
            f"flags; got {n}, {len(texts)} and {len(finished)}"
        )
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    lp = max(len(ids) for ids in prompt_ids)
    lc = max(1, max((len(ids) for ids in completion_ids), default=1))
    prompts = torch.full((n, lp), pad_id, dtype=torch.long)  # (N, Lp) left-padded
    prompt_mask = torch.zeros(n, lp, dtype=torch.bool)  # (N, Lp)
    completions = torch.full((n, lc), pad_id, dtype=torch.long)  # (N, Lc) right-padded
    completion_mask = torch.zeros(n, lc, dtype=torch.bool)  # (N, Lc)
    for row in range(n):
        ids = prompt_ids[row // num_samples]
        prompts[row, lp - len(ids) :] = torch.as_tensor(list(ids), dtype=torch.long)
        prompt_mask[row, lp - len(ids) :] = True
        out = list(completion_ids[row])
        if out:
            completions[row, : len(out)] = torch.as_tensor(out, dtype=torch.long)
            completion_mask[row, : len(out)] = True
    return Rollouts(
        prompt_ids=prompts,
        completion_ids=completions,
        completion_mask=completion_mask,
        texts=list(texts),
        finished=torch.as_tensor(list(finished), dtype=torch.bool),  # (N,)
        prompt_mask=prompt_mask,
    )


def vllm_param_name(name: str, peft_prefix: str | None = None) -> str | None:
    """The name vLLM's ``load_weights`` expects for a policy parameter, or ``None`` to skip it (as TRL 1.16 does).

    A peft model's names lose ``base_model.model.`` and ``.base_layer``; its adapter weights (names containing the
    peft prefix, e.g. ``lora_``) and ``original_module`` copies are skipped, since the merged base weights carry them;
    ``modules_to_save.default.`` is dropped. torch.compile / activation-checkpoint wrappers' prefixes are dropped.
    """
    if peft_prefix is not None:
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if peft_prefix in name or "original_module" in name:
            return None
        name = name.replace("modules_to_save.default.", "")
    for wrapper in ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module."):
        name = name.replace(wrapper, "")
    return name


def _named_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    peft_prefix = getattr(model, "prefix", None) if hasattr(model, "merge_adapter") else None
    for name, param in model.named_parameters():
        mapped = vllm_param_name(name, peft_prefix)
        if mapped is not None:
            yield mapped, param.data


class VLLMSampler:
    """A colocated vLLM engine that samples like :func:`divrl.rollout.sample` (see the module docstring)."""

    def __init__(
        self,
        model_path: str,
        tokenizer: Any,
        *,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        enable_prefix_caching: bool = True,
        **llm_kwargs: Any,
    ) -> None:
        try:
            import vllm
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "rollout.backend 'vllm' needs vLLM (a GPU machine): pip install vllm. "
                "On CPU, use rollout.backend 'hf' (the default)."
            ) from err
        self._vllm = vllm
        self.tokenizer = tokenizer
        # vLLM reads these for its (single-process) distributed setup, as under TRL's colocate mode.
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", "29517")
        self.llm = vllm.LLM(
            model=model_path,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            distributed_executor_backend="external_launcher",
            **llm_kwargs,
        )

    def _engine_model(self) -> Any:
        return self.llm.llm_engine.model_executor.driver_worker.model_runner.model

    @torch.no_grad()
    def sync_weights(self, model: Any) -> int:
        """Push ``model``'s parameters into the engine (a peft model merged, then unmerged); returns the count."""
        target = self._engine_model()
        merged = hasattr(model, "merge_adapter")
        if merged:
            model.merge_adapter()
        try:
            count = 0
            for name, tensor in _named_weights(model):
                target.load_weights([(name, tensor)])
                count += 1
        finally:
            if merged:
                model.unmerge_adapter()
        self.llm.reset_prefix_cache()
        return count

    def sample(
        self,
        model: Any,
        prompts: list[str],
        *,
        num_samples: int = 1,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        greedy: bool = False,
    ) -> Rollouts:
        """Same contract as :func:`divrl.rollout.sample` (``model`` gives the pad/EOS ids; the engine samples)."""
        _check_sample_args(prompts, num_samples, max_new_tokens, temperature, top_p, top_k, stop, 1, greedy)
        pad_id, eos_ids = special_ids(model, self.tokenizer)
        encoded: list[list[int]] = self.tokenizer(list(prompts))["input_ids"]
        params = self._vllm.SamplingParams(
            n=num_samples,
            temperature=0.0 if greedy else temperature,
            top_p=1.0 if greedy else top_p,
            top_k=-1 if greedy or top_k == 0 else top_k,  # vLLM: -1 = off
            max_tokens=max_new_tokens,
            stop=list(stop) or None,
            include_stop_str_in_output=True,
            stop_token_ids=sorted(eos_ids) or None,
            seed=seed,
        )
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in encoded], sampling_params=params, use_tqdm=False
        )
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} request outputs for {len(prompts)} prompts")
        completions: list[list[int]] = []
        texts: list[str] = []
        finished: list[bool] = []
        for p, request in enumerate(outputs):
            if len(request.outputs) != num_samples:
                raise RuntimeError(
                    f"vLLM returned {len(request.outputs)} completions for prompt {p}, not {num_samples}"
                )
            for out in request.outputs:
                ids = list(out.token_ids)
                completions.append(ids)
                # the HF sampler's text: stop string kept, a final EOS dropped
                text_ids = ids[:-1] if ids and ids[-1] in eos_ids else ids
                texts.append(self.tokenizer.decode(text_ids, skip_special_tokens=False))
                finished.append(out.finish_reason == "stop")
        return rollouts_from_ids(encoded, completions, texts, finished, num_samples, pad_id)
