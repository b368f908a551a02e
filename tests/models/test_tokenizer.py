"""The char-level tokenizer: vocabulary layout, exact round trips, no implicit specials, offline save/load."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from divrl.models import build_char_tokenizer
from divrl.models.tokenizer import CHARS, VOCAB

ALPHABET = "".join(chr(c) for c in range(32, 127)) + "\n"
texts = st.text(alphabet=ALPHABET, max_size=80)


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory):
    path = tmp_path_factory.mktemp("char_tok")
    build_char_tokenizer().save_pretrained(path)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def expected_ids(text: str) -> list[int]:
    """Hand layout: printable ASCII c -> ord(c) - 32 + 4, newline -> 99."""
    return [99 if c == "\n" else ord(c) - 32 + 4 for c in text]


def test_vocabulary_layout(tok):
    assert len(tok) == 100 == len(VOCAB)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert len(CHARS) == 96 and set(string.printable) - set(CHARS) == {"\t", "\r", "\x0b", "\x0c"}
    assert tok.convert_tokens_to_ids([" ", "0", "~", "\n"]) == [4, 20, 98, 99]


def test_one_token_per_char_spaces_and_newlines_included(tok):
    text = " 12 +  3\n\n= 15 "
    ids = tok(text)["input_ids"]
    assert ids == expected_ids(text)
    assert tok.convert_ids_to_tokens(ids)[:3] == [" ", "1", "2"]
    assert tok.decode(ids) == text


def test_no_automatic_bos_or_eos(tok):
    assert tok("ab")["input_ids"] == [69, 70]
    assert tok.encode("") == []


def test_literal_special_token_text_is_plain_characters(tok):
    ids = tok.encode("x<eos>y")
    assert ids == expected_ids("x<eos>y") and 2 not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "x<eos>y"


def test_unknown_characters_map_to_unk(tok):
    assert tok.encode("a\tb\u00e9") == [69, 3, 70, 3]


def test_special_ids_decode_and_skip(tok):
    assert tok.decode([1, 69, 2, 0]) == "<bos>a<eos><pad>"
    assert tok.decode([1, 69, 2, 0], skip_special_tokens=True) == "a"


def test_left_padding(tok):
    batch = tok(["a", "abc"], padding=True)
    assert batch["input_ids"] == [[0, 0, 69], [69, 70, 71]]
    assert batch["attention_mask"] == [[0, 0, 1], [1, 1, 1]]


@settings(max_examples=200, deadline=None)
@given(texts)
def test_round_trip_is_exact(tok, text):
    ids = tok.encode(text)
    assert ids == expected_ids(text)
    assert tok.decode(ids) == text


def test_reload_is_offline_and_keeps_specials_and_padding_side(reloaded):
    assert type(reloaded).__name__ in {"TokenizersBackend", "PreTrainedTokenizerFast"}
    assert (reloaded.pad_token_id, reloaded.bos_token_id, reloaded.eos_token_id, reloaded.unk_token_id) == (0, 1, 2, 3)
    assert reloaded.padding_side == "left"
    assert len(reloaded) == 100
    assert reloaded(["a", "abc"], padding=True)["input_ids"] == [[0, 0, 69], [69, 70, 71]]
    assert reloaded.encode("x<eos>y") == expected_ids("x<eos>y")


@settings(max_examples=100, deadline=None)
@given(texts)
def test_reloaded_round_trip_matches_original(tok, reloaded, text):
    ids = reloaded.encode(text)
    assert ids == tok.encode(text)
    assert reloaded.decode(ids) == text
