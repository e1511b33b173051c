// THE protocol between the kernel (neuronwidget/widgets/messages.py) and these views:
// the widget state payloads and every custom message, as one discriminated union per
// direction. tests/test_widgets.py parses this file and checks that every interface
// below has a TypedDict of the same name and fields in messages.py.
// Format rules (the parser relies on them): one `export interface` per block, one
// field per line as `name: type;` or `name?: type;`.
import type { Span } from "./buffers";
import type { ConnectionsData } from "./connections";

export type Side = "positive" | "negative";

// ---- state payloads (model.get("_data")) ----------------------------------------------

/** Tokens that together spell one character (byte-level BPE): tokens[i .. i+n) read as text. */
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

export interface Header {
  model: string;
  is_tiny: boolean;
  layer: number;
  neuron: number;
  n_layers: number;
  n_neurons: number;
  max: number;
  min: number;
  corpus: string;
  signed: boolean;
  side: Side;
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

export interface Status {
  task: string | null;
  done?: number;
  total?: number;
  message?: string;
  error?: string | null;
}

// ---- front end -> kernel ----------------------------------------------------------------

export interface GotoRequest {
  type: "goto";
  layer: number;
  neuron: number;
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

/** best_of 1: one explanation; k > 1: the best of k on held-in records, then one revision. */
export interface ExplainRequest {
  type: "explain";
  best_of: number;
}

export interface SideRequest {
  type: "side";
  side: Side;
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

/** Continue the prompt with the neuron clamped to strength × its max (× |min| below 0, signed), and without. */
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

export type Request = GotoRequest | MoreRequest | TryRequest | TestRequest | ExplainRequest | SideRequest | CancelRequest | EffectRequest | SteerRequest | BundleRequest;

// ---- kernel -> front end (the float32 activations travel in buffers[0]) -------------------

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

/** Per token: KL(clean ‖ zeroed) and the tokens whose probability rose / fell most;
 *  per token but the last: the next token and the change of its log-probability. */
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
