"""The vLLM rollout backend, driven through a fake ``vllm`` module (no GPU or vLLM here).

What these tests can show: the requests divrl builds, the weight names and values it pushes, and the Rollouts it
assembles. What they cannot: that a real vLLM accepts them (see divrl.rollout.vllm_backend's docstring)."""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch

from divrl.models import build_char_tokenizer, build_policy
from divrl.rollout.vllm_backend import VLLMSampler, rollouts_from_ids, vllm_param_name

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}


@dataclass
class FakeCompletion:
    token_ids: list[int]
    finish_reason: str


@dataclass
class FakeRequest:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]


@dataclass
class FakeEngineModel:
    loaded: dict[str, torch.Tensor] = field(default_factory=dict)

    def load_weights(self, weights):
        for name, tensor in weights:
            self.loaded[name] = tensor.clone()


class FakeLLM:
    """vLLM's LLM as divrl uses it: completion j of each request is ``<answer>j</answer>`` + EOS for even j,
    and the same text cut at ``max_tokens`` (finish_reason 'length') for odd j."""

    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.tok = build_char_tokenizer()
        self.engine_model = FakeEngineModel()
        worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=self.engine_model))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker))
        self.calls = []
        self.prefix_resets = 0
        FakeLLM.instances.append(self)

    def reset_prefix_cache(self):
        self.prefix_resets += 1

    def generate(self, prompts, sampling_params, use_tqdm):
        self.calls.append((prompts, sampling_params))
        p = sampling_params.kwargs
        out = []
        for prompt in prompts:
            completions = []
            for j in range(p["n"]):
                ids = self.tok(f"<answer>{j}</answer>")["input_ids"]
                if j % 2 == 0:
                    completions.append(FakeCompletion([*ids, self.tok.eos_token_id], "stop"))
                else:
                    completions.append(FakeCompletion(ids[: p["max_tokens"]], "length"))
            out.append(FakeRequest(prompt["prompt_token_ids"], completions))
        return out


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


def test_rollouts_from_ids_layout():
    r = rollouts_from_ids([[7, 8, 9], [5]], [[1, 2], [3], [4, 4, 4], []], ["ab", "c", "ddd", ""], [1, 0, 1, 0], 2, 0)
    assert r.prompt_ids.tolist() == [[7, 8, 9], [7, 8, 9], [0, 0, 5], [0, 0, 5]]
    assert r.prompt_mask.tolist() == [[True] * 3, [True] * 3, [False, False, True], [False, False, True]]
    assert r.completion_ids.tolist() == [[1, 2, 0], [3, 0, 0], [4, 4, 4], [0, 0, 0]]
    assert r.completion_mask.sum(-1).tolist() == [2, 1, 3, 0]
    assert r.finished.tolist() == [True, False, True, False] and r.completion_start == 3
    assert r.attention_mask[2].tolist() == [0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match=r"expected P \* G = 2 \* 2 = 4 completions"):
        rollouts_from_ids([[1], [2]], [[1]] * 3, ["a"] * 3, [True] * 3, 2, 0)


@pytest.mark.parametrize(
    ("name", "prefix", "want"),
    [
        ("model.layers.0.self_attn.q_proj.weight", None, "model.layers.0.self_attn.q_proj.weight"),
        (
            "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
            "lora_",
            "model.layers.0.self_attn.q_proj.weight",
        ),
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", "lora_", None),
        ("base_model.model.lm_head.original_module.weight", "lora_", None),
        ("base_model.model.lm_head.modules_to_save.default.weight", "lora_", "lm_head.weight"),
        ("_orig_mod.model.norm.weight", None, "model.norm.weight"),
    ],
)
def test_vllm_param_names(name, prefix, want):
    assert vllm_param_name(name, prefix) == want


