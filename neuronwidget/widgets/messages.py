"""THE protocol between the kernel and the views in js/: the widget state payloads and
every request and reply, as TypedDicts. Every request is an anywidget command (the front end's
``invoke(name, request)``, the kernel's ``@command`` method of that name; anywidget pairs each
answer with its request): ``COMMANDS`` names them. js/messages.ts is generated from this
file (``python -m neuronwidget.widgets.messages > js/messages.ts``: one TypeScript interface
per TypedDict, one union per Union); tests/test_widgets.py fails when it is not up to date,
and tsc checks every view against it.

``parse_request`` is the kernel's one door for requests from the front end: it checks
the ``type`` and every field and raises ValueError saying what is allowed.
"""

from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

from typing_extensions import NotRequired, TypedDict

Side = Literal["positive", "negative"]


# ---- state payloads --------------------------------------------------------------------------

class Group(TypedDict):
    """Tokens that together spell one character: tokens[i .. i+n) read as ``text``."""
    i: int
    n: int
    text: str
    bytes: list[str]


class Row(TypedDict):
    """A row of coloured tokens as shown (widgets/present.py decides it): per span (a token, or
    the character a run of byte tokens spells) its text, its value as printed, its 0-10 value
    and its colour level (-20..20, 0: none): the values as one space-separated string, the 0-10
    values and levels as one character each, chr(display.json's code_zero + x) (a saved notebook
    writes one line per list item; these stay one line). Its tooltip is display.json's ``tooltip`` filled
    with them (``pos``: the span's token index, ``pos[i]`` when given, else ``i``; ``brief``
    rows, whose tokens are read side by side, fill display.json's ``brief``), after
    ``label`` as display.json's ``labelled`` says, unless ``tips`` gives the whole tooltip (a
    split character, an effect). A centred row shows spans [lo, hi), around its peak, first."""
    text: list[str]
    value: str
    tenth: str
    level: str
    pos: NotRequired[list[int]]
    tips: NotRequired[dict[str, str]]
    label: NotRequired[str]
    brief: NotRequired[bool]
    lo: NotRequired[int]
    hi: NotRequired[int]


class Legend(TypedDict):
    """The colour scale: its two ends as printed, the levels of its cells, what the colours mean."""
    lo: str
    hi: str
    levels: list[int]
    note: str


class CardSeq(TypedDict):
    """One held-out record a card was scored on: real vs simulated. The simulated row is sent
    without its text (``text`` is empty): it is the real row's, token for token."""
    kind: Optional[str]
    label: str
    real: Row
    sim: Optional[Row]
    error: Optional[str]


class CardData(TypedDict):
    """A scored explanation as shown: every string decided in Python."""
    explanation: str
    score: Optional[float]
    score_text: str
    side: Side
    side_label: str
    sub: str
    legend: str
    who: str
    note: Optional[str]
    summary: str
    neuron: Optional[str]
    explainer: Optional[str]
    simulator: Optional[str]
    fresh: bool
    scale: Legend
    seqs: list[CardSeq]


class Header(TypedDict):
    """What is shown about the neuron; which neuron and side are the view's traits (model, layer,
    neuron, side), and the strings here follow them."""
    model: str
    title: str
    meta: str
    is_tiny: bool
    n_layers: int
    n_neurons: int
    max: float
    signed: bool
    side_note: str


class Histogram(TypedDict):
    edges: list[float]
    counts: list[int]
    titles: list[str]
    lo: str
    hi: str
    caption: str


class Strengths(TypedDict):
    """The steering slider: its values and what each means for this neuron."""
    values: list[float]
    labels: list[str]


# NeuronView's weight-based connections section: its shape is js/connections.ts's ConnectionsData
# (neuronwidget.explore.connections.Connections.to_dict()), owned by the explore layer.
ConnectionsData = TypedDict("ConnectionsData", {}, total=False)


class Folded(TypedDict):
    """A folded section of samples: its heading; its rows come when it is opened (the
    ``samples`` command puts them in the view's ``_samples`` trait under ``key``)."""
    key: str
    title: str


class NeuronData(TypedDict):
    header: Header
    top_title: str
    test_title: str
    empty: str
    top: list[Row]
    top_total: int
    samples: list[Folded]  # random samples, then one per quantile
    hist: Histogram
    cards: list[CardData]
    explainer: str
    simulator: str
    legend: Legend
    strengths: Strengths
    connections: NotRequired[Optional[ConnectionsData]]


class TokensData(TypedDict):
    seqs: list[Row]
    legend: Legend
    title: NotRequired[str]


class TopRow(TypedDict):
    """One neuron in the Explorer's table for a token."""
    layer: int
    neuron: int
    label: str  # as shown
    side: Side
    activation: float
    normalized: float
    explanation: Optional[str]
    score: Optional[float]
    detail: str
    score_text: Optional[str]


