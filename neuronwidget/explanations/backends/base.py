"""The two backend roles, as protocols: an ``Explainer`` writes explanations of a neuron from
its records, a ``Simulator`` predicts activations from an explanation alone.

A backend is any object with these members; one class may play both roles (the three
built-in backends do). ``explain()``, ``score()``, ``simulate()`` and ``explain_neurons()``
call only these members, so a new backend is one new class, with no edits anywhere else::

    class MyBackend:
        name = "mine"
        cheap = False                       # True: free and fast (no LLM calls)
        simulator_name = "mine (rule-based)"
        def explain(self, record, *, n=1, cancel=None): ...              # -> list[str]
        def simulate(self, explanation, token_lists, *, max_activation,  # -> list[SequenceSimulation]
                     lookup=None, progress=None, cancel=None): ...

Optional: ``revise(record, explanation, evidence, *, cancel=None) -> list[str]``, the paper's
revision step (``improve.improve_explanation`` calls it with held-in (record, simulation)
pairs the explanation got most wrong); every ``ChatExplainer`` has it.
``wants_gpu = True`` asks ``explain_neurons(distributed="ray")`` to give each of its
workers a GPU (LocalBackend says so: it runs a model of its own). A backend sent to Ray
workers is pickled: keep secrets out of its pickled state (see OpenAIBackend.__getstate__).

``ChatExplainer`` is the explainer of every chat model: the explainer prompt, the model's
answers parsed; a class with a ``chat(messages, *, n)`` method gets it by inheriting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ...records import ActivationRecord, NeuronRecord, SequenceSimulation
from .._common import ExplanationError, check_cancel
from ..prompts import explainer_messages, parse_explanation, revision_messages

ProgressFn = Callable[[int, int, str], None]

# How many train-split top records the explainer sees (the paper's 5).
N_EXPLAINER_RECORDS = 5


@runtime_checkable
class Explainer(Protocol):
    """Writes explanations of one neuron (either side: the record says which)."""

    name: str  # who explains, as shown on cards and in files (never holds a secret)
    cheap: bool  # True when a call is free and fast (no LLM): callers may run it on many neurons

    def explain(self, record: NeuronRecord, *, n: int = 1,
                cancel: threading.Event | None = None) -> list[str]:
        """Up to ``n`` distinct explanations (non-empty strings) of ``record``'s top records;
        ``ExplanationError`` when nothing usable came back."""
        ...


@runtime_checkable
class Simulator(Protocol):
    """Predicts a neuron's activations on tokens, 0-10, from an explanation alone."""

    name: str
    cheap: bool
    simulator_name: str  # who simulated and how, e.g. "openai: gpt-4.1-mini (JSON)"

    def simulate(self, explanation: str, token_lists: Sequence[Sequence[str]], *, max_activation: float,
                 lookup: NeuronRecord | dict[str, float] | None = None, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> list[SequenceSimulation]:
        """One SequenceSimulation per token list, in order. A record that cannot be simulated
        is returned with ``error`` set (``retryable=True`` if a rerun may fix it); an error no
        record can get past (wrong key, nothing listening) is raised as a ``BackendError``.
        ``lookup`` and ``max_activation`` are for simulators that read the neuron's own
        non-scoring records (the token lookup); LLM simulators ignore them."""
        ...


class ChatExplainer:
    """``Explainer.explain`` for any class with ``chat(messages, *, n) -> list[str]``."""

    name: str
    cheap = False

    def chat(self, messages: list[dict[str, str]], *, n: int = 1) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def explain(self, record: NeuronRecord, *, n: int = 1, cancel: threading.Event | None = None) -> list[str]:
        records = record.top_split("train")[:N_EXPLAINER_RECORDS]
        answers = self.chat(explainer_messages(records, record.max_activation), n=n)
        return self._parsed(answers, record, cancel)

    def revise(self, record: NeuronRecord, explanation: str,
               evidence: Sequence[tuple[ActivationRecord, SequenceSimulation]], *,
               cancel: threading.Event | None = None) -> list[str]:
        """A revised explanation, from held-in records where ``explanation``'s simulation
        disagreed most with the truth (``evidence``: (record, simulation) pairs)."""
        shown = [(r, s.expected_activations) for r, s in evidence if not s.failed]
        answers = self.chat(revision_messages(explanation, shown, record.max_activation), n=1)
        return self._parsed(answers, record, cancel)

    def _parsed(self, answers: list[str], record: NeuronRecord, cancel: threading.Event | None) -> list[str]:
        check_cancel(cancel)
        out: list[str] = []
        for a in answers:
            p = parse_explanation(a)
            if p is not None and p not in out:
                out.append(p)
        if not out:
            shown = "; ".join(repr((a or "")[:80]) for a in answers)
            raise ExplanationError(
                f"{self.name} gave no usable explanation for {record.neuron_id} "
                f"(empty or refused answers: {shown})"
            )
        return out
