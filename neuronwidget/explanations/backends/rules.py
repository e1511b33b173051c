"""The rules explainer: short lists of context rules fitted to a neuron's records (no LLM).

An explanation is a list of rules, each with a strength on the method's 0-10 scale, written
in a fixed grammar that people and LLM simulators can read and that ``parse_rules`` reads
back exactly::

    "defined" after "user-" (9); "default" (6); the token after "non" (4); the phrase "for example" (3)

Grammar (``STR`` is a JSON string literal, written with ``ensure_ascii=False``: ``"`` and
``\\`` are backslash-escaped, control characters as ``\\n``, ``\\t``, ``\\u0000``; any other
character, non-ASCII included, as itself)::

    explanation := rule ("; " rule)*  |  "no rule fits"
    rule        := pattern " (" strength ")"          strength: an integer 1-10
    pattern     := STR                      a token: the token's text is STR
                 | STR " after " STR        a token right after a context
                 | "the token after " STR   whatever token comes right after a context
                 | "the phrase " STR        every token of a run of tokens spelling STR

Matching, on a list of tokens (``norm`` = case-folded, "▁" read as a space, runs of
whitespace as one space):

* a token's text is ``norm(token).strip()`` (the token lookup's key, with "▁" as a space);
* the text BEFORE token i is ``norm("".join(tokens[:i]))`` with trailing spaces removed; a
  context ``C`` matches when that text ends with ``C`` and ``C`` does not begin inside a word
  (when ``C`` starts with a letter or digit, the character before it is not one);
* a phrase ``P`` matches the tokens i..j (j >= i) when ``norm("".join(tokens[i:j+1])).strip()``
  is ``P`` and tokens i and j both have text (whitespace-only tokens neither start nor end one).

A token's predicted activation is the largest strength of the rules it matches, 0 when none.
Rules are fitted on the neuron's non-scoring records only (top records of splits train and
calibration, random records of calibration, and ``extra_records``: the quantile samples and
the other side's train and calibration top records, at lower weights): candidates that match at least ``min_support``
(2) tokens there, chosen by greedy forward selection maximising the pooled Pearson
correlation (top and random records weighted as scoring weighs them: equally) until a rule
adds under ``min_gain`` (0.002) or ``max_rules`` (16) are chosen; then up to ``cover_rules`` (3) broad
rules, matching in at least ``cover_records`` (4) records, so that held-out text rarely
matches nothing (a constant simulation has no score); strengths refined one rule at a time
and put on the 0-10 scale (least squares against the scaled activations).

``explain`` chooses between a few ways of fitting (``ALTERNATIVES``) by held-in model
selection (``select_rules``): each is fitted on the train top records + half the calibration
random records and judged on the calibration top records + the other half; the winner is
refitted on all the non-scoring records. It returns that one explanation only: best-of-n
compares candidates on the calibration records, which every refitted alternative has seen,
so it would favour the most overfitted one. An explanation has at most ``max_rules`` +
``cover_rules`` rules (19, usually far fewer: a rule must add ``min_gain`` correlation on the
fit records), strongest first: a list one reads top-down, as long as neurons that fire on
many unrelated tokens need (on 100 SmolLM2 neurons, 8 rules at most scored lower than 12-16).
The simulator of this backend reads explanations in the grammar exactly,
and any other text as the token lookup does (``baseline``).
"""

from __future__ import annotations

import bisect
import json
import re
import threading
from collections.abc import Iterable, Sequence
import dataclasses
from dataclasses import dataclass

import numpy as np

from ...records import TOP_SPLITS, ActivationRecord, NeuronRecord, SequenceSimulation
from .._common import check_cancel
from ..prompts import MAX_LABEL
from .base import ProgressFn
from .baseline import baseline_simulate, lookup_table

NAME = "rules (fitted context rules, no LLM)"
NO_RULE = "no rule fits"
KINDS = ("token", "token_after", "after", "phrase")
MAX_CONTEXT = 40  # characters: longer contexts are never proposed (matching has no limit)
MAX_PHRASE = 40
BOOST = 3.0  # how much more a revision's evidence records weigh
# Non-scoring records beyond top and random, and their groups' weights (a top group weighs 1):
QUANTILE_WEIGHT = 0.25  # the index's samples across the activation range (mid-range values)
OTHER_SIDE_WEIGHT = 0.5  # the other side's train + calibration top records: where the rules must stay quiet

