"""Tiny end-to-end RL runs: every Countdown recipe trains two steps; a SIGKILLed run resumes exactly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import torch
import yaml

from divrl.config import ConfigError, from_dict, load_yaml, save_yaml
from divrl.core.batch import GroupBatch
from divrl.eval.demo import RECIPES, Budget, recipe
from divrl.models import build_char_tokenizer, build_policy, load_policy, save_policy
from divrl.models.builtin import resolve_model_path
from divrl.tasks.base import Verdict
from divrl.trainer.common import latest_checkpoint, read_metrics
from divrl.trainer.config import RLConfig
from divrl.trainer.plan import check_methods
from divrl.trainer.rl import train

TINY = [
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "save_every=2",
    "threads=1",
]


@pytest.fixture(scope="module")
def tiny_policy() -> str:
    """The recipes' base (the 4-number testbed's): it solves some problems, so advantages are not all zero."""
    return "builtin:countdown4-tiny"


def test_random_policy_runs(tmp_path):
    """A fresh random policy from a local folder trains too (all rewards 0: zero advantages, no crash)."""
    tok = build_char_tokenizer()
    model = build_policy("tiny", tokenizer=tok, seed=0, hidden_size=32, num_hidden_layers=2, intermediate_size=64)
    save_policy(model, tok, tmp_path / "policy")
    train(_cfg("grpo", str(tmp_path / "policy"), steps=1), tmp_path / "run", progress=False)
    record = read_metrics(tmp_path / "run")[0]
    assert record["reward"] == 0.0 and record["adv_abs_mean"] == 0.0


def _cfg(method: str, policy: str, steps: int = 2, extra: list[str] = ()) -> RLConfig:
    return recipe(
        method,
        Budget(steps=steps, eval_problems=1, eval_n=1),
        seed=0,
        overrides=[f"model.path={policy}", *TINY, *extra],
    )


@pytest.mark.parametrize(
    "method",
    [
        "grpo",
        "r1_zero_div",
        "darling",
        "setpo",
        "unlikeliness",
        "pkpo",
        "outcome_batch",
        "seed_grpo",
        "dra",
        "arm",
        "repexp",
        "latr",
        "gdro",
        "ucas",
        "dsdr",
        "rover",
        "flowrl",
    ],
)
def test_two_steps_each_recipe(method, tiny_policy, tmp_path):
    cfg = _cfg(method, tiny_policy, extra=["rollout.prompts_per_step=4"])
    before = {k: v.clone() for k, v in load_policy(resolve_model_path(tiny_policy))[0].state_dict().items()}
    history = train(cfg, tmp_path, progress=False)
    assert len(history) == 2
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert 0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["loss"]) and math.isfinite(r["entropy"])
        assert r["entropy"] > 0
        reasons = {k: v for k, v in r.items() if k.startswith("reasons/")}  # every verdict counted by its kind
        assert sum(reasons.values()) == 16 and reasons.get("reasons/ok", 0) == r["accuracy"] * 16
    assert records[0]["accuracy"] > 0 and records[0]["adv_abs_mean"] > 0  # a real learning signal
    for r in records:  # divrl.signals.signal_size: the method's advantages against GRPO's on the same groups
        assert 0.0 <= r["signal/groups_changed"] <= 1.0 and r["signal/rms_ratio"] >= 0.0
    if cfg.advantage.name == "grpo":  # GRPO, and R1-zero-Div (its signal is a loss term): no advantage signal
        assert records[0]["signal/rms_ratio"] == 0.0 and records[0]["signal/corr"] == pytest.approx(1.0)
    if method == "r1_zero_div":
        assert "positive_entropy/div_term" in records[0]
    if method == "dsdr":
        assert records[0]["dsdr_entropy/div_term"] > 0 and records[0]["dsdr_entropy/correct_frac"] > 0
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "checkpoint-000002"
    after = load_policy(str(ckpt))[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed no weight"
    assert from_dict(RLConfig, load_yaml(tmp_path / "config.yaml")) == cfg


def test_method_changes_the_update(tiny_policy, tmp_path):
    """Same seed and rollouts: darling with std scaling differs from grpo only through its advantages."""
    runs = {}
    for method in ("grpo", "darling"):
        run_dir = tmp_path / method
        train(
            _cfg(method, tiny_policy, steps=1, extra=["rollout.group_size=16", "rollout.prompts_per_step=8"]),
            run_dir,
            progress=False,
        )
        runs[method] = read_metrics(run_dir)[0]
    assert runs["grpo"]["reward"] == runs["darling"]["reward"]  # identical rollouts
    assert runs["grpo"]["accuracy"] == runs["darling"]["accuracy"]
    assert runs["grpo"]["adv_abs_mean"] != pytest.approx(runs["darling"]["adv_abs_mean"])
    assert runs["grpo"]["loss"] != pytest.approx(runs["darling"]["loss"])


def _strip_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in records]


@pytest.mark.parametrize("method", ["darling", "outcome_ucb"])  # outcome_ucb: a stateful estimator
def test_resume_after_sigkill_matches_uninterrupted(method, tiny_policy, tmp_path):
    cfg = _cfg(method, tiny_policy, steps=30, extra=["save_every=3"])
    config = tmp_path / "config.yaml"
    save_yaml(cfg, config)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "divrl.cli", "train", "--config", str(config)]

    subprocess.run([*cmd, "--out", str(tmp_path / "full")], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*cmd, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and latest_checkpoint(killed) is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = latest_checkpoint(killed)
    assert first is not None and first.name != "checkpoint-000030", "the run finished before it could be killed"

    subprocess.run([*cmd[:3], "train", "--resume", str(killed)], check=True, env=env, capture_output=True)
    full, resumed = read_metrics(tmp_path / "full"), read_metrics(killed)
    assert [r["step"] for r in resumed] == list(range(1, 31))
    assert _strip_times(resumed) == _strip_times(full)
    if method == "outcome_ucb":  # the per-problem answer counts, saved in every checkpoint, end identical
        paths = [latest_checkpoint(run) for run in (tmp_path / "full", killed)]
        states = [torch.load(f"{p}/trainer_state.pt", weights_only=False)["advantage_state"] for p in paths]
        assert states[0] == states[1] and states[0]["records"] and full[-1]["history_problems"] > 0


def test_bad_config_value_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"rollout": {"group_size": "many"}}))
    out = subprocess.run(
        [sys.executable, "-m", "divrl.cli", "train", "--config", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "rollout.group_size: expected an integer" in out.stdout + out.stderr


def test_unscorable_rollouts_do_not_stop_training(tiny_policy, tmp_path, monkeypatch):
    from divrl.tasks.countdown import CountdownTask

    calls = {"n": 0}
    original = CountdownTask.verify

    def flaky(self, problem, completion):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise RuntimeError("verifier crashed")
        return original(self, problem, completion)

    monkeypatch.setattr(CountdownTask, "verify", flaky)
    train(_cfg("grpo", tiny_policy, steps=1), tmp_path, progress=False)
    record = read_metrics(tmp_path)[0]
    assert record["unscorable_frac"] == pytest.approx(2 / 8)
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1


class _TwoOfEightUnscorable:
    """Wraps a task's verifier: rollouts 1 and 5 of every group of 8 are unscorable (``reward=None``, and a verdict
    that claims to be correct, which the trainer must not believe); the others get the Countdown reward plus a small
    text-dependent term, so that every group has a spread of rewards even when the tiny policy solves nothing."""

    UNSCORABLE = (1, 5)

    def __init__(self, task):
        self.task, self.calls = task, 0

    def __getattr__(self, name):
        return getattr(self.task, name)

    def verify(self, problem, text):
        g, self.calls = self.calls % 8, self.calls + 1  # score() verifies group by group, rollout by rollout
        if g in self.UNSCORABLE:
            return Verdict(None, True, None, "unscorable: test")
        v = self.task.verify(problem, text)
        return Verdict(v.reward + sum(map(ord, text)) % 7 / 10, v.correct, v.answer, v.reason)


def test_grpo_with_two_of_eight_unscorable_uses_the_g6_advantages(tiny_policy, tmp_path, monkeypatch):
    """Issue 13's end-to-end check: 5 GRPO steps with 2 of 8 rollouts per group unscorable train, and the advantages
    the loss receives are, for each group, GRPO's on its 6 scored rollouts alone (G = 6), and exactly 0 for the 2
    unscorable ones (not the mean-filled G = 8 values, whose std is too small by sqrt(5/7))."""
    import divrl.trainer.rl as rl

    load_task, compute = rl.load_task, rl.compute_loss

    def wrapped_task(cfg, n=None):
        task, problems = load_task(cfg, n)
        return _TwoOfEightUnscorable(task), problems

    monkeypatch.setattr(rl, "load_task", wrapped_task)
    used: list[tuple[GroupBatch, torch.Tensor]] = []
    monkeypatch.setattr(
        rl,
        "compute_loss",
        lambda name, sub, adv, **o: used.append((sub, adv.detach().clone())) or compute(name, sub, adv, **o),
    )
    extra = ["rollout.prompts_per_step=2", "rollout.group_size=8", "rollout.max_new_tokens=16", "save_every=5"]
    before = {k: v.clone() for k, v in load_policy(resolve_model_path(tiny_policy))[0].state_dict().items()}
    train(_cfg("grpo", tiny_policy, steps=5, extra=extra), tmp_path, progress=False)

    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert all(r["unscorable_frac"] == 0.25 and math.isfinite(r["loss"]) for r in records)
    assert len(used) == 5  # one loss term (ppo), one micro-batch per step (check_methods' dry run is trainer.plan's)
    scored_cols = [0, 2, 3, 4, 6, 7]
    differs_from_filling = False
    for sub, adv in used:
        assert adv.shape == (2, 8) and sub.correct is not None
        nan = torch.isnan(sub.rewards)  # (2, 8)
        assert nan[:, [1, 5]].all() and not nan[:, scored_cols].any()
        assert not sub.correct[:, [1, 5]].any()  # the verdict said correct; unscorable is never correct
        assert torch.equal(adv[:, [1, 5]], torch.zeros(2, 2))
        r6 = sub.rewards[:, scored_cols].double()  # (2, 6)
        g6 = (r6 - r6.mean(-1, keepdim=True)) / (r6.std(-1, keepdim=True) + 1e-6)  # GRPO, G = 6, unbiased std
        torch.testing.assert_close(adv[:, scored_cols].double(), g6, atol=1e-5, rtol=0)
        filled = sub.rewards.double().nan_to_num(0) + nan * r6.mean(-1, keepdim=True)  # the former mean-filling
        old = (filled - filled.mean(-1, keepdim=True)) / (filled.std(-1, keepdim=True) + 1e-6)
        differs_from_filling |= not torch.allclose(old[:, scored_cols], g6, atol=1e-3)
    assert differs_from_filling, "degenerate rewards: the check could not tell the two computations apart"
    after = load_policy(str(latest_checkpoint(tmp_path)))[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed no weight"


def test_off_policy_iterations_and_kl_reference(tiny_policy, tmp_path):
    """num_iterations > 1 reuses stored old log-probs (ratios move off 1); beta > 0 loads a frozen reference."""
    extra = ["num_iterations=3", "loss.0.options.beta=0.05", "rollout.prompts_per_step=4", "rollout.group_size=8"]
    cfg = _cfg("grpo", tiny_policy, steps=1, extra=extra)  # 32 rollouts: some groups mixed, so the policy moves
    trainer = __import__("divrl.trainer.rl", fromlist=["RLTrainer"]).RLTrainer(cfg, tmp_path, progress=False)
    assert trainer.ref_model is not None
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    metrics = trainer.step(0)
    assert metrics["ppo/kl"] >= 0.0 and math.isfinite(metrics["ppo/kl"])
    assert metrics["adv_abs_mean"] > 0.0, "no mixed group: the check below could not fail"
    assert metrics["ppo/approx_kl"] > 0.0  # later iterations see a moved policy against the stored old log-probs


def test_mini_batches_take_one_adamw_step_each(tiny_policy, tmp_path, monkeypatch):
    """mini_batches=2 splits a step's 4 groups in order into two AdamW steps (verl's ppo_mini_batch_size): the first on
    groups 0-1 at the behaviour policy (ratios 1), the second on groups 2-3 after the first moved the policy (the old
    pass's stored log-probs, ratios off 1); the lr schedule steps once; a batch that does not split evenly is refused."""
    import divrl.trainer.rl as rl

    cfg = _cfg(
        "grpo", tiny_policy, steps=1, extra=["mini_batches=2", "rollout.prompts_per_step=4", "rollout.group_size=8"]
    )
    trainer = rl.RLTrainer(cfg, tmp_path, progress=False)
    events: list[Any] = []
    compute = rl.compute_loss
    monkeypatch.setattr(
        rl, "compute_loss", lambda name, sub, adv, **o: events.append((sub, adv)) or compute(name, sub, adv, **o)
    )
    real_step = trainer.optimizer.step
    monkeypatch.setattr(trainer.optimizer, "step", lambda *a, **k: events.append("step") or real_step(*a, **k))
    lrs = []
    real_sched = trainer.scheduler.step
    monkeypatch.setattr(trainer.scheduler, "step", lambda *a, **k: lrs.append(1) or real_sched(*a, **k))
    metrics = trainer.step(0)
    assert [e if e == "step" else tuple(e[0].rewards.shape) for e in events] == [(2, 8), "step", (2, 8), "step"]
    (first, adv1), (second, adv2) = events[0], events[2]
    assert float(adv1.abs().max()) > 0, "no mixed group in the first mini-batch: nothing would move"
    assert float(torch.cat([adv1, adv2]).abs().mean()) == pytest.approx(metrics["adv_abs_mean"])  # all 4 groups
    m1, m2 = first.mask.bool(), second.mask.bool()
    torch.testing.assert_close(first.logprobs.detach()[m1], first.old_logprobs[m1], atol=1e-5, rtol=0)  # behaviour
    assert float((second.logprobs.detach() - second.old_logprobs)[m2].abs().max()) > 1e-4  # moved by the first step
    assert lrs == [1]
    with pytest.raises(ConfigError, match="mini_batches: must be a divisor of rollout.prompts_per_step"):
        _cfg("grpo", tiny_policy, extra=["mini_batches=3", "rollout.prompts_per_step=4"])


def test_learned_partition_and_embedding_kernel(tiny_policy, tmp_path):
    """DARLING with a learned (bi-encoder) partition, and SetPO with an embedding cosine kernel, train a step.
    Uses the weight-free hashed char-n-gram embedder, so no sentence-transformers model is needed."""
    from divrl.semantic.pairs import task_pairs
    from divrl.semantic.train import TrainOptions, train_classifier

    pairs, _ = task_pairs("countdown", problems=30, source="reference", references=6, seed=0)
    clf = train_classifier(pairs, TrainOptions(kind="bi", embedder="char-ngram", hidden=32, steps=20, batch_size=64))
    clf.save(tmp_path / "clf")
    extra = ["partition.source=learned", f"partition.checkpoint={tmp_path / 'clf'}"]
    train(_cfg("darling", tiny_policy, steps=1, extra=extra), tmp_path / "darling", progress=False)
    record = read_metrics(tmp_path / "darling")[0]
    assert record["partition_failures"] == 0.0 and math.isfinite(record["loss"])

    extra = ["embedder=char-ngram", "advantage.options.kernel=cosine"]
    train(_cfg("setpo", tiny_policy, steps=1, extra=extra), tmp_path / "setpo", progress=False)
    assert math.isfinite(read_metrics(tmp_path / "setpo")[0]["loss"])


def test_embeddings_follow_the_declared_rows(tiny_policy, tmp_path, monkeypatch):
    """SetPO with members=correct declares that it reads correct rollouts' embeddings only, so the trainer embeds
    only those (zero vectors elsewhere; no setting asks for it), and its two steps equal exactly those of a trainer
    that embeds every rollout."""
    import divrl.trainer.rl as rl

    original = rl.embed_groups
    extra = ["embedder=char-ngram", "advantage.options.kernel=cosine", "advantage.options.members=correct"]
    runs, seen = {}, {}
    for rows in ("declared", "all"):
        seen[rows] = []

        def recording(texts, embedder, declared, correct, rows=rows):
            out = original(texts, embedder, declared if rows == "declared" else "all", correct)  # (P, G, D)
            seen[rows].append((declared, correct.clone(), out))
            return out

        monkeypatch.setattr(rl, "embed_groups", recording)
        trainer = rl.RLTrainer(_cfg("setpo", tiny_policy, extra=extra), tmp_path / rows)
        records = [trainer.step(step) for step in range(2)]
        runs[rows] = [{k: v for k, v in r.items() if not k.startswith("time")} for r in records], trainer.model
    assert [d for d, _, _ in seen["declared"]] == ["correct", "correct"]  # from setpo's declared needs
    mixed = 0
    for (_, correct, emb), (_, same, full) in zip(seen["declared"], seen["all"], strict=True):
        assert torch.equal(correct, same)  # the same rollouts in both runs
        assert torch.equal(emb[~correct], torch.zeros_like(emb[~correct]))  # incorrect rows: not embedded
        assert torch.equal(emb[correct], full[correct])
        assert not (~correct).any() or bool((full[~correct].norm(dim=-1) > 0).any())  # ... the other run embedded
        mixed += int(bool((correct.any(-1) & ~correct.all(-1)).any()))
    assert mixed > 0  # some group had correct and incorrect rollouts, so the zero rows were there to be read
    assert runs["declared"][0] == runs["all"][0]
    assert any(r["accuracy"] > 0 and r["adv_abs_mean"] > 0 for r in runs["all"][0])
    for a, b in zip(runs["declared"][1].parameters(), runs["all"][1].parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("method", "overrides", "refused"),
    [
        ("grpo", ["embedder=char-ngram"], True),
        ("setpo", ["embedder=char-ngram"], True),  # setpo's default kernel is ngram: an embedder changes nothing
        ("dra", ["embedder=char-ngram"], True),
        ("setpo", ["embedder=char-ngram", "advantage.options.kernel=cosine"], False),
        ("dsdr", ["embedder=char-ngram", "loss.1.options.kernel=cosine"], False),  # a loss term reads them
        ("dra", ["embedder=char-ngram", "advantage.options.kernel=cosine"], False),
    ],
)
def test_an_embedder_nothing_reads_is_refused_before_the_model_loads(method, overrides, refused, tmp_path):
    """An embedder never switches a kernel by itself, so one that neither the estimator nor a loss term reads is a
    one-line ConfigError naming the field and the fix, raised by the method check before any model is loaded."""
    from divrl.config import apply_overrides
    from divrl.trainer.rl import RLTrainer

    data = apply_overrides(load_yaml(RECIPES / "countdown" / f"{method}.yaml"), overrides)
    cfg = from_dict(RLConfig, apply_overrides(data, ["model.path=/nonexistent/policy"]))
    if not refused:
        check_methods(cfg)
        return
    with pytest.raises(ConfigError) as err:
        RLTrainer(cfg, tmp_path / "run")  # the model path does not exist: the refusal comes first
    message = str(err.value)
    assert message.startswith("embedder 'char-ngram' is set, but neither the estimator nor a loss term reads ")
    assert message.endswith("set advantage.options.kernel: cosine (or a loss term's kernel: cosine), or drop embedder")
    assert "\n" not in message and not (tmp_path / "run").exists()


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_recipe_passes_the_method_check(path):
    check_methods(from_dict(RLConfig, load_yaml(path)))


@pytest.mark.parametrize(
    ("method", "overrides", "match"),
    [
        ("setpo", ["advantage.options.members=some"], r"advantage 'setpo' \(advantage.options\): .*members"),
        ("setpo", ["advantage.options.lamda=3"], r"unknown option.*lamda"),
        ("setpo", ["advantage.options.kernel=cosine"], r"needs GroupBatch.embeddings.*set embedder"),
        ("setpo", ["loss.0.options.agg=tokens"], r"loss 'ppo' \(loss.0.options\)"),
        ("darling", ["partition.source=none"], r"partition.*set partition.source"),
        ("dsdr", ["loss.1.options.kernel=cosine"], r"^loss 'dsdr_entropy' \(loss.1\) needs GroupBatch.embeddings"),
        ("dsdr", ["loss.1.options.coupling=hard"], r"loss 'dsdr_entropy' \(loss.1.options\): .*coupling"),
        ("ucas", ["advantage.options.logit_scope=token"], r"advantage 'ucas' \(advantage.options\): .*logit_scope"),
        ("ucas", ["advantage.name=setpo", "advantage.options={base: ucas}"], r"token-level advantages"),
    ],
)
def test_bad_method_options_fail_before_training(method, overrides, match):
    """check_methods runs the estimator and the loss terms on a synthetic group: a bad option value or a missing
    signal is a ConfigError naming the field, raised before any model is loaded."""
    from divrl.config import ConfigError, apply_overrides

    cfg = from_dict(RLConfig, apply_overrides(load_yaml(RECIPES / "countdown" / f"{method}.yaml"), overrides))
    with pytest.raises(ConfigError, match=match):
        check_methods(cfg)


def test_unlikeliness_trains_on_the_policys_own_log_probs(tiny_policy, tmp_path, monkeypatch):
    """An estimator registered with needs_logprobs (unlikeliness) gets the rollouts' old log-probs and mask from a
    no-grad pass before the advantage, and the PPO loss reuses them; other estimators skip that pass. UCAS's
    self-certainty and raw token logits come from that same one pass (no second forward)."""
    import divrl.trainer.rl as rl

    passes: list[dict[str, torch.Tensor]] = []
    seen: list[GroupBatch] = []
    old_pass, compute = rl.RLTrainer.old_pass, rl.compute_advantages
    monkeypatch.setattr(rl.RLTrainer, "old_pass", lambda self, *a: passes.append(old_pass(self, *a)) or passes[-1])
    monkeypatch.setattr(
        rl, "compute_advantages", lambda name, batch, **o: seen.append(batch) or compute(name, batch, **o)
    )
    cfg = _cfg("grpo", tiny_policy, steps=1, extra=["advantage.name=unlikeliness", "rollout.prompts_per_step=4"])
    train(cfg, tmp_path / "u", progress=False)
    record = read_metrics(tmp_path / "u")[0]
    assert len(passes) == 1 and len(seen) == 1  # the step's call (check_methods' dry run is trainer.plan's)
    batch, old = seen[0], passes[0]["old_logprobs"]
    assert set(passes[0]) == {"old_logprobs"}  # nothing else computed: unlikeliness declares no statistics
    assert batch.old_logprobs is not None and batch.mask is not None and batch.self_certainty is None
    assert torch.equal(batch.old_logprobs, old.cpu()) and old.shape == (4, 4, batch.mask.shape[-1])
    lp = old[batch.mask.bool()]
    assert bool((lp <= 0).all()) and float(lp.std()) > 0  # real per-token log-probs, not a placeholder
    assert math.isfinite(record["loss"]) and record["ppo/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    passes.clear()
    train(_cfg("grpo", tiny_policy, steps=1), tmp_path / "g", progress=False)
    assert passes == []  # GRPO with one iteration needs no separate log-prob pass
    seen.clear()
    train(_cfg("ucas", tiny_policy, steps=1, extra=["rollout.prompts_per_step=4"]), tmp_path / "c", progress=False)
    record = read_metrics(tmp_path / "c")[0]
    assert len(passes) == 1 and set(passes[0]) == {"old_logprobs", "self_certainty", "token_logits"}  # one pass
    batch, stats = seen[0], passes[0]
    assert batch.old_logprobs is None  # not declared by ucas; PPO still reuses the pass's log-probs
    assert torch.equal(batch.self_certainty, stats["self_certainty"].cpu())  # type: ignore[arg-type]
    assert torch.equal(batch.token_logits, stats["token_logits"].cpu())  # type: ignore[arg-type]
    valid = batch.mask.bool()  # type: ignore[union-attr]
    assert float(batch.self_certainty[valid].min()) > 0 and float(batch.token_logits[valid].std()) > 0  # type: ignore[index]
    assert record["ppo/approx_kl"] == pytest.approx(0.0, abs=1e-6) and record["adv_abs_mean"] > 0


def test_repexp_reads_hidden_states_from_the_old_log_prob_pass(tiny_policy, tmp_path, monkeypatch):
    """An estimator declaring ``hidden`` (repexp) gets each rollout's mean last-layer hidden state from the same
    no-grad pass that gives the old log-probs (one pass, no other), equal to the policy's own final hidden states
    averaged over the completion tokens; the PPO loss reuses those old log-probs."""
    import divrl.trainer.rl as rl

    passes: list[dict[str, torch.Tensor]] = []
    seen: list[GroupBatch] = []
    rollouts_seen: list[object] = []
    old_pass, compute = rl.RLTrainer.old_pass, rl.compute_advantages
    monkeypatch.setattr(
        rl.RLTrainer,
        "old_pass",
        lambda self, r, *a: rollouts_seen.append(r) or passes.append(old_pass(self, r, *a)) or passes[-1],
    )
    monkeypatch.setattr(
        rl, "compute_advantages", lambda name, batch, **o: seen.append(batch) or compute(name, batch, **o)
    )
    cfg = _cfg("repexp", tiny_policy, steps=1, extra=["rollout.prompts_per_step=4"])
    train(cfg, tmp_path / "r", progress=False)
    assert len(passes) == 1 and len(seen) == 1  # the step's call (check_methods' dry run is trainer.plan's)
    batch, hidden = seen[0], passes[0]["hidden"]
    assert set(passes[0]) == {"old_logprobs", "hidden"} and batch.old_logprobs is None  # not declared by repexp
    assert batch.hidden is not None and torch.equal(batch.hidden, hidden.cpu())
    rollouts = rollouts_seen[0]
    model, _ = load_policy(resolve_model_path(tiny_policy))  # step 0's policy: the pass ran before the update
    assert hidden.shape == (4, 4, model.config.hidden_size) and bool(torch.isfinite(hidden).all())
    ids = torch.cat([rollouts.prompt_ids, rollouts.completion_ids], 1)  # type: ignore[attr-defined]
    am = getattr(rollouts, "attention_mask", None)
    kwargs = {} if am is None else {"attention_mask": am, "position_ids": (am.long().cumsum(-1) - 1).clamp(min=0)}
    with torch.no_grad():
        states = model.model(input_ids=ids, **kwargs).last_hidden_state  # (N, L, H)
    m = rollouts.completion_mask.float()  # type: ignore[attr-defined]  (N, Lc)
    lp = rollouts.prompt_ids.shape[1]  # type: ignore[attr-defined]
    ref = (states[:, lp:] * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)  # (N, H)
    torch.testing.assert_close(hidden.view(16, -1).cpu(), ref, atol=1e-4, rtol=1e-4)
    assert float(hidden.view(16, -1).std(0).mean()) > 1e-3  # rollouts differ: a real signal, not a placeholder


FORWARDS = [  # (recipe, overrides, the no-grad forwards' fields, the training forwards' fields, per step)
    ("grpo", [], [], [("logprobs", "entropies")]),
    ("unlikeliness", [], [("logprobs",)], [("logprobs", "entropies")]),
    ("ucas", [], [("logprobs", "self_certainty", "token_logits")], [("logprobs", "entropies")]),
    ("repexp", [], [("logprobs", "hidden")], [("logprobs", "entropies")]),
    ("grpo", ["num_iterations=2"], [("logprobs",)], [("logprobs", "entropies")] * 2),
    ("repexp", ["num_iterations=2"], [("logprobs", "hidden")], [("logprobs", "entropies")] * 2),
    ("grpo", ["mini_batches=2"], [("logprobs",)], [("logprobs", "entropies")] * 2),  # one old pass, 2 mini-batches
    ("rover", ["num_iterations=1"], [], [("logprobs", "entropies", "vocab_mean_logprobs")]),
    ("rover", [], [("logprobs", "vocab_mean_logprobs")], [("logprobs", "entropies", "vocab_mean_logprobs")] * 2),
    ("flowrl", [], [("logprobs",)], [("logprobs", "entropies", "prompt_hidden")]),  # no grad: the reference model
    ("flowrl", ["loss.0.options.reference=false"], [], [("logprobs", "entropies", "prompt_hidden")]),
    (
        "rover",  # ucas's statistics and rover's old means from the one old pass, which ucas runs first
        ["advantage.name=ucas", "advantage.options={}"],
        [("logprobs", "self_certainty", "token_logits", "vocab_mean_logprobs")],
        [("logprobs", "entropies", "vocab_mean_logprobs")] * 2,
    ),
]


@pytest.mark.parametrize(("method", "extra", "no_grad", "grad"), FORWARDS)
def test_each_forward_computes_only_the_declared_statistics(method, extra, no_grad, grad, tiny_policy, tmp_path):
    """trainer.plan.forward_plan is the one place that decides what each forward computes: every statistic comes from
    a forward the trainer runs anyway (never a second old pass), and nothing undeclared is computed (plain GRPO:
    the training forward's log-probs and entropies, no old pass)."""
    import divrl.rollout

    calls: list[tuple[bool, tuple[str, ...]]] = []
    real = divrl.rollout.token_statistics

    def recording(model, input_ids, start, mask, fields, *a, **k):
        calls.append((torch.is_grad_enabled(), tuple(fields)))
        return real(model, input_ids, start, mask, fields, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(divrl.rollout, "token_statistics", recording)
        train(_cfg(method, tiny_policy, steps=1, extra=["rollout.prompts_per_step=4", *extra]), tmp_path, False)
    assert [f for g, f in calls if not g] == no_grad
    assert [f for g, f in calls if g] == grad


def test_forward_plan_by_hand():
    """The plan from declared needs alone: old-pass fields only when the estimator requires them (then before the
    advantage) or num_iterations > 1, exactly the declared ones; the training forward's log-probs and entropies."""
    from divrl.core.needs import Needs
    from divrl.trainer.plan import forward_plan

    ppo = Needs.of(["logprobs", "mask"], ["old_logprobs"])
    plan = forward_plan(Needs.of(["correct"]), ppo)
    assert (plan.before_advantage, plan.old, plan.train) == (False, (), ("logprobs", "entropies"))
    plan = forward_plan(Needs.of(["mask", "self_certainty", "token_logits"]), ppo)
    assert (plan.before_advantage, plan.old) == (True, ("old_logprobs", "self_certainty", "token_logits"))
    assert plan.old_stats() == ["logprobs", "self_certainty", "token_logits"]
    plan = forward_plan(Needs.of(["hidden"]), ppo, updates=3)
    assert (plan.before_advantage, plan.old, plan.old_stats()) == (
        True,
        ("old_logprobs", "hidden"),
        ["logprobs", "hidden"],
    )
    plan = forward_plan(Needs(), ppo, updates=2)
    assert (plan.before_advantage, plan.old, plan.train) == (False, ("old_logprobs",), ("logprobs", "entropies"))
    rover = Needs.of(["logprobs", "mask", "vocab_mean_logprobs", "old_vocab_mean_logprobs"], ["old_logprobs"])
    plan = forward_plan(Needs(), rover)  # on-policy: the old means are the training forward's, detached
    assert (plan.old, plan.train) == ((), ("logprobs", "entropies", "vocab_mean_logprobs"))
    plan = forward_plan(Needs(), rover, updates=2)
    assert plan.old == ("old_logprobs", "old_vocab_mean_logprobs")
    assert plan.old_stats() == ["logprobs", "vocab_mean_logprobs"]
    plan = forward_plan(Needs(), Needs.of(["logprobs", "log_z"]))  # flowrl: the head's input from the same forward
    assert (plan.old, plan.train) == ((), ("logprobs", "entropies", "prompt_hidden"))


def test_learned_partition_needs_a_checkpoint(tiny_policy, tmp_path):
    with pytest.raises(ValueError, match="needs partition.checkpoint"):
        train(_cfg("darling", tiny_policy, steps=1, extra=["partition.source=learned"]), tmp_path, progress=False)


def _one_step_grads(cfg: RLConfig, run_dir) -> dict[str, torch.Tensor]:
    """The (clipped) gradients of a trainer's first step: still in ``.grad`` after the optimizer step."""
    from divrl.trainer.rl import RLTrainer

    trainer = RLTrainer(cfg, run_dir, progress=False)
    trainer.step(0)
    return {k: v.grad.clone() for k, v in trainer.model.named_parameters()}


def test_length_buckets_and_compile_give_the_same_update(tiny_policy, tmp_path):
    """Bucketing rows by length (the default), sharing each prompt's forward among its rows and torch.compile change
    the speed, not the step: the gradients
    match the plain one-pass eager step's up to float rounding (and are not all zero)."""
    size = ["rollout.prompts_per_step=4", "rollout.group_size=8"]  # 32 rollouts: some groups mixed
    plain = _one_step_grads(_cfg("grpo", tiny_policy, steps=1, extra=[*size, "length_buckets=1"]), tmp_path / "a")
    assert max(float(g.abs().max()) for g in plain.values()) > 1e-3
    variants = (
        ["length_buckets=3"],
        ["length_buckets=3", "compile=true"],
        ["length_buckets=3", "prefix_sharing=true"],
        ["length_buckets=1", "prefix_sharing=true", "compile=true"],
    )
    for i, extra in enumerate(variants):
        got = _one_step_grads(_cfg("grpo", tiny_policy, steps=1, extra=[*size, *extra]), tmp_path / f"b{i}")
        for k in plain:
            torch.testing.assert_close(got[k], plain[k], atol=1e-5, rtol=1e-3, msg=f"{extra}: {k}")


def test_partition_labels_members_correct():
    """partition.members=correct: classes among correct rollouts only; incorrect ones are singletons and never reach
    the learned classifier. With the exact source, darling's advantages are unchanged by it."""
    from divrl.core import compute_advantages
    from divrl.core.batch import GroupBatch
    from divrl.trainer.rl import Scored, partition_labels

    correct = torch.tensor([[True, False, True, False, True], [False, False, False, False, False]])
    scored = Scored(
        rewards=correct.float(),
        correct=correct,
        answers=[["7"] * 5, ["1", "1", None, "2", "2"]],
        keys=[["a+b", "a-b", "b+a", "a-b", "a*b"], ["x", "x", None, "y", "y"]],
        reasons={},
    )
    texts = [["A", "bad", "A", "bad", "B"], ["q", "q", "r", "s", "s"]]

    class Recorder:
        def __init__(self):
            self.seen = []

        def groups(self, groups):
            self.seen.append(groups)
            return [[0 if t == "A" else 1 for t in g] for g in groups]

    exact_all, _ = partition_labels("exact", scored, texts)
    assert exact_all.tolist() == [[0, 1, 2, 1, 3], [0, 0, 1, 2, 2]]
    exact_ok, _ = partition_labels("exact", scored, texts, members="correct")
    assert exact_ok.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    rec = Recorder()
    learned, failures = partition_labels("learned", scored, texts, rec, members="correct")
    assert rec.seen == [[["A", "A", "B"], []]] and failures == 0
    assert learned.tolist() == [[0, 1, 0, 2, 3], [0, 1, 2, 3, 4]]
    assert partition_labels("text", scored, texts)[0].tolist() == [[0, 1, 0, 1, 2], [0, 0, 1, 2, 2]]
    assert partition_labels("text", scored, texts, members="correct")[0].tolist() == [[0, 1, 0, 2, 3], [0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="known sources are none, exact, answer, text, learned"):
        partition_labels("bogus", scored, texts)
    with pytest.raises(ValueError, match=r"^partition.members must be 'all' or 'correct', got True$"):
        partition_labels("exact", scored, texts, members=True)
    answer, _ = partition_labels("answer", scored, texts, members="correct")
    assert answer.tolist() == [[0, 1, 0, 2, 0], [0, 1, 2, 3, 4]]

    def darling(labels):
        batch = GroupBatch(rewards=scored.rewards, correct=correct, partition=labels)
        return compute_advantages("darling", batch, scale="group")

    torch.testing.assert_close(darling(exact_ok), darling(exact_all))
    # one answer class for all correct rollouts: a uniform multiplier, which std-normalisation cancels
    torch.testing.assert_close(darling(answer), darling(exact_ok))
    assert not torch.allclose(darling(learned), darling(exact_ok))  # A, A, B: the B rollout is worth more
    assert darling(learned)[0, 4] > darling(learned)[0, 0]


def test_eval_every_logs_what_divrl_eval_measures(tiny_policy, tmp_path):
    """``eval_every`` puts divrl eval's metrics (``eval/...``) into the records of its steps only, and the values at
    the last step equal ``evaluate()`` on the saved checkpoint of that step (same problems, n, seed 0)."""
    from divrl.eval.evaluate import evaluate
    from divrl.trainer.common import load_task
    from divrl.trainer.config import TaskConfig

    extra = ["eval_every=2", "eval_problems=6", "eval_n=4", "eval_split=val"]
    cfg = _cfg("grpo", tiny_policy, steps=2, extra=extra)
    train(cfg, tmp_path, progress=False)
    records = read_metrics(tmp_path)
    assert "eval/pass@1" not in records[0]  # step 1: no evaluation
    last = records[1]
    task, problems = load_task(TaskConfig(name="countdown", options=cfg.task.options, split="val"), n=6)
    model, tok = load_policy(str(latest_checkpoint(tmp_path)))
    reference = evaluate(
        model,
        tok,
        task,
        problems,
        4,
        temperature=1.0,
        max_new_tokens=cfg.rollout.max_new_tokens,
        seed=0,
        progress=False,
    )
    for key in ("pass@1", "pass@4", "distinct_correct_classes", "greedy_pass@1", "entropy"):
        assert last[f"eval/{key}"] == pytest.approx(reference[key], abs=1e-5), key
    assert reference["pass@4"] > 0  # not a 0 == 0 comparison


def test_eval_every_checks_its_split_before_writing(tiny_policy, tmp_path):
    cfg = _cfg("grpo", tiny_policy, steps=1, extra=["eval_every=1", "eval_split=nope"])
    with pytest.raises(ConfigError, match=r"eval_split 'nope': task 'countdown': split must be"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_kl_term_loads_the_reference_model_because_it_declares_it(tiny_policy, tmp_path):
    """`loss=[{name: ppo}, {name: kl}]`: the kl term declares ref_logprobs (core.needs), so the trainer loads the
    reference model and trains (it used to load it only for an explicit beta, then die with a traceback)."""
    from divrl.core.losses import loss_needs
    from divrl.trainer.rl import RLTrainer

    assert loss_needs("kl").requires("ref_logprobs") and not loss_needs("ppo").requires("ref_logprobs")
    assert loss_needs("ppo", {"beta": 0.04}).requires("ref_logprobs")
    cfg = _cfg("grpo", tiny_policy, steps=1, extra=["loss=[{name: ppo}, {name: kl}]"])
    trainer = RLTrainer(cfg, tmp_path / "kl", progress=False)
    assert trainer.ref_model is not None
    record = trainer.step(0)
    assert math.isfinite(record["loss"]) and record["kl/kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    plain = RLTrainer(_cfg("grpo", tiny_policy, steps=1), tmp_path / "plain", progress=False)
    assert plain.ref_model is None  # nothing declares ref_logprobs: no second model


def test_cli_trains_the_kl_reproduction(tmp_path):
    """The issue-14 reproduction through the CLI: exit 0 and a finite kl metric."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "divrl.cli", "train", "--config", str(RECIPES / "countdown" / "grpo.yaml")]
    args += ["--out", str(run), "--set", "loss=[{name: ppo}, {name: kl}]", "--set", "steps=1"]
    args += [f"--set={o}" for o in TINY] + ["--set", "rollout.max_new_tokens=8"]
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert math.isfinite(read_metrics(run)[0]["kl/kl"])


def test_check_methods_reads_the_declared_needs(monkeypatch):
    """A user estimator declaring that it reads the partition is refused without partition.source, in one line
    naming the field -- from the declaration alone, before anything runs."""
    from divrl.config import ConfigError, apply_overrides
    from divrl.core.advantages import ADVANTAGES, register_advantage
    from divrl.core.needs import Needs

    calls = []

    @register_advantage("_needs_partition_toy", needs=lambda o: Needs.of({"partition"}))
    def toy(batch, *, k: int = 1):
        calls.append(batch)
        return torch.zeros_like(batch.rewards)

    try:
        raw = apply_overrides(load_yaml(RECIPES / "countdown" / "grpo.yaml"), ["advantage.name=_needs_partition_toy"])
        with pytest.raises(ConfigError, match=r"needs GroupBatch.partition.*set partition.source"):
            check_methods(from_dict(RLConfig, raw))
        assert calls == []
        check_methods(from_dict(RLConfig, apply_overrides(raw, ["partition.source=exact"])))
        assert calls and calls[0].partition is not None
    finally:
        ADVANTAGES._entries.pop("_needs_partition_toy")
        ADVANTAGES._needs.pop("_needs_partition_toy")
