"""Byte-level tokens that are only part of a UTF-8 character.

GPT-2's tokenizer works on bytes, so "é" or "日" can be split over several tokens, each
of which decodes alone to U+FFFD. Where the token ids are known we name each piece's
bytes and the character(s) the run of pieces spells, for the tooltip.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence


@lru_cache(maxsize=1)
def _byte_of() -> dict[str, int]:
    # GPT-2's printable stand-in character for each byte (the standard reversible table)
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def byte_hints(tokenizer: Any, ids: Sequence[int], strings: Sequence[str]) -> list[str | None]:
    """One hint per token: None, or e.g. 'bytes c3 of “é” (a character split across tokens)'."""
    table = _byte_of()
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    raw: list[bytes | None] = []
    for piece, text in zip(pieces, strings):
        if "\ufffd" in text and piece and all(c in table for c in piece):
            raw.append(bytes(table[c] for c in piece))
        else:
            raw.append(None)
    hints: list[str | None] = [None] * len(raw)
    i = 0
    while i < len(raw):
        if raw[i] is None:
            i += 1
            continue
        j = i
        while j < len(raw) and raw[j] is not None:
            j += 1
        spelled = b"".join(raw[i:j]).decode("utf-8", errors="replace")  # type: ignore[arg-type]
        for k in range(i, j):
            hints[k] = f"bytes {raw[k].hex(' ')} of “{spelled}” (a character split across tokens)"  # type: ignore[union-attr]
        i = j
    return hints
