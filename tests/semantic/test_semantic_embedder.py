import pytest
import torch

from divrl.semantic.embedder import CharNgramEmbedder, Embedder, load_embedder


def test_char_ngram_is_normalised_deterministic_and_cached() -> None:
    emb = CharNgramEmbedder(n=3, dim=64, cache_size=2)
    out = emb.encode(["abcd", "abcd", "xyz", ""])
    assert out.shape == (4, 64) and out.dtype == torch.float32
    assert torch.allclose(out[:3].norm(dim=-1), torch.ones(3))
    assert torch.equal(out[0], out[1])
    assert torch.equal(out[3], torch.zeros(64))  # empty text: zero vector
    assert torch.equal(CharNgramEmbedder(n=3, dim=64).encode(["abcd"])[0], out[0])  # no hidden state
    # LRU bounded at 2: "abcd" was evicted by "xyz" and ""
    assert list(emb.cache.data) == ["xyz", ""]
    assert emb.cache.misses == 3 and emb.cache.hits == 0
    emb.encode(["xyz"])
    assert emb.cache.hits == 1
    assert isinstance(emb, Embedder)


def test_char_ngram_similarity_orders_texts() -> None:
    emb = CharNgramEmbedder()
    e = emb.encode(["7*7=49,10+49=59", "7*7=49,10+49=59<answer>", "13-2=11,11+11=22"])
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])


def test_encode_rejects_bad_input() -> None:
    emb = CharNgramEmbedder()
    with pytest.raises(ValueError, match="single str"):
        emb.encode("abc")
    with pytest.raises(ValueError, match=r"texts\[1\] must be str"):
        emb.encode(["a", 3])  # type: ignore[list-item]
    assert emb.encode([]).shape == (0, 512)


def test_load_embedder_specs() -> None:
    assert load_embedder("char-ngram:2:32").dim == 32
    assert load_embedder("char-ngram:2:32").name == "char-ngram:2:32"
    emb = CharNgramEmbedder()
    assert load_embedder(emb) is emb
    with pytest.raises(ValueError, match="char-ngram"):
        load_embedder("char-ngram:x")
    pytest.importorskip("sentence_transformers")
    with pytest.raises(OSError, match="could not load embedder '/nonexistent/model'"):
        load_embedder("/nonexistent/model")


def test_minilm_offline(minilm) -> None:
    e = minilm.encode(["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."])
    assert e.shape == (3, 384) and minilm.dim == 384
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    # the published all-MiniLM-L6-v2 example: cos(food, bread) = 0.7553
    assert float(e[0] @ e[1]) == pytest.approx(0.7553, abs=2e-3)
    assert float(e[0] @ e[2]) < 0.1
    hits = minilm.cache.hits
    again = minilm.encode(["The girl is carrying a baby."])
    assert minilm.cache.hits == hits + 1 and torch.equal(again[0], e[2])


def test_minilm_bf16_spec(minilm) -> None:
    """``@bf16`` loads the same model in bfloat16: float32 unit rows close to the fp32 ones; the name round-trips."""
    from divrl.semantic.embedder import load_embedder

    fast = load_embedder("all-MiniLM-L6-v2@bf16", cache_size=0)
    assert fast.name == "all-MiniLM-L6-v2@bf16" and next(fast.model.parameters()).dtype == torch.bfloat16
    texts = ["A man is eating food.", "<answer>(3+4)*2</answer>", "The girl is carrying a baby."]
    got, want = fast.encode(texts), minilm.encode(texts)
    assert got.dtype == torch.float32 and torch.allclose(got.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float((got * want).sum(-1).min()) > 0.99
    assert load_embedder(fast.name).name == fast.name
    with pytest.raises(ValueError, match="embedder dtype must be one of"):
        type(fast)("all-MiniLM-L6-v2", dtype="float16")
