"""Corpus sources and their 64-token windows."""

import json

import numpy as np
import pandas as pd
import pytest

import re

from neuronwidget.activations import corpus as corpus_mod
from neuronwidget.activations.corpus import (BROWN_NAME, Corpus, CorpusUnavailableError, WINDOW, as_corpus,
                                             bundled_corpus, default_corpus)
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
    monkeypatch.setenv("NEURONWIDGET_ONLINE_CORPUS", "0")
    c = default_corpus()
    assert c.name == f"bundled offline corpus: {BROWN_NAME}, first 200,000 tokens"
    assert c.fingerprint == bundled_corpus().fingerprint and c.max_tokens == 200_000
    assert as_corpus(None).fingerprint == c.fingerprint == as_corpus("bundled").fingerprint
    assert as_corpus("bundled").max_tokens is None  # asked for by name: all of it
    gpu = default_corpus(device="cuda")  # an accelerator indexes all of it
    assert gpu.max_tokens is None and gpu.name == bundled_corpus().name
    assert isinstance(as_corpus(c), Corpus)


@pytest.fixture(scope="module")
def brown_rows():
    return corpus_mod._bundled_rows()


def test_bundled_corpus_is_the_whole_brown_corpus_as_running_text(brown_rows):
    docs = list(bundled_corpus().documents())
    assert docs == [r["text"] for r in brown_rows]
    ids = {r["id"] for r in brown_rows}
    assert len(ids) == 500 and min(ids) == "ca01" and max(ids) == "cr09"
    genres = {r["genre"] for r in brown_rows}
    assert genres == set("ABCDEFGHJKLMNPR")
    by_id = {}
    for r in brown_rows:
        by_id.setdefault(r["id"], []).append(r["part"])
    assert all(parts == list(range(1, len(parts) + 1)) for parts in by_id.values())  # sections in order
    text = "\n\n".join(docs)
    words = len(text.split())
    # 1,161,192 tagged tokens in the source; punctuation attached to its word leaves 1,010,542 words
    assert 990_000 < words < 1_030_000 and 5_800_000 < len(text) < 6_100_000


def test_brown_text_has_no_tags_and_clean_punctuation(brown_rows):
    text = "\n\n".join(r["text"] for r in brown_rows)
    tags = re.findall(r"\S/(?:at|nn|nns|np|jj|in|vbd|vbn|vbz|vb|cc|rb|pps|ppss|cs|to|md|dt|cd|be|bez|bedz|hvd|"
                      r"wdt|``|'')(?:-tl|-hl|\$)?(?=\s|$)", text)
    assert tags == []
    assert text.count("/") < 500  # words such as "and/or", "1/2" (tags would put one on every word)
    assert not re.search(r" [,.;:!?)\]](\s|$)", text)  # no space before closing punctuation
    assert not re.search(r"[(\[] ", text) and "  " not in text
    assert "``" not in text and "''" not in text  # `` '' became " (inch marks 1'' too)
    assert not re.search(r"([;?!,])\1", text)  # the files' doubled ";;" "??" are undone
    for para in text.split("\n\n"):
        # every double quote is attached to its text: none stands alone between spaces
        assert not re.search(r'(^|\s)"(\s|$)', para), para
    # quotations open and close in pairs within a paragraph, except a speech that runs on into the
    # next paragraph (no closing quote, by convention): those are rare
    odd = sum(1 for p in text.split("\n\n") if p.count('"') % 2)
    assert odd < 0.02 * text.count("\n\n")


def test_brown_paragraphs_quotes_and_contractions_read_as_printed(brown_rows):
    first = brown_rows[0]
    assert (first["id"], first["part"]) == ("ca01", 1)
    assert first["text"].startswith(
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced "
        '"no evidence" that any irregularities took place.\n\nThe jury further said in term-end presentments '
        'that the City Executive Committee, which had over-all charge of the election, "deserves the praise and '
        'thanks of the City of Atlanta" for the manner')
    text = "\n\n".join(r["text"] for r in brown_rows)
    assert '"Only a relative handful of such reports was received," the jury said, "considering' in text
    assert "\n\nMerger proposed\n\n" in text  # a headline is a paragraph of its own
    assert "Ivan Allen Jr.\n\n" in text  # no second full stop after an abbreviation
    assert "I can't" in text and "didn't" in text and "I'm" in text
    fiction = next(r["text"] for r in brown_rows if r["id"] == "cn05" and r["part"] == 1)
    assert '"I saw your fire," she said' in fiction
    paras = text.split("\n\n")
    assert len(paras) > 15_000 and all(p == p.strip() and p for p in paras)


def test_any_prefix_of_the_bundled_corpus_covers_all_genres(lm, brown_rows):
    assert [r["genre"] for r in brown_rows[:15]] == list("ABCDEFGHJKLMNPR")
    c = bundled_corpus()
    c.max_tokens = 16_384  # what a CPU demo indexes
    windows = c.windows(lm.tokenizer, lm.eos_token_id)
    assert windows.shape == (256, WINDOW)
    # the 15 genres' first sections are all inside those windows
    n_docs = int((windows == lm.eos_token_id).sum()) + 1
    assert n_docs > 15


def test_missing_bundled_file_says_to_run_the_build(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus_mod, "bundled_corpus_path", lambda: tmp_path / "brown.jsonl.gz")
    with pytest.raises(CorpusUnavailableError, match=r"npm run build.*make"):
        bundled_corpus()


def test_default_corpus_says_why_web_text_was_not_used(monkeypatch):
    # `datasets` is not a dependency: without it the default falls back, and says so
    import importlib.util

    monkeypatch.delenv("NEURONWIDGET_ONLINE_CORPUS", raising=False)
    assert importlib.util.find_spec("datasets") is None, "this test expects the datasets package to be absent"
    c = default_corpus(device="cuda")
    assert c.name.startswith("bundled offline corpus: Brown Corpus")
    assert c.name.endswith("web text not used: the optional `datasets` package is not installed")
    assert c.fingerprint == bundled_corpus().fingerprint and c.max_tokens is None  # accelerator: all of it
    cpu = default_corpus()
    assert cpu.name.endswith("first 200,000 tokens — web text not used: the optional `datasets` package is "
                             "not installed") and cpu.max_tokens == 200_000
    monkeypatch.setenv("NEURONWIDGET_ONLINE_CORPUS", "0")  # asked not to try: no reason to give
    assert default_corpus().name == bundled_corpus().name + ", first 200,000 tokens"


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
