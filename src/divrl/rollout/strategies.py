"""The rollout-side extension point of ``divrl train``: how a step's prompts are chosen and how their groups are sampled.

Two registries, one signature each (:class:`divrl.core.registry.Registry`; an unknown name lists the known ones):

- ``SAMPLERS``: ``fn(model, tokenizer, prompts, *, num_samples, max_new_tokens, temperature, top_p, stop, seed,
  batch_size, step, options) -> Rollouts`` (G completions per prompt in the standard row order). ``standard`` is
  :func:`divrl.rollout.sample` (independent samples); ``latr`` is :func:`divrl.rollout.latr.latr_sample`.
- ``PROMPT_SELECTORS``: a :class:`PromptSelector`: ``select(problem_ids, k, rng, state, options) -> indices`` of the
  k problems of the step, and for a stateful one ``update(state, problem_ids, correct, options) -> new state``
  after the step is scored. ``uniform`` is ``rng.sample`` (divrl's draw); ``gdro`` is Prompt-GDRO
  (:mod:`divrl.core.gdro`), whose state (bin weights, loss estimates, per-problem rates) goes into every checkpoint.

Each entry's options are a documented frozen dataclass (``options_type``) built from the config's ``options``
mapping by :func:`build_options`, so a bad value is a one-line error naming ``sampler.options.<field>`` or
``prompt_selector.options.<field>``. Config: ``sampler: {name, options}`` and ``prompt_selector: {name, options}``
(:mod:`divrl.trainer.config`); neither set = ``standard`` and ``uniform``, which leave a run bit-identical to one
made before this extension point existed. The TRL and verl adapters sample with their own engines and refuse any
other entry in one line (:func:`adapter_refusal`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from divrl.config import ConfigError, from_dict
from divrl.core import gdro
from divrl.core.registry import Registry
from divrl.rollout.latr import LatrOptions, latr_sample
from divrl.rollout.sampler import Rollouts, sample

SAMPLERS: Registry[Any] = Registry("sampler")
"""name -> sampler function (see the module docstring)."""
PROMPT_SELECTORS: Registry[Any] = Registry("prompt selector")
"""name -> :class:`PromptSelector`."""
SAMPLER_OPTIONS: dict[str, type | None] = {}
"""name -> its options dataclass (``None``: takes no options)."""

STANDARD_SAMPLER = "standard"
UNIFORM_SELECTOR = "uniform"


def register_sampler(name: str, options_type: type | None = None) -> Callable[[Any], Any]:
    """Decorator registering a sampler under ``name`` with its options dataclass."""

    def decorator(fn: Any) -> Any:
        SAMPLERS.register(name)(fn)
        SAMPLER_OPTIONS[name] = options_type
        return fn

    return decorator


@dataclass(frozen=True)
class PromptSelector:
    """A prompt selector: ``select`` picks the step's problems (indices into the pool), ``update`` (stateful ones)
    folds the step's correctness into the state, ``initial_state`` starts it, ``metrics`` reports it."""

    name: str
    select: Callable[[Sequence[str], int, random.Random, Any, Any], list[int]]
    options_type: type | None = None
    stateful: bool = False
    initial_state: Callable[[Any], Any] | None = None
    update: Callable[[Any, Sequence[str], Sequence[Sequence[bool]], Any], Any] | None = None
    metrics: Callable[[Any, Any], dict[str, float]] | None = None


def register_selector(selector: PromptSelector) -> PromptSelector:
    PROMPT_SELECTORS.register(selector.name)(selector)
    return selector


# -- samplers ----------------------------------------------------------------------------------------------------


@register_sampler(STANDARD_SAMPLER)
def standard_sampler(
    model: Any, tokenizer: Any, prompts: list[str], *, step: int = 0, options: Any = None, **kw: Any
) -> Rollouts:
    """Independent samples: :func:`divrl.rollout.sample` (the trainer calls it directly, unchanged)."""
    return sample(model, tokenizer, prompts, **kw)


@register_sampler("latr", LatrOptions)
def latr_sampler(
    model: Any, tokenizer: Any, prompts: list[str], *, step: int = 0, options: Any = None, **kw: Any
) -> Rollouts:
    """LATR (arXiv 2510.24302): :func:`divrl.rollout.latr.latr_sample`."""
    return latr_sample(model, tokenizer, prompts, step=step, options=options, **kw)


