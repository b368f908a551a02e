"""Tests for divrl.integrations.trl: TRL contract, reward functions, and short CPU training runs.

The training runs use a tiny random Llama (hidden 32, 1 layer) and a character tokenizer; every run starts from the
same weights and seed, so the first generation batch is identical across runs and the advantages / losses of
``DiversityGRPOTrainer`` can be compared value by value with a stock ``GRPOTrainer``.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import pytest
import torch
import trl
from _tiny import NO_CHECKPOINTING, char_tokenizer, mod3_key, parity_reward, tiny_llama
from datasets import Dataset
from torch import Tensor
from trl import GRPOConfig, GRPOTrainer

from divrl.core.advantages import compute_advantages
from divrl.core.batch import GroupBatch
from divrl.core.diversity import labels_tensor, partition_by_key
from divrl.core.metrics import distinct_correct_classes
from divrl.integrations.trl import (
    TESTED_TRL,
    DiversityGRPOTrainer,
    completion_text,
    darling_reward,
    group_rollouts,
)

HERE = Path(__file__).parent
G = 4
B = 8  # per_device_train_batch_size: two groups of four, one micro-batch per step
OUT_KEYS = {"prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "num_items_in_batch"}


# ---------------------------------------------------------------------------------------------
# Contract with TRL's private API (fails loudly when an overridden method changes)
# ---------------------------------------------------------------------------------------------


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_trl_contract() -> None:
    assert tuple(int(x) for x in trl.__version__.split(".")[:2]) == TESTED_TRL, trl.__version__
    assert _params(GRPOTrainer._calculate_rewards) == [
        "self",
        "inputs",
        "prompts",
        "completions",
        "completion_ids_list",
    ]
    assert _params(GRPOTrainer._generate_and_score_completions) == ["self", "inputs"]
    assert _params(GRPOTrainer._compute_loss) == ["self", "model", "inputs"]
    logps_params = _params(GRPOTrainer._get_per_token_logps_and_entropies)
    assert logps_params[:5] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep"]
    assert "compute_entropy" in logps_params

    gen = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    # rewards come from _calculate_rewards, already gathered; groups are num_generations consecutive rows; each
    # process keeps rows [process_index * B_local, (process_index + 1) * B_local); advantages are a (B,) output key
    assert "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in gen
    assert "rewards.view(-1, num_generations)" in gen
    assert "self.accelerator.process_index * len(prompts)" in gen
    assert '"advantages": advantages' in gen
    assert 'self._logs["advantages"].extend(all_process_advantages.tolist())' in gen
    assert "gather(rewards_per_func)" in inspect.getsource(GRPOTrainer._calculate_rewards)
    loss_src = inspect.getsource(GRPOTrainer._compute_loss)
    # the training forward is the one call with compute_entropy=True; the loss reads these input keys
    assert "compute_entropy=True" in loss_src
    assert 'inputs["advantages"]' in loss_src
    assert 'inputs.get("old_per_token_logps")' in loss_src
    assert "self.current_gradient_accumulation_steps" in loss_src


def test_contract_runtime_keys_and_attributes(plain: Run) -> None:
    trainer = plain.trainer
    assert set(plain.out_keys[0]) >= OUT_KEYS
    assert plain.advantages[0].shape == (B,)
    assert trainer.num_generations == G and trainer.num_generations_eval == G
    assert trainer.reward_func_names == ["parity_reward"]
    assert trainer.multi_objective_aggregation == "sum_then_normalize"
    assert isinstance(trainer._logs["advantages"], deque)
    assert isinstance(trainer._metrics["train"], dict)
    assert trainer.current_gradient_accumulation_steps == 1


def test_core_imports_without_trl() -> None:
    code = (
        "import sys; sys.modules['trl'] = None\n"  # makes `import trl` raise ImportError
        "import divrl.core, divrl.integrations\n"
        "try:\n    import divrl.integrations.trl\nexcept ImportError as e:\n    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pip install 'divrl[trl]'" in proc.stdout


# ---------------------------------------------------------------------------------------------
# Framework-free helpers and the DARLING reward function
# ---------------------------------------------------------------------------------------------


def test_completion_text_formats() -> None:
    assert completion_text("a+b") == "a+b"
    messages = [{"role": "assistant", "content": "x="}, {"role": "tool", "content": [{"type": "text", "text": "4"}]}]
    assert completion_text(messages) == "x=4"
    with pytest.raises(TypeError, match="completion must be"):
        completion_text(3)


def test_group_rollouts_checks_whole_groups() -> None:
    prompts = ["p", "p", "q", "q"]
    assert group_rollouts(prompts, [1, 2, 3, 4], 2) == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match="not a whole number of groups"):
        group_rollouts(prompts[:3], [1, 2, 3], 2)
    with pytest.raises(ValueError, match="mix different prompts"):
        group_rollouts(["p", "q", "q", "p"], [1, 2, 3, 4], 2)


def test_darling_reward_hand_computed() -> None:
    def base(prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any) -> list[float | None]:
        return [None if c == "?" else float(c.endswith(a)) for c, a in zip(completions, answer, strict=True)]

    fn = darling_reward(base, key_fn=lambda t: t[-1:], num_generations=4)
    assert fn.__name__ == "darling_base"
    prompts = ["p"] * 4 + ["q"] * 4
    completions = ["1", "x1", "2", "?", "9", "8", "7", "6"]
    answer = ["1"] * 4 + ["9"] * 4
    # group p: "?" is unscorable and left out: classes {1, x1} {2} among 3: div = (3-2)/2, (3-2)/2, 1; rewards 1, 1, 0
    # group q: all distinct -> div = 1; rewards 1, 0, 0, 0
    got = fn(prompts=prompts, completions=completions, answer=answer)
    assert got == pytest.approx([1 / 2, 1 / 2, 0.0, None, 1.0, 0.0, 0.0, 0.0])
    assert fn(prompts=["p"] * 4, completions=["1"] * 4, answer=["1"] * 4) == pytest.approx([0.1] * 4)  # floor
    with pytest.raises(ValueError, match="part of a group"):
        fn(prompts=["p"] * 2, completions=["1", "2"], answer=["1"] * 2)  # a process holding half a group
    with pytest.raises(ValueError, match=">= 0"):
        darling_reward(lambda **kw: [-1.0] * 4, mod3_key, num_generations=4)(prompts=["p"] * 4, completions=["a"] * 4)


def test_trainer_rejects_bad_options(tmp_path: Path) -> None:
    tok = char_tokenizer()
    common: dict[str, Any] = {
        "model": tiny_llama(tok),
        "reward_funcs": [parity_reward],
        "args": _config(tmp_path),
        "train_dataset": _dataset(),
        "processing_class": tok,
    }
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['lambda'\]"):
        DiversityGRPOTrainer(**common, advantage="setpo", advantage_options={"lambda": 1.0})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['coef'\]"):
        DiversityGRPOTrainer(**common, positive_entropy={"coef": 0.1})
    with pytest.raises(ValueError, match="either partition_fn or partition_key"):
        DiversityGRPOTrainer(**common, partition_fn=lambda p, t: [0] * len(t), partition_key=len)
    with pytest.raises(ValueError, match=r"advantage 'darling' needs GroupBatch.partition: .*partition_key="):
        DiversityGRPOTrainer(**common, advantage="darling")
    with pytest.raises(ValueError, match="old log-probs"):
        DiversityGRPOTrainer(**common, advantage="unlikeliness")
    with pytest.raises(ValueError, match=r"'outcome_batch' needs GroupBatch.answers: .*classes='partition'"):
        DiversityGRPOTrainer(**common, advantage="outcome_batch")
    # supported: pkpo (rewards only); the answer-class estimators over a partition key
    DiversityGRPOTrainer(**common, advantage="pkpo", advantage_options={"k": 2})
    for name in ("outcome_batch", "seed_grpo"):
        DiversityGRPOTrainer(**common, advantage=name, advantage_options={"classes": "partition"}, partition_key=len)
    with pytest.raises(ValueError, match=r"advantage 'arm' needs GroupBatch.old_logprobs: .*old log-probs"):
        DiversityGRPOTrainer(**common, advantage="arm")
    with pytest.raises(ValueError, match=r"advantage 'repexp' needs GroupBatch.hidden: .*use divrl's own trainer"):
        DiversityGRPOTrainer(**common, advantage="repexp")
    with pytest.raises(ValueError, match=r"advantage 'outcome_ucb' keeps per-problem state .* use divrl train"):
        DiversityGRPOTrainer(**common, advantage="outcome_ucb")  # refused before TRL builds anything
    with pytest.raises(ValueError, match=r"^DiversityGRPOTrainer: sampler 'latr' runs inside divrl's own decode loop"):
        DiversityGRPOTrainer(**common, sampler="latr")  # TRL samples with its own engine
    with pytest.raises(ValueError, match=r"^DiversityGRPOTrainer: prompt selector 'gdro' .* use divrl train$"):
        DiversityGRPOTrainer(**common, prompt_selector="gdro")
    with pytest.raises(ValueError, match=r"unknown sampler 'beam'; known: \['latr', 'standard'\]"):
        DiversityGRPOTrainer(**common, sampler="beam")
    with pytest.raises(ValueError, match=r"^DiversityGRPOTrainer: advantage 'ucas' gives one advantage per token .*"):
        DiversityGRPOTrainer(**common, advantage="ucas")  # token-level, full-vocabulary statistics: one line
    DiversityGRPOTrainer(**common, advantage="dsdr")  # supported: reads correct and texts only
    with pytest.raises(ValueError, match="correct_reward='acc' is not one of"):
        DiversityGRPOTrainer(**common, correct_reward="acc")
    # option values, not only names, fail at construction (a dry run on a synthetic group), naming the argument
    with pytest.raises(ValueError, match=r"advantage='setpo', advantage_options=\{'gate': 'bogus'\}: .*gate"):
        DiversityGRPOTrainer(**common, advantage="setpo", advantage_options={"gate": "bogus"})
    with pytest.raises(ValueError, match=r"positive_entropy=\{'lam': 0.1, 'gate': 'bogus'\}: .*gate"):
        DiversityGRPOTrainer(**common, positive_entropy={"lam": 0.1, "gate": "bogus"})
    with pytest.raises(ValueError, match=r"needs GroupBatch.embeddings: pass embedder="):
        DiversityGRPOTrainer(**common, advantage="setpo", advantage_options={"kernel": "cosine"})
    # an embedder never switches a kernel by itself: one that nothing reads is refused before TRL builds anything
    unread = r"^DiversityGRPOTrainer: embedder= is set, but neither the estimator nor a loss term reads .* embedder=$"
    for refused in ({"advantage": "setpo"}, {"advantage": "grpo"}, {"positive_entropy": {"lam": 0.1}}, {}):
        with pytest.raises(ValueError, match=unread):
            DiversityGRPOTrainer(**common, **refused, embedder="char-ngram")
    DiversityGRPOTrainer(**common, advantage="dra", advantage_options={"kernel": "cosine"}, embedder="char-ngram")


# ---------------------------------------------------------------------------------------------
# Two training steps on CPU, compared with a stock GRPOTrainer
# ---------------------------------------------------------------------------------------------


def _dataset() -> Dataset:
    return Dataset.from_dict({"prompt": [f"{c}{c}=" for c in "abcd"]})


def _config(out: Path) -> GRPOConfig:
    return GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=B, num_generations=G, max_completion_length=8,
        learning_rate=1e-2, max_steps=2, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        bf16=False, **NO_CHECKPOINTING, disable_tqdm=True, seed=0, top_k=0, top_p=1.0,
    )  # fmt: skip


class _Recorder:
    """Mixin recording, per generation batch, the output keys, completion ids and advantages (before TRL's shuffle),
    and, per loss call, the loss, the training-forward log-probs and the loss inputs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rec: dict[str, list[Any]] = {"keys": [], "ids": [], "adv": [], "loss": [], "logps": [], "inputs": []}

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        out = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        self.rec["keys"].append(sorted(out))
        self.rec["ids"].append(out["completion_ids"].clone())
        self.rec["adv"].append(out["advantages"].clone())
        return out

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)  # type: ignore[misc]
        if kwargs.get("compute_entropy"):
            self.rec["logps"].append(result[0].detach().clone())
        return result

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Tensor:
        loss: Tensor = super()._compute_loss(model, inputs)  # type: ignore[misc]
        self.rec["loss"].append(float(loss.detach()))
        self.rec["inputs"].append({k: v.clone() for k, v in inputs.items() if isinstance(v, Tensor)})
        return loss


