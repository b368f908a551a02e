"""LoRA through peft: only adapters train, adapter checkpoints load for eval and resume exactly, the KL reference is
the base with adapters disabled."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

pytest.importorskip("peft")

from divrl.config import from_dict, load_yaml, save_yaml
from divrl.eval.demo import Budget, recipe
from divrl.eval.evaluate import evaluate
from divrl.models import build_char_tokenizer, build_policy, load_policy, save_policy
from divrl.models.lora import AdaptersDisabled, apply_lora, is_peft_model
from divrl.tasks import get_task
from divrl.trainer.common import latest_checkpoint, read_metrics
from divrl.trainer.config import ModelConfig, RLConfig
from divrl.trainer.rl import RLTrainer

BASE = "builtin:countdown4-tiny"  # the recipes' base
TINY = ["rollout.prompts_per_step=4", "rollout.group_size=4", "save_every=2", "threads=1", "model.lora_r=4"]
IDS = torch.tensor([[5, 17, 23, 9, 40, 11, 3, 28]])  # (1, 8) any in-vocab tokens


def _cfg(steps: int = 2, extra: list[str] = ()) -> RLConfig:
    return recipe("grpo", Budget(steps=steps, eval_problems=1, eval_n=1), seed=0, overrides=[*TINY, *extra])


def _logits(model, ids: torch.Tensor = IDS) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits  # (1, L, V)


def _tiny_base(tmp_path, arch: str = "llama"):
    tok = build_char_tokenizer()
    model = build_policy("tiny", arch=arch, tokenizer=tok, seed=0, hidden_size=32, num_hidden_layers=1)
    return model, tok, save_policy(model, tok, tmp_path / f"base-{arch}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two GRPO steps with rank-4 adapters on the shipped base; returns (trainer, run dir, metrics)."""
    run_dir = tmp_path_factory.mktemp("lora-run")
    trainer = RLTrainer(_cfg(), run_dir, progress=False)
    trainer.run()
    return trainer, run_dir, read_metrics(run_dir)


def test_only_the_adapters_train(trained):
    trainer, _, records = trained
    assert records[0]["accuracy"] > 0 and records[0]["adv_abs_mean"] > 0  # a real learning signal
    assert is_peft_model(trainer.model)
    base = load_policy(BASE)[0].state_dict()
    trained_sd = trainer.model.get_base_model().state_dict()
    base_keys = [k for k in trained_sd if "lora_" not in k]
    lora_keys = [k for k in trained_sd if "lora_" in k]
    # 4 blocks × 7 projections × (A, B)
    assert len(lora_keys) == 4 * 7 * 2
    for k in base_keys:  # peft renames a targeted W to <layer>.base_layer.weight
        assert torch.equal(trained_sd[k], base[k.replace(".base_layer", "")]), k
    for k in lora_keys:
        assert trained_sd[k].abs().sum() > 0, k  # lora_B starts at zero; lora_A moves once B is non-zero
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in trainer.model.parameters() if p.requires_grad
    }


def test_first_step_matches_full_fine_tuning(trained, tmp_path):
    """B = 0 at start: the adapted policy equals the base, so step 1 samples the same rollouts as full FT."""
    _, _, records = trained
    full_cfg = _cfg(steps=1, extra=["model.lora_r=0"])
    RLTrainer(full_cfg, tmp_path, progress=False).run()
    full = read_metrics(tmp_path)[0]
    for key in ("reward", "accuracy", "distinct_correct_classes", "response_len", "adv_abs_mean", "entropy"):
        assert records[0][key] == full[key], key
    assert records[0]["grad_norm"] != full["grad_norm"]  # only the adapters' gradient is measured


