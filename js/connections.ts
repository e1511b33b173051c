// NeuronView's "Connections (from the weights)" section: input tokens, output tokens, and the
// strongest upstream / downstream neurons (click one to go there). Text only, never HTML.
import { button, h } from "./dom";
import { HEADINGS } from "./headings";

export interface TokenWeight {
  token: string;
  value: number;
  text?: string; // as shown (neuronwidget/widgets/connections.py adds them)
  tip?: string;
}

export interface NeuronWeight {
  layer: number;
  neuron: number;
  value: number;
  label?: string; // as shown
  title?: string; // what pressing it does (default: go to layer L, neuron N)
}

export interface ConnectionsData {
  family?: string;
  input_tokens?: TokenWeight[];
  input_tokens_negative?: TokenWeight[];
  output_promoted?: TokenWeight[];
  output_suppressed?: TokenWeight[];
  upstream?: NeuronWeight[];
  downstream?: NeuronWeight[];
  nearest?: NeuronWeight[]; // a latent's: the nearest latents by decoder cosine (neuron = latent index)
  definition?: string;
  error?: string;
}

function tokenList(title: string, items: TokenWeight[] | undefined): HTMLElement | null {
  if (!items || !items.length) return null;
  const box = h("div", "nw-conn-group");
  box.appendChild(h("div", "nw-conn-title", title));
  const list = h("div", "nw-conn-tokens");
  for (const t of items) {
    const chip = h("span", "nw-conn-token", t.text ?? t.token);
    if (t.tip) chip.title = t.tip;
    list.appendChild(chip);
  }
  box.appendChild(list);
  return box;
}

function neuronList(title: string, items: NeuronWeight[] | undefined, goto: (layer: number, neuron: number) => void): HTMLElement | null {
  if (!items || !items.length) return null;
  const box = h("div", "nw-conn-group");
  box.appendChild(h("div", "nw-conn-title", title));
  const list = h("div", "nw-conn-neurons");
  for (const n of items) {
    const b = button(n.label ?? `L${n.layer}/N${n.neuron}`, () => goto(n.layer, n.neuron),
      n.title ?? `go to layer ${n.layer}, neuron ${n.neuron}`);
    b.classList.add("nw-conn-neuron");
    list.appendChild(b);
  }
  box.appendChild(list);
  return box;
}

/** The section as one <details> element, or null when the payload has none. */
export function renderConnections(data: ConnectionsData | null | undefined, goto: (layer: number, neuron: number) => void): HTMLElement | null {
  if (!data) return null;
  const box = h("details", "nw-box nw-connections");
  box.open = true;
  box.appendChild(h("summary", "nw-section", HEADINGS.connections));
  if (data.error) {
    box.appendChild(h("div", "nw-note", data.error));
    return box;
  }
  const gated = data.family === "gated";
  const parts = [
    tokenList(HEADINGS.conn_input, data.input_tokens),
    gated ? tokenList(HEADINGS.conn_input_negative, data.input_tokens_negative) : null,
    tokenList(HEADINGS.conn_promoted, data.output_promoted),
    tokenList(HEADINGS.conn_suppressed, data.output_suppressed),
    neuronList(HEADINGS.conn_upstream, data.upstream, goto),
    neuronList(HEADINGS.conn_downstream, data.downstream, goto),
    neuronList(HEADINGS.conn_nearest, data.nearest, goto),
  ];
  for (const p of parts) if (p) box.appendChild(p);
  if (data.definition) box.appendChild(h("div", "nw-note nw-conn-def", data.definition));
  return box;
}

/** What NeuronView appends to its side column: [] or [the section] (one call, one payload key). */
export function connectionsSection(data: ConnectionsData | null | undefined, goto: (layer: number, neuron: number) => void): HTMLElement[] {
  const el = renderConnections(data, goto);
  return el ? [el] : [];
}
