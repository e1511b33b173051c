"""Detection and fuzzing: an explanation scored by how well a model CLASSIFIES texts with it.

The two scorers of Paulo et al. (2024), "Automatically Interpreting Millions of Features in
Large Language Models" (as EleutherAI's delphi implements them), on neurons:

* **Detection.** The judge sees the explanation and a batch of texts, and says for each
  whether the explanation applies to it (1) or not (0). Texts the neuron fires on: held-out
  top records (truth 1). Texts it does not: held-out random records on which the neuron stays
  below ``ACTIVE_FRACTION`` of its maximum activation (truth 0; random records above that are
  left out, and the note says how many).
* **Fuzzing.** Every text is a held-out top record with some tokens marked ``<<like this>>``.
  Correctly marked (truth 1): the tokens where the record's activation exceeds
  ``ACTIVE_FRACTION`` of the record's own maximum. Wrongly marked (truth 0): a *different*
  held-out top record, marked at as many tokens as its correct marking has, chosen at random
  among its tokens below that threshold. The judge says for each whether the marked tokens
  are what the explanation describes.

Score: balanced accuracy, (true-positive rate + true-negative rate) / 2, over the examples
that got an answer (0.5 = chance, 1 = perfect), with a 90% bootstrap interval (examples
resampled with replacement within each truth class). ``n_top`` counts the truth-1 examples,
``n_random`` the truth-0 ones (for fuzzing these too come from top records). Records come
from the held-out splits only: valid, then test when more are asked (never train or
calibration, which explainers read).

The judge:

* a backend with ``chat(messages, *, n=1, ...)`` (OpenAIBackend, LocalBackend, any chat
  model): ONE chat call per batch of ``batch_size`` examples (shuffled with ``seed``; batches
  sent one after the other). The answer must hold a JSON list of 0/1 (or true/false), one per
  example; a batch whose answer does not is asked again with the reason (up to
  ``max_attempts`` calls in all), then counted as failed, its examples unanswered: a failure
  is never read as 0.
* a simulator without ``chat`` (BaselineBackend, rules): its predictions stand in for the
  answers — one ``simulate`` call over all texts; detection: a text applies when its highest
  simulated value reaches ``SIMULATED_THRESHOLD`` (on the 0-10 scale); fuzzing: when the
  mean simulated value of its marked tokens does. The result says so (``via="simulator"``).
"""

from __future__ import annotations

import inspect
import json
import random
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..records import ActivationRecord, NeuronId, NeuronRecord, SIDES, _register, _Serializable, format_score
from ._common import (
    BackendError, ProgressFn, check_cancel, check_counts, check_explanation, cost_since, held_out_pools,
    usage_snapshot,
)
from .backends import resolve_simulator
from .prompts import MAX_LABEL, token_text

# A token "activates" when its activation exceeds this fraction of the maximum: of its own
# record's maximum for fuzzing marks (delphi's 0.3), of the neuron's for detection negatives.
ACTIVE_FRACTION = 0.3
# Simulator-only judges: an example "applies" when its simulated value reaches this (0-10).
SIMULATED_THRESHOLD = ACTIVE_FRACTION * MAX_LABEL
DEFAULT_BATCH_SIZE = 5
MAX_ATTEMPTS = 2  # chat calls per batch at most: the first, and one retry saying what was wrong
DEFAULT_SEED = 0
INTERVAL_LEVEL = 0.90
BOOTSTRAP_RESAMPLES = 1000
MARK_OPEN, MARK_CLOSE = "<<", ">>"
VIAS = ("auto", "chat", "simulator")


@_register
@dataclass
class ClassifiedExample(_Serializable):
    """One example as the judge saw it, its truth (1: activating / correctly marked) and the
    judge's answer (None: its batch failed)."""

    text: str
    truth: int
    answer: int | None = None
    source: str = ""  # which record, e.g. "valid top 2" (split, kind, position in the split)


