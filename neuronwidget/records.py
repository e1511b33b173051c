"""The data types every part of neuronwidget passes around.

They follow OpenAI's neuron-explainer JSON formats field for field, so their published
GPT-2 files load unchanged: every object carries a ``dataclass_name`` tag and the field
names of their dataclasses.

Two ways to write them:

* ``to_dict()`` / ``to_json()``: OpenAI's format, exactly. Only OpenAI's fields (plus the
  ``dataclass_name`` tag), so their loader (``fast_dataclasses.loads``, which calls
  ``cls(**fields)``) reads every object we write.
* ``to_dict(extras=True)`` / ``to_json(extras=True)``: OpenAI's fields plus ours (marked
  "neuronwidget extra" below, written only when set). Not OpenAI's format: it is only ever
  written inside neuronwidget's own files (see ``explanations.files``), never on its own.

Reading (``from_dict``/``from_json``/``loads``) accepts both, and ignores unknown fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
from decimal import ROUND_HALF_UP, Decimal
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, ClassVar

_REGISTRY: dict[str, type] = {}

# The two sides of a neuron: "positive" explains large activations, "negative" explains large
# -activations (the method applied to the negated neuron; signed gated-MLP neurons need both).
SIDES = ("positive", "negative")

# Split layout of the method: top records are dealt out every 4th (offsets 0..3),
# random records every 3rd (offsets 0..2).
TOP_SPLITS = ("train", "calibration", "valid", "test")
RANDOM_SPLITS = ("calibration", "valid", "test")


def _register(cls):
    _REGISTRY[cls.__name__] = cls
    return cls


class _Serializable:
    """JSON with OpenAI's ``dataclass_name`` tags. Subclasses are dataclasses."""

    # Field names that are neuronwidget extras: omitted from JSON while they hold their default.
    _extras: ClassVar[tuple[str, ...]] = ()

    def to_dict(self, extras: bool = False) -> dict[str, Any]:
        """OpenAI's fields only (``extras=False``), or with neuronwidget's extras that are set."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.metadata.get("serialize", True):
                continue
            value = getattr(self, f.name)
            if f.name in self._extras and (not extras or value == _default_of(f)):
                continue
            out[f.name] = _encode(value, extras)
        out["dataclass_name"] = type(self).__name__
        return out

    def to_json(self, extras: bool = False, **kwargs) -> str:
        return json.dumps(self.to_dict(extras), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        obj = _decode(data)
        if not isinstance(obj, cls):
            raise ValueError(
                f"expected a {cls.__name__} object, got {type(obj).__name__} "
                f"(dataclass_name={data.get('dataclass_name')!r})"
            )
        return obj

    @classmethod
    def from_json(cls, text: str | bytes):
        return cls.from_dict(json_object(text, f"a {cls.__name__}"))


def json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """``text`` parsed as one JSON object, or a ValueError saying it is not ``what``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON for {what}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object for {what}, got {type(data).__name__}")
    return data


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _encode(value: Any, extras: bool) -> Any:
    if isinstance(value, _Serializable):
        return value.to_dict(extras)
    if isinstance(value, (list, tuple)):
        return [_encode(v, extras) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v, extras) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    name = value.get("dataclass_name")
    if name is None:
        return {k: _decode(v) for k, v in value.items()}
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown dataclass_name {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: _decode(v) for k, v in value.items() if k in known}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"malformed {name}: {e}") from None


# The top-level tag of neuronwidget's own explanation files (one line per neuron and side:
# {"format": NEURONWIDGET_FORMAT, "version": 1, "side": ..., "result": <with extras>}).
NEURONWIDGET_FORMAT = "neuronwidget.explanations"


def loads(text: str | bytes) -> Any:
    """Parse any JSON written by neuronwidget or OpenAI's neuron-explainer into our types
    (a line of neuronwidget's explanation files gives its NeuronSimulationResults)."""
    data = json.loads(text)
    if isinstance(data, dict) and data.get("format") == NEURONWIDGET_FORMAT and "result" in data:
        data = data["result"]
    return _decode(data)


@_register
@dataclass
class ActivationRecord(_Serializable):
    """One text window: its tokens (as strings) and one neuron's activation on each."""

    tokens: list[str]
    activations: list[float]
    # neuronwidget, in memory only (never serialised): each token's raw bytes, when known.
    # Byte-level tokenizers split one character over several tokens, whose strings then hold
    # U+FFFD; views join such tokens back into the character they spell.
    token_bytes: list[bytes] | None = field(default=None, repr=False, compare=False,
                                            metadata={"serialize": False})

    def __post_init__(self):
        if len(self.tokens) != len(self.activations):
            raise ValueError(
                f"ActivationRecord needs one activation per token: got {len(self.tokens)} tokens "
                f"and {len(self.activations)} activations"
            )
        if self.token_bytes is not None and len(self.token_bytes) != len(self.tokens):
            raise ValueError(f"token_bytes needs one entry per token: got {len(self.token_bytes)} for {len(self.tokens)}")

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else 0.0

    @property
    def min_activation(self) -> float:
        return min(self.activations) if self.activations else 0.0

    def negated(self) -> ActivationRecord:
        """The same tokens with every activation negated (the negative side of a signed neuron)."""
        return ActivationRecord(list(self.tokens), [-a for a in self.activations], self.token_bytes)


