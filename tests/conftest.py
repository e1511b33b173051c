import os
from pathlib import Path

import pytest


def shared_cache(tmp_path_factory) -> Path:
    """One cache folder for the whole session, so the tiny model's default index is built once
    and every test that needs it (widgets, browser, CLI, notebooks) reads it from disk.
    NEURONWIDGET_TEST_CACHE lets a developer keep it between runs."""
    path = Path(os.environ.get("NEURONWIDGET_TEST_CACHE") or tmp_path_factory.getbasetemp() / "nw-shared-cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def _tiny_built(tmp_path_factory):
    import neuronwidget as nw
    from neuronwidget.api import get_engine

    cache = shared_cache(tmp_path_factory)
    before = nw.settings()
    nw.configure(model="tiny", cache_dir=str(cache))
    try:
        engine = get_engine("tiny")
        return cache, engine, engine.index(progress=False)
    finally:
        nw.configure(model=before.model, cache_dir=before.cache_dir)


@pytest.fixture(scope="module")
def tiny_index(_tiny_built):
    """(cache dir, engine, default index) of the tiny model, with the kernel configured for it
    while the module runs (other modules change settings too)."""
    import neuronwidget as nw

    cache = _tiny_built[0]
    before = nw.settings()
    nw.configure(model="tiny", cache_dir=str(cache))
    yield _tiny_built
    nw.configure(model=before.model, cache_dir=before.cache_dir)


@pytest.fixture(autouse=True)
def _own_explanation_store(tmp_path, monkeypatch):
    """Each test records scored explanations in a store of its own (they are remembered across
    sessions by design: a shared one would show one test's explanations in another's views).
    Kernels and subprocesses a test starts inherit it."""
    monkeypatch.setenv("NEURONWIDGET_STORE", str(tmp_path / "explanations.sqlite"))
