"""The rollout-side extension point in ``divrl train`` (divrl.rollout.strategies): the default is the old code path
exactly; a gdro run's state lives in the checkpoint and --resume restores it exactly; bad settings fail in one line."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from _interrupted import run_first_steps

from divrl.config import ConfigError
from divrl.eval.demo import Budget, recipe
from divrl.rollout import sample
from divrl.rollout.strategies import PROMPT_SELECTORS, adapter_refusal
from divrl.trainer.common import (
    MANIFEST,
    RunFolderError,
    _write_manifest,
    derive_seed,
    latest_checkpoint,
    load_trainer_state,
    read_metrics,
)
from divrl.trainer.plan import check_methods
from divrl.trainer.rl import RLTrainer, train

SMALL = ["model.path=builtin:countdown-tiny", "rollout.prompts_per_step=3", "rollout.group_size=4", "threads=1"]


def _cfg(method: str, steps: int, extra: list[str] = ()) -> Any:
    return recipe(method, Budget(steps=steps, eval_problems=1, eval_n=1), seed=0, overrides=[*SMALL, *extra])


def _strip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in records]


def test_uniform_selector_is_the_old_draw():
    problems = [f"problem {i}" for i in range(50)]
    ids = [str(i) for i in range(50)]
    uniform = PROMPT_SELECTORS.get("uniform")
    for seed in range(20):
        picked = [problems[i] for i in uniform.select(ids, 7, random.Random(seed), None, None)]
        assert picked == random.Random(seed).sample(problems, 7)


def test_default_step_samples_exactly_as_before(tmp_path, monkeypatch):
    """Neither sampler nor prompt_selector set: the step's prompts are ``rng.sample(problems, P)`` with the step's
    seed and its rollouts are ``divrl.rollout.sample`` with the step's sampling seed, tensor for tensor."""
    cfg = _cfg("grpo", steps=1)
    assert cfg.sampler.name == "standard" and cfg.prompt_selector.name == "uniform"
    seen: list[Any] = []
    original = RLTrainer.optimize

    def spy(self, batch, advantages, rollouts, old=None):
        seen.append(rollouts)
        return original(self, batch, advantages, rollouts, old)

    monkeypatch.setattr(RLTrainer, "optimize", spy)
    trainer = RLTrainer(cfg, tmp_path, progress=False)
    problems = random.Random(derive_seed(0, 0, 1)).sample(trainer.problems, 3)
    with torch.no_grad():
        expected = sample(
            trainer.model,
            trainer.tokenizer,
            [trainer.task.prompt(p) for p in problems],
            num_samples=4,
            max_new_tokens=cfg.rollout.max_new_tokens,
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            stop=trainer.task.stop,
            seed=derive_seed(0, 0, 2),
            batch_size=cfg.rollout.batch_size,
        )
    metrics = trainer.step(0)
    got = seen[0]
    assert got.texts == expected.texts and torch.equal(got.completion_ids, expected.completion_ids)
    assert torch.equal(got.prompt_ids, expected.prompt_ids)
    assert not any(k.startswith(("sampler/", "prompt_selector/")) for k in metrics)


def test_gdro_state_is_checkpointed_and_resumes_exactly(tmp_path):
    cfg = _cfg("gdro", steps=4, extra=["save_every=2"])
    train(cfg, tmp_path / "full", progress=False)
    run_first_steps(cfg, tmp_path / "split", 2)
    resumed = RLTrainer(cfg, tmp_path / "split", resume=True, progress=False)
    assert resumed.start_step == 2 and resumed.selector_state["problems"]
    resumed.run()
    full, split = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    assert _strip(full) == _strip(split) and len(full) == 4
    paths = [latest_checkpoint(run) for run in (tmp_path / "full", tmp_path / "split")]
    states = [load_trainer_state(p)["prompt_selector_state"] for p in paths if p is not None]
    assert states[0] == states[1] and states[0]["selector"] == "gdro"
    assert 0 < len(states[0]["state"]["problems"]) <= 12 and full[-1]["prompt_selector/seen"] > 0


