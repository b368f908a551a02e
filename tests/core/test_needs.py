"""Declared needs (divrl.core.needs): each estimator and loss says what it reads; the declaration matches the code."""

from __future__ import annotations

import pytest
import torch

from divrl.core.advantages import ADVANTAGES, advantage_is_token_level, advantage_needs, compute_advantages
from divrl.core.batch import GroupBatch
from divrl.core.losses import LOSSES, compute_loss, loss_needs
from divrl.core.needs import FIELDS, TOKEN_FIELDS, Needs

P, G, T, D = 2, 4, 3, 5


def _full() -> dict[str, object]:
    """Every optional GroupBatch field, set."""
    torch.manual_seed(0)
    lp = -torch.rand(P, G, T) - 0.1  # (P, G, T)
    return {
        "correct": torch.tensor([[True, False, True, False], [True, True, False, False]]),
        "texts": [[f"{i}+{p}" for i in range(G)] for p in range(P)],
        "answers": [[str(i % 2) for i in range(G)] for _ in range(P)],
        "logprobs": lp.clone().requires_grad_(True),
        "old_logprobs": lp - 0.01,
        "ref_logprobs": lp - 0.02,
        "mask": torch.ones(P, G, T),
        "entropies": torch.rand(P, G, T).requires_grad_(True),
        "self_certainty": torch.rand(P, G, T) + 3.0,
        "token_logits": torch.randn(P, G, T),
        "vocab_mean_logprobs": -torch.linspace(3.0, 4.0, P * G * T).view(P, G, T),  # no draw: the stream above stays
        "old_vocab_mean_logprobs": -torch.linspace(3.1, 3.9, P * G * T).view(P, G, T),
        "log_z": torch.zeros(P, G, requires_grad=True),
        "embeddings": torch.randn(P, G, D),
        "hidden": torch.randn(P, G, D),
        "partition": torch.tensor([[0, 0, 1, 2], [0, 1, 1, 1]]),
        "problem_ids": ["p0", "p1"],
        "history": {"p0": {"1": 2}},
    }


REWARDS = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])

ADVANTAGE_CASES = [
    ("grpo", {}),
    ("rloo", {}),
    ("passk", {"k": 2}),
    ("unlikeliness", {}),
    ("darling", {}),
    ("setpo", {}),
    ("setpo", {"kernel": "cosine"}),
    ("setpo", {"kernel": "ngram", "members": "correct"}),
    ("setpo", {"kernel": "cosine", "gate": "correct", "base": "unlikeliness"}),
    ("dra", {}),
    ("dra", {"kernel": "cosine", "base": "darling"}),
    ("arm", {}),
    ("arm", {"gate": "correct", "prompt": "none"}),
    ("outcome_ucb", {}),
    ("outcome_ucb", {"gate": "correct", "base": "unlikeliness"}),
    ("repexp", {}),
    ("repexp", {"base": "unlikeliness", "sparse_dim": None}),
    ("ucas", {}),
    ("dsdr", {}),
    ("dsdr", {"kernel": "cosine", "base": "unlikeliness"}),
]
LOSS_CASES = [
    ("ppo", {}),
    ("ppo", {"beta": 0.1}),
    ("kl", {}),
    ("positive_entropy", {}),
    ("positive_entropy", {"estimator": "exact", "gate": "all"}),
    ("entropy_bonus", {}),
    ("clip_cov", {}),
    ("kl_cov", {}),
    ("dsdr_entropy", {}),
    ("dsdr_entropy", {"kernel": "cosine"}),
    ("dsdr_entropy", {"coupling": "uniform"}),
    ("rover", {}),
    ("rover", {"next_q_scale": 0.0}),
    ("flowrl", {}),
    ("flowrl", {"reference": False}),
]