# ---- rules and their grammar --------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule. ``kind``: "token" (``token``), "token_after" (``token`` after ``context``),
    "after" (any token after ``context``), "phrase" (``token`` holds the phrase)."""

    kind: str
    token: str | None
    context: str | None
    strength: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"rule kind must be one of {KINDS}, got {self.kind!r}")
        need_token = self.kind != "after"
        need_context = self.kind in ("token_after", "after")
        if need_token != bool(self.token) or need_context != bool(self.context):
            raise ValueError(f"a {self.kind!r} rule needs {'a token' if need_token else 'no token'} and "
                             f"{'a context' if need_context else 'no context'}: got token={self.token!r}, "
                             f"context={self.context!r}")
        if isinstance(self.strength, bool) or not isinstance(self.strength, int) or not 1 <= self.strength <= MAX_LABEL:
            raise ValueError(f"a rule's strength is an integer 1-{MAX_LABEL}, got {self.strength!r}")

    def pattern(self) -> str:
        if self.kind == "token":
            return _q(self.token)
        if self.kind == "token_after":
            return f"{_q(self.token)} after {_q(self.context)}"
        if self.kind == "after":
            return f"the token after {_q(self.context)}"
        return f"the phrase {_q(self.token)}"

    def with_strength(self, strength: int) -> Rule:
        return Rule(self.kind, self.token, self.context, int(strength))

    def __str__(self) -> str:
        return f"{self.pattern()} ({self.strength})"


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def format_rules(rules: Sequence[Rule]) -> str:
    """The explanation text of ``rules`` (in the order given)."""
    return "; ".join(str(r) for r in rules) if rules else NO_RULE


_STR = r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"'
_PATTERNS = (
    ("after", re.compile(rf"the token after ({_STR})")),
    ("phrase", re.compile(rf"the phrase ({_STR})")),
    ("token_after", re.compile(rf"({_STR}) after ({_STR})")),
    ("token", re.compile(rf"({_STR})")),
)
_STRENGTH = re.compile(r" \((10|[1-9])\)")


def parse_rules(text: str) -> list[Rule] | None:
    """The rules an explanation states, or None when the text is not in the grammar.
    Surrounding whitespace and one final period are allowed; quoted strings are normalised as
    matching reads them (case-folded, whitespace collapsed), so ``parse_rules(format_rules(r))
    == r`` for fitted rules."""
    if not isinstance(text, str):
        return None
    s = text.strip()
    if s.endswith("."):  # a sentence's final period (valid text ends in ")" or NO_RULE)
        s = s[:-1]
    if s == NO_RULE:
        return []
    rules: list[Rule] = []
    pos = 0
    while True:
        for kind, pat in _PATTERNS:
            m = pat.match(s, pos)
            if m:
                break
        else:
            return None
        strings = [_norm_text(json.loads(g)).strip() for g in m.groups()]
        st = _STRENGTH.match(s, m.end())
        if not st or not all(strings):
            return None
        token = None if kind == "after" else strings[0]
        context = strings[-1] if kind in ("after", "token_after") else None
        rules.append(Rule(kind, token, context, int(st.group(1))))
        pos = st.end()
        if pos == len(s):
            return rules
        if not s.startswith("; ", pos):
            return None
        pos += 2


# ---- matching ---------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def _norm_text(text: str) -> str:
    return _WS.sub(" ", text.replace("▁", " ").casefold())


def _word(ch: str) -> bool:
    return ch.isalnum()


class _Doc:
    """One token list seen as text: each token's key, where its text starts/ends in the
    normalised joined text, and the text before it."""

    __slots__ = ("keys", "text", "begins", "ends", "before")

    def __init__(self, tokens: Sequence[str]):
        parts: list[str] = []
        length = 0
        begins, ends, keys = [], [], []
        last_space = False
        for tok in tokens:
            s = _norm_text(tok)
            if last_space and s.startswith(" "):
                s = s[1:]
            core = s.strip()
            lead = len(s) - len(s.lstrip())
            begins.append(length + lead if core else length + len(s))
            ends.append(length + lead + len(core) if core else length + len(s))
            keys.append(core)
            parts.append(s)
            length += len(s)
            if s:
                last_space = s.endswith(" ")
        self.text = "".join(parts)
        self.keys = keys
        self.begins = begins
        self.ends = ends
        # text before token i: everything up to where the token's text begins, right-stripped
        self.before = [self.text[:b].rstrip(" ") for b in begins]

    def context_ends(self, i: int, context: str) -> bool:
        b = self.before[i]
        if not b.endswith(context):
            return False
        k = len(b) - len(context)
        return k == 0 or not (_word(context[0]) and _word(b[k - 1]))

    def phrase_spans(self, max_chars: int | None) -> Iterable[tuple[int, int, str]]:
        """(i, j, text) for each run of tokens i..j starting and ending on tokens with text."""
        n = len(self.keys)
        for i in range(n):
            if not self.keys[i]:
                continue
            for j in range(i, n):
                if max_chars is not None and self.ends[j] - self.begins[i] > max_chars:
                    break
                if self.keys[j]:
                    yield i, j, self.text[self.begins[i]:self.ends[j]]


def _rule_mask(rule: Rule, doc: _Doc) -> np.ndarray:
    n = len(doc.keys)
    m = np.zeros(n, dtype=bool)
    if rule.kind == "token":
        for i, k in enumerate(doc.keys):
            m[i] = k == rule.token
    elif rule.kind == "token_after":
        for i, k in enumerate(doc.keys):
            m[i] = k == rule.token and doc.context_ends(i, rule.context)
    elif rule.kind == "after":
        for i, k in enumerate(doc.keys):
            m[i] = bool(k) and doc.context_ends(i, rule.context)
    else:
        for i, j, text in doc.phrase_spans(len(rule.token)):
            if text == rule.token:
                m[i:j + 1] = True
    return m


def predict(rules: Sequence[Rule], tokens: Sequence[str]) -> list[float]:
    """Each token's predicted 0-10 activation: the largest strength of the rules it matches."""
    doc = _Doc(tokens)
    out = np.zeros(len(tokens))
    for r in rules:
        out = np.maximum(out, r.strength * _rule_mask(r, doc))
    return [float(v) for v in out]