class ExplorerData(TypedDict):
    """The Explorer's text as tokens, per token its top neurons and their largest normalised value
    (which token is selected is the ``position`` trait)."""
    model: str
    is_tiny: bool
    tokens: list[str]
    text: list[str]  # each token as shown
    level: str  # each token's colour level (its strongest neuron's ÷ max, on the text's scale), as Row's
    heads: list[str]  # each token's table title
    k: int
    tops: list[list[TopRow]]
    peak: list[float]
    rankings: dict[str, str]  # the "by" trait's values and their button labels
    effect: dict[str, list[TopRow]]  # by="effect": token position (as a string) -> its rows, measured when selected
    effect_heads: dict[str, str]


class SearchRow(TypedDict):
    model: str
    label: str  # as shown
    layer: int
    neuron: int
    side: Side
    explanation: str
    score: Optional[float]
    explainer: Optional[str]
    source: Optional[str]
    score_text: Optional[str]


class SearchData(TypedDict):
    query: str
    model: Optional[str]
    limit: int
    results: list[SearchRow]
    error: Optional[str]


class Status(TypedDict):
    task: Optional[str]
    done: NotRequired[int]
    total: NotRequired[int]
    message: NotRequired[str]
    error: NotRequired[Optional[str]]


# ---- front end -> kernel ---------------------------------------------------------------------

class MoreRequest(TypedDict):
    type: Literal["more"]
    start: int
    stop: int


class TryRequest(TypedDict):
    type: Literal["try"]
    text: str


class TestRequest(TypedDict):
    type: Literal["test"]
    explanation: str


class ExplainRequest(TypedDict):
    type: Literal["explain"]
    best_of: int  # 1: one explanation; k > 1: the best of k on held-in records, then one revision


class CancelRequest(TypedDict):
    type: Literal["cancel"]


class EffectRequest(TypedDict):
    """The neuron zeroed at every token of the "Try your text" text: each prediction's change."""
    type: Literal["effect"]
    text: str


class SamplesRequest(TypedDict):
    """The rows of a folded section of samples (a ``Folded.key``), opened by the user."""
    type: Literal["samples"]
    key: str


class SteerRequest(TypedDict):
    """Continue ``prompt`` with the neuron clamped to ``strength`` × its max (× |min| below 0 on a
    signed neuron), and without."""
    type: Literal["steer"]
    prompt: str
    strength: float


class BundleRequest(TypedDict):
    """The loader's fallback when the shared bundle model cannot be found (any view)."""
    type: Literal["bundle"]


class EditingRequest(TypedDict):
    """A text box or slider of the view took the keyboard (``editing``) or gave it back (any view):
    the kernel holds back re-sending the view's output meanwhile, since that draws the view again."""
    type: Literal["editing"]
    editing: bool


Request = Union[MoreRequest, TryRequest, TestRequest, ExplainRequest, CancelRequest,
                EffectRequest, SteerRequest, SamplesRequest, BundleRequest, EditingRequest]


class OpenRequest(TypedDict):
    """Explorer / SearchBox: open this neuron in place (a command: the answer is an OpenReply)."""
    type: Literal["open"]
    layer: int
    neuron: int
    model: NotRequired[str]  # SearchBox: the result's model
    side: NotRequired[Side]


class SearchRequest(TypedDict):
    """SearchBox: search the explanations for these words (results come back in ``_data``)."""
    type: Literal["search"]
    query: str


OpenerRequest = Union[OpenRequest, SearchRequest]


# ---- kernel -> front end ---------------------------------------------------------------------

class MoreReply(TypedDict):
    type: Literal["more"]
    start: int
    records: list[Row]


class TryReply(TypedDict):
    type: Literal["try"]
    row: Row


class TokenValue(TypedDict):
    token: str
    value: float


class EffectReply(TypedDict):
    """Per token: KL(clean ‖ zeroed) of the next-token prediction and the tokens whose probability
    rose / fell most; per token but the last: the next token and the change of its log-probability."""
    type: Literal["effect"]
    tokens: list[str]
    kl: list[float]
    next: list[str]
    dlogp: list[float]
    promoted: list[list[TokenValue]]
    suppressed: list[list[TokenValue]]
    row: Row  # as shown: coloured by KL, each tooltip what the token's prediction gained and lost
    title: str
    note: str


class SteerReply(TypedDict):
    type: Literal["steer"]
    prompt: str
    strength: float
    value: float  # the activation the neuron was clamped to
    plain: str
    steered: str
    title: str
    note: str


class ErrorReply(TypedDict):
    """Any command's failure, as shown: what the user did and why it failed."""
    type: Literal["error"]
    message: str


class DoneReply(TypedDict):
    """A command whose result is in the view's traits (a slow task started or cancelled: ``_status``
    and ``_data``; samples: ``_samples``; a search: ``_data``)."""
    type: Literal["done"]


class BundleReply(TypedDict):
    type: Literal["bundle"]
    code: str
    style: str


Reply = Union[MoreReply, TryReply, EffectReply, SteerReply, DoneReply, ErrorReply, BundleReply]


class OpenedReply(TypedDict):
    """The neuron is open in place (the ``_child`` NeuronView shows it)."""
    type: Literal["opened"]
    layer: int
    neuron: int