def test_hand_written_declarations():
    assert advantage_needs("grpo") == Needs()
    assert advantage_needs("darling") == Needs.of({"partition"})
    assert advantage_needs("unlikeliness").reads == {"old_logprobs", "mask"}
    setpo = advantage_needs("setpo", {"kernel": "cosine", "members": "correct", "base": "unlikeliness"})
    assert setpo.reads == {"embeddings", "correct", "old_logprobs", "mask"} and setpo.embed_rows == "correct"
    assert advantage_needs("setpo") == Needs.of({"texts"})  # kernel ngram, the default: no embeddings
    cosine = {"kernel": "cosine"}  # an embedder alone never switches a kernel: only kernel=cosine reads them
    for needs in (advantage_needs, loss_needs):
        for name in ("setpo", "dra", "dsdr") if needs is advantage_needs else ("dsdr_entropy",):
            assert not needs(name).uses("embeddings") and needs(name, cosine).reads >= {"embeddings"}
    assert advantage_needs("repexp") == Needs.of({"hidden"})
    assert loss_needs("kl").requires("ref_logprobs")
    assert not loss_needs("ppo").requires("ref_logprobs") and loss_needs("ppo", {"beta": 0.1}).requires("ref_logprobs")
    assert loss_needs("positive_entropy", {"gate": "all"}).reads == {"logprobs", "mask"}
    assert loss_needs("positive_entropy", {"estimator": "exact"}).reads == {"mask", "entropies", "correct"}
    assert advantage_needs("ucas").reads == {"mask", "self_certainty", "token_logits"}
    assert advantage_needs("dsdr").reads == {"correct", "texts"} and advantage_needs("dsdr").embed_rows == "correct"
    assert loss_needs("dsdr_entropy").reads == {"mask", "entropies", "correct", "texts"}
    assert loss_needs("dsdr_entropy", {"coupling": "uniform"}).reads == {"mask", "entropies", "correct"}
    with pytest.raises(KeyError, match="unknown policy loss 'nope'"):
        loss_needs("nope")
    with pytest.raises(ValueError, match="unknown GroupBatch field"):
        Needs.of({"hidden_states"})


def test_every_entry_is_declared():
    """Every registered built-in has a declaration that runs with its default options."""
    for name in ADVANTAGES:
        assert isinstance(advantage_needs(name), Needs)
    for name in LOSSES:
        assert isinstance(loss_needs(name), Needs)


@pytest.mark.parametrize(("name", "options"), ADVANTAGE_CASES, ids=lambda x: str(x))
def test_estimator_runs_on_exactly_its_declared_fields(name, options):
    """Given only the declared required fields it runs; without any one of them it raises naming that field."""
    needs = advantage_needs(name, options)
    full = _full()
    given = {f: full[f] for f in needs.reads}
    expected = (P, G, T) if advantage_is_token_level(name) else (P, G)
    assert compute_advantages(name, GroupBatch(rewards=REWARDS, **given), **options).shape == expected
    for field in needs.reads:
        rest = {f: v for f, v in given.items() if f != field}
        if field == "mask":
            continue  # the token fields are checked together; the old log-probs alone cover them
        with pytest.raises(ValueError, match=field):
            compute_advantages(name, GroupBatch(rewards=REWARDS, **rest), **options)


@pytest.mark.parametrize(("name", "options"), LOSS_CASES, ids=lambda x: str(x))
def test_loss_runs_on_exactly_its_declared_fields(name, options):
    needs = loss_needs(name, options)
    full = _full()
    given = {f: full[f] for f in needs.reads}
    out = compute_loss(name, GroupBatch(rewards=REWARDS, **given), torch.ones(P, G), **options)
    assert torch.isfinite(out.loss)
    for field in needs.reads:
        rest = {f: v for f, v in given.items() if f != field}
        with pytest.raises(ValueError, match=field):
            compute_loss(name, GroupBatch(rewards=REWARDS, **rest), torch.ones(P, G), **options)


def test_union_and_missing():
    a = Needs.of({"partition"}, embed_rows="correct")
    b = Needs.of({"embeddings", "correct"}, embed_rows="correct")
    assert (a | b).reads == {"partition", "embeddings", "correct"} and (a | b).embed_rows == "correct"
    assert (b | Needs.of(optional={"embeddings"})).embed_rows == "all"  # one reads every row
    assert (a | b).missing({"correct"}) == ["embeddings", "partition"]
    assert set(FIELDS) >= (a | b).reads


def test_token_fields_are_the_per_token_fields_of_fields():
    """One list: TOKEN_FIELDS is the subset of FIELDS that GroupBatch checks as (P, G, T) with one shared T, and
    every (P, G, T) field of a full batch is in it."""
    full = _full()
    assert set(TOKEN_FIELDS) <= set(FIELDS)
    shaped = {f for f, v in full.items() if isinstance(v, torch.Tensor) and tuple(v.shape) == (P, G, T)}
    assert shaped == set(TOKEN_FIELDS)
    for name in TOKEN_FIELDS:  # one of them with another T: refused, whichever it is
        fields = {f: full[f] for f in TOKEN_FIELDS} | {name: torch.zeros(P, G, T + 1)}
        with pytest.raises(ValueError, match="but the other token fields have shape"):
            GroupBatch(rewards=REWARDS, **fields)