def test_checkpoint_is_an_adapter_that_loads_back(trained):
    trainer, run_dir, _ = trained
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None and ckpt.name == "checkpoint-000002"
    files = {p.name for p in ckpt.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "trainer_state.pt"} <= files
    assert "model.safetensors" not in files and "config.json" not in files
    adapter_cfg = json.loads((ckpt / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == BASE and adapter_cfg["r"] == 4

    expected = _logits(trainer.model)
    merged, tok = load_policy(str(ckpt))
    assert not is_peft_model(merged) and type(merged).__name__ == "LlamaForCausalLM"
    assert tok.decode(tok.encode("12+3")) == "12+3"
    torch.testing.assert_close(_logits(merged), expected, rtol=0, atol=1e-5)  # merged W + sBA: float rounding only
    adapted, _ = load_policy(str(ckpt), trainable_adapter=True)
    assert is_peft_model(adapted)
    assert torch.equal(_logits(adapted), expected)
    assert all(("lora_" in n) == p.requires_grad for n, p in adapted.named_parameters())
    assert not torch.equal(expected, _logits(load_policy(BASE)[0]))  # the adapters changed the policy


def test_eval_runs_on_the_adapter_checkpoint(trained):
    _, run_dir, _ = trained
    model, tok = load_policy(str(latest_checkpoint(run_dir)))
    task = get_task("countdown")
    metrics = evaluate(model, tok, task, task.problems("test")[:2], n=2, max_new_tokens=56, progress=False)
    assert metrics["num_problems"] == 2 and metrics["n"] == 2
    assert 0.0 <= metrics["pass@1"] <= metrics["pass@2"] <= 1.0
    assert metrics["entropy"] > 0


def test_kl_reference_is_the_base_with_adapters_disabled(tmp_path):
    trainer = RLTrainer(_cfg(steps=2, extra=["loss.0.options.beta=0.05"]), tmp_path, progress=False)
    assert isinstance(trainer.ref_model, AdaptersDisabled)
    assert trainer.ref_model.peft_model is trainer.model  # no second copy of the weights
    first = trainer.step(0)
    assert first["ppo/kl"] == 0.0  # B = 0: policy and reference are the same function
    second = trainer.step(1)
    assert second["ppo/kl"] > 0.0
    base_logits = _logits(load_policy(BASE)[0])
    trainer.model.train()
    with torch.no_grad():
        ref_logits = trainer.ref_model(input_ids=IDS).logits
    assert torch.equal(ref_logits, base_logits)
    assert trainer.model.training  # train mode and adapters restored after the reference forward
    assert not torch.equal(_logits(trainer.model), base_logits)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    """4 steps straight vs 2 steps, checkpoint, new trainer resumed to 4 (with adapter dropout and a KL term)."""
    cfg = _cfg(steps=4, extra=["model.lora_dropout=0.1", "loss.0.options.beta=0.05"])
    RLTrainer(cfg, tmp_path / "full", progress=False).run()

    interrupted = RLTrainer(cfg, tmp_path / "resumed", progress=False)
    interrupted.cfg = dataclasses.replace(cfg, steps=2)  # stop after the step-2 checkpoint (schedule built for 4)
    interrupted.run()
    assert latest_checkpoint(tmp_path / "resumed").name == "checkpoint-000002"
    resumed = RLTrainer(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.start_step == 2 and is_peft_model(resumed.model)
    assert isinstance(resumed.ref_model, AdaptersDisabled)
    resumed.run()

    def strip(records):
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in records]

    full, again = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    assert strip(again) == strip(full)
    a = load_policy(str(latest_checkpoint(tmp_path / "full")), trainable_adapter=True)[0].state_dict()
    b = load_policy(str(latest_checkpoint(tmp_path / "resumed")), trainable_adapter=True)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lora_fields_round_trip_and_override():
    cfg = _cfg(extra=["model.lora_target_modules=[q_proj, v_proj]", "model.lora_alpha=8"])
    assert cfg.model.lora_target_modules == ["q_proj", "v_proj"] and cfg.model.lora_alpha == 8
    assert ModelConfig().lora_r == 0
    assert ModelConfig().lora_target_modules == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    ]  # fmt: skip


def test_config_yaml_round_trip(tmp_path):
    cfg = _cfg(extra=["model.lora_target_modules=[q_proj]"])
    save_yaml(cfg, tmp_path / "c.yaml")
    assert from_dict(RLConfig, load_yaml(tmp_path / "c.yaml")) == cfg


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lora_r": -1}, "model.lora_r"),
        ({"lora_r": 4, "lora_alpha": 0}, "model.lora_alpha"),
        ({"lora_r": 4, "lora_dropout": 1.0}, "model.lora_dropout"),
        ({"lora_r": 4, "lora_target_modules": []}, "model.lora_target_modules"),
        ({"lora_r": 4, "lora_target_modules": ["nope_proj"]}, "model.lora_target_modules"),
    ],
)
def test_bad_lora_fields_name_the_field(change, field, tmp_path):
    model, _, path = _tiny_base(tmp_path)
    with pytest.raises(ValueError, match=field):
        apply_lora(model, ModelConfig(path=str(path), **change))


