"""Token lookup, the paper's no-LLM baseline ("token lookup" in Bills et al. 2023): kept as the
control for the other explainers (``resolve_explainer("token-lookup")``; "baseline" is an alias).

* Lookup table: each token's mean activation over the neuron's NON-scoring records (train
  and calibration top records, calibration random records). Valid/test records, which
  scoring uses, never enter it.
* Explainer: "the tokens "X", "Y", "Z"" from the table's highest-mean tokens.
* Simulator, for ANY explanation text: a token whose text (stripped, case-folded) is
  mentioned in the explanation — as a quoted string, or as a word that is not a common
  function word — gets its lookup value scaled to 0-10 (or 10 when the table has never
  seen it); every other token gets 0. It reads words, not meaning: it is a baseline.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Sequence

from ...records import NeuronRecord, SequenceSimulation
from .._common import check_cancel
from ..prompts import scale
from .base import ProgressFn

NAME = "token lookup (the paper's baseline, no LLM)"
UNSEEN_VALUE = 10.0

_STOPWORDS = frozenset(
    "a an the and or of to in on at for with by from as is are was were be this that these those "
    "it its token tokens word words neuron neurons such like e g i.e eg etc".split()
)
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|'([^']+)'|‘([^’]+)’|`([^`]+)`")
_WORD = re.compile(r"\w+", re.UNICODE)


def _key(token: str) -> str:
    return token.strip().casefold()


def lookup_table(record: NeuronRecord) -> dict[str, float]:
    """Mean activation per token text (stripped, case-folded) over the non-scoring records."""
    records = record.top_split("train") + record.top_split("calibration") + record.random_split("calibration")
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        for tok, act in zip(r.tokens, r.activations):
            k = _key(tok)
            if k:
                sums[k] += act
                counts[k] += 1
    return {k: sums[k] / counts[k] for k in sums}


def baseline_explanation(record: NeuronRecord, n_tokens: int = 4) -> str:
    """"the tokens "X", "Y", …" from the lookup table's highest-mean tokens."""
    table = lookup_table(record)
    best = [k for k, v in sorted(table.items(), key=lambda kv: (-kv[1], kv[0])) if v > 0][:n_tokens]
    if not best:
        return "no token (the neuron never fired on its training records)"
    return "the tokens " + ", ".join(f'"{t}"' for t in best)


def mentioned(explanation: str) -> set[str]:
    """Token texts an explanation mentions: quoted strings, and words that are not stopwords."""
    found: set[str] = set()
    for m in _QUOTED.finditer(explanation):
        text = next(g for g in m.groups() if g is not None)
        found.add(_key(text))
    unquoted = _QUOTED.sub(" ", explanation)
    found.update(w.casefold() for w in _WORD.findall(unquoted) if w.casefold() not in _STOPWORDS)
    found.discard("")
    return found


def baseline_simulate(
    explanation: str, tokens: Sequence[str], table: dict[str, float], max_activation: float
) -> SequenceSimulation:
    """Predicted 0-10 activations for ``tokens`` (see the module docstring for the rule)."""
    words = mentioned(explanation)
    values: list[float] = []
    for tok in tokens:
        k = _key(tok)
        if k and k in words:
            values.append(float(scale([table[k]], max_activation)[0]) if k in table else UNSEEN_VALUE)
        else:
            values.append(0.0)
    return SequenceSimulation(tokens=list(tokens), expected_activations=values)


class BaselineBackend:
    """Token lookup, the paper's baseline: explanations and simulations from a token lookup
    table (no LLM). Implements both roles (``Explainer``, ``Simulator``). The offline default
    is the rules explainer (``RulesBackend``); this one stays as its control."""

    name = NAME
    simulator_name = NAME
    cheap = True

    def __repr__(self) -> str:
        return "BaselineBackend()"

    def explain(self, record: NeuronRecord, *, n: int = 1, cancel: threading.Event | None = None) -> list[str]:
        return [baseline_explanation(record)]  # deterministic: one explanation, whatever n is

    def simulate(self, explanation: str, token_lists: Sequence[Sequence[str]], *, max_activation: float,
                 lookup: NeuronRecord | dict[str, float] | None = None, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> list[SequenceSimulation]:
        table = lookup_table(lookup) if isinstance(lookup, NeuronRecord) else dict(lookup or {})
        out = []
        for i, tokens in enumerate(token_lists):
            check_cancel(cancel)
            out.append(baseline_simulate(explanation, tokens, table, max_activation))
            if progress:
                progress(i + 1, len(token_lists), "simulating")
        return out
