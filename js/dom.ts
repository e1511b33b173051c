// Tiny DOM helpers. Every string goes in as text (textContent / setAttribute), never as HTML.

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = text;
  return el;
}

export function button(label: string, onClick: () => void, title?: string): HTMLButtonElement {
  const b = h("button", "nw-btn", label);
  b.type = "button";
  if (title) b.setAttribute("title", title);
  b.addEventListener("click", onClick);
  return b;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag: string, attrs: Record<string, string | number>): SVGElement {
  const el = document.createElementNS(SVG_NS, tag) as SVGElement;
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}
