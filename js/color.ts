// Colour maths shared by every view. Palettes, levels and the 0-10 rule come from
// neuronwidget/widgets/display.json, the one file the Python side reads too.
import display from "../neuronwidget/widgets/display.json";

export type RGB = [number, number, number];
export type Theme = "light" | "dark";

export const THEMES: Theme[] = ["light", "dark"];
/** Below this fraction of the scale a token gets no background (reads as "zero"). */
export const MIN_VISIBLE: number = display.min_visible;
/** Colours are quantised to this many levels per side (one CSS class per level). */
export const LEVELS: number = display.levels;
const TENTHS: number = display.tenths;

export function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}

/** Map an activation onto [-1, 1] (diverging) or [0, 1] (positive-only). */
export function normalize(value: number, maxAbs: number, diverging = false): number {
  if (!(maxAbs > 0) || !Number.isFinite(value)) return 0;
  const t = value / maxAbs;
  return diverging ? clamp(t, -1, 1) : clamp(t, 0, 1);
}

/** The method's 0-10 scale: min(10, floor(10 * max(a, 0) / max_activation)). */
export function discretize(value: number, maxActivation: number): number {
  if (!(maxActivation > 0) || !Number.isFinite(value)) return 0;
  return Math.min(TENTHS, Math.floor((TENTHS * Math.max(value, 0)) / maxActivation));
}

/** Signed colour level in -LEVELS..LEVELS; 0 = no colour. */
export function level(t: number): number {
  if (!Number.isFinite(t) || Math.abs(t) < MIN_VISIBLE) return 0;
  const l = Math.max(1, Math.min(LEVELS, Math.round(Math.abs(t) * LEVELS)));
  return t > 0 ? l : -l;
}

function ramp(stops: number[][], t: number): RGB {
  const x = clamp(t, 0, 1) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i];
  const b = stops[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f)) as RGB;
}

/** Background of a signed level in a theme, or null for level 0. */
export function levelColor(l: number, theme: Theme = "light"): RGB | null {
  if (l === 0) return null;
  const pal = display.palettes[theme];
  return ramp(l > 0 ? pal.positive : pal.negative, Math.abs(l) / LEVELS);
}

/** Background for a normalized value, or null when it is too small to show. */
export function background(t: number, theme: Theme = "light"): RGB | null {
  return levelColor(level(t), theme);
}

/** CSS class of a signed level: nw-p7 (positive) / nw-n7 (negative); "" for no colour. */
export function levelClass(l: number): string {
  return l === 0 ? "" : `${l > 0 ? "nw-p" : "nw-n"}${Math.abs(l)}`;
}

/** WCAG relative luminance of an sRGB colour. */
export function luminance([r, g, b]: RGB): number {
  const lin = (c: number) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

export function contrastRatio(a: RGB, b: RGB): number {
  const la = luminance(a);
  const lb = luminance(b);
  return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
}

/** Black or white text, whichever contrasts more with the background. */
export function textColor(bg: RGB): RGB {
  const black: RGB = [0, 0, 0];
  const white: RGB = [255, 255, 255];
  return contrastRatio(bg, black) >= contrastRatio(bg, white) ? black : white;
}

export function css([r, g, b]: RGB): string {
  return `rgb(${r}, ${g}, ${b})`;
}

/** Where a theme is dark: JupyterLab's dark themes and VS Code's dark / high-contrast ones. */
export const DARK_SELECTORS = [
  'body[data-jp-theme-light="false"] .nw-root',
  "body.vscode-dark .nw-root",
  "body.vscode-high-contrast:not(.vscode-high-contrast-light) .nw-root",
];

/** The token colour rules of every level in both themes (light is the default). */
export function themeCss(): string {
  const rules: string[] = [];
  for (const theme of THEMES) {
    const scopes = theme === "light" ? [".nw-root"] : DARK_SELECTORS;
    for (let a = 1; a <= LEVELS; a++) {
      for (const l of [a, -a]) {
        const bg = levelColor(l, theme)!;
        const sel = scopes.map((s) => `${s} .${levelClass(l)}`).join(", ");
        rules.push(`${sel} { background-color: ${css(bg)}; color: ${css(textColor(bg))}; }`);
      }
    }
  }
  return rules.join("\n");
}

let installed = false;
/** Add the token colour rules to the page once (text, never HTML). */
export function installThemeCss(doc: Document = document): void {
  if (installed && doc.getElementById("nw-token-colours")) return;
  if (!doc.getElementById("nw-token-colours")) {
    const style = doc.createElement("style");
    style.id = "nw-token-colours";
    style.textContent = themeCss();
    doc.head.appendChild(style);
  }
  installed = true;
}
