"""examples/verl_darling.sh against verl 0.9's own configuration: every override on its command line composes with
verl's ``ppo_trainer`` config through Hydra, as ``python -m verl.trainer.main_ppo`` does before it starts anything, so
a key that verl renamed or a typo fails here rather than on a GPU node. What the overrides select resolves to divrl's
registered names. (The run itself needs GPUs, vLLM and Ray workers; tests/test_examples.py checks the script's syntax.)

Skipped without verl (the main environment). Run in verl's own environment: ``bash .ci/verl-env.sh``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")  # see test_verl_plugin.py for why not "verl"

from hydra import compose, initialize_config_module  # noqa: E402
from hydra.errors import ConfigCompositionException  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "verl_darling.sh"


def launch_overrides() -> list[str]:
    """The Hydra overrides the script passes to ``verl.trainer.main_ppo`` (its "$@" left out), with the script's
    variables given stand-in values."""
    body = SCRIPT.read_text().split("python -m verl.trainer.main_ppo", 1)[1].split('"$@"', 1)[0]
    words = shlex.split(body.replace("\\\n", " "))
    return [w.replace("$DATA", "/data").replace("$HERE", "/examples") for w in words]


def compose_ppo(overrides: list[str]):
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def test_the_scripts_overrides_compose_with_verls_config():
    overrides = launch_overrides()
    assert len(overrides) >= 10 and all("=" in o for o in overrides), overrides
    cfg = compose_ppo(overrides)
    assert cfg.trainer.v1.trainer_mode == "divrl_sync"
    assert cfg.algorithm.adv_estimator == "divrl_darling" and cfg.algorithm.divrl_options.floor == 0.1
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "divrl_positive_entropy"
    assert cfg.reward.custom_reward_function.path == "/examples/verl_math_reward.py"
    assert (SCRIPT.parent / "verl_math_reward.py").is_file()
    registered = {**core_algos.ADV_ESTIMATOR_REGISTRY, **core_algos.POLICY_LOSS_REGISTRY}
    assert {"divrl_darling", "divrl_positive_entropy"} <= set(registered)  # registered by `import verl`'s plugin


def test_a_misspelt_key_would_fail_here():
    """The check can fail: Hydra refuses an override of a key verl's config does not have (without ``+``)."""
    with pytest.raises(ConfigCompositionException, match="adv_estimatr"):
        compose_ppo([*launch_overrides(), "algorithm.adv_estimatr=divrl_darling"])