def test_gdro_resume_without_its_state_is_refused(tmp_path):
    cfg = _cfg("gdro", steps=1, extra=["save_every=1"])
    train(cfg, tmp_path, progress=False)
    path = latest_checkpoint(tmp_path)
    assert path is not None
    state = load_trainer_state(path)
    del state["prompt_selector_state"]
    torch.save(state, path / "trainer_state.pt")
    (path / MANIFEST).unlink()
    _write_manifest(path, 1)  # a complete checkpoint, without the state
    with pytest.raises(RunFolderError, match="holds no state for the prompt selector 'gdro'"):
        RLTrainer(_cfg("gdro", steps=2, extra=["save_every=1"]), tmp_path, resume=True, progress=False)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["sampler.name=beam"], r"sampler.name: unknown sampler 'beam'; known: \['latr', 'standard'\]"),
        (["prompt_selector.name=hard"], r"prompt_selector.name: unknown prompt selector 'hard'; known: \['gdro'"),
        (["sampler.name=latr", "sampler.options.windows=[0]"], r"^sampler.options.windows:"),
        (["sampler.name=latr", "rollout.backend=vllm"], r"rollout.backend: hf"),
        (["prompt_selector.name=gdro", "prompt_selector.options.eta=-1"], r"^prompt_selector.options.eta:"),
        (["sampler.options.x=1"], r"^sampler.options: this entry takes no options"),
    ],
)
def test_bad_rollout_side_settings_fail_before_the_model_loads(extra, match):
    with pytest.raises(ConfigError, match=match):
        check_methods(_cfg("grpo", steps=1, extra=extra))


def test_adapter_refusal_is_one_line():
    assert adapter_refusal("X", "standard", "uniform") is None
    for message in (adapter_refusal("X", sampler="latr"), adapter_refusal("X", prompt_selector="gdro")):
        assert message is not None and "\n" not in message and message.startswith("X: ")


# ---------------------------------------------------------------------------------------------- dynamic sampling


def _spy_rounds(monkeypatch) -> tuple[list[Any], list[Any]]:
    """Record each generation round's rollouts and the batch each optimizer call trains on."""
    rounds: list[Any] = []
    trained: list[Any] = []
    sample_, optimize = RLTrainer._sample, RLTrainer.optimize

    def spy_sample(self, step, round_, problems):
        out = sample_(self, step, round_, problems)
        rounds.append((round_, problems, out))
        return out

    def spy_optimize(self, batch, advantages, rollouts, old=None):
        trained.append((batch, rollouts))
        return optimize(self, batch, advantages, rollouts, old)

    monkeypatch.setattr(RLTrainer, "_sample", spy_sample)
    monkeypatch.setattr(RLTrainer, "optimize", spy_optimize)
    return rounds, trained


@pytest.mark.parametrize("signal", ["reward", "correct"])
def test_filter_groups_trains_on_the_first_informative_groups_in_draw_order(tmp_path, monkeypatch, signal):
    """DAPO's dynamic sampling: round 0 is the default step's draw and sampling (same seeds); every group whose
    signal varies is kept in draw order until P are in hand; the batch trained on is exactly those rows."""
    cfg = _cfg("grpo", steps=1, extra=[f"rollout.filter_groups={signal}", "rollout.max_gen_rounds=0"])
    rounds, trained = _spy_rounds(monkeypatch)
    trainer = RLTrainer(cfg, tmp_path, progress=False)
    metrics = trainer.step(0)
    first = random.Random(derive_seed(0, 0, 1)).sample(trainer.problems, 3)
    assert rounds[0][0] == 0 and rounds[0][1] == first  # round 0 = the unfiltered step's prompts
    expected_texts, expected_problems, informative, drawn = [], [], 0, 0
    for _, problems, out in rounds:
        for p, problem in enumerate(problems):
            texts = out.texts[p * 4 : (p + 1) * 4]
            verdicts = [trainer.task.verify(problem, t) for t in texts]
            values = [v.reward if signal == "reward" else float(v.correct) for v in verdicts]
            drawn += 1
            if len(set(values)) > 1:
                informative += 1
                if len(expected_problems) < 3:
                    expected_problems.append(problem)
                    expected_texts.extend(texts)
    assert informative >= 3 and len(rounds) == metrics["filter/gen_rounds"] >= 1
    batch, rollouts = trained[0]
    assert rollouts.texts == expected_texts and batch.num_prompts == 3
    assert metrics["filter/drawn_groups"] == drawn and metrics["filter/kept_frac"] == informative / drawn
    values = batch.rewards if signal == "reward" else batch.correct.float()  # (P, G)
    assert bool((values.max(-1).values > values.min(-1).values).all())  # every trained group varies
    later = [problem for _, problems, _ in rounds[1:] for problem in problems]
    assert len(set(map(str, later))) == len(later) and not set(map(str, later)) & set(map(str, first))