@_register
@dataclass
class ClassificationScore(_Serializable):
    """The outcome of a detection or fuzzing score (neuronwidget's own type, not OpenAI's)."""

    scorer: str  # "detection" or "fuzzing"
    explanation: str
    balanced_accuracy: float | None  # None: undefined (an empty class), the note says why
    balanced_accuracy_interval: list[float] | None = None  # [low, high], 90% bootstrap
    examples: list[ClassifiedExample] = field(default_factory=list)
    neuron_id: NeuronId | None = None
    side: str = "positive"
    judge: str | None = None  # who answered: the chat model's name, or the simulator's
    via: str = "chat"  # "chat": the model's answers; "simulator": derived from simulated activations
    explainer: str | None = None
    note: str | None = None
    cost: dict[str, Any] | None = None

    _extras: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r}")

    @property
    def score(self) -> float | None:
        return self.balanced_accuracy

    @property
    def interval(self) -> tuple[float, float] | None:
        iv = self.balanced_accuracy_interval
        return (float(iv[0]), float(iv[1])) if iv else None

    @property
    def n_examples(self) -> int:
        return len(self.examples)

    @property
    def n_answered(self) -> int:
        return sum(e.answer is not None for e in self.examples)

    def formatted(self) -> str:
        return format_score(self.score, self.interval)


# ---------------------------------------------------------------- the examples


@dataclass
class _Example:
    record: ActivationRecord
    truth: int
    source: str
    marked: list[int] | None = None  # fuzzing: the marked token positions

    def text(self) -> str:
        if self.marked is None:
            return "".join(token_text(t) for t in self.record.tokens)
        marked, out = set(self.marked), []
        for i, t in enumerate(self.record.tokens):
            if i in marked and i - 1 not in marked:
                out.append(MARK_OPEN)
            out.append(token_text(t))
            if i in marked and i + 1 not in marked:
                out.append(MARK_CLOSE)
        return "".join(out)


def _sources(record: NeuronRecord) -> tuple[list[tuple[ActivationRecord, str]], list[tuple[ActivationRecord, str]]]:
    """Held-out top and random records (valid, then test), each with where it comes from."""
    top, rand = held_out_pools(record)
    n_valid_top, n_valid_rand = len(record.top_split("valid")), len(record.random_split("valid"))

    def named(records, n_valid, kind):
        return [(r, f"valid {kind} {i}" if i < n_valid else f"test {kind} {i - n_valid}") for i, r in enumerate(records)]

    return named(top, n_valid_top, "top"), named(rand, n_valid_rand, "random")


def _short(asked: int, got: int, what: str) -> str | None:
    return f"{asked} {what} were asked for, {got} exist (valid and test splits): used those" if got < asked else None


def detection_examples(record: NeuronRecord, n_top: int, n_random: int) -> tuple[list[_Example], list[str]]:
    """The detection examples (truth 1: held-out top records; truth 0: held-out random records
    below ``ACTIVE_FRACTION`` of the neuron's maximum) and notes on what was short or left out."""
    tops, rands = _sources(record)
    limit = ACTIVE_FRACTION * record.max_activation
    quiet, skipped = [], 0
    for r, src in rands:
        if len(quiet) == n_random:
            break
        if r.max_activation < limit:
            quiet.append((r, src))
        else:
            skipped += 1
    top = tops[:n_top]
    notes = [n for n in (_short(n_top, len(top), "activating (top) examples"),
                         _short(n_random, len(quiet), "non-activating (random) examples")) if n]
    if skipped:
        notes.append(f"{skipped} held-out random record(s) reach {ACTIVE_FRACTION:g} of the neuron's maximum "
                     "activation and are not used as non-activating examples")
    return [_Example(r, 1, s) for r, s in top] + [_Example(r, 0, s) for r, s in quiet], notes


def _active(record: ActivationRecord) -> list[int]:
    top = record.max_activation
    return [i for i, a in enumerate(record.activations) if top > 0 and a > ACTIVE_FRACTION * top]


def fuzzing_examples(record: NeuronRecord, n_top: int, n_random: int, seed: int = DEFAULT_SEED) -> tuple[list[_Example], list[str]]:
    """The fuzzing examples: ``n_top`` held-out top records marked at their activating tokens
    (truth 1), then ``n_random`` further ones marked at as many randomly chosen non-activating
    tokens (truth 0); notes on what was short or left out."""
    tops, _ = _sources(record)
    rng = random.Random(seed)
    usable = [(r, s, _active(r)) for r, s in tops]
    unusable = [s for r, s, act in usable if not act or len(act) == len(r.tokens)]
    usable = [u for u in usable if u[2] and len(u[2]) < len(u[0].tokens)]
    right = [_Example(r, 1, s, act) for r, s, act in usable[:n_top]]
    wrong = []
    for r, s, act in usable[len(right): len(right) + n_random]:
        others = [i for i in range(len(r.tokens)) if i not in set(act)]
        wrong.append(_Example(r, 0, s, sorted(rng.sample(others, min(len(act), len(others))))))
    notes = [n for n in (_short(n_top, len(right), "correctly marked examples"),
                         _short(n_random, len(wrong), "wrongly marked examples (top records after the correct ones)")) if n]
    if unusable and (len(right) < n_top or len(wrong) < n_random):
        notes.append(f"{len(unusable)} top record(s) have no token to mark (or every token) and are not used")
    return right + wrong, notes


