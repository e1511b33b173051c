import { describe, expect, it } from "vitest";
import { background, contrastRatio, discretize, level, levelClass, luminance, normalize, textColor, themeCss, THEMES } from "../color";
import display from "../../neuronwidget/widgets/display.json";
import type { RGB } from "../color";

describe("colour maths", () => {
  it("normalizes onto the shared scale", () => {
    expect(normalize(2, 4)).toBe(0.5);
    expect(normalize(-2, 4)).toBe(0);
    expect(normalize(-2, 4, true)).toBe(-0.5);
    expect(normalize(9, 4)).toBe(1);
    expect(normalize(1, 0)).toBe(0);
    expect(normalize(Number.NaN, 4)).toBe(0);
  });
  it("discretizes like the method (floor, clipped to 0..10)", () => {
    expect(discretize(4, 4)).toBe(10);
    expect(discretize(3.99, 4)).toBe(9);
    expect(discretize(-1, 4)).toBe(0);
    expect(discretize(8, 4)).toBe(10);
  });
  it("quantises to levels and leaves near-zero values uncoloured", () => {
    expect(level(0)).toBe(0);
    expect(level(0.01)).toBe(0);
    expect(level(0.02)).toBe(1);
    expect(level(1)).toBe(display.levels);
    expect(level(-1)).toBe(-display.levels);
    expect(levelClass(level(-0.5))).toBe("nw-n10");
    expect(background(0)).toBeNull();
    const neg = background(-1)!;
    expect(neg[2]).toBeGreaterThan(neg[0]); // blue side
  });
  for (const theme of THEMES) {
    it(`${theme}: the strongest activation stands out most against the page, text readable on every level`, () => {
      const page = display.page[theme] as RGB;
      let prev = 0;
      for (let l = 1; l <= display.levels; l++) {
        for (const sign of [1, -1]) {
          const bg = background((sign * l) / display.levels, theme)!;
          expect(contrastRatio(bg, textColor(bg))).toBeGreaterThanOrEqual(4.5);
        }
        const c = contrastRatio(background(l / display.levels, theme)!, page);
        expect(c).toBeGreaterThanOrEqual(prev);
        prev = c;
      }
      expect(contrastRatio(background(1, theme)!, page)).toBeGreaterThan(3 * contrastRatio(background(0.05, theme)!, page));
    });
  }
  it("writes one rule per level and theme, dark under JupyterLab's and VS Code's dark markers", () => {
    const css = themeCss();
    expect(css).toContain('body[data-jp-theme-light="false"] .nw-root .nw-p20');
    expect(css).toContain("body.vscode-dark .nw-root .nw-n1");
    expect(css.split("\n").length).toBe(2 * 2 * display.levels);
  });
  it("luminance and text colour", () => {
    expect(luminance([255, 255, 255])).toBeCloseTo(1);
    expect(luminance([0, 0, 0])).toBe(0);
    expect(textColor([255, 255, 255])).toEqual([0, 0, 0]);
    expect(textColor([0, 0, 0])).toEqual([255, 255, 255]);
  });
});
