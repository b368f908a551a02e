import pytest
import torch

from divrl.core.batch import GroupBatch


def test_minimal_batch_and_properties():
    b = GroupBatch(rewards=torch.tensor([[1.0, 0.0, float("nan")]]))
    assert (b.num_prompts, b.group_size) == (1, 3)
    assert b.scored.tolist() == [[True, True, False]]


def test_full_batch_validates():
    p, g, t, d = 2, 3, 5, 4
    b = GroupBatch(
        rewards=torch.zeros(p, g),
        correct=torch.zeros(p, g, dtype=torch.bool),
        texts=[["a", "b", "c"], ["d", "e", "f"]],
        answers=[["1", None, "2"], [None, None, None]],
        logprobs=torch.zeros(p, g, t),
        old_logprobs=torch.zeros(p, g, t),
        mask=torch.ones(p, g, t),
        entropies=torch.zeros(p, g, t),
        embeddings=torch.zeros(p, g, d),
        partition=torch.zeros(p, g, dtype=torch.long),
    )
    assert b.replace(rewards=torch.ones(p, g)).rewards.sum() == p * g


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (
            {"partition": torch.zeros(2, 4, dtype=torch.long)},
            "partition must have shape (P, G) with (P, G) = (2, 3), got shape (2, 4)",
        ),
        ({"correct": torch.zeros(2, 3)}, "correct must be a bool tensor"),
        ({"partition": torch.zeros(2, 3)}, "partition must hold integer labels"),
        ({"logprobs": torch.zeros(2, 3)}, "logprobs must have shape (P, G, T)"),
        (
            {"logprobs": torch.zeros(2, 3, 4), "mask": torch.zeros(2, 3, 5)},
            "mask has shape (2, 3, 5) but the other token fields have shape (2, 3, 4)",
        ),
        ({"embeddings": torch.zeros(3, 3, 4)}, "embeddings must have shape (P, G, D)"),
        ({"texts": [["a", "b", "c"]]}, "texts must be a list of P=2 lists"),
        ({"texts": [["a", "b", "c"], ["a", "b"]]}, "texts[1] must hold G=3 items, got 2"),
        ({"texts": [["a", "b", "c"], ["a", "b", None]]}, "texts[1][2] must be str"),
    ],
)
def test_mismatch_names_field_and_shapes(kwargs, needle):
    with pytest.raises(ValueError) as err:
        GroupBatch(rewards=torch.zeros(2, 3), **kwargs)
    assert needle in str(err.value)


def test_rewards_must_be_float_2d():
    with pytest.raises(ValueError, match="rewards must have shape"):
        GroupBatch(rewards=torch.zeros(3))
    with pytest.raises(ValueError, match="float tensor"):
        GroupBatch(rewards=torch.zeros(2, 3, dtype=torch.long))


def test_answers_allow_none_texts_do_not():
    GroupBatch(rewards=torch.zeros(1, 2), answers=[[None, "x"]])
    with pytest.raises(ValueError):
        GroupBatch(rewards=torch.zeros(1, 2), texts=[[None, "x"]])
