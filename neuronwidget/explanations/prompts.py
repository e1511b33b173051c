"""Explainer and simulator prompts, with few-shot neurons written for neuronwidget.

The few-shot neurons below are invented (tokens and values are ours). Records reach a
prompt as ``token<TAB>value`` lines between ``<start>`` and ``<end>``, values scaled per
neuron to integers 0-10.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..records import ActivationRecord

MAX_LABEL = 10
# The phrase an explanation completes; the parser strips it (and look-alikes) from answers.
FRAMING = "the main thing this neuron does is find"


@dataclass(frozen=True)
class Example:
    explanation: str
    records: tuple[tuple[tuple[str, int], ...], ...]  # (token, 0-10 value) per record


FEW_SHOT: tuple[Example, ...] = (
    Example(
        "units of time (hours, minutes, weeks) right after a number",
        (
            ((" The", 0), (" rehearsal", 0), (" ran", 0), (" for", 0), (" three", 1), (" hours", 10),
             (" and", 0), (" the", 0), (" break", 0), (" took", 0), (" twenty", 1), (" minutes", 9), (".", 0)),
            ((" Ship", 0), ("ping", 0), (" takes", 0), (" 2", 0), (" weeks", 8), (" from", 0),
             (" our", 0), (" warehouse", 0), (".", 0)),
        ),
    ),
    Example(
        "negation words such as not, never and no",
        (
            ((" She", 0), (" did", 0), (" not", 10), (" want", 1), (" to", 0), (" leave", 0), (",", 0),
             (" but", 0), (" she", 0), (" never", 8), (" said", 0), (" so", 0), (".", 0)),
            ((" There", 0), (" was", 0), (" no", 7), (" answer", 0), (" at", 0), (" the", 0), (" door", 0)),
        ),
    ),
    Example(
        "names of rivers",
        (
            ((" We", 0), (" sailed", 0), (" down", 0), (" the", 0), (" Dan", 6), ("ube", 10), (" past", 0),
             (" Vienna", 1), (" and", 0), (" later", 0), (" up", 0), (" the", 0), (" Rh", 5), ("ine", 9), (".", 0)),
        ),
    ),
)

EXPLAINER_SYSTEM = (
    "You are helping to interpret single neurons of a language model. For each neuron you see "
    "a few short text excerpts, one token per line, each token followed by a tab and how strongly "
    "the neuron fired on it, from 0 (silent) to 10 (its strongest). Work out what the tokens with "
    "high values have in common and describe it in one short phrase. Describe the pattern; do not "
    "just list the example tokens."
)

SIMULATOR_INTRO = (
    "Each neuron of a language model below comes with a description of what it responds to. "
    "Given the description, the neuron's activation on every token is predicted as an integer "
    "from 0 (silent) to 10 (strongest), written after a tab."
)

JSON_SIMULATOR_SYSTEM = (
    "You predict how strongly a neuron of a language model fires on each token of a text, "
    "given a description of what the neuron responds to. Values are integers from 0 (silent) "
    "to 10 (strongest). Reply with JSON only: a list of [token_index, value] pairs. Tokens you "
    "leave out count as 0."
)


def scale(activations: Sequence[float], max_activation: float) -> list[int]:
    """The method's 0-10 integers: ``min(10, floor(10 * max(a, 0) / max_activation))``."""
    if not max_activation or max_activation <= 0 or not math.isfinite(max_activation):
        return [0 for _ in activations]
    return [min(MAX_LABEL, math.floor(MAX_LABEL * max(a, 0.0) / max_activation)) for a in activations]


def token_text(token: str) -> str:
    """A token as it appears on a prompt line: tabs and newlines made visible."""
    return token.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _block(pairs: Sequence[tuple[str, int]], drop_zeros: bool = False) -> str:
    lines = [f"{token_text(t)}\t{v}" for t, v in pairs if not (drop_zeros and v == 0)]
    return "<start>\n" + "".join(line + "\n" for line in lines) + "<end>\n"


def format_records(records: Sequence[Sequence[tuple[str, int]]]) -> str:
    """Records as ``<start>…<end>`` blocks; repeated without zeros when under 20% are non-zero."""
    text = "".join(_block(r) for r in records)
    values = [v for r in records for _, v in r]
    if values and sum(1 for v in values if v > 0) / len(values) < 0.2:
        text += "\nThe same excerpts with the zero-valued tokens left out:\n"
        text += "".join(_block(r, drop_zeros=True) for r in records)
    return text


def _explainer_question(i: int, records: Sequence[Sequence[tuple[str, int]]]) -> str:
    return (
        f"Neuron {i}\nActivations:\n{format_records(records)}\n"
        f"Complete the sentence for neuron {i}: {FRAMING} ..."
    )


def explainer_messages(records: Sequence[ActivationRecord], max_activation: float) -> list[dict[str, str]]:
    """Chat messages asking for one explanation of the neuron behind ``records``."""
    messages = [{"role": "system", "content": EXPLAINER_SYSTEM}]
    for i, ex in enumerate(FEW_SHOT, start=1):
        messages.append({"role": "user", "content": _explainer_question(i, ex.records)})
        messages.append({"role": "assistant", "content": f"{ex.explanation}."})
    target = [list(zip(r.tokens, scale(r.activations, max_activation))) for r in records]
    messages.append({"role": "user", "content": _explainer_question(len(FEW_SHOT) + 1, target)})
    return messages


