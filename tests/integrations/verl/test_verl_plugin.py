"""Contract tests against the real verl 0.9 (CPU): plugin registration, verl's own advantage call, the policy-loss
call, and the divrl_sync trainer's private ``_compute_advantage`` override.

Skipped without verl (the main environment). Run them in verl's own environment: ``bash .ci/verl-env.sh``.

The trainer test runs verl's real ``PPOTrainer._compute_advantage`` (TransferQueue read -> DataProto ->
``compute_advantage_for_multi_trajectories`` -> estimator -> ``response_to_nested`` -> TransferQueue write). Only
TransferQueue itself is replaced, by an in-memory store that keeps rows as verl's agent loop writes them
(``list_of_dict_to_tensordict``), as verl's own CPU tests do: the real one needs a Ray cluster.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

# Not importorskip("verl"): with tests/integrations on sys.path (pytest prepends it for test_trl.py), this very
# folder is importable as a namespace package "verl", so a bare `import verl` succeeds without verl installed.
core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")

# What `import verl` (just above) registered through the entry point, before any test registers anything itself.
AT_IMPORT = {
    "estimators": sorted(k for k in core_algos.ADV_ESTIMATOR_REGISTRY if k.startswith("divrl_")),
    "losses": sorted(k for k in core_algos.POLICY_LOSS_REGISTRY if k.startswith("divrl_")),
}

from omegaconf import OmegaConf  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
from verl.protocol import DataProto  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.trainer.ppo.v1 import get_trainer_cls  # noqa: E402
from verl.trainer.ppo.v1 import trainer_base as verl_trainer_base  # noqa: E402
from verl.utils.tensordict_utils import list_of_dict_to_tensordict  # noqa: E402
from verl.workers.config.actor import ActorConfig, PolicyLossConfig  # noqa: E402

from divrl.core.advantages import compute_advantages  # noqa: E402
from divrl.core.batch import GroupBatch  # noqa: E402
from divrl.core.diversity import labels_tensor, partition_by_key  # noqa: E402
from divrl.integrations import verl as divrl_verl  # noqa: E402

SUPPORTED = ["darling", "dr_grpo", "dra", "dsdr", "grpo", "passk", "pkpo", "rloo", "setpo"]


# ---------------------------------------------------------------------------------------------
# A batch laid out as verl lays it out: groups interleaved, ragged responses, uid strings


def verl_batch(seed: int = 0) -> dict[str, Any]:
    """Three prompts with 4, 3 and 4 rollouts, rows shuffled; binary scores on the last response token."""
    gen = torch.Generator().manual_seed(seed)
    sizes = {"7f3a-uid": 4, "0b12-uid": 3, "c9d4-uid": 4}
    uids = [u for u, g in sizes.items() for _ in range(g)]
    perm = torch.randperm(len(uids), generator=gen).tolist()
    index = np.array([uids[p] for p in perm], dtype=object)
    bs, width = len(index), 6
    lengths = torch.randint(1, width + 1, (bs,), generator=gen)  # (bs,)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).to(torch.int64)  # (bs, T)
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0])[:bs]  # (bs,) mixed groups
    rewards = torch.zeros(bs, width)
    rewards[torch.arange(bs), lengths - 1] = scores
    keys = [["a", "b"][int(i)] for i in torch.randint(0, 2, (bs,), generator=gen)]
    return {"index": index, "mask": mask, "rewards": rewards, "scores": scores, "keys": keys}


def per_group_expected(name: str, b: dict[str, Any], use_keys: bool = False, **options: Any) -> torch.Tensor:
    """divrl.core run on each group alone, scattered back to the rows and broadcast over the mask."""
    out = torch.zeros(len(b["index"]))
    for uid in dict.fromkeys(b["index"].tolist()):
        rows = [i for i, u in enumerate(b["index"]) if u == uid]
        r = b["scores"][rows][None]
        part = labels_tensor([partition_by_key([b["keys"][i] for i in rows])]) if use_keys else None
        out[rows] = compute_advantages(name, GroupBatch(rewards=r, correct=r == 1, partition=part), **options)[0]
    return out[:, None] * b["mask"]


def run_compute_advantage(name: str, b: dict[str, Any], algorithm: dict[str, Any]) -> DataProto:
    """verl's own compute_advantage (the code path of the v1 trainer for non-GRPO estimators)."""
    data = DataProto.from_dict(
        tensors={"token_level_rewards": b["rewards"], "response_mask": b["mask"]},
        non_tensors={"uid": b["index"]},
    )
    norm = algorithm.get("norm_adv_by_std_in_grpo", True)  # the v1 trainer passes it as an argument too
    return compute_advantage(
        data, adv_estimator=name, norm_adv_by_std_in_grpo=norm, config=OmegaConf.create(algorithm)
    )


