"""THE protocol between the kernel and the views in js/: the widget state payloads and
every custom message, as TypedDicts. js/messages.ts declares the same shapes as one
TypeScript interface per TypedDict here (same names, same fields, same optionality);
tests/test_widgets.py parses that file and fails when the two disagree.

``parse_request`` is the kernel's one door for messages from the front end: it checks
the ``type`` and every field and raises ValueError saying what is allowed.
"""

from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

from typing_extensions import NotRequired, TypedDict

Side = Literal["positive", "negative"]
Span = tuple[int, int]  # [offset, length] into the float32 buffer (a JSON list)


# ---- state payloads --------------------------------------------------------------------------

class Group(TypedDict):
    """Tokens that together spell one character: tokens[i .. i+n) read as ``text``."""
    i: int
    n: int
    text: str
    bytes: list[str]


class Rec(TypedDict):
    tokens: list[str]
    a: Span
    g: NotRequired[list[Group]]


class CardSeq(TypedDict):
    kind: Optional[str]
    tokens: list[str]
    real: Span
    sim: Optional[Span]
    sim_max: float
    error: Optional[str]
    score: Optional[float]
    g: NotRequired[list[Group]]


class CardData(TypedDict):
    explanation: str
    score: Optional[float]
    score_text: str  # the score with its 90% interval, "0.45 (0.31–0.58)" (records.format_score)
    top_score: Optional[float]
    random_score: Optional[float]
    rsquared: Optional[float]
    explainer: Optional[str]
    simulator: Optional[str]
    note: Optional[str]
    neuron: Optional[str]
    side: Side
    max: float
    fresh: bool
    seqs: list[CardSeq]


class Header(TypedDict):
    model: str
    is_tiny: bool
    layer: int
    neuron: int
    n_layers: int
    n_neurons: int
    max: float
    min: float
    corpus: str
    signed: bool
    side: Side


class Quantile(TypedDict):
    label: str
    records: list[Rec]


class Histogram(TypedDict):
    edges: list[float]
    counts: list[int]
    caption: str


# NeuronView's weight-based connections section: its shape is js/connections.ts's ConnectionsData
# (neuronwidget.explore.connections.Connections.to_dict()), owned by the explore layer.
ConnectionsData = TypedDict("ConnectionsData", {}, total=False)


class NeuronData(TypedDict):
    header: Header
    top: list[Rec]
    top_total: int
    random: list[Rec]
    quantiles: list[Quantile]
    hist: Histogram
    cards: list[CardData]
    explainer: str
    simulator: str
    diverging: bool
    connections: NotRequired[Optional[ConnectionsData]]


class TokensData(TypedDict):
    seqs: list[Rec]
    max: float
    min: float
    diverging: bool
    title: NotRequired[str]


class Status(TypedDict):
    task: Optional[str]
    done: NotRequired[int]
    total: NotRequired[int]
    message: NotRequired[str]
    error: NotRequired[Optional[str]]


# ---- front end -> kernel ---------------------------------------------------------------------

class GotoRequest(TypedDict):
    type: Literal["goto"]
    layer: int
    neuron: int


class MoreRequest(TypedDict):
    type: Literal["more"]
    start: int
    stop: int


class TryRequest(TypedDict):
    type: Literal["try"]
    text: str
    id: int


class TestRequest(TypedDict):
    type: Literal["test"]
    explanation: str


class ExplainRequest(TypedDict):
    type: Literal["explain"]
    best_of: int  # 1: one explanation; k > 1: the best of k on held-in records, then one revision


class SideRequest(TypedDict):
    type: Literal["side"]
    side: Side


class CancelRequest(TypedDict):
    type: Literal["cancel"]


class EffectRequest(TypedDict):
    """The neuron zeroed at every token of the "Try your text" text: each prediction's change."""
    type: Literal["effect"]
    text: str
    id: int


class SteerRequest(TypedDict):
    """Continue ``prompt`` with the neuron clamped to ``strength`` × its max (× |min| below 0 on a
    signed neuron), and without."""
    type: Literal["steer"]
    prompt: str
    strength: float
    id: int


class BundleRequest(TypedDict):
    """The loader's fallback when the shared bundle model cannot be found (any view)."""
    type: Literal["bundle"]


Request = Union[GotoRequest, MoreRequest, TryRequest, TestRequest, ExplainRequest, SideRequest, CancelRequest,
                EffectRequest, SteerRequest, BundleRequest]


# ---- kernel -> front end ---------------------------------------------------------------------

class MoreReply(TypedDict):
    type: Literal["more"]
    start: int
    records: list[Rec]


class TryReply(TypedDict):
    type: Literal["try"]
    id: int
    tokens: list[str]
    a: Span
    g: NotRequired[list[Group]]


class TokenValue(TypedDict):
    token: str
    value: float


class EffectReply(TypedDict):
    """Per token: KL(clean ‖ zeroed) of the next-token prediction and the tokens whose probability
    rose / fell most; per token but the last: the next token and the change of its log-probability."""
    type: Literal["effect"]
    id: int
    tokens: list[str]
    kl: list[float]
    next: list[str]
    dlogp: list[float]
    promoted: list[list[TokenValue]]
    suppressed: list[list[TokenValue]]


class SteerReply(TypedDict):
    type: Literal["steer"]
    id: int
    prompt: str
    strength: float
    value: float  # the activation the neuron was clamped to
    plain: str
    steered: str


class ErrorReply(TypedDict):
    type: Literal["error"]
    message: str
    action: NotRequired[str]  # "steer" (beside the box, and in the status) or "effect" (in the Effect section only)


class BundleReply(TypedDict):
    type: Literal["bundle"]
    code: str
    style: str


Reply = Union[MoreReply, TryReply, EffectReply, SteerReply, ErrorReply, BundleReply]

PAYLOADS = (Group, Rec, CardSeq, CardData, Header, Quantile, Histogram, NeuronData, TokensData, Status, TokenValue)
REQUESTS: dict[str, type] = {get_args(get_type_hints(t)["type"])[0]: t for t in get_args(Request)}
REPLIES: dict[str, type] = {get_args(get_type_hints(t)["type"])[0]: t for t in get_args(Reply)}


def _check(value: Any, tp: Any, where: str) -> None:
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ValueError(f"{where} must be one of {list(get_args(tp))}, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {type(value).__name__}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
    else:  # requests carry only the kinds above
        raise TypeError(f"{where}: no check for {tp!r}")


def parse_request(content: Any) -> Request:
    """The message as the protocol types it, or ValueError naming what is allowed."""
    if not isinstance(content, dict):
        raise ValueError(f"a request must be a JSON object, got {type(content).__name__}")
    kind = content.get("type")
    if kind not in REQUESTS:
        raise ValueError(f"unknown request {kind!r}; expected one of {', '.join(REQUESTS)}")
    td = REQUESTS[kind]
    hints = get_type_hints(td)
    missing = sorted(set(td.__required_keys__) - set(content))
    extra = sorted(set(content) - set(hints))
    if missing or extra:
        raise ValueError(f"request {kind!r} needs exactly the fields {sorted(hints)}; "
                         f"missing {missing}, unexpected {extra}")
    for key, tp in hints.items():
        _check(content[key], tp, key)
    return content  # type: ignore[return-value]
