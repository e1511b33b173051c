"""Characters split over byte-level tokens, joined back for display.

Byte-level tokenizers cut '東' or an emoji into several tokens whose strings hold U+FFFD.
Records keep one entry per token; the views show each such run as the one character it
spells (hover lists every piece, its bytes and its value). The grouping itself lives with
the tokenizers in ``neuronwidget.subject.tokens`` (imported only when bytes are known).
"""

from __future__ import annotations

from typing import Sequence

from neuronwidget.widgets.messages import Group


def char_groups(token_bytes: Sequence[bytes] | None) -> list[Group]:
    """Runs of more than one token that spell whole characters; [] when bytes are unknown."""
    if not token_bytes:
        return []
    from neuronwidget.subject.tokens import group_characters

    out: list[Group] = []
    for start, end, text in group_characters(list(token_bytes)):
        if end - start > 1:
            out.append({"i": start, "n": end - start, "text": text,
                        "bytes": [token_bytes[k].hex(" ") for k in range(start, end)]})
    return out
