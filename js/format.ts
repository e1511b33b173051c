// How tokens and numbers are written for people.

/** Token as shown inline: whitespace kept, control characters made visible. */
export function displayToken(tok: string): string {
  if (tok === "") return "∅";
  return tok.replace(/\r/g, "␍").replace(/\n/g, "↵").replace(/\t/g, "⇥");
}

/** Token as shown in a tooltip: every space is a visible ·, newlines ↵. */
export function visibleToken(tok: string): string {
  return displayToken(tok).replace(/ /g, "·");
}

/** Exact activation, as printed everywhere (tooltips, Python fallback). */
export function formatActivation(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return v.toFixed(4);
}

export function formatScore(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return "n/a";
  return s.toFixed(2);
}

export function tooltipText(tok: string, position: number, value: number, maxActivation: number, tenth: number): string {
  const lines = [`token "${visibleToken(tok)}"`, `position ${position}`, `activation ${formatActivation(value)}`, `scaled ${tenth}/10 (max ${formatActivation(maxActivation)})`];
  if (tok.includes("\ufffd")) lines.push("� = part of a multi-byte character split across tokens");
  return lines.join("\n");
}
