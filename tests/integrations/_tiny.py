"""A tiny random Llama and a character-level tokenizer for the TRL tests (no hub, built in milliseconds).

Kept here rather than imported from ``divrl.models`` so the integration tests depend only on transformers/tokenizers
(same recipe as ``shared/research/cpu-feasibility.md`` §2).
"""

from __future__ import annotations

import dataclasses

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainingArguments

NO_CHECKPOINTING = (
    {"activation_checkpointing": False}
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}
    else {"gradient_checkpointing": False}
)
"""Config keywords that switch activation checkpointing off: ``activation_checkpointing`` from transformers 5.23 (which
deprecates ``gradient_checkpointing``), ``gradient_checkpointing`` before."""

VOCAB = ("<pad>", "<bos>", "<eos>", "<unk>", *(chr(c) for c in range(32, 127)))


def char_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")  # one token per character
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        padding_side="left", split_special_tokens=True,
    )  # fmt: skip


def tiny_llama(tok: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(cfg)


def parity_reward(prompts: list[str], completions: list[str], **kwargs: object) -> list[float]:
    """0/1 reward that varies within a group for a random policy: parity of the completion's code points."""
    return [float(sum(map(ord, c)) % 2) for c in completions]


def mod3_key(text: str) -> int:
    """Exact-key classes (about 3 per group) for DARLING's partition."""
    return sum(map(ord, text)) % 3
