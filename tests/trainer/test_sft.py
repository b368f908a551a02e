"""Supervised warm start: a few steps of `divrl pretrain` end to end."""

from __future__ import annotations

import random

import torch
from transformers import AutoModelForCausalLM

from divrl.models import build_char_tokenizer, load_policy
from divrl.tasks import get_task
from divrl.trainer.common import read_metrics
from divrl.trainer.config import OptimConfig, PretrainConfig
from divrl.trainer.sft import make_batch, pretrain


def test_make_batch_masks_prompt_and_padding():
    tok = build_char_tokenizer()
    ids, labels = make_batch(tok, ["ab", "ab"], ["c", "de"])
    assert ids.shape == labels.shape == (2, 5)  # "ab" + "de" + <eos>
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert labels[0].tolist() == [-100, -100, tok.convert_tokens_to_ids("c"), eos, -100]
    assert ids[0, -1].item() == pad
    assert labels[1, :2].tolist() == [-100, -100] and labels[1, -1].item() == eos


def test_reference_completions_verify():
    task = get_task("countdown")
    rng = random.Random(0)
    for problem in task.problems("train", n=20):
        assert task.verify(problem, task.reference_completion(problem, rng)).correct


def test_pretrain_smoke(tmp_path):
    cfg = PretrainConfig(
        steps=6, batch_size=16, save_every=3, optim=OptimConfig(lr=2e-3, warmup_steps=2, schedule="cosine")
    )
    out = pretrain(cfg, tmp_path, progress=False)
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 7))
    assert records[-1]["loss"] < records[0]["loss"]
    assert (out / "checkpoints" / "latest").exists()
    model = AutoModelForCausalLM.from_pretrained(out)  # a plain save_pretrained folder
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
    policy, tok = load_policy(str(out))
    assert torch.equal(policy.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert tok.decode(tok.encode("nums 1 2 3 target 6:", add_special_tokens=False)) == "nums 1 2 3 target 6:"