class _PlainRec(_Recorder, GRPOTrainer):  # type: ignore[misc]
    pass


class _DivRec(_Recorder, DiversityGRPOTrainer):  # type: ignore[misc]
    pass


class Run:
    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        rec = trainer.rec
        self.out_keys, self.ids, self.advantages = rec["keys"], rec["ids"], rec["adv"]
        self.losses, self.logps, self.inputs = rec["loss"], rec["logps"], rec["inputs"]
        self.params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    def texts(self, step: int = 0) -> list[list[str]]:
        flat = self.trainer.processing_class.batch_decode(self.ids[step], skip_special_tokens=True)
        return [flat[i : i + G] for i in range(0, len(flat), G)]

    def rewards(self, step: int = 0) -> Tensor:
        texts = self.texts(step)
        return torch.tensor([parity_reward([], group) for group in texts])  # (P, G)


def _train(cls: type, out: Path, reward: Any = parity_reward, **divrl: Any) -> Run:
    tok = char_tokenizer()
    trainer = cls(
        model=tiny_llama(tok), reward_funcs=[reward], args=_config(out), train_dataset=_dataset(),
        processing_class=tok, **divrl,
    )  # fmt: skip
    trainer.train()
    assert trainer.state.global_step == 2
    return Run(trainer)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _train(_PlainRec, tmp_path_factory.mktemp("plain"))