def _as_index(value: Any, what: str, upper: int, model: str) -> int:
    # numpy integers pass (they have __index__); bools and floats do not
    if isinstance(value, bool) or not hasattr(value, "__index__") or isinstance(value, float):
        raise ValueError(f"{what} must be an integer in 0..{upper - 1} for {model}, got {value!r} ({type(value).__name__})")
    value = int(value.__index__())
    if not 0 <= value < upper:
        raise ValueError(f"{what} must be in 0..{upper - 1} for {model}, got {value}")
    return value


def check_layer_neuron(layer: Any, neuron: Any, n_layers: int, n_neurons: int, model: str) -> tuple[int, int]:
    """Validated (layer, neuron), or a ValueError naming the allowed range for ``model``."""
    return _as_index(layer, "layer", n_layers, model), _as_index(neuron, "neuron", n_neurons, model)


@_register
@dataclass(frozen=True)
class NeuronId(_Serializable):
    layer_index: int
    neuron_index: int

    def __str__(self) -> str:
        return f"L{self.layer_index}/N{self.neuron_index}"


@_register
@dataclass
class NeuronRecord(_Serializable):
    """Everything recorded about one neuron over a corpus (OpenAI's collated-activations format)."""

    neuron_id: NeuronId
    random_sample: list[ActivationRecord] = field(default_factory=list)
    random_sample_by_quantile: list[list[ActivationRecord]] | None = None
    quantile_boundaries: list[float] | None = None
    mean: float | None = math.nan
    variance: float | None = math.nan
    skewness: float | None = math.nan
    kurtosis: float | None = math.nan
    most_positive_activation_records: list[ActivationRecord] = field(default_factory=list)
    # neuronwidget extras: the windows with the lowest minimum activation (lowest first), and
    # which side this record presents ("negative" = a record made by for_side("negative")).
    most_negative_activation_records: list[ActivationRecord] = field(default_factory=list)
    side: str = "positive"
    # neuronwidget, in memory only: the name of the model it was recorded from (``lm.short_name``, what
    # ``get_engine`` loads; set by the index), so a score of it can be stored without asking
    model: str | None = field(default=None, compare=False, metadata={"serialize": False})

    _extras: ClassVar[tuple[str, ...]] = ("most_negative_activation_records", "side")

    def for_side(self, side: str) -> NeuronRecord:
        """This neuron seen from one side. "negative" is the method applied to -activation:
        the most negative windows become the top records and every activation is negated
        (random samples too). Quantile samples are binned by the positive maximum, so the
        flipped record has none."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        if side == self.side:
            return self

        def neg(records: list[ActivationRecord]) -> list[ActivationRecord]:
            return [r.negated() for r in records]

        return NeuronRecord(
            neuron_id=self.neuron_id,
            random_sample=neg(self.random_sample),
            mean=None if self.mean is None else -self.mean,
            variance=self.variance,
            skewness=None if self.skewness is None else -self.skewness,
            kurtosis=self.kurtosis,
            most_positive_activation_records=neg(self.most_negative_activation_records),
            most_negative_activation_records=neg(self.most_positive_activation_records),
            side=side,
            model=self.model,
        )

    @property
    def max_activation(self) -> float:
        """The largest activation over the top records (the 0-10 scale's 10)."""
        if not self.most_positive_activation_records:
            return 0.0
        return max(r.max_activation for r in self.most_positive_activation_records)

    def top_split(self, split: str) -> list[ActivationRecord]:
        """Top records of one split: every 4th record, offset by the split's position."""
        if split not in TOP_SPLITS:
            raise ValueError(f"top split must be one of {TOP_SPLITS}, got {split!r}")
        return self.most_positive_activation_records[TOP_SPLITS.index(split) :: len(TOP_SPLITS)]

    def random_split(self, split: str) -> list[ActivationRecord]:
        """Random records of one split: every 3rd record, offset by the split's position."""
        if split not in RANDOM_SPLITS:
            raise ValueError(f"random split must be one of {RANDOM_SPLITS}, got {split!r}")
        return self.random_sample[RANDOM_SPLITS.index(split) :: len(RANDOM_SPLITS)]


@_register
@dataclass
class SequenceSimulation(_Serializable):
    """A simulator's prediction for one record. ``activation_scale`` is "neuron_activations"
    or "simulated_normalized_activations" (0-10), as in OpenAI's format."""

    tokens: list[str]
    expected_activations: list[float]
    activation_scale: str = "simulated_normalized_activations"
    distribution_values: list[list[float]] = field(default_factory=list)
    distribution_probabilities: list[list[float]] = field(default_factory=list)
    uncalibrated_simulation: SequenceSimulation | None = None
    # neuronwidget extras: why this record could not be simulated (e.g. unparseable output);
    # a failed simulation is excluded from scoring and shown as failed, never as zeros.
    # ``retryable``: the failure may go away on a rerun (e.g. the server's retries ran out);
    # a batch run does not count a neuron with such a failure as done.
    error: str | None = None
    retryable: bool = False

    _extras: ClassVar[tuple[str, ...]] = ("error", "retryable")

    @property
    def failed(self) -> bool:
        return self.error is not None


@_register
@dataclass
class ScoredSequenceSimulation(_Serializable):
    simulation: SequenceSimulation
    true_activations: list[float]
    ev_correlation_score: float | None
    rsquared_score: float | None = None
    absolute_dev_explained_score: float | None = None
    # neuronwidget extra: "top" or "random" — which part of the scoring set this record is.
    kind: str | None = None

    _extras: ClassVar[tuple[str, ...]] = ("kind",)


@_register
@dataclass
class ScoredSimulation(_Serializable):
    """Scores pooled over all records (None = undefined, e.g. a constant prediction)."""

    scored_sequence_simulations: list[ScoredSequenceSimulation]
    ev_correlation_score: float | None = None
    rsquared_score: float | None = None
    absolute_dev_explained_score: float | None = None
    # neuronwidget extras
    random_only_score: float | None = None
    top_only_score: float | None = None
    note: str | None = None  # e.g. why a score is undefined, or how many records failed
    # [low, high]: the 90% bootstrap interval of ev_correlation_score over the scored records
    # (explanations.scoring.correlation_interval); None when it cannot be given (see the note)
    ev_correlation_interval: list[float] | None = None

    _extras: ClassVar[tuple[str, ...]] = ("random_only_score", "top_only_score", "note", "ev_correlation_interval")

    def get_preferred_score(self) -> float | None:
        return self.ev_correlation_score


@_register
@dataclass
class ScoredExplanation(_Serializable):
    explanation: str
    scored_simulation: ScoredSimulation
    # neuronwidget extras: which neuron and side it explains, who produced the explanation
    # and who simulated it
    neuron_id: NeuronId | None = None
    explainer: str | None = None
    simulator: str | None = None
    side: str = "positive"
    # neuronwidget extra: what scoring cost, {"calls", "cached", "prompt_tokens",
    # "completion_tokens"} (None values where the backend does not count them)
    cost: dict[str, Any] | None = None
    # neuronwidget extra: what finding the explanation cost (the explainer's calls, and for
    # best-of-n / revision the held-in simulations too), same keys
    explanation_cost: dict[str, Any] | None = None
    # neuronwidget extra: when it was scored (seconds since the epoch; score() sets it)
    scored_at: float | None = None

    _extras: ClassVar[tuple[str, ...]] = ("neuron_id", "explainer", "simulator", "side", "cost", "explanation_cost",
                                          "scored_at")

    def __post_init__(self):
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r}")

    @property
    def score(self) -> float | None:
        return self.scored_simulation.ev_correlation_score

    @property
    def interval(self) -> tuple[float, float] | None:
        """The score's 90% bootstrap interval (low, high), or None."""
        iv = self.scored_simulation.ev_correlation_interval
        return (float(iv[0]), float(iv[1])) if iv else None

    def formatted(self) -> str:
        """``"0.45 (0.31–0.58)"``: the score and its interval (see ``format_score``)."""
        return format_score(self.score, self.interval)

    def get_preferred_score(self) -> float | None:
        return self.score