OpenReply = Union[OpenedReply, ErrorReply]
SearchReply = Union[DoneReply, ErrorReply]

PAYLOADS = (Group, Row, Legend, CardSeq, CardData, Header, Histogram, Strengths, Folded, NeuronData, TokensData,
            Status, TokenValue, TopRow, ExplorerData, SearchRow, SearchData)


def _by_type(union: Any) -> dict[str, type]:
    return {get_args(get_type_hints(t)["type"])[0]: t for t in get_args(union)}


REQUESTS: dict[str, type] = _by_type(Request)  # NeuronView's (and any view's "bundle")
OPENER_REQUESTS: dict[str, type] = _by_type(OpenerRequest)  # Explorer's and SearchBox's


def command_name(kind: str) -> str:
    """The anywidget command that answers requests of type ``kind`` ("more" -> "more_request")."""
    return f"{kind}_request"
REPLIES: dict[str, type] = _by_type(Reply)


def _check(value: Any, tp: Any, where: str) -> None:
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ValueError(f"{where} must be one of {list(get_args(tp))}, got {value!r}")
    elif tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
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


def _required(tp: Any) -> Any:
    """NotRequired[X] -> X (get_type_hints keeps the wrapper on some Pythons)."""
    return get_args(tp)[0] if getattr(tp, "__origin__", None) is NotRequired else tp


def parse_request(content: Any, requests: dict[str, type] = REQUESTS) -> Any:
    """The message as the protocol types it (one of ``requests``: NeuronView's by default), or
    ValueError naming what is allowed."""
    if not isinstance(content, dict):
        raise ValueError(f"a request must be a JSON object, got {type(content).__name__}")
    kind = content.get("type")
    if kind not in requests:
        raise ValueError(f"unknown request {kind!r}; expected one of {', '.join(requests)}")
    td = requests[kind]
    hints = get_type_hints(td)
    missing = sorted(set(td.__required_keys__) - set(content))
    extra = sorted(set(content) - set(hints))
    if missing or extra:
        raise ValueError(f"request {kind!r} needs exactly the fields {sorted(hints)}; "
                         f"missing {missing}, unexpected {extra}")
    for key, tp in hints.items():
        if key in content:
            _check(content[key], _required(tp), key)
    return content  # type: ignore[return-value]


# ---- js/messages.ts, generated from the types above -------------------------------------------

_TS_HEAD = """\
// GENERATED from neuronwidget/widgets/messages.py (python -m neuronwidget.widgets.messages > js/messages.ts);
// do not edit: change the Python types and generate again (tests/test_widgets.py checks it is up to date).
// THE protocol between the kernel and these views: the widget state payloads and every custom
// message and command, one interface per TypedDict, one union per direction.
import type { ConnectionsData } from "./connections";
"""
_TS_NAMED = {"Side": Side}  # aliases written by name


def _ts(tp: Any) -> str:
    for name, alias in _TS_NAMED.items():
        if tp == alias:
            return name
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " | ".join(f'"{a}"' for a in args)
    if origin is Union:
        rest = [a for a in args if a is not type(None)]
        return " | ".join(_ts(a) for a in rest) + (" | null" if len(rest) < len(args) else "")
    if origin is list:
        inner = _ts(args[0])
        return f"({inner})[]" if "|" in inner else f"{inner}[]"
    if origin is dict:
        return f"Record<{_ts(args[0])}, {_ts(args[1])}>"
    if origin is NotRequired:
        return _ts(args[0])
    basic = {int: "number", float: "number", str: "string", bool: "boolean"}
    return basic[tp] if tp in basic else tp.__name__


def _doc(obj: Any) -> list[str]:
    doc = (obj.__doc__ or "").strip()
    if not doc or doc.startswith(obj.__name__ + "("):  # TypedDict's default docstring
        return []
    lines = [" ".join(part.split()) for part in doc.split("\n\n")]
    return ["/** " + " ".join(lines) + " */"]


def typescript() -> str:
    """js/messages.ts: every TypedDict of this module as an interface, every Union of them as a
    type, Side as a string union, in the order they are defined here."""
    out = [_TS_HEAD, "export type Side = " + " | ".join(f'"{a}"' for a in get_args(Side)) + ";", ""]
    for name, obj in list(globals().items()):
        if isinstance(obj, type) and issubclass(obj, dict) and obj.__module__ == __name__ and name != "ConnectionsData":
            hints = get_type_hints(obj)
            out += _doc(obj) + [f"export interface {name} {{"]
            for key, tp in hints.items():
                opt = "?" if key in obj.__optional_keys__ else ""
                out.append(f"  {key}{opt}: {_ts(tp)};")
            out += ["}", ""]
        elif get_origin(obj) is Union and all(isinstance(a, type) and issubclass(a, dict) for a in get_args(obj)):
            out += [f"export type {name} = {' | '.join(a.__name__ for a in get_args(obj))};", ""]
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(typescript())
