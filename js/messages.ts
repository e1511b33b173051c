// GENERATED from neuronwidget/widgets/messages.py (python -m neuronwidget.widgets.messages > js/messages.ts);
// do not edit: change the Python types and generate again (tests/test_widgets.py checks it is up to date).
// THE protocol between the kernel and these views: the widget state payloads and every custom
// message and command, one interface per TypedDict, one union per direction.
import type { ConnectionsData } from "./connections";

export type Side = "positive" | "negative";

/** Tokens that together spell one character: tokens[i .. i+n) read as ``text``. */
export interface Group {
  i: number;
  n: number;
  text: string;
  bytes: string[];
}

/** A row of coloured tokens as shown (widgets/present.py decides it): per span (a token, or the character a run of byte tokens spells) its text, its value as printed, its 0-10 value and its colour level (-20..20, 0: none): the values as one space-separated string, the 0-10 values and levels as one character each, chr(display.json's code_zero + x) (a saved notebook writes one line per list item; these stay one line). Its tooltip is display.json's ``tooltip`` filled with them (``pos``: the span's token index, ``pos[i]`` when given, else ``i``; ``brief`` rows, whose tokens are read side by side, fill display.json's ``brief``), after ``label`` as display.json's ``labelled`` says, unless ``tips`` gives the whole tooltip (a split character, an effect). A centred row shows spans [lo, hi), around its peak, first. */
export interface Row {
  text: string[];
  value: string;
  tenth: string;
  level: string;
  pos?: number[];
  tips?: Record<string, string>;
  label?: string;
  brief?: boolean;
  lo?: number;
  hi?: number;
}

/** The colour scale: its two ends as printed, the levels of its cells, what the colours mean. */
export interface Legend {
  lo: string;
  hi: string;
  levels: number[];
  note: string;
}

/** One held-out record a card was scored on: real vs simulated. The simulated row is sent without its text (``text`` is empty): it is the real row's, token for token. */
export interface CardSeq {
  kind: string | null;
  label: string;
  real: Row;
  sim: Row | null;
  error: string | null;
}

/** A scored explanation as shown: every string decided in Python. */
export interface CardData {
  explanation: string;
  score: number | null;
  score_text: string;
  side: Side;
  side_label: string;
  sub: string;
  legend: string;
  who: string;
  note: string | null;
  summary: string;
  neuron: string | null;
  explainer: string | null;
  simulator: string | null;
  fresh: boolean;
  scale: Legend;
  seqs: CardSeq[];
}

/** What is shown about the neuron; which neuron and side are the view's traits (model, layer, neuron, side), and the strings here follow them. */
export interface Header {
  model: string;
  title: string;
  meta: string;
  is_tiny: boolean;
  n_layers: number;
  n_neurons: number;
  max: number;
  signed: boolean;
  side_note: string;
}

export interface Histogram {
  edges: number[];
  counts: number[];
  titles: string[];
  lo: string;
  hi: string;
  caption: string;
}

/** The steering slider: its values and what each means for this neuron. */
export interface Strengths {
  values: number[];
  labels: string[];
}

/** A folded section of samples: its heading; its rows come when it is opened (the ``samples`` command puts them in the view's ``_samples`` trait under ``key``). */
export interface Folded {
  key: string;
  title: string;
}

export interface NeuronData {
  header: Header;
  top_title: string;
  test_title: string;
  empty: string;
  top: Row[];
  top_total: number;
  samples: Folded[];
  hist: Histogram;
  cards: CardData[];
  explainer: string;
  simulator: string;
  legend: Legend;
  strengths: Strengths;
  connections?: ConnectionsData | null;
}

export interface TokensData {
  seqs: Row[];
  legend: Legend;
  title?: string;
}

/** One neuron in the Explorer's table for a token. */
export interface TopRow {
  layer: number;
  neuron: number;
  label: string;
  side: Side;
  activation: number;
  normalized: number;
  explanation: string | null;
  score: number | null;
  detail: string;
  score_text: string | null;
}