# ---- revision: the explainer sees where its explanation's simulation went wrong ----

REVISION_SYSTEM = (
    "You are improving a description of a single neuron of a language model. Someone predicted "
    "the neuron's activations from the current description alone. You see excerpts where that "
    "prediction was most wrong: one token per line, then a tab, the neuron's real activation "
    "(0 = silent, 10 = its strongest), a tab, and the predicted one. Write a better description "
    "in one short phrase: keep what the description gets right, cover the tokens it misses, and "
    "leave out what makes it predict activity where there is none. Reply with the phrase only."
)


def revision_messages(explanation: str, evidence: Sequence[tuple[ActivationRecord, Sequence[float]]],
                      max_activation: float) -> list[dict[str, str]]:
    """Chat messages asking for a revised explanation, given (record, predicted 0-10 values)
    pairs where the simulation of ``explanation`` disagreed most with the truth."""
    blocks = []
    for record, predicted in evidence:
        real = scale(record.activations, max_activation)
        lines = "".join(f"{token_text(t)}\t{r}\t{round(p)}\n" for t, r, p in zip(record.tokens, real, predicted))
        blocks.append(f"<start>\n{lines}<end>\n")
    question = (
        f"Current description: {FRAMING} {explanation.strip().rstrip('.')}.\n\n"
        f"Excerpts (token<TAB>real<TAB>predicted):\n{''.join(blocks)}\n"
        f"Complete the sentence with a better description: {FRAMING} ..."
    )
    return [{"role": "system", "content": REVISION_SYSTEM}, {"role": "user", "content": question}]


# ---- all-at-once simulation prompt (plain text, for logprob simulators) ----

def _neuron_header(i: int, explanation: str) -> str:
    expl = explanation.strip().rstrip(".")
    return f"Neuron {i}\nExplanation of neuron {i}: {FRAMING} {expl}.\nActivations:\n"


def simulation_fewshot() -> str:
    """The start of every simulation prompt: the intro and the few-shot neurons (no explanation)."""
    parts = [SIMULATOR_INTRO, "\n\n"]
    for i, ex in enumerate(FEW_SHOT, start=1):
        parts.append(_neuron_header(i, ex.explanation))
        parts.append("".join(_block(r) for r in ex.records))
        parts.append("\n")
    return "".join(parts)


def simulation_prefix(explanation: str) -> str:
    """Everything before the target record's first token: shared by all records of one explanation."""
    return simulation_fewshot() + _neuron_header(len(FEW_SHOT) + 1, explanation) + "<start>\n"


# The placeholder written after each slot, so one pass reads every slot (as in the paper).
PLACEHOLDER = "unknown"


# ---- JSON simulation prompt (chat-only APIs) ----

def _json_question(explanation: str, tokens: Sequence[str]) -> str:
    listing = "".join(f"{i}\t{token_text(t)}\n" for i, t in enumerate(tokens))
    return (
        f"Neuron description: {explanation.strip()}\n"
        f"Tokens (index<TAB>token):\n{listing}\n"
        "Reply with a JSON list of [token_index, value] pairs."
    )


def json_simulator_messages(explanation: str, tokens: Sequence[str]) -> list[dict[str, str]]:
    ex = FEW_SHOT[1]
    ex_tokens = [t for t, _ in ex.records[0]]
    ex_answer = [[i, v] for i, (_, v) in enumerate(ex.records[0]) if v > 0]
    return [
        {"role": "system", "content": JSON_SIMULATOR_SYSTEM},
        {"role": "user", "content": _json_question(ex.explanation, ex_tokens)},
        {"role": "assistant", "content": json.dumps(ex_answer)},
        {"role": "user", "content": _json_question(explanation, tokens)},
    ]


# ---- reading the answers ----

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


def parse_json_values(text: str, n_tokens: int) -> list[float]:
    """Values from an answer like ``[[0, 3], [5, 10]]`` (left-out tokens are 0). ValueError if unusable."""
    if not text or not text.strip():
        raise ValueError("empty answer")
    body = re.sub(r"^```(?:json)?|```$", "", text.strip(), flags=re.MULTILINE).strip()
    start, end = body.find("["), body.rfind("]")
    if start < 0 or end <= start:
        raise ValueError(f"no JSON list in the answer: {text[:80]!r}")
    chunk = body[start : end + 1]
    try:
        data = json.loads(chunk)
    except json.JSONDecodeError as e:
        try:  # pairs written without the outer list: "[0, 3], [2, 10]"
            data = json.loads(f"[{chunk}]")
        except json.JSONDecodeError:
            raise ValueError(f"invalid JSON ({e.msg}) in the answer: {text[:80]!r}") from None
    values = [0.0] * n_tokens
    if data and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in data):
        if len(data) != n_tokens:
            raise ValueError(f"got {len(data)} plain values for {n_tokens} tokens")
        pairs = list(enumerate(data))
    else:
        pairs = []
        for item in data:
            if not (isinstance(item, list) and len(item) == 2):
                raise ValueError(f"expected [token_index, value] pairs, got {str(item)[:40]!r}")
            pairs.append((item[0], item[1]))
    for i, v in pairs:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_tokens:
            raise ValueError(f"token index {i!r} is not in 0..{n_tokens - 1}")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"value {v!r} for token {i} is not a number")
        values[i] = float(min(MAX_LABEL, max(0, v)))
    return values