def _same_first_batch(a: Run, b: Run) -> None:
    """Same weights and seed: both runs sampled the same first completions (so their values are comparable)."""
    assert torch.equal(a.ids[0], b.ids[0])


def test_plain_run_is_trl_grpo(plain: Run) -> None:
    r = plain.rewards()  # (P, G)
    assert 0 < r.sum() < r.numel(), "degenerate rewards: pick another seed"
    expected = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-4)  # TRL: group std, eps 1e-4
    torch.testing.assert_close(plain.advantages[0], expected.reshape(-1), atol=1e-5, rtol=0)


def test_darling_advantages_replace_grpo(plain: Run, tmp_path: Path) -> None:
    run = _train(_DivRec, tmp_path, advantage="darling", partition_key=mod3_key)
    _same_first_batch(plain, run)
    texts, r = run.texts(), run.rewards()
    labels = labels_tensor([partition_by_key([mod3_key(t) for t in group]) for group in texts])  # (P, G)
    assert any(len(set(row.tolist())) not in (1, G) for row in labels), "partition is trivial: pick another key"
    expected = compute_advantages("darling", GroupBatch(rewards=r, partition=labels))  # (P, G)
    torch.testing.assert_close(run.advantages[0], expected.reshape(-1))
    assert (run.advantages[0] - plain.advantages[0]).abs().max() > 0.1
    # (on-policy the first loss is -sum_i A_i T_i / sum_i T_i: 0 for both here, every completion being clipped at 8
    # tokens; the gradients differ, so the weights do)
    assert not torch.allclose(run.params, plain.params)  # the new advantages reached the update
    # the recorded global batch (step 2) is whole groups with texts, and TRL's completions log shows our advantages
    batch = run.trainer.last_group_batch
    assert batch.rewards.shape == (B // G, G) and batch.texts == run.texts(1)
    assert list(run.trainer._logs["advantages"]) == pytest.approx(run.advantages[1].tolist())
    # every method logs the same diversity metrics (docs/scale-out.md, "divrl's metrics in TRL's logs"): correctness
    # (here without the entropy term), classes, and the method's own signal size against GRPO on the same groups
    step2 = [h for h in run.trainer.state.log_history if "divrl/correct_frac" in h][-1]  # what TRL logged, step 2
    assert step2["divrl/correct_frac"] == pytest.approx(float((run.rewards(1) >= 1.0).float().mean()))
    assert step2["divrl/distinct_correct_classes"] == pytest.approx(
        distinct_correct_classes(batch.partition.tolist(), batch.correct)
    )
    assert step2["divrl/signal/rms_ratio"] > 0 and 0 < step2["divrl/signal/groups_changed"] <= 1


def flaky_parity(prompts: list[str], completions: list[str], **kwargs: object) -> list[float | None]:
    """``parity_reward``, but the second completion of every group of G is unscorable (``None``)."""
    return [None if i % G == 1 else r for i, r in enumerate(parity_reward(prompts, completions))]


def test_unscorable_completions_get_trls_own_statistics(tmp_path: Path) -> None:
    """With ``None`` rewards, divrl's grpo (TRL's eps) gives exactly TRL's nan-aware advantages: mean and std over the
    3 scored completions of each group, 0 for the unscorable one."""
    plain = _train(_PlainRec, tmp_path / "plain", reward=flaky_parity)
    run = _train(_DivRec, tmp_path / "div", reward=flaky_parity, advantage="grpo", advantage_options={"eps": 1e-4})
    _same_first_batch(plain, run)
    r = run.rewards()  # (P, G)
    scored = r[:, [0, 2, 3]]  # (P, 3)
    assert bool((scored.amax(-1) > scored.amin(-1)).any()), "degenerate rewards: pick another seed"
    expected = torch.zeros_like(r)
    expected[:, [0, 2, 3]] = (scored - scored.mean(-1, keepdim=True)) / (scored.std(-1, keepdim=True) + 1e-4)
    torch.testing.assert_close(run.advantages[0], expected.reshape(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(run.advantages[0], plain.advantages[0], atol=1e-5, rtol=0)
    batch = run.trainer.last_group_batch
    assert bool(torch.isnan(batch.rewards[:, 1]).all()) and not bool(batch.correct[:, 1].any())


def test_setpo_advantages_add_a_diversity_bonus(plain: Run, tmp_path: Path) -> None:
    options = {"lam": 0.5, "kernel": "ngram", "ngram": 2}
    run = _train(_DivRec, tmp_path, advantage="setpo", advantage_options=options)
    _same_first_batch(plain, run)
    batch = GroupBatch(rewards=run.rewards(), texts=run.texts())
    expected = compute_advantages("setpo", batch, **options)  # (P, G)
    torch.testing.assert_close(run.advantages[0], expected.reshape(-1))
    bonus = expected - compute_advantages("grpo", batch)  # (P, G)  the lam * s term alone
    assert bonus.abs().min() > 0.01
    assert (run.advantages[0] - plain.advantages[0]).abs().max() > 0.01
    assert not torch.allclose(run.params, plain.params)


def test_dra_divides_rewards_by_group_similarity(plain: Run, tmp_path: Path) -> None:
    options = {"kernel": "ngram", "ngram": 1, "base_options": {"eps": 1e-4}}  # shared characters: weights < 1
    run = _train(_DivRec, tmp_path, advantage="dra", advantage_options=options)
    _same_first_batch(plain, run)
    batch = GroupBatch(rewards=run.rewards(), texts=run.texts())
    expected = compute_advantages("dra", batch, **options)  # (P, G)
    torch.testing.assert_close(run.advantages[0], expected.reshape(-1))
    assert (expected - compute_advantages("grpo", batch, eps=1e-4)).abs().max() > 0.01  # the weights matter here
    assert not torch.allclose(run.params, plain.params)


def test_setpo_embedding_kernel_over_correct_completions(plain: Run, tmp_path: Path) -> None:
    """embedder= feeds GroupBatch.embeddings; SetPO with members="correct" declares that it reads correct
    completions only, so only those are embedded (the others are zero), and it gives the advantages of the fully
    embedded batch."""
    from divrl.semantic import CharNgramEmbedder, embed_texts

    options = {"lam": 2.0, "kernel": "cosine", "members": "correct"}
    run = _train(_DivRec, tmp_path, advantage="setpo", advantage_options=options, embedder="char-ngram:2:64")
    _same_first_batch(plain, run)
    texts, r = run.texts(), run.rewards()
    full = embed_texts(texts, CharNgramEmbedder(2, 64))  # (P, G, D)
    expected = compute_advantages("setpo", GroupBatch(rewards=r, correct=r == 1, embeddings=full), **options)
    torch.testing.assert_close(run.advantages[0], expected.reshape(-1))
    assert (expected - compute_advantages("grpo", GroupBatch(rewards=r))).abs().max() > 0.01  # the bonus is there
    batch = run.trainer.last_group_batch  # step 2: incorrect rows were not embedded
    assert batch.embeddings is not None and batch.correct is not None
    assert 0 < int(batch.correct.sum()) < batch.correct.numel()
    assert torch.equal(batch.embeddings[~batch.correct], torch.zeros(int((~batch.correct).sum()), 64))
    assert torch.allclose(batch.embeddings[batch.correct].norm(dim=-1), torch.ones(int(batch.correct.sum())))
    common = {"model": tiny_llama(char_tokenizer()), "reward_funcs": [parity_reward], "args": _config(tmp_path / "x")}
    with pytest.raises(ValueError, match=r"^DiversityGRPOTrainer: embed_rows= was removed: .*; drop it$"):
        DiversityGRPOTrainer(**common, advantage="setpo", advantage_options=options, embed_rows="correct")


def test_positive_entropy_term_is_added_to_trl_loss(plain: Run, tmp_path: Path) -> None:
    lam = 0.5
    run = _train(_DivRec, tmp_path, positive_entropy={"lam": lam, "gate": "correct"})
    _same_first_batch(plain, run)
    torch.testing.assert_close(run.advantages[0], plain.advantages[0])  # advantage=None keeps TRL's
    torch.testing.assert_close(run.logps[0], plain.logps[0])  # same training forward
    inputs = run.inputs[0]
    correct = inputs["divrl_correct"]  # (B,) after TRL's shuffle, aligned with the other rows
    mask = inputs["completion_mask"].float()  # (B, T)
    torch.testing.assert_close(inputs["advantages"], plain.inputs[0]["advantages"])  # same shuffle
    ids = inputs["completion_ids"]  # (B, T)
    texts = run.trainer.processing_class.batch_decode(ids, skip_special_tokens=True)
    assert correct.tolist() == [r == 1.0 for r in parity_reward([], texts)]
    assert 0 < int(correct.sum()) < B
    # on-policy first step: h = -logp, J_div = (1/B) sum_i 1[correct_i] mean_t h_it  (R1-zero-Div Eq. 8-9)
    h = -run.logps[0]  # (B, T)
    j_div = ((h * mask).sum(-1) / mask.sum(-1) * correct.float()).mean()
    assert j_div > 0
    assert run.losses[0] - plain.losses[0] == pytest.approx(-lam * float(j_div), rel=1e-4, abs=1e-6)
    assert run.trainer.state.log_history[0]["divrl/div_term"] == pytest.approx(float(j_div), rel=1e-4)
    assert not torch.allclose(run.params, plain.params)


# ---------------------------------------------------------------------------------------------
# Two processes (torchrun, gloo on CPU): reward functions see half groups, advantages see whole ones
# ---------------------------------------------------------------------------------------------


def test_two_processes_compute_advantages_over_whole_groups(tmp_path: Path) -> None:
    from divrl.semantic import CharNgramEmbedder, embed_texts

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(HERE / "_trl_two_process.py"), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert len(ranks[0]["steps"]) == len(ranks[1]["steps"]) == 2
    for step in range(2):
        s0, s1 = ranks[0]["steps"][step], ranks[1]["steps"][step]
        local = s0["local_prompts"] + s1["local_prompts"]  # the global batch, in process order
        # the reward functions saw a split group: some prompt appears on both ranks
        assert set(s0["local_prompts"]) & set(s1["local_prompts"])
        assert [len(x) for x in ranks[0]["seen_by_reward"]] == [6, 6]
        # advantages were computed over whole groups: G rows of one prompt each, every prompt of the batch once
        for s in (s0, s1):
            assert s["group_prompts"] == local[::G] and len(s["group_prompts"]) == 3
            assert all(local[i * G : (i + 1) * G] == [p] * G for i, p in enumerate(s["group_prompts"]))
            assert [len(t) for t in s["group_texts"]] == [G, G, G]
        assert s0["advantages"] == s1["advantages"] and s0["group_texts"] == s1["group_texts"]
        # each group was partitioned once, by one rank, and the labels are the partition function's
        texts = s0["group_texts"]
        assert torch.equal(torch.tensor(s0["partition"]), labels_tensor([[len(t) % 3 for t in g] for g in texts]))
        # each group was embedded once, by one rank, and every rank holds the same (P, G, D) embeddings
        assert s0["embeddings"] == s1["embeddings"]
        embeddings = embed_texts(texts, CharNgramEmbedder(3, 16))  # (P, G, D)
        torch.testing.assert_close(torch.tensor(s0["embeddings"]), embeddings)
        # the global advantages are SetPO-over-DARLING's on the gathered groups, and each rank kept its own slice
        rewards = torch.tensor([[float(sum(map(ord, t)) % 2) for t in g] for g in texts])  # (P, G)
        batch = GroupBatch(rewards=rewards, partition=torch.tensor(s0["partition"]), embeddings=embeddings)
        expected = compute_advantages("setpo", batch, base="darling", kernel="cosine").reshape(-1)  # (P*G,)
        torch.testing.assert_close(torch.tensor(s0["advantages"]).reshape(-1), expected)
        assert s0["local_advantages"] + s1["local_advantages"] == pytest.approx(expected.tolist())
        assert s0["local_correct"] + s1["local_correct"] == (rewards.reshape(-1) == 1).tolist()
    assert [sum(r["embedded"][step] for r in ranks) for step in range(2)] == [3 * G, 3 * G]
    calls = ranks[0]["partition_calls"] + ranks[1]["partition_calls"]
    assert len(calls) == 2 * 3  # 3 groups per step, each partitioned exactly once across the two ranks
    assert ranks[0]["div_term"] == ranks[1]["div_term"] and ranks[0]["div_term"] > 0


def test_trainer_accepts_a_builtin_model_name(tmp_path: Path) -> None:
    """TRL users pass model strings; ``builtin:<name>`` is resolved to the packaged folder before TRL sees it."""
    from divrl.models.builtin import resolve_model_path

    common: dict[str, Any] = {"reward_funcs": [parity_reward], "args": _config(tmp_path), "train_dataset": _dataset()}
    trainer = DiversityGRPOTrainer(model="builtin:countdown-tiny", **common)
    folder = Path(resolve_model_path("builtin:countdown-tiny"))
    assert Path(trainer.model.config._name_or_path) == folder
    assert trainer.processing_class.pad_token is not None  # the packaged char tokenizer, loaded by TRL
    positional = DiversityGRPOTrainer("builtin:countdown-tiny", **common)
    assert Path(positional.model.config._name_or_path) == folder
    with pytest.raises(
        ValueError,
        match=r"unknown builtin policy 'builtin:nope'; known: \['builtin:countdown-tiny', 'builtin:countdown4-tiny'\]",
    ):
        DiversityGRPOTrainer(model="builtin:nope", **common)


def test_eval_callback_logs_what_divrl_eval_measures(tmp_path: Path) -> None:
    """The callback's logged pass@k (and every other metric) equals ``evaluate()`` on the same model, problems and
    seed; it reaches ``trainer.state.log_history`` (what every ``report_to`` logger gets) at every ``every`` steps."""
    from divrl.eval.evaluate import evaluate
    from divrl.integrations.trl import DivrlEvalCallback, countdown_dataset, countdown_reward
    from divrl.tasks import countdown, get_task

    config = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=B, num_generations=G, max_completion_length=16,
        learning_rate=1e-3, max_steps=1, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        bf16=False, **NO_CHECKPOINTING, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = DiversityGRPOTrainer(
        model="builtin:countdown-tiny", reward_funcs=[countdown_reward], args=config,
        train_dataset=countdown_dataset("train", n=8), advantage="darling", partition_key=countdown.equivalence_key,
    )  # fmt: skip
    callback = DivrlEvalCallback(trainer, "countdown", split="val", num_problems=6, n=4, every=1, at_start=True)
    trainer.add_callback(callback)
    trainer.train()
    assert [h["step"] for h in callback.history] == [0, 1]
    logged = [h for h in trainer.state.log_history if "eval_divrl/pass@1" in h]
    assert [h["step"] for h in logged] == [0, 1]
    task = get_task("countdown")
    reference = evaluate(trainer.model, trainer.processing_class, task, task.problems("val", n=6), 4, seed=0)
    for key in ("pass@1", "pass@2", "pass@4", "distinct_correct_classes", "entropy", "greedy_pass@1"):
        assert logged[-1][f"eval_divrl/{key}"] == pytest.approx(reference[key], abs=1e-6), key
    assert reference["pass@4"] > 0  # the packaged policy solves some: the comparison is not 0 == 0
    train_logs = [h for h in trainer.state.log_history if h["step"] == 1 and "reward" in h]
    assert len(train_logs) == 1 and "divrl/classes_per_group" in train_logs[0]  # TRL's own metrics kept apart


def test_trl_settings_replaced_by_divrl_advantage_warn(tmp_path: Path) -> None:
    """``scale_rewards`` shapes only TRL's advantage; with ``advantage=`` set it changes nothing, so a chosen value
    warns once, naming the divrl option; TRL's default and runs without ``advantage=`` stay silent."""
    import warnings

    tok = char_tokenizer()

    def build(scale: Any, **divrl: Any) -> list[str]:
        args = _config(tmp_path)
        args.scale_rewards = scale
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            DiversityGRPOTrainer(
                model=tiny_llama(tok), reward_funcs=[parity_reward], args=args, train_dataset=_dataset(),
                processing_class=tok, **divrl,
            )  # fmt: skip
        return [str(w.message) for w in seen if "has no effect" in str(w.message)]

    darling = build("none", advantage="darling", partition_key=mod3_key)
    assert darling == [
        "GRPOConfig(scale_rewards='none') has no effect: advantage='darling' replaces TRL's advantages "
        "(DiversityGRPOTrainer); set the estimator's scaling with advantage_options={'scale': ...} instead"
    ]
    assert build("batch", advantage="rloo") == [
        "GRPOConfig(scale_rewards='batch') has no effect: advantage='rloo' replaces TRL's advantages "
        "(DiversityGRPOTrainer); 'rloo' has no std scaling option"
    ]
    assert build("group", advantage="darling", partition_key=mod3_key) == []
    assert build("none") == []  # TRL's own advantages: the setting is live