# ---------------------------------------------------------------------------------------------
# Registration through the entry point


def test_entry_point_is_declared_in_the_verl_plugins_group():
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="verl.plugins") if ep.name == "divrl"]
    assert ep.value == "divrl.integrations.verl_plugin"


def test_import_verl_registered_divrl_through_the_plugin():
    assert AT_IMPORT["estimators"] == [f"divrl_{n}" for n in SUPPORTED]
    assert AT_IMPORT["losses"] == ["divrl_positive_entropy"]
    assert get_trainer_cls("divrl_sync").__mro__[1] is divrl_verl.DivrlAdvantageMixin


def test_registry_resolves_divrl_names_to_the_adapter():
    fn = core_algos.get_adv_estimator_fn("divrl_darling")
    assert fn is divrl_verl.make_estimator("darling")
    assert fn.__name__ == "divrl_darling"


def test_register_is_idempotent_and_unsupported_names_raise():
    before = dict(core_algos.ADV_ESTIMATOR_REGISTRY)
    divrl_verl.register()  # same function objects: verl's duplicate check does not fire
    assert before == core_algos.ADV_ESTIMATOR_REGISTRY
    with pytest.raises(ValueError, match="old log-probs"):
        divrl_verl.register_estimator("unlikeliness")
    with pytest.raises(ValueError, match="divrl estimator 'arm' cannot run inside verl: .*old log-probs"):
        divrl_verl.register_estimator("arm")
    with pytest.raises(ValueError, match=r"'repexp' cannot run inside verl: .*GroupBatch.hidden"):
        divrl_verl.register_estimator("repexp")
    assert "divrl_repexp" not in core_algos.ADV_ESTIMATOR_REGISTRY
    with pytest.raises(ValueError, match=r"'outcome_ucb' cannot run inside verl: it keeps per-problem state"):
        divrl_verl.register_estimator("outcome_ucb")
    assert "divrl_outcome_ucb" not in core_algos.ADV_ESTIMATOR_REGISTRY
    with pytest.raises(ValueError, match="unknown divrl advantage estimator 'nope'"):
        divrl_verl.register_estimator("nope")


# ---------------------------------------------------------------------------------------------
# Numbers through verl's compute_advantage


@pytest.mark.parametrize(
    ("name", "options"),
    [("grpo", {}), ("dr_grpo", {}), ("rloo", {}), ("passk", {"k": 2}), ("grpo", {"unbiased": False})],
)
def test_reward_only_estimators_match_core_through_verls_call(name: str, options: dict[str, Any]):
    b = verl_batch()
    out = run_compute_advantage(f"divrl_{name}", b, {"divrl_options": options})
    torch.testing.assert_close(out.batch["advantages"], per_group_expected(name, b, **options))
    torch.testing.assert_close(out.batch["returns"], out.batch["advantages"])


@pytest.mark.parametrize(
    ("ours", "theirs", "algorithm"),
    [
        ("divrl_grpo", "grpo", {}),
        ("divrl_grpo", "grpo", {"norm_adv_by_std_in_grpo": False}),
        ("divrl_dr_grpo", "grpo", {"norm_adv_by_std_in_grpo": False}),
        ("divrl_grpo", "grpo_vectorized", {}),
        ("divrl_rloo", "rloo", {}),
        ("divrl_rloo", "rloo_vectorized", {}),
    ],
)
def test_divrl_estimators_agree_with_verls_builtins(ours: str, theirs: str, algorithm: dict[str, Any]):
    b = verl_batch(seed=3)
    mine = run_compute_advantage(ours, b, algorithm).batch["advantages"]
    verls = run_compute_advantage(theirs, b, algorithm).batch["advantages"]
    torch.testing.assert_close(mine, verls, atol=1e-5, rtol=1e-5)


