// Coloured token rows, their shared tooltip and the colour legend.
import { discretize, installThemeCss, level, levelClass } from "./color";
import { h } from "./dom";
import { displayToken, formatActivation, tooltipText } from "./format";
import type { Group } from "./messages";

export interface Scale {
  max: number; // the view's largest activation: the positive side's 10/10
  min?: number; // the view's lowest activation (<= 0): the negative side's extreme, when diverging
  diverging: boolean;
}

/** A value on the view's colour scale: [0, 1], or [-1, 1] when diverging (each side to its extreme). */
export function colourT(v: number, scale: Scale): number {
  if (!Number.isFinite(v)) return 0;
  if (v >= 0) return scale.max > 0 ? Math.min(1, v / scale.max) : 0;
  if (!scale.diverging) return 0;
  const lo = scale.min !== undefined && scale.min < 0 ? -scale.min : scale.max;
  return lo > 0 ? -Math.min(1, -v / lo) : 0;
}

/** 0-10 on the side the value is on (negative values: of the lowest activation, shown as -k). */
export function tenthOf(v: number, scale: Scale): number {
  if (v < 0 && scale.diverging) {
    const lo = scale.min !== undefined && scale.min < 0 ? -scale.min : scale.max;
    const k = discretize(-v, lo);
    return k === 0 ? 0 : -k;
  }
  return discretize(v, scale.max);
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
  groups?: Group[]; // characters split over several byte tokens, shown as one (indices into tokens)
}

function strongest(values: ArrayLike<number>, i: number, n: number): number {
  let best = values[i] ?? 0;
  for (let k = i + 1; k < i + n; k++) if (Math.abs(values[k] ?? 0) > Math.abs(best)) best = values[k] ?? 0;
  return best;
}

/** A row of coloured tokens. Values are real activations unless tenthsScale is given.
 *  Tokens that together spell one character are one span (the character); its tooltip
 *  lists each piece with its bytes and value. Data stays one value per token. */
export function tokenRow(tokens: string[], values: ArrayLike<number>, scale: Scale, opts: TokenRowOptions = {}): HTMLElement {
  installThemeCss();
  const row = h("div", "nw-seq");
  const offset = opts.offset ?? 0;
  const sim = opts.tenthsScale;
  const tenth = (v: number) => (sim ? Math.min(10, Math.round((10 * v) / sim)) : tenthOf(v, scale));
  const tOf = (v: number) => (sim ? Math.min(1, Math.max(0, v / sim)) : colourT(v, scale));
  const starts = new Map<number, Group>();
  for (const g of opts.groups ?? []) if (g.n > 1 && g.i >= 0 && g.i + g.n <= tokens.length) starts.set(g.i, g);
  for (let i = 0; i < tokens.length; ) {
    const g = starts.get(i);
    const n = g ? g.n : 1;
    const v = g ? strongest(values, i, n) : values[i] ?? 0;
    const span = h("span", "nw-tok", displayToken(g ? g.text : tokens[i]));
    span.tabIndex = 0;
    const l = level(tOf(v));
    if (l !== 0) span.classList.add(levelClass(l));
    let tip: string;
    if (g) {
      const lines = [`"${displayToken(g.text)}" = ${n} tokens (one character split into bytes):`];
      for (let k = 0; k < n; k++) {
        const vk = values[i + k] ?? 0;
        lines.push(`  bytes ${g.bytes[k] ?? "?"} at ${offset + i + k}: ${formatActivation(vk)} (${tenth(vk)}/10)`);
      }
      tip = lines.join("\n");
      span.dataset.values = Array.from({ length: n }, (_, k) => formatActivation(values[i + k] ?? 0)).join(" ");
    } else {
      tip = tooltipText(tokens[i], offset + i, v, tenth(v));
    }
    if (opts.label) tip = `${opts.label}: ${tip}`;
    span.dataset.tip = tip;
    span.setAttribute("aria-label", tip);
    span.dataset.value = formatActivation(v);
    row.appendChild(span);
    i += n;
  }
  return row;
}

/** The colour legend of the shared scale (cells use the token classes: right in every theme). */
export function legend(scale: Scale): HTMLElement {
  installThemeCss();
  const box = h("div", "nw-legend");
  const lo = scale.diverging ? (scale.min !== undefined && scale.min < 0 ? scale.min : -scale.max) : 0;
  box.appendChild(h("span", "nw-legend-label", formatActivation(lo)));
  const bar = h("span", "nw-legend-bar");
  const steps = scale.diverging ? [-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1] : [0, 0.25, 0.5, 0.75, 1];
  for (const t of steps) {
    bar.appendChild(h("span", `nw-legend-cell ${levelClass(level(t))}`));
  }
  box.appendChild(bar);
  box.appendChild(h("span", "nw-legend-label", formatActivation(scale.max)));
  box.appendChild(
    h("span", "nw-legend-note", scale.diverging ? "blue = negative, orange = positive activation" : "colour = activation (one scale for the whole view)"),
  );
  return box;
}
