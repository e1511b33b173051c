// Colour maths shared by every view: one scale per view, colour-blind-safe palettes,
// text colour chosen by contrast against the computed background.

export type RGB = [number, number, number];

// Single-hue orange ramp (sequential) and a blue ramp for the negative side (diverging).
const ORANGE: RGB[] = [
  [254, 240, 222], [253, 208, 162], [253, 174, 107], [241, 105, 19], [196, 70, 6], [127, 39, 4],
];
const BLUE: RGB[] = [
  [226, 238, 249], [190, 215, 236], [134, 182, 218], [66, 139, 196], [26, 96, 164], [8, 58, 120],
];

/** Below this fraction of the scale a token gets no background (reads as "zero"). */
export const MIN_VISIBLE = 0.02;

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
  return Math.min(10, Math.floor((10 * Math.max(value, 0)) / maxActivation));
}

function ramp(stops: RGB[], t: number): RGB {
  const x = clamp(t, 0, 1) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i];
  const b = stops[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f)) as RGB;
}

/** Background for a normalized value, or null when it is too small to show. */
export function background(t: number): RGB | null {
  if (Math.abs(t) < MIN_VISIBLE) return null;
  return t > 0 ? ramp(ORANGE, t) : ramp(BLUE, -t);
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
