"""Regenerate neuronwidget/data/tiny_tokenizer.json, the tokenizer of the offline `tiny` model.

Run once from the repository root: ``python scripts/make_data.py``. The output is committed;
the package never runs this at import or install time. (The bundled corpus, the Brown Corpus, is
not made here: ``npm run build`` runs scripts/build_corpus.mjs, see neuronwidget/data/README.md.)

- tiny_tokenizer.json: a byte-level BPE tokenizer (like GPT-2's, smaller vocabulary) trained
  with the ``tokenizers`` library on the prose of Python's own reference documentation as
  shipped in the standard library (``pydoc_data.topics``, PSF licence), one topic per text.
  The committed file was trained on CPython 3.11's topics; another Python version ships other
  topics and gives another tokenizer (and another tiny model's index), so rerun it only on 3.11.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pydoc_data.topics
from tokenizers import ByteLevelBPETokenizer

DATA = Path(__file__).resolve().parent.parent / "neuronwidget" / "data"
VOCAB_SIZE = 8000
EOS = "<|endoftext|>"


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    docs = [pydoc_data.topics.topics[k].strip() for k in sorted(pydoc_data.topics.topics)]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(docs, vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=[EOS])
    tok.save(str(DATA / "tiny_tokenizer.json"))
    print(f"{len(docs)} texts, {sum(map(len, docs)):,} characters; tokenizer vocab {tok.get_vocab_size()}"
          f" (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