/** The Explorer's text as tokens, per token its top neurons and their largest normalised value (which token is selected is the ``position`` trait). */
export interface ExplorerData {
  model: string;
  is_tiny: boolean;
  tokens: string[];
  text: string[];
  level: string;
  heads: string[];
  k: number;
  tops: TopRow[][];
  peak: number[];
  rankings: Record<string, string>;
  effect: Record<string, TopRow[]>;
  effect_heads: Record<string, string>;
}

export interface SearchRow {
  model: string;
  label: string;
  layer: number;
  neuron: number;
  side: Side;
  explanation: string;
  score: number | null;
  explainer: string | null;
  source: string | null;
  score_text: string | null;
}

export interface SearchData {
  query: string;
  model: string | null;
  limit: number;
  results: SearchRow[];
  error: string | null;
}

export interface Status {
  task: string | null;
  done?: number;
  total?: number;
  message?: string;
  error?: string | null;
}

export interface MoreRequest {
  type: "more";
  start: number;
  stop: number;
}

export interface TryRequest {
  type: "try";
  text: string;
}

export interface TestRequest {
  type: "test";
  explanation: string;
}

export interface ExplainRequest {
  type: "explain";
  best_of: number;
}

export interface CancelRequest {
  type: "cancel";
}

/** The neuron zeroed at every token of the "Try your text" text: each prediction's change. */
export interface EffectRequest {
  type: "effect";
  text: string;
}

/** The rows of a folded section of samples (a ``Folded.key``), opened by the user. */
export interface SamplesRequest {
  type: "samples";
  key: string;
}

/** Continue ``prompt`` with the neuron clamped to ``strength`` × its max (× |min| below 0 on a signed neuron), and without. */
export interface SteerRequest {
  type: "steer";
  prompt: string;
  strength: number;
}

/** The loader's fallback when the shared bundle model cannot be found (any view). */
export interface BundleRequest {
  type: "bundle";
}

/** A text box or slider of the view took the keyboard (``editing``) or gave it back (any view): the kernel holds back re-sending the view's output meanwhile, since that draws the view again. */
export interface EditingRequest {
  type: "editing";
  editing: boolean;
}

export type Request = MoreRequest | TryRequest | TestRequest | ExplainRequest | CancelRequest | EffectRequest | SteerRequest | SamplesRequest | BundleRequest | EditingRequest;

/** Explorer / SearchBox: open this neuron in place (a command: the answer is an OpenReply). */
export interface OpenRequest {
  type: "open";
  layer: number;
  neuron: number;
  model?: string;
  side?: Side;
}

/** SearchBox: search the explanations for these words (results come back in ``_data``). */
export interface SearchRequest {
  type: "search";
  query: string;
}

export type OpenerRequest = OpenRequest | SearchRequest;

export interface MoreReply {
  type: "more";
  start: number;
  records: Row[];
}

export interface TryReply {
  type: "try";
  row: Row;
}

export interface TokenValue {
  token: string;
  value: number;
}

/** Per token: KL(clean ‖ zeroed) of the next-token prediction and the tokens whose probability rose / fell most; per token but the last: the next token and the change of its log-probability. */
export interface EffectReply {
  type: "effect";
  tokens: string[];
  kl: number[];
  next: string[];
  dlogp: number[];
  promoted: TokenValue[][];
  suppressed: TokenValue[][];
  row: Row;
  title: string;
  note: string;
}

export interface SteerReply {
  type: "steer";
  prompt: string;
  strength: number;
  value: number;
  plain: string;
  steered: string;
  title: string;
  note: string;
}

/** Any command's failure, as shown: what the user did and why it failed. */
export interface ErrorReply {
  type: "error";
  message: string;
}

/** A command whose result is in the view's traits (a slow task started or cancelled: ``_status`` and ``_data``; samples: ``_samples``; a search: ``_data``). */
export interface DoneReply {
  type: "done";
}

export interface BundleReply {
  type: "bundle";
  code: string;
  style: string;
}

export type Reply = MoreReply | TryReply | EffectReply | SteerReply | DoneReply | ErrorReply | BundleReply;

/** The neuron is open in place (the ``_child`` NeuronView shows it). */
export interface OpenedReply {
  type: "opened";
  layer: number;
  neuron: number;
}

export type OpenReply = OpenedReply | ErrorReply;

export type SearchReply = DoneReply | ErrorReply;
