// GENERATED from neuronwidget/widgets/messages.py (python -m neuronwidget.widgets.messages > js/messages.ts);
// do not edit: change the Python types and generate again (tests/test_widgets.py checks it is up to date).
// THE protocol between the kernel and these views: the widget state payloads and every custom
// message and command, one interface per TypedDict, one union per direction.
import type { Span } from "./buffers";
import type { ConnectionsData } from "./connections";

export type Side = "positive" | "negative";

/** Tokens that together spell one character: tokens[i .. i+n) read as ``text``. */
export interface Group {
  i: number;
  n: number;
  text: string;
  bytes: string[];
}

export interface Rec {
  tokens: string[];
  a: Span;
  g?: Group[];
}

export interface CardSeq {
  kind: string | null;
  tokens: string[];
  real: Span;
  sim: Span | null;
  sim_max: number;
  error: string | null;
  score: number | null;
  g?: Group[];
}

export interface CardData {
  explanation: string;
  score: number | null;
  score_text: string;
  top_score: number | null;
  random_score: number | null;
  rsquared: number | null;
  explainer: string | null;
  simulator: string | null;
  note: string | null;
  neuron: string | null;
  side: Side;
  max: number;
  fresh: boolean;
  seqs: CardSeq[];
}

/** What is shown about the neuron; which neuron and side are the view's traits (model, layer, neuron, side), not payload. */
export interface Header {
  model: string;
  is_tiny: boolean;
  n_layers: number;
  n_neurons: number;
  max: number;
  min: number;
  corpus: string;
  signed: boolean;
}

export interface Quantile {
  label: string;
  records: Rec[];
}

export interface Histogram {
  edges: number[];
  counts: number[];
  caption: string;
}

export interface NeuronData {
  header: Header;
  top: Rec[];
  top_total: number;
  random: Rec[];
  quantiles: Quantile[];
  hist: Histogram;
  cards: CardData[];
  explainer: string;
  simulator: string;
  diverging: boolean;
  connections?: ConnectionsData | null;
}

export interface TokensData {
  seqs: Rec[];
  max: number;
  min: number;
  diverging: boolean;
  title?: string;
}

/** One neuron in the Explorer's table for a token. */
export interface TopRow {
  layer: number;
  neuron: number;
  side: Side;
  activation: number;
  normalized: number;
  explanation: string | null;
  score: number | null;
}

/** The Explorer's text as tokens, per token its top neurons and their largest normalised value (which token is selected is the ``position`` trait). */
export interface ExplorerData {
  model: string;
  is_tiny: boolean;
  tokens: string[];
  k: number;
  tops: TopRow[][];
  peak: number[];
}

export interface SearchRow {
  model: string;
  layer: number;
  neuron: number;
  side: Side;
  explanation: string;
  score: number | null;
  explainer: string | null;
  source: string | null;
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
  id: number;
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
  id: number;
}

/** Continue ``prompt`` with the neuron clamped to ``strength`` × its max (× |min| below 0 on a signed neuron), and without. */
export interface SteerRequest {
  type: "steer";
  prompt: string;
  strength: number;
  id: number;
}

/** The loader's fallback when the shared bundle model cannot be found (any view). */
export interface BundleRequest {
  type: "bundle";
}

export type Request = MoreRequest | TryRequest | TestRequest | ExplainRequest | CancelRequest | EffectRequest | SteerRequest | BundleRequest;

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
  records: Rec[];
}

export interface TryReply {
  type: "try";
  id: number;
  tokens: string[];
  a: Span;
  g?: Group[];
}

export interface TokenValue {
  token: string;
  value: number;
}

/** Per token: KL(clean ‖ zeroed) of the next-token prediction and the tokens whose probability rose / fell most; per token but the last: the next token and the change of its log-probability. */
export interface EffectReply {
  type: "effect";
  id: number;
  tokens: string[];
  kl: number[];
  next: string[];
  dlogp: number[];
  promoted: TokenValue[][];
  suppressed: TokenValue[][];
}

export interface SteerReply {
  type: "steer";
  id: number;
  prompt: string;
  strength: number;
  value: number;
  plain: string;
  steered: string;
}

export interface ErrorReply {
  type: "error";
  message: string;
  action?: string;
}

export interface BundleReply {
  type: "bundle";
  code: string;
  style: string;
}

export type Reply = MoreReply | TryReply | EffectReply | SteerReply | ErrorReply | BundleReply;

/** The neuron is open in place (the ``_child`` NeuronView shows it). */
export interface OpenedReply {
  type: "opened";
  layer: number;
  neuron: number;
}

export type OpenReply = OpenedReply | ErrorReply;