def test_filter_groups_off_is_the_default_and_logs_nothing_new(tmp_path):
    cfg = _cfg("grpo", steps=1)
    assert cfg.rollout.filter_groups == "none"
    metrics = RLTrainer(cfg, tmp_path, progress=False).step(0)
    assert not any(k.startswith("filter/") for k in metrics)


def test_filter_groups_gives_up_after_max_gen_rounds_keeping_the_checkpoints(tmp_path, monkeypatch):
    """No group varies any more: after max_gen_rounds rounds the run stops with an error naming the field; the
    checkpoint and metrics written before stay."""
    import divrl.trainer.rl as rl

    extra = ["rollout.filter_groups=reward", "save_every=1"]
    train(_cfg("grpo", steps=1, extra=[*extra, "rollout.max_gen_rounds=0"]), tmp_path, progress=False)
    real_score = rl.score

    def flat(task, problems, texts, g):  # every reward the same
        scored = real_score(task, problems, texts, g)
        scored.rewards.zero_()
        scored.correct.zero_()
        return scored

    monkeypatch.setattr(rl, "score", flat)
    trainer = RLTrainer(_cfg("grpo", steps=2, extra=[*extra, "rollout.max_gen_rounds=2"]), tmp_path, resume=True)
    with pytest.raises(ConfigError, match=r"^rollout.max_gen_rounds: step 2 found 0 of 3 groups whose reward varies"):
        trainer.run()
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.name.endswith("1") and len(read_metrics(tmp_path)) == 1


def test_filter_groups_resumes_exactly(tmp_path):
    cfg = _cfg(
        "grpo",
        steps=4,
        extra=["rollout.filter_groups=correct", "rollout.gen_prompts=4", "rollout.max_gen_rounds=0", "save_every=2"],
    )
    train(cfg, tmp_path / "full", progress=False)
    run_first_steps(cfg, tmp_path / "split", 2)
    RLTrainer(cfg, tmp_path / "split", resume=True, progress=False).run()
    full, split = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    assert _strip(full) == _strip(split) and len(full) == 4
    assert all(r["filter/drawn_groups"] % 4 == 0 and r["filter/gen_rounds"] >= 1 for r in full)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["rollout.filter_groups=acc"], r"rollout.filter_groups"),
        (["rollout.gen_prompts=-1"], r"rollout.gen_prompts: must be >= 0"),
        (["rollout.max_gen_rounds=-2"], r"rollout.max_gen_rounds: must be >= 0"),
    ],
)
def test_bad_filter_settings_name_the_field(extra, match):
    with pytest.raises(ConfigError, match=match):
        _cfg("grpo", steps=1, extra=extra)


def test_gen_prompts_larger_than_the_split_is_refused_before_anything_is_written(tmp_path):
    cfg = _cfg("grpo", steps=1, extra=["rollout.filter_groups=reward", "rollout.gen_prompts=100000"])
    with pytest.raises(ConfigError, match=r"problems, fewer than rollout.gen_prompts=100000"):
        RLTrainer(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
