// How tokens and numbers are written for people. Python's widgets/static_html.py writes
// the same strings (tests/test_widgets.py runs both and compares).

/** Token as shown inline: whitespace kept, control characters made visible. */
export function displayToken(tok: string): string {
  if (tok === "") return "∅";
  return tok.replace(/\r/g, "␍").replace(/\n/g, "↵").replace(/\t/g, "⇥");
}

/** Token as shown in a tooltip: every space is a visible ·, newlines ↵. */
export function visibleToken(tok: string): string {
  return displayToken(tok).replace(/ /g, "·");
}

function fixed(v: number, decimals: number): string {
  // toFixed rounds the exact binary value, ties away from zero (Python: Decimal ROUND_HALF_UP)
  const s = v.toFixed(decimals);
  return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s; // never "-0.00"
}

/** Decimals an activation is printed with: 3 significant digits at most, which is what
 *  the index's float16 storage supports (11 significant bits). */
export function activationDecimals(v: number): number {
  const a = Math.abs(v);
  return a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
}

/** An activation as printed everywhere (tooltips, legends, Python fallback). */
export function formatActivation(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return fixed(v, activationDecimals(v));
}

export function formatScore(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return "undefined";
  return fixed(s, 2);
}

/** The tooltip of one token (or of one piece of a character split over several tokens). */
export function tooltipText(tok: string, position: number, value: number, tenth: number): string {
  const line = `"${visibleToken(tok)}" at ${position}: ${formatActivation(value)} (${tenth}/10)`;
  return tok.includes("\ufffd") ? `${line}\n${SPLIT_NOTE}` : line;
}

export const SPLIT_NOTE = "� = part of a character split across tokens";
