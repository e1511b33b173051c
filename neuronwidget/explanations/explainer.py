"""Records -> explanations: show an LLM the top activations, parse what it answers."""

from __future__ import annotations

import re
import threading

from ..records import NeuronRecord
from ._common import ExplanationError, ProgressFn, check_cancel
from .backends import BaselineBackend, resolve_explainer
from .backends.baseline import baseline_explanation
from .prompts import explainer_messages

N_EXPLAINER_RECORDS = 5

_FRAMINGS = [
    r"(?:explanation(?: of neuron \d+)?(?: behaviou?r)?\s*:\s*)",
    r"(?:neuron \d+\s*:\s*)",
    r"(?:(?:the )?main thing (?:this|the) neuron does is (?:to )?find(?:s|ing)?\s*:?\s*)",
    r"(?:(?:this|the) neuron (?:is )?(?:looks?|looking) for\s*:?\s*)",
    r"(?:(?:this|the) neuron (?:fires|activates|responds) (?:on|to|for)\s*:?\s*)",
]
_FRAMING_RE = re.compile(r"^\s*(?:" + "|".join(_FRAMINGS) + r")+", re.IGNORECASE)
_REFUSAL_RE = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i am unable|i'm unable|as an ai|i don'?t know)",
    re.IGNORECASE,
)


def parse_explanation(text: str | None) -> str | None:
    """The explanation inside an answer, or None when it is empty or a refusal.

    Keeps the first non-empty line, strips quotes, framing phrases ("the main thing this
    neuron does is find …") and a trailing period.
    """
    if not text:
        return None
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    if _REFUSAL_RE.match(line):
        return None
    line = line.strip().strip("\"'“”*` ")
    line = _FRAMING_RE.sub("", line).strip()
    line = line.rstrip(".").strip().strip("\"'“”*` ")
    if not line or line.startswith("..."):
        return None
    return line


def explain(
    record: NeuronRecord,
    backend=None,
    *,
    n: int = 1,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[str]:
    """Explanations of one neuron from its 5 top train-split records (``n`` samples asked for).

    Empty or refused answers are left out; if nothing usable comes back an
    ``ExplanationError`` says what the explainer answered instead.
    """
    if not isinstance(record, NeuronRecord):
        raise ValueError(f"explain() needs a NeuronRecord, got {type(record).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    backend = resolve_explainer(backend)
    check_cancel(cancel)
    if progress:
        progress(0, 1, f"explaining {record.neuron_id} with {backend.name}")
    if isinstance(backend, BaselineBackend):
        out = [baseline_explanation(record)]
    else:
        records = record.top_split("train")[:N_EXPLAINER_RECORDS]
        if not records:
            raise ValueError(f"{record.neuron_id} has no top records to explain (its record is empty)")
        messages = explainer_messages(records, record.max_activation)
        answers = backend.chat(messages, n=n)
        check_cancel(cancel)
        out = []
        for a in answers:
            p = parse_explanation(a)
            if p is not None and p not in out:
                out.append(p)
        if not out:
            shown = "; ".join(repr((a or "")[:80]) for a in answers)
            raise ExplanationError(
                f"{backend.name} gave no usable explanation for {record.neuron_id} "
                f"(empty or refused answers: {shown})"
            )
    if progress:
        progress(1, 1, "explained")
    return out