# ---- fitting ----------------------------------------------------------------------------------------


def fit_records(record: NeuronRecord) -> tuple[list[ActivationRecord], list[ActivationRecord]]:
    """(top, random) records the rules are fitted on: never the valid/test splits."""
    return (record.top_split("train") + record.top_split("calibration"), record.random_split("calibration"))


def extra_records(record: NeuronRecord) -> list[tuple[list[ActivationRecord], float]]:
    """More non-scoring evidence, as (records, group weight): the quantile samples (values
    across the activation range, which the top records lack) and the other side's train and
    calibration top records (where a signed neuron fires the other way, so its rules must not).
    A window identical to one of the scoring records (valid/test top or random) is left out:
    the same window can rank on both sides. Measured on 100 SmolLM2 neurons
    (benchmarks/quality.py): the median held-out score rose from 0.29 to 0.30 (positive side)
    and from 0.24 to 0.26 (negative side)."""
    held = {tuple(r.tokens) for r in record.top_split("valid") + record.top_split("test")
            + record.random_split("valid") + record.random_split("test")}
    quantiles = [r for q in (record.random_sample_by_quantile or []) for r in q if tuple(r.tokens) not in held]
    other = record.most_negative_activation_records
    other = [r for r in other[0::len(TOP_SPLITS)] + other[1::len(TOP_SPLITS)] if tuple(r.tokens) not in held]
    groups = [(quantiles, QUANTILE_WEIGHT), (other, OTHER_SIDE_WEIGHT)]
    return [(recs, w) for recs, w in groups if recs]


@dataclass
class _Data:
    y: np.ndarray  # activations, pooled
    w: np.ndarray  # token weights
    rec: np.ndarray  # record number of each token
    docs: list[_Doc]
    n_records: int


def _data(records: Sequence[ActivationRecord], weights: Sequence[float]) -> _Data:
    docs = [_Doc(r.tokens) for r in records]
    y = np.concatenate([np.asarray(r.activations, dtype=np.float64) for r in records]) if records else np.zeros(0)
    w = np.concatenate([np.full(len(r.tokens), wt) for r, wt in zip(records, weights)]) if records else np.zeros(0)
    rec = np.concatenate([np.full(len(r.tokens), i) for i, r in enumerate(records)]) if records else np.zeros(0, int)
    return _Data(y, w, rec.astype(np.int64), docs, len(records))


def _occurrences(data: _Data, kinds: Sequence[str]) -> _Occ:
    """Every candidate rule over ``data``'s tokens (activations are not read): its key and
    the (global) positions where it matches, exactly as ``_rule_mask`` reads it."""
    keyed: dict[tuple[str, str | None, str | None], list[int]] = {}
    offsets = np.cumsum([0] + [len(d.keys) for d in data.docs])

    def add(key, pos):
        lst = keyed.get(key)
        if lst is None:
            keyed[key] = [pos]
        elif lst[-1] != pos:
            lst.append(pos)

    contexts: set[str] = set()
    phrases: set[str] = set()
    for di, doc in enumerate(data.docs):
        base = int(offsets[di])
        for i, k in enumerate(doc.keys):
            if not k:
                continue
            if "token" in kinds:
                add(("token", k, None), base + i)
            if "token_after" in kinds or "after" in kinds:
                contexts.update(_proposed_contexts(doc, i))
        if "phrase" in kinds:
            # proposed: runs of 2-3 tokens (any run spelling the same text matches)
            phrases.update(_proposed_phrases(doc))
    # contexts: every position where a proposed context matches (exact, as _rule_mask reads it)
    if contexts:
        for di, doc in enumerate(data.docs):
            base = int(offsets[di])
            starts = _boundaries(doc.text)
            for i, k in enumerate(doc.keys):
                if not k:
                    continue
                b = doc.before[i]
                n = len(b)
                lo = bisect.bisect_left(starts, n - MAX_CONTEXT)
                hi = bisect.bisect_left(starts, n)
                for st in starts[lo:hi]:
                    c = b[st:]
                    if c in contexts:
                        if "after" in kinds:
                            add(("after", None, c), base + i)
                        if "token_after" in kinds:
                            add(("token_after", k, c), base + i)
    if phrases:
        for di, doc in enumerate(data.docs):
            base = int(offsets[di])
            for i, j, text in doc.phrase_spans(MAX_PHRASE):
                if text in phrases:
                    for q in range(i, j + 1):
                        add(("phrase", text, None), base + q)
    return _Occ(data, keyed)


