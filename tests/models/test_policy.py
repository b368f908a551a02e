"""Named policy sizes, build/save/load round trips for both archs, parameter counting, load errors."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2ForCausalLM,
)

from divrl.models import (
    SIZES,
    PolicySize,
    build_char_tokenizer,
    build_policy,
    count_parameters,
    load_policy,
    save_policy,
)

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def llama_param_count(v: int, h: int, layers: int, inter: int) -> int:
    """Tied embedding V*H, per layer q/k/v/o 4H^2 + SwiGLU 3*H*I + two RMSNorms 2H, final norm H."""
    return v * h + layers * (4 * h * h + 3 * h * inter + 2 * h) + h


def test_named_sizes_match_the_brief():
    tiny, small = SIZES["tiny"], SIZES["small"]
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.num_attention_heads, tiny.intermediate_size) == (
        128,
        4,
        4,
        512,
    )
    assert tiny.tie_word_embeddings and tiny.max_position_embeddings == 256
    assert small.hidden_size == 256


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_param_counts_in_expected_ranges(tok, arch):
    tiny = count_parameters(build_policy("tiny", arch, tok, seed=0))
    small = count_parameters(build_policy("small", arch, tok, seed=0))
    assert 1.0e6 <= tiny <= 1.1e6
    assert 4.1e6 <= small <= 4.3e6


def test_llama_param_count_is_hand_computed(tok):
    assert count_parameters(build_policy("tiny", "llama", tok)) == llama_param_count(100, 128, 4, 512) == 1_062_528
    assert count_parameters(build_policy("tiny", "llama", tok, **TINY)) == llama_param_count(100, 32, 2, 64)


def test_config_carries_tokenizer_ids_and_ties_embeddings(tok):
    model = build_policy("tiny", tokenizer=tok, **TINY)
    cfg = model.config
    assert isinstance(model, LlamaForCausalLM)
    assert (cfg.vocab_size, cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (100, 0, 1, 2)
    assert (cfg.hidden_size, cfg.max_position_embeddings) == (32, 256)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_count_parameters_trainable_only(tok):
    model = build_policy("tiny", tokenizer=tok, **TINY)
    total = count_parameters(model)
    model.model.embed_tokens.weight.requires_grad_(False)  # tied: also the LM head
    assert count_parameters(model, trainable_only=True) == total - 100 * 32


def test_seed_is_reproducible_and_leaves_global_rng_alone(tok):
    state = torch.random.get_rng_state()
    a = build_policy("tiny", tokenizer=tok, seed=3, **TINY)
    b = build_policy("tiny", tokenizer=tok, seed=3, **TINY)
    c = build_policy("tiny", tokenizer=tok, seed=4, **TINY)
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_policy_size_instance_and_overrides(tok):
    model = build_policy(PolicySize(hidden_size=16, num_hidden_layers=1, intermediate_size=32), tokenizer=tok)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (16, 1)


def test_bad_size_arch_and_overrides_raise_clear_errors(tok):
    with pytest.raises(ValueError, match=r"unknown policy size 'huge'; known sizes: small, tiny"):
        build_policy("huge", tokenizer=tok)
    with pytest.raises(ValueError, match=r"unknown arch 'gpt2'; known archs: llama, qwen2"):
        build_policy("tiny", arch="gpt2", tokenizer=tok)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown build_policy override\(s\) \['hidden'\]"):
        build_policy("tiny", tokenizer=tok, hidden=32)
    with pytest.raises(ValueError, match=r"hidden_size .* divisible by num_attention_heads"):
        build_policy("tiny", tokenizer=tok, hidden_size=30)
    with pytest.raises(ValueError, match=r"PolicySize.num_hidden_layers must be a positive int"):
        PolicySize(hidden_size=32, num_hidden_layers=0)


@pytest.mark.parametrize(("arch", "cls"), [("llama", LlamaForCausalLM), ("qwen2", Qwen2ForCausalLM)])
def test_save_load_round_trip(tok, tmp_path, arch, cls):
    model = build_policy("tiny", arch, tok, seed=0, **TINY)
    path = save_policy(model, tok, tmp_path / "policy")
    ids = torch.tensor([tok.encode("12+3=15\n")])
    with torch.no_grad():
        want = model(ids).logits

    loaded, loaded_tok = load_policy(path)
    assert isinstance(loaded, cls) and not loaded.training and loaded.dtype == torch.float32
    assert loaded_tok.encode("12+3=15\n") == ids[0].tolist() and loaded_tok.decode(ids[0]) == "12+3=15\n"
    assert (loaded_tok.pad_token_id, loaded_tok.eos_token_id) == (0, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, want, rtol=0, atol=0)

    # a plain HF folder: transformers opens it without divrl
    plain = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    assert isinstance(plain, cls)
    # transformers 5's AutoTokenizer swaps in Qwen2Tokenizer for a qwen2 config (see save_policy), so for qwen2 the
    # plain-transformers way in is the generic fast class named in tokenizer_config.json
    plain_tok_cls = AutoTokenizer if arch == "llama" else PreTrainedTokenizerFast
    plain_tok = plain_tok_cls.from_pretrained(path, local_files_only=True)
    assert plain_tok.encode("7 * 8\n") == tok.encode("7 * 8\n")


def test_load_with_dtype(tok, tmp_path):
    save_policy(build_policy("tiny", tokenizer=tok, **TINY), tok, tmp_path)
    assert load_policy(tmp_path, dtype="bfloat16")[0].dtype == torch.bfloat16
    assert load_policy(tmp_path, dtype=torch.float64)[0].dtype == torch.float64
    with pytest.raises(ValueError, match="dtype 'floaty' is not a torch dtype name"):
        load_policy(tmp_path, dtype="floaty")


def test_load_errors_name_the_source(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"policy folder .*nope.* does not exist"):
        load_policy(missing)
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        load_policy(tmp_path)
    with pytest.raises(OSError, match=r"'divrl-test/not-a-model'.*pass a local save_pretrained folder"):
        load_policy("divrl-test/not-a-model", local_files_only=True)