def format_score(score: float | None, interval: Sequence[float] | None = None, digits: int = 2) -> str:
    """One score as every view writes it: ``"0.45 (0.31–0.58)"`` with its interval, ``"0.45"``
    without one, ``"undefined"`` when the score is None (or NaN)."""
    if score is None or not math.isfinite(score):
        return "undefined"
    text = _fixed(score, digits)
    if interval is not None and len(interval) == 2 and None not in interval:
        text += f" ({_fixed(interval[0], digits)}\u2013{_fixed(interval[1], digits)})"
    return text


def _fixed(v: float, digits: int) -> str:
    # as JavaScript's toFixed (the exact binary value rounded, ties away from zero), never "-0.00"
    s = str(Decimal(float(v)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
    return s[1:] if s.startswith("-") and not any(c in "123456789" for c in s) else s


@_register
@dataclass
class NeuronSimulationResults(_Serializable):
    """OpenAI's published per-neuron explanation file (one JSON object per .jsonl file)."""

    neuron_id: NeuronId
    scored_explanations: list[ScoredExplanation]


__all__ = [
    "ActivationRecord",
    "NeuronId",
    "NeuronRecord",
    "SequenceSimulation",
    "ScoredSequenceSimulation",
    "ScoredSimulation",
    "ScoredExplanation",
    "NeuronSimulationResults",
    "SIDES",
    "TOP_SPLITS",
    "RANDOM_SPLITS",
    "loads",
    "check_layer_neuron",
    "format_score",
]