def test_divrl_options_and_threshold_come_from_the_algorithm_config():
    b = verl_batch()
    b["scores"] = b["scores"] * 0.5  # rewards 0 / 0.5: passk's correctness now comes from the threshold
    b["rewards"] = b["rewards"] * 0.5
    algorithm = {"divrl_options": {"k": 2}, "divrl_correct_threshold": 0.5}
    out = run_compute_advantage("divrl_passk", b, algorithm).batch["advantages"]
    expected = torch.zeros(len(b["index"]))
    for uid in dict.fromkeys(b["index"].tolist()):
        rows = [i for i, u in enumerate(b["index"]) if u == uid]
        r = b["scores"][rows][None]
        expected[rows] = compute_advantages("passk", GroupBatch(rewards=r, correct=r >= 0.5), k=2)[0]
    torch.testing.assert_close(out, expected[:, None] * b["mask"])
    with pytest.raises(ValueError, match=r"divrl_grpo \(algorithm.divrl_options\) got unknown option"):
        run_compute_advantage("divrl_grpo", b, {"divrl_options": {"flor": 0.1}})


def test_darling_without_side_information_says_how_to_get_it():
    with pytest.raises(ValueError, match="trainer.v1.trainer_mode=divrl_sync"):
        run_compute_advantage("divrl_darling", verl_batch(), {})


def test_darling_with_sample_info_matches_core_and_checks_alignment():
    b = verl_batch(seed=1)
    info = divrl_verl.SampleInfo(uids=b["index"].copy(), keys=b["keys"])
    with divrl_verl.use_sample_info(info):
        out = run_compute_advantage("divrl_darling", b, {"divrl_options": {"floor": 0.1}})
    torch.testing.assert_close(out.batch["advantages"], per_group_expected("darling", b, use_keys=True, floor=0.1))
    signal = {"signal/rms_ratio", "signal/groups_changed", "signal/corr", "signal/flat_groups", "signal/acts_in_flat"}
    assert set(info.stats) == {"classes_per_group", "correct_frac", "distinct_correct_classes", *signal}
    shifted = divrl_verl.SampleInfo(uids=np.roll(b["index"], 1), keys=b["keys"])
    with divrl_verl.use_sample_info(shifted), pytest.raises(RuntimeError, match="does not line up"):
        run_compute_advantage("divrl_darling", b, {})


def test_setpo_embedder_comes_from_the_algorithm_config():
    """+algorithm.divrl_embedder reaches SetPO's cosine kernel through verl's own call (only the correct rows embedded:
    members=correct declares it); divrl_embed_rows and an embedder the estimator does not read are refused."""
    from divrl.semantic import CharNgramEmbedder, embed_texts

    b = verl_batch(seed=4)
    texts = [f"{k} answer {i % 3}" for i, k in enumerate(b["keys"])]
    info = divrl_verl.SampleInfo(uids=b["index"].copy(), texts=texts)
    options = {"kernel": "cosine", "members": "correct", "lam": 3.0}
    algorithm = {"divrl_options": options, "divrl_embedder": "char-ngram:3:64"}
    with divrl_verl.use_sample_info(info):
        out = run_compute_advantage("divrl_setpo", b, algorithm).batch["advantages"]
    expected = torch.zeros(len(b["index"]))
    for uid in dict.fromkeys(b["index"].tolist()):
        rows = [i for i, u in enumerate(b["index"]) if u == uid]
        r = b["scores"][rows][None]
        e = embed_texts([[texts[i] for i in rows]], CharNgramEmbedder(3, 64))
        expected[rows] = compute_advantages("setpo", GroupBatch(rewards=r, correct=r == 1, embeddings=e), **options)[0]
    torch.testing.assert_close(out, expected[:, None] * b["mask"])
    assert not torch.allclose(out, per_group_expected("grpo", b))  # the bonus is there
    with divrl_verl.use_sample_info(info), pytest.raises(ValueError, match=r"divrl_embed_rows is no longer read"):
        run_compute_advantage("divrl_setpo", b, {**algorithm, "divrl_embed_rows": "correct"})
    with divrl_verl.use_sample_info(info), pytest.raises(ValueError, match=r"reads no embeddings"):
        run_compute_advantage("divrl_setpo", b, {**algorithm, "divrl_options": {"kernel": "ngram"}})


