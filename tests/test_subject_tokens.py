"""Token strings and bytes that read back as the text: byte-level BPE (tiny) and a
SentencePiece-style tokenizer (▁ markers, <0xNN> byte fallback, BOS prepended)."""

from __future__ import annotations

import json

import pytest

from neuronwidget.activations import Engine
from neuronwidget.subject import bytes_to_unicode, group_characters, unicode_to_bytes
from neuronwidget.subject.tokens import prefix_ids, text_bytes, tokenizer_kind, vocab_tables

UNICODE_TEXTS = [
    "東京は日本の首都です。",
    "Emoji: 🎉👍🏽 and a flag 🇯🇵!",
    "Crème brûlée, naïve café, Ærøskøbing, ÉCOLE, Ωmega",
    "def f(x):\n\treturn x  # done\n",
]


def sentencepiece_tokenizer(vocab_size: int = 800):
    """A Llama-2-style tokenizer trained here: Metaspace "▁" with a dummy prefix, BPE with one
    <0xNN> vocabulary token per byte for characters it does not know, and BOS "<s>" prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from neuronwidget.activations.corpus import bundled_corpus

    texts = list(bundled_corpus().documents())[:200]
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=100,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):  # byte-fallback pieces are ordinary vocabulary entries, as in Llama's tokenizer.json
        vocab[f"<0x{b:02X}>"] = len(vocab)
    spec["model"]["byte_fallback"] = True
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def sp_tok():
    return sentencepiece_tokenizer()


def test_one_gpt2_byte_table():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("A")] == "A" and table[ord("\n")] == "Ċ"
    assert all(unicode_to_bytes()[c] == b for b, c in table.items())


def test_byte_level_pieces_join_back_to_the_text():
    eng = Engine("tiny", device="cpu")
    assert tokenizer_kind(eng.lm.tokenizer) == "byte-level" and eng.lm.prefix_ids == []
    for text in UNICODE_TEXTS:
        rec = eng.activations(text, layer=1, neuron=3)
        ids = eng.lm.encode(text)
        assert len(rec.tokens) == len(rec.activations) == len(rec.token_bytes) == len(ids)  # one entry per token
        assert b"".join(rec.token_bytes).decode("utf-8") == text
        assert "".join(t for _, _, t in group_characters(rec.token_bytes)) == text
        for s, b in zip(rec.tokens, rec.token_bytes):
            assert s == b.decode("utf-8", errors="replace")
    rec = eng.activations(UNICODE_TEXTS[0], 0, 0)
    assert "\ufffd" in "".join(rec.tokens)  # CJK over byte tokens: the record keeps U+FFFD pieces...
    runs = group_characters(rec.token_bytes)
    assert [t for _, _, t in runs][:2] == ["東", "京"]  # ...and the bytes join them back into characters
    assert runs[0][1] - runs[0][0] == 3  # '東' is three byte tokens


def test_activations_many_carries_token_bytes():
    eng = Engine("tiny", device="cpu")
    recs = eng.activations_many(UNICODE_TEXTS, layer=2, neuron=5)
    for text, rec in zip(UNICODE_TEXTS, recs):
        assert b"".join(rec.token_bytes).decode("utf-8") == text
        assert rec.token_bytes == eng.activations(text, 2, 5).token_bytes


def test_sentencepiece_markers_and_byte_fallback(sp_tok):
    assert tokenizer_kind(sp_tok) == "sentencepiece"
    assert prefix_ids(sp_tok) == [sp_tok.bos_token_id]
    strings, raw = vocab_tables(sp_tok)
    vocab = sp_tok.get_vocab()
    assert raw[vocab["<0xE6>"]] == b"\xe6" and strings[vocab["<0xE6>"]] == "\ufffd"
    assert raw[vocab["<0x0A>"]] == b"\n" and strings[vocab["<0x0A>"]] == "\n"
    marked = next(p for p in vocab if p.startswith("\u2581") and len(p) > 2)
    assert strings[vocab[marked]] == " " + marked[1:]
    assert strings[vocab["<s>"]] == "<s>"  # specials are their literal text
    for text in UNICODE_TEXTS + ["Hello world", " leading space kept"]:
        ids = sp_tok(text, add_special_tokens=False)["input_ids"]
        pieces = text_bytes(text.encode(), [raw[i] for i in ids])
        assert b"".join(pieces).decode("utf-8") == text, text  # dummy-prefix space dropped, real ones kept
        assert len(pieces) == len(ids)


def test_group_characters_never_loses_a_token():
    broken = [b"a", b"\xe6\x9d", b"b", b"\xff", b"\xe6", b"\x9d", b"\xb1"]
    runs = group_characters(broken)
    assert [r[:2] for r in runs] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 7)]
    assert runs[-1][2] == "東" and runs[1][2] == "\ufffd"
