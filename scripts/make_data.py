"""Regenerate neuronwidget/data/: the bundled offline corpus and the tiny model's tokenizer.

Run once from the repository root: ``python scripts/make_data.py``. The outputs are
committed; the package never runs this at import or install time.

- corpus_pydoc.txt.gz: the prose of Python's own reference documentation as shipped
  in the standard library (``pydoc_data.topics``, PSF licence), one topic per document,
  documents separated by a blank line plus a form feed.
- tiny_tokenizer.json: a byte-level BPE tokenizer (like GPT-2's, smaller vocabulary)
  trained with the ``tokenizers`` library on that corpus.
"""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path

import pydoc_data.topics
from tokenizers import ByteLevelBPETokenizer

DATA = Path(__file__).resolve().parent.parent / "neuronwidget" / "data"
DOC_SEP = "\n\f\n"  # separates documents inside the corpus file
VOCAB_SIZE = 8000
EOS = "<|endoftext|>"


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    docs = [pydoc_data.topics.topics[k].strip() for k in sorted(pydoc_data.topics.topics)]
    text = DOC_SEP.join(docs)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as f:  # byte-identical reruns
        f.write(text.encode("utf-8"))
    (DATA / "corpus_pydoc.txt.gz").write_bytes(buf.getvalue())

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(docs, vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=[EOS])
    tok.save(str(DATA / "tiny_tokenizer.json"))
    print(f"{len(docs)} documents, {len(text):,} characters; tokenizer vocab {tok.get_vocab_size()}"
          f" (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
