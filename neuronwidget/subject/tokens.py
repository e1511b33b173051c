"""Token ids -> the text they stand for: strings (" Paris") and raw bytes, per vocabulary id.

Two kinds of tokenizer cover every supported family:

* byte-level BPE (GPT-2, SmolLM2, Qwen, Llama 3): each piece is a string over GPT-2's
  printable stand-ins for the 256 bytes (``bytes_to_unicode``; "Ġ" is the space byte);
* SentencePiece (Llama 1/2, Mistral, Gemma): "▁" marks a space, and characters outside the
  vocabulary fall back to one ``<0xNN>`` token per UTF-8 byte.

A token that holds only part of a multi-byte character (one of the three byte tokens of
'東') has U+FFFD in its string and the exact byte in its bytes; joining a window's bytes and
decoding gives back the text. This module holds the ONE copy of GPT-2's byte table.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

SPACE_MARK = "\u2581"  # SentencePiece's "▁"
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible table {byte: printable character} (the standard construction)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    """The inverse of :func:`bytes_to_unicode`: {printable character: byte}."""
    return {c: b for b, c in bytes_to_unicode().items()}


def tokenizer_kind(tokenizer: Any) -> str:
    """"byte-level" or "sentencepiece", read from the tokenizer's decoder (or its vocabulary)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
        types = _decoder_types(decoder)
        if "ByteLevel" in types:
            return "byte-level"
        if types & {"Metaspace", "ByteFallback", "Replace"}:
            return "sentencepiece"
    vocab = tokenizer.get_vocab()
    marks = sum(1 for piece in vocab if piece.startswith(SPACE_MARK))
    spaces = sum(1 for piece in vocab if piece.startswith("Ġ"))
    return "sentencepiece" if marks > spaces else "byte-level"


def _decoder_types(decoder: dict) -> set[str]:
    out = {decoder.get("type", "")}
    for sub in decoder.get("decoders", []) or []:
        out |= _decoder_types(sub)
    return out


def vocab_tables(tokenizer: Any, size: int | None = None) -> tuple[list[str], list[bytes]]:
    """(strings, bytes) for every id 0..size-1 (default: the tokenizer's whole vocabulary).

    Ids the tokenizer does not know (an embedding larger than the vocabulary) get "" / b"".
    Added tokens (specials such as ``<|endoftext|>``) are their literal text.
    """
    vocab_size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
    size = max(size or 0, vocab_size)
    kind = tokenizer_kind(tokenizer)
    added = {int(i): str(getattr(t, "content", t)) for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    pieces += [None] * (size - len(pieces))
    byte_of = unicode_to_bytes()
    raw: list[bytes] = []
    for i, piece in enumerate(pieces):
        if piece is None:
            raw.append(b"")
        elif i in added:
            raw.append(added[i].encode("utf-8"))
        elif kind == "byte-level" and all(c in byte_of for c in piece):
            raw.append(bytes(byte_of[c] for c in piece))
        elif kind == "sentencepiece" and (m := _BYTE_PIECE.match(piece)):
            raw.append(bytes([int(m.group(1), 16)]))
        else:
            raw.append(piece.replace(SPACE_MARK, " ").encode("utf-8") if kind == "sentencepiece" else piece.encode("utf-8"))
    strings = [b.decode("utf-8", errors="replace") for b in raw]
    return strings, raw


def prefix_ids(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before any text (BOS), found by encoding with and without
    special tokens: [] for GPT-2 and SmolLM2, [bos] for Llama 2/3, Mistral, Gemma."""
    probe = "Hello"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start]
    return []


def text_bytes(text_b: bytes, pieces: list[bytes]) -> list[bytes]:
    """``pieces`` with a SentencePiece dummy-prefix space dropped from the first piece when the
    text itself does not start with a space (so that the pieces join back to the text)."""
    if pieces and pieces[0].startswith(b" ") and not text_b.startswith(b" ") and b"".join(pieces)[1:] == text_b:
        return [pieces[0][1:], *pieces[1:]]
    return pieces


def group_characters(token_bytes: list[bytes]) -> list[tuple[int, int, str]]:
    """Runs of tokens that together spell whole characters: [(start, end, text)] covering every
    token once, in order. A token whose bytes decode alone is a run of one; a character split
    over byte tokens is one run over all of them (what a view shows as one character)."""
    runs: list[tuple[int, int, str]] = []
    i, n = 0, len(token_bytes)
    while i < n:
        j = i + 1
        buf = token_bytes[i]
        while not _complete(buf) and j < n and j - i < 8:
            buf += token_bytes[j]
            j += 1
        if not _complete(buf):  # never completes: show token i alone, as it is
            j, buf = i + 1, token_bytes[i]
        runs.append((i, j, buf.decode("utf-8", errors="replace")))
        i = j
    return runs


def _complete(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


__all__ = ["bytes_to_unicode", "unicode_to_bytes", "tokenizer_kind", "vocab_tables", "prefix_ids", "text_bytes",
           "group_characters", "SPACE_MARK"]
