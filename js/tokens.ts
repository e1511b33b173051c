// Coloured token rows, their shared tooltip and the colour legend.
import { background, css, discretize, normalize, textColor } from "./color";
import { h } from "./dom";
import { formatActivation, displayToken, tooltipText } from "./format";

export interface Scale {
  max: number; // the view's shared maximum (the neuron's max activation)
  diverging: boolean;
}

/** One tooltip element per view, shown on hover and on keyboard focus. */
export class Tooltip {
  readonly el: HTMLDivElement;
  constructor(private root: HTMLElement) {
    this.el = h("div", "nw-tip");
    this.el.setAttribute("role", "tooltip");
    this.el.hidden = true;
    root.appendChild(this.el);
    const show = (ev: Event) => {
      const t = (ev.target as HTMLElement | null)?.closest?.(".nw-tok") as HTMLElement | null;
      if (t && t.dataset.tip) this.show(t, t.dataset.tip);
    };
    root.addEventListener("mouseover", show);
    root.addEventListener("focusin", show);
    root.addEventListener("mouseout", () => this.hide());
    root.addEventListener("focusout", () => this.hide());
  }
  show(target: HTMLElement, text: string): void {
    this.el.textContent = text;
    this.el.hidden = false;
    const r = target.getBoundingClientRect();
    const base = this.root.getBoundingClientRect();
    this.el.style.left = `${Math.max(0, r.left - base.left)}px`;
    this.el.style.top = `${r.bottom - base.top + 4}px`;
  }
  hide(): void {
    this.el.hidden = true;
  }
}

export interface TokenRowOptions {
  offset?: number; // position of tokens[0] within its record
  label?: string; // shown in the tooltip's first line, e.g. "real" or "simulated"
  tenthsScale?: number; // values already on a 0..tenthsScale scale (simulations)
  hints?: (string | null)[]; // per-token extra tooltip line (e.g. the bytes of a split character)
}

/** A row of coloured tokens. Values are real activations unless tenthsScale is given. */
export function tokenRow(tokens: string[], values: ArrayLike<number>, scale: Scale, opts: TokenRowOptions = {}): HTMLElement {
  const row = h("div", "nw-seq");
  const offset = opts.offset ?? 0;
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i];
    const v = values[i] ?? 0;
    const max = opts.tenthsScale ?? scale.max;
    const t = normalize(v, max, scale.diverging);
    const tenth = opts.tenthsScale ? Math.min(10, Math.round((10 * v) / opts.tenthsScale)) : discretize(v, scale.max);
    const span = h("span", "nw-tok", displayToken(tok));
    span.tabIndex = 0;
    const bg = background(t);
    if (bg) {
      span.style.backgroundColor = css(bg);
      span.style.color = css(textColor(bg));
    }
    let tip = tooltipText(tok, offset + i, v, max, tenth);
    if (opts.label) tip = `${opts.label}\n${tip}`;
    const hint = opts.hints?.[i];
    if (hint) tip = `${tip}\n${hint}`;
    span.dataset.tip = tip;
    span.setAttribute("aria-label", tip);
    span.dataset.value = formatActivation(v);
    row.appendChild(span);
  }
  return row;
}

/** Gradient legend of the shared scale. */
export function legend(scale: Scale): HTMLElement {
  const box = h("div", "nw-legend");
  const lo = scale.diverging ? -scale.max : 0;
  box.appendChild(h("span", "nw-legend-label", formatActivation(lo)));
  const bar = h("span", "nw-legend-bar");
  const stops: string[] = [];
  for (let i = 0; i <= 10; i++) {
    const t = scale.diverging ? -1 + i / 5 : i / 10;
    const bg = background(t);
    stops.push(bg ? css(bg) : "transparent");
  }
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  box.appendChild(bar);
  box.appendChild(h("span", "nw-legend-label", formatActivation(scale.max)));
  box.appendChild(
    h("span", "nw-legend-note", scale.diverging ? "blue = negative, orange = positive activation" : "colour = activation (one scale for the whole view)"),
  );
  return box;
}