# ---------------------------------------------------------------- the prompts

_SYSTEM = (
    "You help to check explanations of neurons in a language model. An explanation says what "
    "kind of text a neuron responds to. You get one explanation and a few numbered text "
    "examples, and judge each example against the explanation. Judge each example on its own. "
    "Answer with a JSON list of 0s and 1s, one per example in order, and nothing else."
)

_DETECTION_TASK = (
    "For each example: would a neuron that does what the explanation says respond somewhere in "
    "this text? Answer 1 if yes, 0 if no."
)

_FUZZING_TASK = (
    f"In every example some tokens are marked {MARK_OPEN}like this{MARK_CLOSE}; the marks claim to show where "
    "the neuron responds. For each example: are the marked tokens the ones the explanation "
    "describes? Answer 1 if the marking fits the explanation, 0 if it does not (e.g. the "
    "marked tokens are unrelated to it, or the tokens it describes are left unmarked)."
)


def classification_messages(scorer: str, explanation: str, texts: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages for one batch of examples."""
    task = _DETECTION_TASK if scorer == "detection" else _FUZZING_TASK
    lines = "\n".join(f"Example {i}: {t}" for i, t in enumerate(texts, 1))
    user = (f"Explanation: {explanation}\n\n{task}\n\n{lines}\n\n"
            f"Reply with only a JSON list of {len(texts)} numbers, each 0 or 1, e.g. "
            f"[{', '.join(['1', '0'] * 2)}{', ...' if len(texts) > 4 else ''}] — one per example, in order.")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def _retry_messages(messages: list[dict[str, str]], answer: str, reason: str, n: int) -> list[dict[str, str]]:
    return messages + [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"That answer could not be read ({reason}). Reply with only a JSON list of "
                                    f"{n} numbers, each 0 or 1, one per example, in order."},
    ]


_LIST = re.compile(r"\[[^\[\]]*\]")


def parse_answers(text: str | None, n: int) -> list[int]:
    """The 0/1 answers in ``text``: the bracketed JSON lists in it of ``n`` values, each 0, 1,
    true or false. Several such lists must agree. A ValueError says what was wrong otherwise."""
    if not text or not text.strip():
        raise ValueError("empty answer")
    found, problems = [], []
    for chunk in _LIST.findall(text):
        try:
            data = json.loads(chunk)
        except json.JSONDecodeError:
            try:  # Python-style [True, False]
                data = json.loads(chunk.lower())
            except json.JSONDecodeError:
                problems.append(f"not a JSON list: {chunk[:40]!r}")
                continue
        if not all(v in (0, 1) and not isinstance(v, float) for v in data):
            problems.append(f"values other than 0/1 in {chunk[:40]!r}")
        elif len(data) != n:
            problems.append(f"{len(data)} answers for {n} examples")
        else:
            found.append([int(v) for v in data])
    if not found:
        why = "; ".join(dict.fromkeys(problems)) if problems else "no bracketed list"
        raise ValueError(f"{why} in the answer {text.strip()[:80]!r}")
    if any(f != found[0] for f in found[1:]):
        raise ValueError(f"{len(found)} different lists of answers in {text.strip()[:80]!r}")
    return found[0]


# ---------------------------------------------------------------- scoring


def balanced_accuracy(truths: Sequence[int], answers: Sequence[int | None]) -> float | None:
    """(TPR + TNR) / 2 over the answered examples; None when a class has none."""
    pairs = [(t, a) for t, a in zip(truths, answers) if a is not None]
    pos = [a == 1 for t, a in pairs if t == 1]
    neg = [a == 0 for t, a in pairs if t == 0]
    if not pos or not neg:
        return None
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


def balanced_accuracy_interval(truths: Sequence[int], answers: Sequence[int | None], *,
                               n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = DEFAULT_SEED,
                               level: float = INTERVAL_LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap of the balanced accuracy: answered examples resampled with
    replacement within each truth class (so every resample has both). None when the score is
    undefined or neither class has two examples to vary."""
    pairs = [(t, a) for t, a in zip(truths, answers) if a is not None]
    pos = np.array([a == 1 for t, a in pairs if t == 1], dtype=float)
    neg = np.array([a == 0 for t, a in pairs if t == 0], dtype=float)
    if not pos.size or not neg.size or (pos.size < 2 and neg.size < 2):
        return None
    rng = np.random.default_rng(seed)
    tpr = rng.multinomial(pos.size, np.full(pos.size, 1 / pos.size), size=n_resamples) @ pos / pos.size
    tnr = rng.multinomial(neg.size, np.full(neg.size, 1 / neg.size), size=n_resamples) @ neg / neg.size
    tail = (1 - level) / 2 * 100
    low, high = np.percentile((tpr + tnr) / 2, [tail, 100 - tail])
    return float(low), float(high)


def _chat_kwargs(chat, n: int) -> dict[str, Any]:
    """temperature=0 and a max_tokens for the answer, where the backend's chat takes them."""
    try:
        params = inspect.signature(chat).parameters
    except (TypeError, ValueError):
        return {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    wanted = {"temperature": 0, "max_tokens": 8 * n + 60}
    return {k: v for k, v in wanted.items() if takes_any or k in params}


def _ask(backend, scorer: str, explanation: str, texts: list[str], max_attempts: int) -> tuple[list[int] | None, str | None, int]:
    """(answers, None) or (None, why the batch failed), and the number of chat calls made."""
    messages = classification_messages(scorer, explanation, texts)
    kwargs = _chat_kwargs(backend.chat, len(texts))
    calls, reason = 0, ""
    for _ in range(max_attempts):
        calls += 1
        try:
            answer = backend.chat(messages, n=1, **kwargs)[0]
        except BackendError as e:
            if not e.retryable:
                raise  # wrong key, unknown model, nothing listening: no batch can succeed
            return None, str(e), calls
        try:
            return parse_answers(answer, len(texts)), None, calls
        except ValueError as e:
            reason = str(e)
            messages = _retry_messages(messages, answer or "", reason, len(texts))
    return None, f"unreadable answer after {calls} call(s): {reason}", calls


def _resolve(backend, via: str):
    """(the backend, "chat" or "simulator"): chat where it has it, unless ``via`` says otherwise."""
    if via not in VIAS:
        raise ValueError(f"via must be one of {', '.join(map(repr, VIAS))}, got {via!r}")
    if backend is None or isinstance(backend, str) or not callable(getattr(backend, "chat", None)):
        backend = resolve_simulator(backend)  # None: the environment's; "baseline"; a Simulator
    has_chat = callable(getattr(backend, "chat", None))
    if via == "chat" and not has_chat:
        raise ValueError(f"via='chat' needs a backend with a chat(messages, *, n) method "
                         f"(OpenAIBackend, LocalBackend, ...); {type(backend).__name__} has none")
    if via == "simulator":
        return resolve_simulator(backend), "simulator"
    return backend, "chat" if has_chat else "simulator"


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _classify(scorer: str, record: NeuronRecord, explanation: str, backend, *, n_top: int, n_random: int,
              batch_size: int, max_attempts: int, seed: int, via: str, explainer: str | None,
              progress: ProgressFn | None, cancel: threading.Event | None) -> ClassificationScore:
    if not isinstance(record, NeuronRecord):
        raise ValueError(f"{scorer} needs a NeuronRecord, got {type(record).__name__}")
    explanation = check_explanation(explanation)
    n_top, n_random = check_counts(n_top, n_random)
    batch_size = _check_int("batch_size", batch_size, 1)
    max_attempts = _check_int("max_attempts", max_attempts, 1)
    seed = _check_int("seed", seed, 0)
    backend, via = _resolve(backend, via)
    if scorer == "detection":
        examples, notes = detection_examples(record, n_top, n_random)
    else:
        examples, notes = fuzzing_examples(record, n_top, n_random, seed)
    if not examples:
        raise ValueError(f"{record.neuron_id} has no held-out (valid or test split) records to build "
                         f"{scorer} examples from")
    random.Random(seed).shuffle(examples)
    texts = [e.text() for e in examples]
    answers: list[int | None] = [None] * len(examples)
    failures: dict[str, int] = {}
    snap = usage_snapshot(backend)
    calls = 0
    if via == "chat":
        starts = list(range(0, len(examples), batch_size))
        for done, start in enumerate(starts, 1):
            check_cancel(cancel)
            got, why, n_calls = _ask(backend, scorer, explanation, texts[start: start + batch_size], max_attempts)
            calls += n_calls
            if got is None:
                failures[why] = failures.get(why, 0) + 1
            else:
                answers[start: start + len(got)] = got
            if progress:
                progress(done, len(starts), f"{scorer}: asking")
        judge = getattr(backend, "name", type(backend).__name__)
    else:
        sims = backend.simulate(explanation, [list(e.record.tokens) for e in examples],
                                max_activation=record.max_activation, lookup=record, progress=progress, cancel=cancel)
        for i, (e, sim) in enumerate(zip(examples, sims)):
            if sim.failed or len(sim.expected_activations) != len(e.record.tokens):
                why = sim.error or "the simulator returned the wrong number of values"
                failures[why] = failures.get(why, 0) + 1
                continue
            values = sim.expected_activations if e.marked is None else [sim.expected_activations[j] for j in e.marked]
            level = max(values) if e.marked is None else sum(values) / len(values)
            answers[i] = int(level >= SIMULATED_THRESHOLD)
        judge = backend.simulator_name
        notes.append(f"answers derived from {judge}'s simulated activations (no chat model): an example counts as "
                     + ("matching when its highest" if scorer == "detection" else "correctly marked when the mean")
                     + f" simulated value{'' if scorer == 'detection' else ' of its marked tokens'} reaches "
                     f"{SIMULATED_THRESHOLD:g} of {MAX_LABEL}")
    cost = cost_since(backend, snap)
    if via == "chat" and cost.get("calls") is None:
        cost["calls"] = calls  # a chat backend that keeps no usage: at least the calls are known
    if failures:
        n_failed = sum(a is None for a in answers)
        what = "batch(es)" if via == "chat" else "example(s)"
        causes = "; ".join(f"{n}x {w[:160]}" for w, n in sorted(failures.items(), key=lambda kv: -kv[1])[:3])
        notes.append(f"{sum(failures.values())} {what} failed, {n_failed} of {len(examples)} examples unanswered "
                     f"and left out of the score ({causes})")
    truths = [e.truth for e in examples]
    score_ = balanced_accuracy(truths, answers)
    if score_ is None:
        notes.append("no balanced accuracy: an example class (activating or not) has no answered example")
    interval = balanced_accuracy_interval(truths, answers, seed=seed)
    if score_ is not None and interval is None:
        notes.append("no interval: too few answered examples to resample")
    return ClassificationScore(
        scorer=scorer,
        explanation=explanation,
        balanced_accuracy=score_,
        balanced_accuracy_interval=list(interval) if interval else None,
        examples=[ClassifiedExample(t, e.truth, a, e.source) for e, t, a in zip(examples, texts, answers)],
        neuron_id=record.neuron_id,
        side=record.side,
        judge=judge,
        via=via,
        explainer=explainer,
        note="; ".join(notes) or None,
        cost=cost,
    )


def detection(record: NeuronRecord, explanation: str, backend=None, *, n_top: int = 5, n_random: int = 5,
              batch_size: int = DEFAULT_BATCH_SIZE, max_attempts: int = MAX_ATTEMPTS, seed: int = DEFAULT_SEED,
              via: str = "auto", explainer: str | None = None, progress: ProgressFn | None = None,
              cancel: threading.Event | None = None) -> ClassificationScore:
    """Detection score of ``explanation`` (see the module's docstring).

    ``backend``: a chat model (one call per ``batch_size`` examples, at most ``max_attempts``
    calls per batch) or a simulator (``via="auto"`` picks chat when it has it; "chat" or
    "simulator" force one). ``seed`` fixes the order of examples (and the bootstrap)."""
    return _classify("detection", record, explanation, backend, n_top=n_top, n_random=n_random,
                     batch_size=batch_size, max_attempts=max_attempts, seed=seed, via=via, explainer=explainer,
                     progress=progress, cancel=cancel)


def fuzzing(record: NeuronRecord, explanation: str, backend=None, *, n_top: int = 5, n_random: int = 5,
            batch_size: int = DEFAULT_BATCH_SIZE, max_attempts: int = MAX_ATTEMPTS, seed: int = DEFAULT_SEED,
            via: str = "auto", explainer: str | None = None, progress: ProgressFn | None = None,
            cancel: threading.Event | None = None) -> ClassificationScore:
    """Fuzzing score of ``explanation`` (see the module's docstring; arguments as ``detection``;
    ``seed`` also picks the wrongly marked tokens)."""
    return _classify("fuzzing", record, explanation, backend, n_top=n_top, n_random=n_random,
                     batch_size=batch_size, max_attempts=max_attempts, seed=seed, via=via, explainer=explainer,
                     progress=progress, cancel=cancel)


__all__ = ["ClassificationScore", "ClassifiedExample", "detection", "fuzzing", "parse_answers",
           "balanced_accuracy", "balanced_accuracy_interval", "classification_messages"]