def test_full_fine_tuning_is_untouched(tmp_path):
    model, _, path = _tiny_base(tmp_path)
    assert apply_lora(model, ModelConfig(path=str(path))) is model


def test_qwen2_gets_adapters_on_every_projection(tmp_path):
    model, _, path = _tiny_base(tmp_path, arch="qwen2")
    wrapped = apply_lora(model, ModelConfig(path=str(path), lora_r=2))
    names = {n.split(".")[-4] for n, _ in wrapped.named_parameters() if "lora_A" in n}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_local_base_is_stored_absolute_and_adapters_stack(tmp_path, monkeypatch):
    """A relative local base is recorded as an absolute path; an adapter folder can itself be the base of a LoRA."""
    monkeypatch.chdir(tmp_path)
    model, tok, _ = _tiny_base(tmp_path)
    first = apply_lora(model, ModelConfig(path="base-llama", lora_r=2))
    with torch.no_grad():
        for n, p in first.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(n)))
    save_policy(first, tok, tmp_path / "adapter1")
    assert json.loads((tmp_path / "adapter1" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        (tmp_path / "base-llama").resolve()
    )
    merged, _ = load_policy("adapter1")
    second = apply_lora(merged, ModelConfig(path=str(tmp_path / "adapter1"), lora_r=2))
    with torch.no_grad():
        for n, p in second.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(n) + 1))
    save_policy(second, tok, tmp_path / "adapter2")
    monkeypatch.chdir(tmp_path.parent)
    stacked, _ = load_policy(tmp_path / "adapter2")
    torch.testing.assert_close(_logits(stacked), _logits(second), rtol=0, atol=1e-5)
    assert not torch.allclose(_logits(stacked), _logits(load_policy(tmp_path / "base-llama")[0]), atol=1e-3)


def test_adapter_without_base_names_the_file(tmp_path):
    model, tok, path = _tiny_base(tmp_path)
    save_policy(apply_lora(model, ModelConfig(path=str(path), lora_r=2)), tok, tmp_path / "adapter")
    config_file = tmp_path / "adapter" / "adapter_config.json"
    data = json.loads(config_file.read_text())
    data["base_model_name_or_path"] = None
    config_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="adapter_config.json.*base_model_name_or_path"):
        load_policy(tmp_path / "adapter")


def test_peft_model_keeps_logits_to_keep():
    """The sampler and token_logprobs ask for logits of the needed positions only; a peft wrapper must not hide
    that its base model accepts ``logits_to_keep`` (else a 150k-vocabulary model computes every position)."""
    from divrl.models import load_policy
    from divrl.models.lora import apply_lora
    from divrl.rollout._hf import accepts
    from divrl.trainer.config import ModelConfig

    model, _ = load_policy("builtin:countdown-tiny")
    assert accepts(model, "logits_to_keep")
    peft_model = apply_lora(model, ModelConfig(lora_r=2))
    assert accepts(peft_model, "logits_to_keep")
