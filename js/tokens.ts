// Coloured token rows, their shared tooltip and the colour legend: thin templates over the
// presentation model (neuronwidget/widgets/present.py decides every string and colour level;
// the colours of the levels are js/levels.css, generated from the same rules).
import display from "../neuronwidget/widgets/display.json";
import { button, h } from "./dom";
import type { Legend, Row } from "./messages";

/** display.json's template with {name} filled from `fields` (the template is data, the same in Python). */
function fill(template: string, fields: Record<string, string | number>): string {
  return template.replace(/\{(\w+)\}/g, (_, k: string) => String(fields[k]));
}

/** A row's values as printed, 0-10 values and levels, one per span (values space-separated,
 *  the small integers one character each: chr(display.code_zero + x)). */
export function columns(row: Row): { values: string[]; tenths: number[]; levels: number[] } {
  const codes = (s: string) => Array.from(s, (c) => c.charCodeAt(0) - display.code_zero);
  return { values: row.value || row.text.length ? row.value.split(" ") : [], tenths: codes(row.tenth), levels: codes(row.level) };
}

/** Span i's tooltip: the row's own (a split character, an effect), else display.json's template. */
export function tipOf(row: Row, i: number, cols = columns(row)): string {
  const tip = row.tips?.[String(i)] ?? fill(row.brief ? display.brief : display.tooltip, { token: row.text[i], pos: row.pos?.[i] ?? i, value: cols.values[i], tenth: cols.tenths[i] });
  return row.label ? fill(display.labelled, { label: row.label, tip }) : tip;
}

/** CSS class of a signed level, as js/levels.css names it: nw-p7 / nw-n7; "" for none. */
export function levelClass(l: number): string {
  return l === 0 ? "" : `${l > 0 ? "nw-p" : "nw-n"}${Math.abs(l)}`;
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

/** A row of coloured tokens, spans [from, to) of it (all by default): text, level, tooltip. */
export function tokenRow(row: Row, from = 0, to = row.text.length): HTMLElement {
  const el = h("div", "nw-seq");
  const cols = columns(row);
  for (let i = from; i < to; i++) {
    const span = h("span", "nw-tok", row.text[i]);
    span.tabIndex = 0;
    const cls = levelClass(cols.levels[i] ?? 0);
    if (cls) span.classList.add(cls);
    const tip = tipOf(row, i, cols);
    span.dataset.tip = tip;
    span.setAttribute("aria-label", tip);
    el.appendChild(span);
  }
  return el;
}

/** A record centred on its peak (the row's window), with a toggle to the full context. */
export function centredRow(row: Row): HTMLElement {
  const n = row.text.length;
  const lo = row.lo ?? 0;
  const hi = row.hi ?? n;
  const box = h("div", "nw-rec");
  const short = tokenRow(row, lo, hi);
  if (lo > 0) short.prepend(h("span", "nw-ellipsis", "…"));
  if (hi < n) short.append(h("span", "nw-ellipsis", "…"));
  const full = tokenRow(row);
  full.hidden = true;
  const toggle = button("⤢", () => {
    full.hidden = !full.hidden;
    short.hidden = !full.hidden;
    toggle.textContent = full.hidden ? "⤢" : "⤡";
  }, `show all ${n} tokens`);
  toggle.classList.add("nw-expand");
  box.append(toggle, short, full);
  return box;
}

/** The colour legend of the shared scale (cells use the level classes: right in every theme). */
export function legend(lg: Legend): HTMLElement {
  const box = h("div", "nw-legend");
  box.appendChild(h("span", "nw-legend-label", lg.lo));
  const bar = h("span", "nw-legend-bar");
  for (const l of lg.levels) bar.appendChild(h("span", `nw-legend-cell ${levelClass(l)}`.trim()));
  box.append(bar, h("span", "nw-legend-label", lg.hi), h("span", "nw-legend-note", lg.note));
  return box;
}
