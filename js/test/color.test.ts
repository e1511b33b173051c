import { describe, expect, it } from "vitest";
import { background, contrastRatio, discretize, luminance, normalize, textColor } from "../color";

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
  it("leaves near-zero values uncoloured and darkens with the value", () => {
    expect(background(0)).toBeNull();
    expect(background(0.01)).toBeNull();
    const lo = background(0.2)!;
    const hi = background(1)!;
    expect(luminance(hi)).toBeLessThan(luminance(lo));
    const neg = background(-1)!;
    expect(neg[2]).toBeGreaterThan(neg[0]); // blue side
  });
  it("picks text with readable contrast on every background", () => {
    expect(luminance([255, 255, 255])).toBeCloseTo(1);
    expect(luminance([0, 0, 0])).toBe(0);
    expect(textColor([255, 255, 255])).toEqual([0, 0, 0]);
    expect(textColor([0, 0, 0])).toEqual([255, 255, 255]);
    for (let i = -50; i <= 50; i++) {
      const bg = background(i / 50);
      if (!bg) continue;
      expect(contrastRatio(bg, textColor(bg))).toBeGreaterThanOrEqual(4.5);
    }
  });
});