def test_estimator_reads_non_tensor_batch_when_verl_passes_it():
    # verl 0.9 passes non_tensor_batch only to gdpo; verl PR #7473 would pass it to any estimator accepting it
    b = verl_batch(seed=2)
    fn = core_algos.get_adv_estimator_fn("divrl_darling")
    adv, _ = fn(
        token_level_rewards=b["rewards"],
        response_mask=b["mask"],
        index=b["index"],
        config=OmegaConf.create({}),
        non_tensor_batch={"uid": b["index"], "divrl_key": np.array(b["keys"], dtype=object)},
    )
    torch.testing.assert_close(adv, per_group_expected("darling", b, use_keys=True))


# ---------------------------------------------------------------------------------------------
# Policy loss through verl's registry


def actor_config(loss_mode: str = "divrl_positive_entropy") -> ActorConfig:
    return ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=0.2,
        clip_ratio_low=0.2,
        clip_ratio_high=0.2,
        loss_agg_mode="token-mean",
        policy_loss=PolicyLossConfig(loss_mode=loss_mode),
    )


def loss_inputs() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    old = -torch.rand(4, 4, generator=gen) - 0.1
    return {
        "old_log_prob": old,
        "log_prob": (old + 0.05 * torch.randn(4, 4, generator=gen)).requires_grad_(),
        "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5])[:, None] * mask,
        "response_mask": mask.bool(),
    }


def verl_term(x: dict[str, Any], config: ActorConfig, lam: float, gate: str) -> torch.Tensor:
    """R1-zero-Div's term written with verl's own agg_loss(seq-mean-token-mean), the reference."""
    lp, old, adv, mask = x["log_prob"], x["old_log_prob"], x["advantages"], x["response_mask"]
    h = -torch.exp(lp - old) * lp  # (B, T)  Eq. 8
    g = (adv > 0).float() if gate == "positive_advantage" else torch.ones_like(h)
    info = config.global_batch_info
    return -lam * core_algos.agg_loss(g * h, mask, "seq-mean-token-mean", **info)


