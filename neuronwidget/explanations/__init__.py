"""Explain, simulate and score neurons: the method of "Language models can explain
neurons in language models" (OpenAI, 2023), with real LLM backends, the offline rules
explainer and the paper's token lookup.

    expl = explain(record)                       # -> list[str]
    scored = score(record, expl[0])              # -> ScoredExplanation
    neg = record.for_side("negative")            # signed neurons: either side

Modules: ``backends`` (the Explainer and Simulator protocols and the four built-in
backends), ``prompts`` (prompts and answer parsing), ``explainer`` (explain), ``simulator``
(simulate), ``scoring`` (the scores and score()), ``classify`` (the detection and fuzzing
scorers), ``improve`` (best-of-n and revision), ``batch`` (explain_neurons), ``files``
(OpenAI's format and ours), ``distributed`` (explain_neurons on Ray).
"""

from ._common import BackendError, Cancelled, ExplanationError, RetriesExhausted  # noqa: F401 (errors: importable, not in __all__)
from .backends import BaselineBackend, ChatExplainer, Explainer, LocalBackend, OpenAIBackend, RulesBackend, Simulator
from .batch import explain_neurons
from .classify import ClassificationScore, detection, fuzzing
from .explainer import explain
from .improve import ImprovedExplanation, improve_explanation
from .files import read_explanations_jsonl, write_explanations_jsonl
from .scoring import score
from .simulator import simulate

__all__ = [
    "explain",
    "simulate",
    "score",
    "explain_neurons",
    "improve_explanation",
    "ImprovedExplanation",
    "detection",
    "fuzzing",
    "ClassificationScore",
    "OpenAIBackend",
    "LocalBackend",
    "RulesBackend",
    "BaselineBackend",
    "Explainer",
    "Simulator",
    "ChatExplainer",
    "Cancelled",
    "write_explanations_jsonl",
    "read_explanations_jsonl",
]
