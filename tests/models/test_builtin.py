"""The policies shipped as ``builtin:<name>``: they resolve, load, and solve the task they were trained for."""

from __future__ import annotations

from pathlib import Path

import pytest

from divrl.eval.evaluate import generate_samples, score_samples
from divrl.models import load_policy
from divrl.models.builtin import BUILTIN, resolve_model_path
from divrl.tasks import get_task


def test_every_builtin_resolves_to_a_complete_folder_with_its_provenance():
    assert sorted(BUILTIN) == ["countdown-tiny", "countdown4-tiny"]
    for name in BUILTIN:
        folder = Path(resolve_model_path(f"builtin:{name}"))
        for f in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "pretrain_config.yaml"):
            assert (folder / f).is_file(), f"builtin:{name} lacks {f}"
    assert resolve_model_path("runs/x") == "runs/x"
    with pytest.raises(
        ValueError, match=r"unknown builtin policy 'builtin:nope'; known: \['builtin:countdown-tiny', "
    ):
        resolve_model_path("builtin:nope")


def test_the_4_number_base_solves_4_number_problems_far_better_than_the_3_number_one():
    """Greedy pass@1 on the first 100 problems of the 4-number val split (measured 2026-11-28: 21 and 7 of 100, CPU,
    torch 2.13, transformers 5.24). A bound well between the two fails when the asset is swapped or broken."""
    task = get_task("countdown", num_numbers=4)
    problems = task.problems("val", n=100)
    solved = {}
    for name in ("countdown4-tiny", "countdown-tiny"):
        model, tok = load_policy(resolve_model_path(f"builtin:{name}"))
        samples = generate_samples(model, tok, task, problems, 1, max_new_tokens=72, seed=0, progress=False)
        solved[name] = round(score_samples(task, problems, samples)["greedy_pass@1"] * len(problems))
    assert solved["countdown4-tiny"] >= 15 > 10 >= solved["countdown-tiny"], solved
