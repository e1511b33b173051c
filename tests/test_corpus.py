"""Corpus sources and their 64-token windows."""

import json

import numpy as np
import pandas as pd
import pytest

from neuronwidget.activations.corpus import (Corpus, CorpusUnavailableError, WINDOW, as_corpus, bundled_corpus,
                                 default_corpus)
from neuronwidget.subject import load_model


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny", device="cpu")


def _ids(lm, text):
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_documents_joined_by_eos_then_cut_into_windows(lm):
    docs = ["The first document talks about lists and tuples. " * 12, "A second one, about dictionaries. " * 9]
    win = as_corpus(docs).windows(lm.tokenizer, lm.eos_token_id)
    stream = _ids(lm, docs[0]) + [lm.eos_token_id] + _ids(lm, docs[1])
    n = len(stream) // WINDOW
    assert win.shape == (n, WINDOW) and win.dtype == np.int32
    assert win.reshape(-1).tolist() == stream[: n * WINDOW]  # only the last partial window is dropped
    assert len(stream) - n * WINDOW < WINDOW


def test_series_list_and_files_agree(lm, tmp_path):
    docs = ["Alpha beta gamma delta. " * 30, "Epsilon zeta eta theta. " * 30]
    (tmp_path / "a.txt").write_text(docs[0])
    (tmp_path / "b.txt").write_text(docs[1])
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)) + "\n")
    ref = as_corpus(docs)
    series = as_corpus(pd.Series(docs))
    jsonl = as_corpus(str(tmp_path / "c.jsonl"))
    files = as_corpus([tmp_path / "a.txt", tmp_path / "b.txt"])
    for c in (series, jsonl, files):
        assert c.fingerprint.split("-")[-1] == ref.fingerprint.split("-")[-1]
        assert np.array_equal(c.windows(lm.tokenizer, lm.eos_token_id), ref.windows(lm.tokenizer, lm.eos_token_id))
    assert as_corpus(docs).fingerprint == ref.fingerprint != as_corpus(docs[:1]).fingerprint


def test_default_corpus_is_bundled_offline_text(lm, monkeypatch):
    monkeypatch.delenv("NEURONWIDGET_ONLINE_CORPUS", raising=False)
    c = default_corpus()
    assert c.name.startswith("bundled offline corpus:") and "PSF" in c.name
    assert c.fingerprint == bundled_corpus().fingerprint
    docs = list(c.documents())
    assert len(docs) > 50 and sum(map(len, docs)) > 300_000
    assert as_corpus(None).fingerprint == c.fingerprint
    assert isinstance(as_corpus(c), Corpus)


def test_default_corpus_says_why_web_text_was_not_used(monkeypatch):
    # `datasets` is not a dependency: without it the default falls back, and says so
    import importlib.util

    monkeypatch.delenv("NEURONWIDGET_ONLINE_CORPUS", raising=False)
    assert importlib.util.find_spec("datasets") is None, "this test expects the datasets package to be absent"
    c = default_corpus(device="cuda")
    assert c.name.startswith("bundled offline corpus:")
    assert c.name.endswith("web text not used: the optional `datasets` package is not installed")
    assert c.fingerprint == bundled_corpus().fingerprint
    monkeypatch.setenv("NEURONWIDGET_ONLINE_CORPUS", "0")  # asked not to try: no reason to give
    assert default_corpus().name == bundled_corpus().name


def test_hugging_face_dataset_needs_datasets_and_network():
    with pytest.raises(CorpusUnavailableError) as err:
        as_corpus("stas/openwebtext-10k")
    msg = str(err.value)
    assert "stas/openwebtext-10k" in msg and ("pip install" in msg or "offline" in msg)
    with pytest.raises(CorpusUnavailableError):
        default_corpus(online=True)


def test_bad_corpus_inputs(tmp_path, lm):
    with pytest.raises(ValueError, match="empty list"):
        as_corpus([])
    with pytest.raises(ValueError, match="must hold strings"):
        as_corpus(["ok", 3])
    with pytest.raises(ValueError, match="corpus must be"):
        as_corpus(42)
    with pytest.raises(CorpusUnavailableError, match="not found"):
        as_corpus(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no text field"}\n')
    with pytest.raises(ValueError, match="'text' field"):
        as_corpus(str(bad))
    with pytest.raises(ValueError, match="fewer than one 64-token window"):
        as_corpus(["too short"]).windows(lm.tokenizer, lm.eos_token_id)
