// The anywidget model as the views use it (the real one comes from anywidget; tests pass a fake).
import type { Span } from "./buffers";

export type Handler = (...args: any[]) => void;

export interface Model {
  get(name: string): any;
  set?(name: string, value: unknown): void;
  save_changes?(): void;
  on(event: string, cb: Handler): void;
  off(event?: string | null, cb?: Handler | null): void;
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
}

export interface Rec {
  tokens: string[];
  a: Span;
}

export interface CardSeq {
  kind: string | null; // "top" | "random"
  tokens: string[];
  real: Span;
  sim: Span | null;
  sim_max: number; // 10 for 0-10 simulations, else the neuron's max
  error: string | null;
  score: number | null;
}

export interface CardData {
  explanation: string;
  score: number | null;
  top_score: number | null;
  random_score: number | null;
  rsquared: number | null;
  explainer: string | null;
  simulator: string | null;
  note: string | null;
  neuron: string | null;
  max: number;
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
  corpus: string;
}

export interface NeuronData {
  header: Header;
  top: Rec[];
  top_total: number;
  random: Rec[];
  quantiles: { label: string; records: Rec[] }[];
  hist: { edges: number[]; counts: number[]; caption?: string };
  cards: CardData[];
  explainer: string;
  simulator: string;
  diverging?: boolean;
  error?: string | null;
}

export interface Status {
  task: string | null;
  done?: number;
  total?: number;
  message?: string;
  error?: string | null;
}
