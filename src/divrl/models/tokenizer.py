"""A character-level tokenizer for the built-in toy tasks (Countdown, maths-lite), as a transformers fast tokenizer.

Vocabulary (100 ids): the specials ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3, then the 95 printable
ASCII characters (space through ``~``) in code-point order, then ``\\n``. Every other character encodes to ``<unk>``.

Choices worth knowing (the recipe is the one measured in ``shared/research/cpu-feasibility.md`` §2):

- One token per character: ``pre_tokenizers.Split(pattern="", behavior="isolated")`` splits between every pair of
  characters, spaces and newlines included, and ``decoders.Fuse()`` joins the tokens back without separators.
- **No automatic BOS/EOS.** ``tok("12+3")`` gives exactly one id per character; a caller that wants ``<bos>``
  prepends ``tok.bos_token_id`` itself, and a model learns to stop by being trained on targets that end in ``<eos>``.
- ``split_special_tokens=True``: the literal *text* ``"<eos>"`` encodes as five characters, not as the special id,
  so any text over the alphabet round-trips exactly (``decode(encode(s)) == s``) and generated text can never
  smuggle in a control token.
- ``padding_side="left"`` (prompts for generation are left-padded), saved with the tokenizer.

``save_pretrained`` writes ``tokenizer.json`` + ``tokenizer_config.json``; ``AutoTokenizer.from_pretrained`` reloads it
offline. In transformers 5 the reloaded class is ``TokenizersBackend`` rather than ``PreTrainedTokenizerFast``; it
encodes, decodes and pads identically (tested).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
CHARS: tuple[str, ...] = (*(chr(c) for c in range(32, 127)), "\n")
"""The 96 non-special tokens: printable ASCII (space .. ``~``) and newline."""
VOCAB: tuple[str, ...] = SPECIAL_TOKENS + CHARS


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Build the 100-token character-level tokenizer described in the module docstring.

    Returns:
        A ``PreTrainedTokenizerFast`` with pad/bos/eos/unk ids 0/1/2/3 and ``padding_side="left"``.
    """
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(VOCAB)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")  # one token per character
    tok.decoder = decoders.Fuse()  # decode without separators
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        split_special_tokens=True,
    )
