// Activation histogram (over all corpus tokens unless a caption says otherwise): plain SVG, log-scaled counts.
import { h, svg } from "./dom";
import type { Histogram } from "./messages";

const ALL_TOKENS = "activation over all corpus tokens (count, log scale)";

/** Bars laid out from the edges and counts; every string (bar titles, ends) from the payload. */
export function histogram(hist: Histogram, maxActivation: number): HTMLElement {
  const { edges, counts } = hist;
  const caption = hist.caption || ALL_TOKENS;
  const box = h("div", "nw-hist");
  if (!counts.length || edges.length !== counts.length + 1) {
    box.appendChild(h("div", "nw-note", "no histogram for this neuron"));
    return box;
  }
  const W = 320;
  const H = 80;
  const top = Math.max(...counts.map((c) => Math.log10(1 + c)), 1e-9);
  const lo = edges[0];
  const span = edges[edges.length - 1] - lo || 1;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H + 14}`, width: W, height: H + 14, role: "img" });
  root.setAttribute("aria-label", `histogram: ${caption}`);
  counts.forEach((c, i) => {
    const x0 = ((edges[i] - lo) / span) * W;
    const x1 = ((edges[i + 1] - lo) / span) * W;
    const hh = (Math.log10(1 + c) / top) * H;
    const bar = svg("rect", { x: x0, y: H - hh, width: Math.max(0.5, x1 - x0 - 0.3), height: hh, class: "nw-hist-bar" });
    const t = svg("title", {});
    t.textContent = hist.titles[i] ?? "";
    bar.appendChild(t);
    root.appendChild(bar);
  });
  if (maxActivation > lo) {
    const x = ((maxActivation - lo) / span) * W;
    root.appendChild(svg("line", { x1: x, x2: x, y1: 0, y2: H, class: "nw-hist-max" }));
  }
  const l = svg("text", { x: 0, y: H + 12, class: "nw-hist-text" });
  l.textContent = hist.lo;
  const r = svg("text", { x: W, y: H + 12, "text-anchor": "end", class: "nw-hist-text" });
  r.textContent = hist.hi;
  root.appendChild(l);
  root.appendChild(r);
  box.appendChild(root);
  box.appendChild(h("div", "nw-caption", caption));
  return box;
}