@pytest.mark.parametrize("global_info", [{}, {"dp_size": 2, "global_batch_size": 16, "batch_num_tokens": 40}])
def test_positive_entropy_loss_is_vanilla_plus_the_term(global_info: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    x = loss_inputs()
    config = actor_config()
    monkeypatch.setenv(divrl_verl.POSITIVE_ENTROPY_ENV, "gate=positive_advantage")  # lam: core's 0.01
    config.global_batch_info.update(global_info)
    fn = core_algos.get_policy_loss_fn("divrl_positive_entropy")
    loss, metrics = fn(loss_agg_mode="token-mean", config=config, rollout_is_weights=None, **x)
    vanilla, _ = core_algos.get_policy_loss_fn("vanilla")(loss_agg_mode="token-mean", config=config, **x)
    torch.testing.assert_close(loss, vanilla + verl_term(x, config, 0.01, "positive_advantage"))
    assert {"actor/pg_clipfrac", "actor/divrl_div_term", "actor/divrl_div_gate_frac"} <= set(metrics)
    loss.backward()
    assert x["log_prob"].grad is not None and bool(torch.isfinite(x["log_prob"].grad).all())


def test_the_registered_term_refuses_a_gate_set_nowhere_at_its_first_call(monkeypatch: pytest.MonkeyPatch):
    """The plugin registers divrl_positive_entropy without options: its gate is core's default 'correct' unless
    DIVRL_VERL_POSITIVE_ENTROPY sets one, and verl's ppo_loss passes no correctness: one line, at the first call
    (under a trainer other than divrl_sync, which refuses it earlier)."""
    monkeypatch.delenv(divrl_verl.POSITIVE_ENTROPY_ENV, raising=False)
    with pytest.raises(ValueError, match=r"^divrl_positive_entropy: no gate is set, .*gate=positive_advantage"):
        core_algos.get_policy_loss_fn("divrl_positive_entropy")(config=actor_config(), **loss_inputs())
    assert divrl_verl.policy_loss._TERMS["divrl_positive_entropy"] == {}  # what the plugin registered


def test_environment_variable_overrides_the_term_options(monkeypatch: pytest.MonkeyPatch):
    x = loss_inputs()
    config = actor_config()
    monkeypatch.setenv(divrl_verl.POSITIVE_ENTROPY_ENV, "lam=0.5, gate=all")
    loss, _ = core_algos.get_policy_loss_fn("divrl_positive_entropy")(config=config, **x)
    vanilla, _ = core_algos.get_policy_loss_fn("vanilla")(config=config, **x)
    torch.testing.assert_close(loss, vanilla + verl_term(x, config, 0.5, "all"))
    monkeypatch.setenv(divrl_verl.POSITIVE_ENTROPY_ENV, "gate=correct")
    with pytest.raises(ValueError, match="gate='correct' is not available"):
        core_algos.get_policy_loss_fn("divrl_positive_entropy")(config=config, **x)


def test_custom_variant_on_another_base_loss():
    name = divrl_verl.register_positive_entropy_loss("divrl_test_gspo_all", base="gspo", lam=0.2, gate="all")
    x = loss_inputs()
    config = actor_config(name)
    loss, _ = core_algos.get_policy_loss_fn(name)(loss_agg_mode="seq-mean-token-mean", config=config, **x)
    base, _ = core_algos.get_policy_loss_fn("gspo")(loss_agg_mode="seq-mean-token-mean", config=config, **x)
    torch.testing.assert_close(loss, base + verl_term(x, config, 0.2, "all"))


# ---------------------------------------------------------------------------------------------
# The divrl_sync trainer around verl's real _compute_advantage


VOCAB = ("<pad>", "<eos>", "<unk>", *(chr(c) for c in range(32, 127)))


def char_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


class FakeTransferQueue:
    """In-memory stand-in for ``transfer_queue``'s KV API: rows stored per key as verl's agent loop puts them."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.gets: list[list[str]] = []

    def put_samples(self, keys: Sequence[str], samples: Sequence[dict[str, Any]]) -> None:
        for key, sample in zip(keys, samples, strict=True):
            self.rows[key] = dict(sample)

    def kv_batch_get(self, keys: list[str], partition_id: str, select_fields: list[str]) -> TensorDict:
        assert partition_id == "train"
        self.gets.append(list(select_fields))
        present = [f for f in select_fields if all(f in self.rows[k] for k in keys)]
        return list_of_dict_to_tensordict([{f: self.rows[k][f] for f in present} for k in keys])

    def kv_batch_put(self, keys: list[str], partition_id: str, fields: TensorDict) -> Any:
        for i, key in enumerate(keys):
            self.rows[key].update({f: fields[f].unbind(0)[i] for f in fields.keys()})  # noqa: SIM118 (iterating a TensorDict yields rows)
        return "put"


def trainer_rows(tok: PreTrainedTokenizerFast) -> tuple[list[str], list[dict[str, Any]], dict[str, Any]]:
    """Samples of three prompts (4, 3 and 4 rollouts) with answers in the text; keys shuffled as verl may."""
    groups = {
        "p0": [("x=3", 1.0), ("x=3", 1.0), ("x=4", 1.0), ("no", 0.0)],
        "p1": [("y=1", 1.0), ("y=2", 0.0), ("y=1", 1.0)],
        "p2": [("zz", 0.0), ("z=9!", 1.0), ("z=8", 0.0), ("z=9", 1.0)],
    }
    keys, samples = [], []
    for uid, members in groups.items():
        for session, (text, score) in enumerate(members):
            ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
            rm = torch.zeros(len(ids))
            rm[-1] = score
            keys.append(f"{uid}_{session}_0")
            samples.append(
                {
                    "uid": uid,
                    "responses": ids,
                    "response_mask": torch.ones(len(ids), dtype=torch.int64),
                    "rm_scores": rm,
                    "extra_fields": {"reward_extra_info": {"acc": score, "divrl_key": text.rstrip("!")[-1:]}},
                }
            )
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(5)).tolist()
    return [keys[i] for i in order], [samples[i] for i in order], groups


def make_trainer(estimator: str, tok: PreTrainedTokenizerFast, **algorithm: Any) -> Any:
    cls = get_trainer_cls("divrl_sync")
    trainer = cls.__new__(cls)  # verl's __init__ builds workers and datasets; _compute_advantage needs only these
    trainer.config = OmegaConf.create(
        {
            "algorithm": {
                "adv_estimator": estimator,
                "use_kl_in_reward": False,
                "gamma": 1.0,
                "lam": 1.0,
                "norm_adv_by_std_in_grpo": True,
                **algorithm,
            },
            "actor_rollout_ref": {"rollout": {"n": 4}},
        }
    )
    trainer.tokenizer = tok
    return trainer


@pytest.fixture
def fake_tq(monkeypatch: pytest.MonkeyPatch) -> FakeTransferQueue:
    fake = FakeTransferQueue()
    monkeypatch.setattr(verl_trainer_base, "tq", fake)
    return fake


@pytest.mark.parametrize(
    ("estimator", "options"),
    [("darling", {"floor": 0.1}), ("setpo", {"kernel": "ngram"}), ("dra", {"kernel": "ngram"})],
)
def test_divrl_sync_trainer_feeds_keys_and_texts_through_verls_compute_advantage(
    fake_tq: FakeTransferQueue, estimator: str, options: dict[str, Any]
):
    from transfer_queue import KVBatchMeta

    tok = char_tokenizer()
    keys, samples, groups = trainer_rows(tok)
    fake_tq.put_samples(keys, samples)
    trainer = make_trainer(f"divrl_{estimator}", tok, divrl_options=options)
    metrics: dict[str, Any] = {}
    result = trainer._compute_advantage(KVBatchMeta(keys=keys, tags=[{}] * len(keys), partition_id="train"), metrics)
    assert result == "put"
    assert fake_tq.gets[0] == ["uid", "responses", "extra_fields"]  # divrl's read, then verl's own
    for uid, members in groups.items():
        texts = [t for t, _ in members]
        batch = GroupBatch(
            rewards=torch.tensor([[s for _, s in members]]),
            correct=torch.tensor([[s == 1.0 for _, s in members]]),
            texts=[texts],
            partition=labels_tensor([partition_by_key([t.rstrip("!")[-1:] for t in texts])]),
        )
        expected = compute_advantages(estimator, batch, **options)[0]
        for session, (text, _) in enumerate(members):
            adv = fake_tq.rows[f"{uid}_{session}_0"]["advantages"]
            assert adv.shape == (len(text),)  # written back as a nested row: one value per response token
            torch.testing.assert_close(adv, expected[session].expand(len(text)))
    assert metrics["divrl/correct_frac"] == pytest.approx(7 / 11)
    if estimator == "darling":
        assert metrics["divrl/classes_per_group"] == pytest.approx((3 + 2 + 3) / 3)  # 3,3,4,o | 1,2,1 | z,9,8,9


def test_divrl_sync_leaves_verls_own_estimators_alone(fake_tq: FakeTransferQueue):
    from transfer_queue import KVBatchMeta

    tok = char_tokenizer()
    keys, samples, _ = trainer_rows(tok)
    fake_tq.put_samples(keys, samples)
    trainer = make_trainer("grpo", tok)
    trainer._compute_advantage(KVBatchMeta(keys=keys, tags=[{}] * len(keys), partition_id="train"), {})
    assert len(fake_tq.gets) == 1 and "extra_fields" not in fake_tq.gets[0]


def test_divrl_sync_runs_as_verls_sync_mode(monkeypatch: pytest.MonkeyPatch):
    seen: list[str] = []
    monkeypatch.setattr(
        verl_trainer_base.PPOTrainer, "__init__", lambda self, config: seen.append(config.trainer.v1.trainer_mode)
    )
    config = OmegaConf.create({"trainer": {"v1": {"trainer_mode": "divrl_sync"}}})
    OmegaConf.set_struct(config, True)
    get_trainer_cls("divrl_sync")(config)
    assert seen == ["sync"]


def test_divrl_sync_checks_the_divrl_loss_options_before_verls_trainer(monkeypatch: pytest.MonkeyPatch):
    """With loss_mode=divrl_positive_entropy, __init__ reads the term's options (registration + environment) before
    verl's PPOTrainer.__init__ builds anything: refused without a gate, accepted with one."""
    seen: list[str] = []
    monkeypatch.setattr(
        verl_trainer_base.PPOTrainer, "__init__", lambda self, config: seen.append(config.trainer.v1.trainer_mode)
    )
    config = OmegaConf.create(
        {
            "trainer": {"v1": {"trainer_mode": "divrl_sync"}},
            "actor_rollout_ref": {"actor": {"policy_loss": {"loss_mode": "divrl_positive_entropy"}}},
        }
    )
    OmegaConf.set_struct(config, True)
    monkeypatch.delenv(divrl_verl.POSITIVE_ENTROPY_ENV, raising=False)
    with pytest.raises(ValueError, match=r"^divrl_positive_entropy: no gate is set"):
        get_trainer_cls("divrl_sync")(config)
    assert seen == []
    monkeypatch.setenv(divrl_verl.POSITIVE_ENTROPY_ENV, "gate=positive_advantage")
    get_trainer_cls("divrl_sync")(config)
    assert seen == ["sync"]