class _Occ:
    """Occurrences as flat arrays: ``keys[cand[j]]`` matches token ``pos[j]`` (pairs unique,
    sorted by candidate)."""

    def __init__(self, data: _Data, keyed: dict[tuple[str, str | None, str | None], list[int]]):
        self.keys = list(keyed)
        self.index = {k: i for i, k in enumerate(self.keys)}
        n = max(len(data.y), 1)
        lens = np.fromiter((len(v) for v in keyed.values()), dtype=np.int64, count=len(self.keys))
        cand = np.repeat(np.arange(len(self.keys), dtype=np.int64), lens)
        pos = np.fromiter((q for v in keyed.values() for q in v), dtype=np.int64, count=int(lens.sum()))
        code = np.unique(cand * n + pos)
        self.cand, self.pos = code // n, code % n
        self.starts = np.searchsorted(self.cand, np.arange(len(self.keys) + 1))
        self.kind = np.array([KINDS.index(k[0]) for k in self.keys], dtype=np.int64)

    def positions(self, key) -> np.ndarray | None:
        i = self.index.get(key)
        return None if i is None else self.pos[self.starts[i]:self.starts[i + 1]]


def _proposed_phrases(doc: _Doc) -> Iterable[str]:
    """Runs of 2-3 tokens with text (at most MAX_PHRASE characters), as phrase_spans spells them."""
    keys, n = doc.keys, len(doc.keys)
    for i in range(n):
        if not keys[i]:
            continue
        seen = 1
        for j in range(i + 1, n):
            if doc.ends[j] - doc.begins[i] > MAX_PHRASE:
                break
            if keys[j]:
                seen += 1
                yield doc.text[doc.begins[i]:doc.ends[j]]
                if seen == 3:
                    break


def _boundaries(text: str) -> list[int]:
    """Where a context may begin in ``text``: not on a space, not inside a word."""
    return [k for k, ch in enumerate(text)
            if ch != " " and (k == 0 or not (_word(ch) and _word(text[k - 1])))]