def test_sampler_requests_and_rollouts(fake_vllm):
    tok = build_char_tokenizer()
    model = build_policy("tiny", tokenizer=tok, seed=0, **TINY)
    sampler = VLLMSampler("/some/folder", tok, gpu_memory_utilization=0.25, seed=3)
    llm = FakeLLM.instances[-1]
    assert llm.kwargs["model"] == "/some/folder" and llm.kwargs["gpu_memory_utilization"] == 0.25
    assert llm.kwargs["distributed_executor_backend"] == "external_launcher" and llm.kwargs["seed"] == 3

    r = sampler.sample(model, ["1+2=", "10-4="], num_samples=4, max_new_tokens=6, stop=("</answer>",), seed=11)
    prompts, params = llm.calls[-1]
    assert [p["prompt_token_ids"] for p in prompts] == tok(["1+2=", "10-4="])["input_ids"]
    assert params.kwargs["n"] == 4 and params.kwargs["max_tokens"] == 6 and params.kwargs["seed"] == 11
    assert params.kwargs["stop"] == ["</answer>"] and params.kwargs["include_stop_str_in_output"] is True
    assert params.kwargs["top_k"] == -1 and params.kwargs["stop_token_ids"] == [tok.eos_token_id]
    # rows p*G .. p*G+G-1; even j: full text + EOS (EOS in the mask, not in the text); odd j: cut at 6 tokens
    assert r.texts[:4] == ["<answer>0</answer>", "<answe", "<answer>2</answer>", "<answe"]
    assert r.texts[4:] == r.texts[:4]
    assert r.finished.tolist() == [True, False] * 4
    assert r.completion_mask.sum(-1).tolist() == [19, 6, 19, 6] * 2
    assert int(r.completion_ids[0, 18]) == tok.eos_token_id
    assert r.prompt_ids.shape == (8, 5) and r.attention_mask is not None  # "1+2=" is left-padded by one

    sampler.sample(model, ["1+2="], max_new_tokens=3, greedy=True)
    assert llm.calls[-1][1].kwargs["temperature"] == 0.0
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        sampler.sample(model, ["1+2="], num_samples=0, max_new_tokens=3)


def test_sync_weights_plain_and_lora(fake_vllm):
    peft = pytest.importorskip("peft")
    tok = build_char_tokenizer()
    model = build_policy("tiny", tokenizer=tok, seed=0, **TINY)
    sampler = VLLMSampler("/x", tok)
    engine = FakeLLM.instances[-1].engine_model
    count = sampler.sync_weights(model)
    assert set(engine.loaded) == {n for n, _ in model.named_parameters()} and count == len(engine.loaded)
    assert FakeLLM.instances[-1].prefix_resets == 1

    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)  # a non-zero update, so merging changes q_proj/v_proj
    ids = torch.tensor([[5, 17, 23, 9]])
    before = lora(input_ids=ids).logits
    engine.loaded.clear()
    sampler.sync_weights(lora)
    base_names = {n for n, _ in build_policy("tiny", tokenizer=tok, seed=0, **TINY).named_parameters()}
    assert set(engine.loaded) == base_names  # adapters merged, names mapped back, no lora_* tensors
    q = lora.base_model.model.model.layers[0].self_attn.q_proj
    merged = q.base_layer.weight + q.scaling["default"] * q.lora_B["default"].weight @ q.lora_A["default"].weight
    torch.testing.assert_close(engine.loaded["model.layers.0.self_attn.q_proj.weight"], merged)
    torch.testing.assert_close(lora(input_ids=ids).logits, before)  # unmerged again afterwards
    assert not q.merged


def test_trainer_step_samples_through_vllm(fake_vllm, tmp_path):
    """The trainer's step pushes the weights, samples through the engine and trains on what it returned."""
    from divrl.eval.demo import Budget, recipe
    from divrl.trainer.rl import RLTrainer

    cfg = recipe(
        "grpo",
        Budget(steps=1, eval_problems=1, eval_n=1),
        seed=0,
        overrides=["rollout.prompts_per_step=2", "rollout.group_size=4", "threads=1"],
    )
    trainer = RLTrainer(cfg, tmp_path, progress=False)
    trainer.vllm = VLLMSampler("/x", trainer.tokenizer)
    metrics = trainer.step(0)
    llm = FakeLLM.instances[-1]
    assert len(llm.calls) == 1 and len(llm.engine_model.loaded) > 0
    assert metrics["finished_frac"] == 0.5  # the fake ends even-numbered completions with EOS
    assert metrics["accuracy"] == 0.0 and math.isfinite(metrics["loss"])


def test_trainer_refuses_vllm_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from divrl.config import ConfigError
    from divrl.eval.demo import Budget, recipe
    from divrl.trainer.rl import RLTrainer

    cfg = recipe("grpo", Budget(steps=1, eval_problems=1, eval_n=1), seed=0, overrides=["rollout.backend=vllm"])
    with pytest.raises(ConfigError, match="rollout.backend 'vllm' needs a CUDA GPU"):  # one CLI line, exit code 2
        RLTrainer(cfg, tmp_path, progress=False)