# -- prompt selectors --------------------------------------------------------------------------------------------


def _uniform_select(problem_ids: Sequence[str], k: int, rng: random.Random, state: Any, options: Any) -> list[int]:
    """``rng.sample`` of k distinct indices: the same draw as ``rng.sample(problems, k)`` (``random.sample``
    chooses positions, whatever the population)."""
    return rng.sample(range(len(problem_ids)), k)


register_selector(PromptSelector(UNIFORM_SELECTOR, _uniform_select))


def _gdro_metrics(state: Any, options: gdro.GdroOptions) -> dict[str, float]:
    """``prompt_selector/q<b>`` (weight of bin b, ``q<U>`` the unseen bin) and ``prompt_selector/seen`` (problems
    with a rate)."""
    nonempty = [True] * gdro.num_bins(options.edges)
    probs = gdro.bin_probabilities(state, nonempty, 0.0)
    out = {f"prompt_selector/q{i}": p for i, p in enumerate(probs[:-1])}
    out["prompt_selector/q_unseen"] = probs[-1]
    out["prompt_selector/seen"] = float(len(state["problems"]))
    return out


register_selector(
    PromptSelector(
        "gdro",
        gdro.select,
        options_type=gdro.GdroOptions,
        stateful=True,
        initial_state=gdro.initial_state,
        update=gdro.update,
        metrics=_gdro_metrics,
    )
)


# -- config ------------------------------------------------------------------------------------------------------


def build_options(options_type: type | None, options: Mapping[str, Any], where: str) -> Any:
    """The options dataclass of an entry from its config mapping; ConfigError naming ``<where>.<field>``."""
    if options_type is None:
        if options:
            raise ConfigError(f"{where}: this entry takes no options, got {sorted(options)}")
        return None
    try:
        return from_dict(options_type, dict(options), where=where)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}.{exc}") from None


def sampler_entry(name: str, options: Mapping[str, Any]) -> tuple[Any, Any]:
    """(sampler function, built options) of ``sampler.name``/``sampler.options``; ConfigError naming the field."""
    try:
        fn = SAMPLERS.get(name)
    except KeyError as exc:
        raise ConfigError(f"sampler.name: {exc}") from None
    return fn, build_options(SAMPLER_OPTIONS.get(name), options, "sampler.options")


def selector_entry(name: str, options: Mapping[str, Any]) -> tuple[PromptSelector, Any]:
    """(selector, built options) of ``prompt_selector.name``/``.options``; ConfigError naming the field."""
    try:
        selector = PROMPT_SELECTORS.get(name)
    except KeyError as exc:
        raise ConfigError(f"prompt_selector.name: {exc}") from None
    return selector, build_options(selector.options_type, options, "prompt_selector.options")


def adapter_refusal(who: str, sampler: str | None = None, prompt_selector: str | None = None) -> str | None:
    """The one-line reason an adapter that samples with its own engine (TRL, verl) cannot run these entries, or
    ``None`` for the standard ones; an unknown name is a ValueError listing the known ones."""
    try:  # an unknown name lists the known ones
        if sampler is not None:
            SAMPLERS.get(sampler)
        if prompt_selector is not None:
            PROMPT_SELECTORS.get(prompt_selector)
    except KeyError as exc:
        raise ValueError(f"{who}: {exc}") from None
    if sampler not in (None, STANDARD_SAMPLER):
        return (
            f"{who}: sampler {sampler!r} runs inside divrl's own decode loop and this trainer samples with its own "
            "engine; use divrl train"
        )
    if prompt_selector not in (None, UNIFORM_SELECTOR):
        return (
            f"{who}: prompt selector {prompt_selector!r} chooses each step's prompts from state kept in divrl "
            "train's checkpoints, and this trainer draws its prompts with its own data loader; use divrl train"
        )
    return None


__all__ = [
    "PROMPT_SELECTORS",
    "SAMPLERS",
    "SAMPLER_OPTIONS",
    "STANDARD_SAMPLER",
    "UNIFORM_SELECTOR",
    "PromptSelector",
    "adapter_refusal",
    "build_options",
    "register_sampler",
    "register_selector",
    "sampler_entry",
    "selector_entry",
]