class _Candidates:
    """The candidate rules over the fit data, as (candidate, token position) occurrence pairs:
    those matching at least ``min_support`` ACTIVE tokens (in ``min_records`` records).
    ``occ``: ``_occurrences(data, KINDS)`` computed once and shared between fits."""

    def __init__(self, data: _Data, kinds: Sequence[str], min_support: int, min_records: int = 1,
                 active: np.ndarray | None = None, occ: dict | None = None):
        if occ is None:
            occ = _occurrences(data, kinds)
        ok_kind = np.isin(occ.kind, [KINDS.index(k) for k in kinds])
        live = ok_kind[occ.cand] if active is None else ok_kind[occ.cand] & active[occ.pos]
        c, pos = occ.cand[live], occ.pos[live]
        nk = len(occ.keys)
        keep = np.bincount(c, minlength=nk) >= max(min_support, 1)
        if min_records > 1 and len(c):
            nrec = max(data.n_records, 1)
            pairs = np.unique(c * nrec + data.rec[pos])
            keep &= np.bincount(pairs // nrec, minlength=nk) >= min_records
        sel = keep[c]
        old = np.flatnonzero(keep)
        remap = np.full(nk, -1, dtype=np.int64)
        remap[old] = np.arange(len(old))
        self.keys = [occ.keys[i] for i in old]
        self.cand = remap[c[sel]]
        self.pos = pos[sel]

    def rule(self, c: int, strength: int) -> Rule:
        kind, token, context = self.keys[c]
        return Rule(kind, token, context, int(strength))


def _proposed_contexts(doc: _Doc, i: int) -> list[str]:
    """The one- and two-token contexts before token i, each widened to start at a word boundary."""
    out = []
    before = doc.before[i]
    seen = 0
    j = i - 1
    while j >= 0 and seen < 2:
        if doc.keys[j]:
            seen += 1
            start = doc.begins[j]
            while start > 0 and _word(before[start - 1]) and start < len(before) and _word(before[start]):
                start -= 1
            c = before[start:].strip(" ")
            if c and len(c) <= MAX_CONTEXT and (not out or c != out[-1]):
                out.append(c)
        j -= 1
    return out


class _Fit:
    """Greedy forward selection of rules maximising the weighted Pearson correlation."""

    def __init__(self, data: _Data, cands: _Candidates, w: np.ndarray | None = None):
        self.d, self.c = data, cands
        self.w = w = data.w if w is None else w
        y = data.y
        self.sw, self.sy, self.syy = w.sum(), (w * y).sum(), (w * y * y).sum()
        self.wy = w * y
        self.vy = self.sw * self.syy - self.sy ** 2

    def corr(self, p: np.ndarray) -> float:
        w = self.w
        sp, spp, spy = (w * p).sum(), (w * p * p).sum(), (self.wy * p).sum()
        vp = self.sw * spp - sp * sp
        if vp <= 1e-12 or self.vy <= 1e-12:
            return 0.0
        return float((self.sw * spy - sp * self.sy) / np.sqrt(vp * self.vy))

    def best_addition(self, p: np.ndarray, exclude: set[int]) -> tuple[float, int, int]:
        """(correlation, candidate, strength) of the best single rule added to prediction ``p``."""
        c, pos = self.c.cand, self.c.pos
        if not len(c):
            return -2.0, -1, 0
        w = self.w
        sp, spp, spy = (w * p).sum(), (w * p * p).sum(), (self.wy * p).sum()
        pp = p[pos]
        wpos, wypos = w[pos], self.wy[pos]
        n = len(self.c.keys)
        best = (-2.0, -1, 0)
        # from nothing, the strength does not change the correlation: take 10 (finest steps later)
        for s in (range(1, MAX_LABEL + 1) if p.any() else (MAX_LABEL,)):
            new = np.maximum(pp, s)
            d1 = new - pp
            d2 = new * new - pp * pp
            dsp = np.bincount(c, wpos * d1, n)
            dspp = np.bincount(c, wpos * d2, n)
            dspy = np.bincount(c, wypos * d1, n)
            vp = self.sw * (spp + dspp) - (sp + dsp) ** 2
            num = self.sw * (spy + dspy) - (sp + dsp) * self.sy
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(vp > 1e-12, num / np.sqrt(np.maximum(vp, 1e-300) * max(self.vy, 1e-300)), 0.0)
            if exclude:
                r[list(exclude)] = -2.0
            k = int(np.argmax(r))
            if r[k] > best[0] + 1e-12:
                best = (float(r[k]), k, s)
        return best

    def masks(self, chosen: Sequence[int]) -> list[np.ndarray]:
        out = []
        for k in chosen:
            m = np.zeros(len(self.d.y), dtype=bool)
            m[self.c.pos[self.c.cand == k]] = True
            out.append(m)
        return out


def _prediction(masks: Sequence[np.ndarray], strengths: Sequence[int], n: int) -> np.ndarray:
    p = np.zeros(n)
    for m, s in zip(masks, strengths):
        if s > 0:
            p = np.maximum(p, s * m)
    return p


def _refine(fit: _Fit, masks: list[np.ndarray], strengths: list[int], rounds: int = 3) -> list[int]:
    """Coordinate ascent on the strengths (0 drops a rule), a few rounds."""
    n = len(fit.d.y)
    strengths = list(strengths)
    if not masks:
        return strengths
    best = fit.corr(_prediction(masks, strengths, n))
    levels = np.arange(MAX_LABEL + 1, dtype=np.float64)[:, None]
    w, y = fit.w, fit.d.y
    sw = fit.sw
    for _ in range(rounds):
        changed = False
        for i in range(len(masks)):
            base = _prediction(masks[:i] + masks[i + 1:], strengths[:i] + strengths[i + 1:], n)
            trial = np.maximum(base[None, :], levels * masks[i][None, :])  # (11, n)
            sp = trial @ w
            spp = (trial * trial) @ w
            spy = trial @ (w * y)
            vp = sw * spp - sp * sp
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(vp > 1e-12, (sw * spy - sp * fit.sy) / np.sqrt(np.maximum(vp, 1e-300) * max(fit.vy, 1e-300)),
                             0.0)
            if fit.vy <= 1e-12:
                r[:] = 0.0
            r[strengths[i]] = -np.inf
            s = int(np.argmax(r))
            if r[s] > best + 1e-9:
                best, changed = float(r[s]), True
                strengths[i] = s
        if not changed:
            break
    return strengths


@dataclass(frozen=True)
class Settings:
    """One way of fitting rules (``RulesBackend.explain`` offers several as alternatives)."""

    max_rules: int = 16
    min_support: int = 2  # tokens a candidate rule must match in the fit records
    min_records: int = 1  # ... in at least this many distinct records
    cover_rules: int = 3  # then up to this many broad rules, matching in at least cover_records records,
    cover_records: int = 4
    cover_gain: float = 0.001  # ... each adding at least this much correlation
    kinds: tuple[str, ...] = KINDS
    min_gain: float = 0.002  # stop when the next rule adds less correlation than this
    random_weight: float = 1.0  # the random records' share of the weight, relative to top records


def _weights(n_top: int, n_random: int, random_weight: float) -> list[float]:
    # scoring pools 5 top + 5 random records: weigh the two groups equally by default
    wt = 1.0 / max(n_top, 1)
    wr = random_weight / max(n_random, 1)
    return [wt] * n_top + [wr] * n_random


def _rescaled(fit: _Fit, masks: list[np.ndarray], strengths: list[int], max_activation: float) -> list[int]:
    """Strengths put on the method's 0-10 scale (least squares of the scaled activations on the
    prediction, through 0), then refined again for correlation."""
    p = _prediction(masks, strengths, len(fit.d.y))
    if not max_activation or max_activation <= 0 or not p.any():
        return strengths
    y10 = MAX_LABEL * np.maximum(fit.d.y, 0) / max_activation
    w = fit.w
    g = float((w * p * y10).sum() / (w * p * p).sum())
    scaled = [0 if s == 0 else int(min(MAX_LABEL, max(1, round(g * s)))) for s in strengths]
    return _refine(fit, masks, scaled)


class _Pool:
    """The records rules may be fitted on, read once: tokens, activations, every candidate's
    occurrences. Fits on parts of it (held-in model selection) give the other tokens weight 0."""

    def __init__(self, records: Sequence[ActivationRecord]):
        self.records = list(records)
        self.data = _data(self.records, [1.0] * len(self.records))
        self.occ = _occurrences(self.data, KINDS)
        self.index = {id(r): i for i, r in enumerate(self.records)}

    def weights(self, groups: Sequence[tuple[Sequence[ActivationRecord], float]]) -> np.ndarray:
        """Token weights: each group's records share the group's weight equally; others 0."""
        per = np.zeros(len(self.records))
        for recs, total in groups:
            for r in recs:
                per[self.index[id(r)]] += total / max(len(recs), 1)
        return per[self.data.rec] if len(self.data.rec) else np.zeros(0)

    def mask(self, rule: Rule) -> np.ndarray:
        key = (rule.kind, rule.token, rule.context)
        m = np.zeros(len(self.data.y), dtype=bool)
        where = self.occ.positions(key)
        if where is not None:
            m[where] = True
        else:
            m[:] = np.concatenate([_rule_mask(rule, doc) for doc in self.data.docs])
        return m


def _greedy(pool: _Pool, w: np.ndarray, settings: Settings, start: Sequence[Rule], max_rules: int,
            min_gain: float, cancel: threading.Event | None) -> tuple[_Fit, list[Rule], list[np.ndarray]]:
    """Greedy forward selection from ``start`` (refitted first) on the tokens weighted ``w``
    (weight 0: not seen): (fit, rules, masks), in the order chosen."""
    data = pool.data
    cands = _Candidates(data, settings.kinds, settings.min_support, settings.min_records, active=w > 0, occ=pool.occ)
    check_cancel(cancel)
    fit = _Fit(data, cands, w)
    n = len(data.y)
    start_masks = [pool.mask(r) for r in start]
    strengths = _refine(fit, start_masks, [r.strength for r in start]) if start else []
    masks, rules = [], []
    for r, m, st in zip(start, start_masks, strengths):
        if st > 0:
            masks.append(m)
            rules.append(r.with_strength(st))
    index = {key: k for k, key in enumerate(cands.keys)}
    taken = {index[(r.kind, r.token, r.context)] for r in rules if (r.kind, r.token, r.context) in index}
    p = _prediction(masks, [r.strength for r in rules], n)
    current = fit.corr(p)
    while len(rules) < max_rules:
        check_cancel(cancel)
        r, k, st = fit.best_addition(p, taken)
        if k < 0 or r < current + min_gain:
            break
        m = fit.masks([k])[0]
        masks.append(m)
        rules.append(cands.rule(k, st))
        taken.add(k)
        p = np.maximum(p, st * m)
        current = r
    return fit, rules, masks


def _fit_pool(pool: _Pool, w: np.ndarray, settings: Settings, max_activation: float, start: Sequence[Rule] = (),
              cancel: threading.Event | None = None) -> tuple[list[Rule], list[np.ndarray]]:
    """Rules (strongest first) and their masks over the pool, fitted on the tokens weighted ``w``."""
    if not len(pool.data.y) or not (w > 0).any():
        return [], []
    fit, rules, masks = _greedy(pool, w, settings, start, settings.max_rules, settings.min_gain, cancel)
    if settings.cover_rules:
        # broad rules (seen in many records) after the sharp ones, so that held-out text rarely
        # matches nothing at all (a constant simulation has no score)
        broad = dataclasses.replace(settings, min_records=settings.cover_records)
        fit, rules, masks = _greedy(pool, w, broad, rules, len(rules) + settings.cover_rules,
                                    settings.cover_gain, cancel)
    strengths = _refine(fit, masks, [r.strength for r in rules])
    strengths = _rescaled(fit, masks, strengths, max_activation)
    kept = [(r.with_strength(st), m) for r, m, st in zip(rules, masks, strengths) if st > 0]
    kept.sort(key=lambda rm: (-rm[0].strength, -int(rm[1].sum())))
    return [r for r, _ in kept], [m for _, m in kept]


def fit_rules(top: Sequence[ActivationRecord], random: Sequence[ActivationRecord], settings: Settings = Settings(),
              start: Sequence[Rule] = (), cancel: threading.Event | None = None,
              max_activation: float | None = None, boost: Sequence[ActivationRecord] = (),
              extra: Sequence[tuple[Sequence[ActivationRecord], float]] = ()) -> list[Rule]:
    """Rules fitted on ``top`` and ``random`` records (``start``: rules to begin from, refitted;
    ``boost``: records among them that weigh more, e.g. a revision's evidence; ``extra``:
    more (records, group weight), see ``extra_records``).
    ``max_activation`` (the 0-10 scale's 10; default: the largest activation of ``top``)
    puts the strengths on the method's scale. Strongest rules first."""
    records = list(top) + list(random)
    weights = _weights(len(top), len(random), settings.random_weight)
    for recs, total in extra:
        records += recs
        weights += [total / len(recs)] * len(recs)
    pool = _Pool(records)
    boosted = {id(r) for r in boost}
    per = [wt * (BOOST if id(r) in boosted else 1.0) for r, wt in zip(records, weights)]
    w = np.asarray(per)[pool.data.rec] if len(pool.data.rec) else np.zeros(0)
    if max_activation is None:
        max_activation = max((r.max_activation for r in top), default=0.0)
    return _fit_pool(pool, w, settings, max_activation, start, cancel)[0]


def _wcorr(y: np.ndarray, w: np.ndarray, p: np.ndarray) -> float | None:
    """Weighted Pearson r (None when undefined)."""
    sw = w.sum()
    if sw <= 0:
        return None
    my, mp = (w * y).sum() / sw, (w * p).sum() / sw
    vy, vp = (w * (y - my) ** 2).sum(), (w * (p - mp) ** 2).sum()
    if vy <= 1e-12 or vp <= 1e-12:
        return None
    return float((w * (y - my) * (p - mp)).sum() / np.sqrt(vy * vp))


def select_rules(record: NeuronRecord, alternatives: Sequence[Settings] | None = None,
                 cancel: threading.Event | None = None) -> tuple[list[Rule], Settings, list[float | None]]:
    """Held-in model selection on the non-scoring records only: each alternative is fitted on
    the train top records + half the calibration random records, and judged by the pooled
    Pearson r (top and random weighed equally, as scoring does) on the calibration top records
    + the other half; the best (ties: the earlier) is refitted on all of them.
    ``(rules, settings chosen, each alternative's held-in r)``."""
    alternatives = ALTERNATIVES if alternatives is None else tuple(alternatives)
    train = record.top_split("train")
    cal_top, cal_rand = record.top_split("calibration"), record.random_split("calibration")
    extra = extra_records(record)
    pool = _Pool(train + cal_top + cal_rand + [r for recs, _ in extra for r in recs])
    half_a, half_b = cal_rand[0::2], cal_rand[1::2]
    y = pool.data.y
    judged: list[float | None] = [None] * len(alternatives)
    if len(alternatives) > 1 and train and cal_top and half_b:
        w_eval = pool.weights([(cal_top, 1.0), (half_b, 1.0)])
        for i, st in enumerate(alternatives):
            check_cancel(cancel)
            rules, masks = _fit_pool(pool, pool.weights([(train, 1.0), (half_a, st.random_weight), *extra]), st,
                                     _fit_max(train), cancel=cancel)
            judged[i] = _wcorr(y, w_eval, _prediction(masks, [q.strength for q in rules], len(y)))
    best = max(range(len(alternatives)), key=lambda i: (-2.0 if judged[i] is None else judged[i], -i))
    st = alternatives[best]
    w = pool.weights([(train + cal_top, 1.0), (cal_rand, st.random_weight), *extra])
    return _fit_pool(pool, w, st, _fit_max(train + cal_top), cancel=cancel)[0], st, judged


# ---- the backend ----------------------------------------------------------------------------------

ALTERNATIVES = (
    Settings(),  # rules matching >= 2 tokens of the fit records
    Settings(max_rules=12, min_support=1),  # rules seen once allowed (neighbouring windows share text)
)


def _fit_max(top: Sequence[ActivationRecord]) -> float:
    # the 0-10 scale's 10 from the fit records alone (the same as the record's: top records are
    # ranked, and the first one is in the train split)
    return max((r.max_activation for r in top), default=0.0)


def _check_record(record: NeuronRecord, what: str) -> tuple[list[ActivationRecord], list[ActivationRecord]]:
    if not isinstance(record, NeuronRecord):
        raise ValueError(f"the rules explainer {what} a NeuronRecord, got {type(record).__name__}")
    top, rand = fit_records(record)
    if not top:
        raise ValueError(f"{record.neuron_id} ({record.side} side) has no train or calibration top records to fit "
                         f"rules on (its record is empty)")
    return top, rand


class RulesBackend:
    """The offline default: explanations are context rules fitted to the neuron's non-scoring
    records; the simulator reads them back exactly (and any other text as the token lookup
    does). Implements both roles (``Explainer``, ``Simulator``) and ``revise``."""

    name = NAME
    simulator_name = NAME
    cheap = True

    def __repr__(self) -> str:
        return "RulesBackend()"

    def explain(self, record: NeuronRecord, *, n: int = 1, cancel: threading.Event | None = None) -> list[str]:
        """One explanation (whatever ``n``): the rules of the alternative that predicts best
        on held-in records it was not fitted on (``select_rules``), refitted on all the
        non-scoring records. Only one, because comparing several rule sets on the calibration
        records they were all fitted on (as best-of-n does) would favour the most overfitted."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        _check_record(record, "explains")
        return [format_rules(select_rules(record, cancel=cancel)[0])]

    def revise(self, record: NeuronRecord, explanation: str,
               evidence: Sequence[tuple[ActivationRecord, SequenceSimulation]], *,
               cancel: threading.Event | None = None) -> list[str]:
        """Revised explanations from held-in ``evidence`` (records where the simulation was most
        wrong): the rules' strengths refitted (0 drops a rule) and rules added, on the non-scoring
        records with the evidence weighed ``BOOST`` times. Text not in the grammar is fitted afresh.
        Only candidates that fit the evidence at least as well as ``explanation`` are returned
        (the explanation itself, re-written, when none does)."""
        top, rand = _check_record(record, "revises")
        ev = [r for r, _ in evidence]
        if any(not isinstance(r, ActivationRecord) for r in ev):
            raise ValueError("revise() needs evidence as (ActivationRecord, SequenceSimulation) pairs")
        rules = parse_rules(explanation)
        if rules is None:
            return self.explain(record, n=2, cancel=cancel)
        # evidence records (held-in) are fitted among the top records and weigh more
        known = {id(r) for r in top + rand}
        fit_top = top + [r for r in ev if id(r) not in known]
        out: list[str] = []
        before = _corr_on(ev, rules)
        extra = extra_records(record)
        for settings, start in ((Settings(), rules), (Settings(max_rules=max(len(rules), 1)), rules),
                                (Settings(max_rules=len(rules) + 2), ())):
            check_cancel(cancel)
            new = fit_rules(fit_top, rand, settings, start=start, cancel=cancel, max_activation=_fit_max(top),
                            boost=ev, extra=extra)
            text = format_rules(new)
            if text not in out and _corr_on(ev, new) >= before - 1e-9:
                out.append(text)
        return out or [format_rules(rules)]

    def simulate(self, explanation: str, token_lists: Sequence[Sequence[str]], *, max_activation: float,
                 lookup: NeuronRecord | dict[str, float] | None = None, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> list[SequenceSimulation]:
        rules = parse_rules(explanation)
        table: dict[str, float] = {}
        if rules is None:
            table = lookup_table(lookup) if isinstance(lookup, NeuronRecord) else dict(lookup or {})
        out = []
        for i, tokens in enumerate(token_lists):
            check_cancel(cancel)
            if rules is not None:
                out.append(SequenceSimulation(tokens=list(tokens), expected_activations=predict(rules, tokens)))
            else:
                out.append(baseline_simulate(explanation, tokens, table, max_activation))
            if progress:
                progress(i + 1, len(token_lists), "simulating")
        return out


def _corr_on(records: Sequence[ActivationRecord], rules: Sequence[Rule]) -> float:
    """Pooled Pearson r of ``rules``' predictions on ``records`` (0 where undefined)."""
    if not records:
        return 0.0
    y = np.concatenate([np.asarray(r.activations, dtype=np.float64) for r in records])
    p = np.concatenate([np.asarray(predict(rules, r.tokens)) for r in records])
    if np.ptp(y) == 0 or np.ptp(p) == 0:
        return 0.0
    return float(np.corrcoef(y, p)[0, 1])
