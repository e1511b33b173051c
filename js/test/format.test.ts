import { describe, expect, it } from "vitest";
import { displayToken, formatActivation, formatScore, tooltipText, visibleToken } from "../format";
import { toFloat32, slice } from "../buffers";

describe("token formatting", () => {
  it("makes whitespace visible", () => {
    expect(displayToken("\n")).toBe("↵");
    expect(displayToken("\t")).toBe("⇥");
    expect(displayToken("")).toBe("∅");
    expect(visibleToken(" the  cat")).toBe("·the··cat");
    expect(visibleToken(" \n")).toBe("·↵");
  });
  it("writes the activation and the 0-10 value in the tooltip", () => {
    const t = tooltipText(" Paris", 7, 3.14159, 7);
    expect(t).toBe('"·Paris" at 7: 3.14 (7/10)');
  });
});

describe("numbers as the storage supports them", () => {
  it("prints 3 significant digits at most (float16 holds about 3.3)", () => {
    expect(formatActivation(0.68896484375)).toBe("0.689"); // a float16 value: not 0.6890
    expect(formatActivation(3.14159)).toBe("3.14");
    expect(formatActivation(12.345)).toBe("12.3");
    expect(formatActivation(123.4)).toBe("123");
    expect(formatActivation(-0.5)).toBe("-0.500");
    expect(formatActivation(0)).toBe("0.000");
  });
  it("never prints a negative zero", () => {
    expect(formatActivation(-0.0001)).toBe("0.000");
    expect(formatActivation(-0)).toBe("0.000");
    expect(formatScore(-0.001)).toBe("0.00");
    expect(formatScore(-0.004)).toBe("0.00");
    expect(formatScore(-0.006)).toBe("-0.01");
    expect(formatScore(null)).toBe("undefined");
  });
  it("rounds ties of exact binary values away from zero (as Python's static HTML does)", () => {
    expect(formatActivation(1.125)).toBe("1.13");
    expect(formatActivation(-1.125)).toBe("-1.13");
    expect(formatScore(0.125)).toBe("0.13");
  });
});

describe("binary buffers", () => {
  it("decodes float32 from any buffer view, even unaligned", () => {
    const src = new Float32Array([1.5, -2, 3.25]);
    const bytes = new Uint8Array(src.byteLength + 1);
    bytes.set(new Uint8Array(src.buffer), 1);
    const view = new DataView(bytes.buffer, 1, src.byteLength);
    expect(Array.from(toFloat32(view))).toEqual([1.5, -2, 3.25]);
    expect(Array.from(slice(toFloat32(src.buffer), [1, 2]))).toEqual([-2, 3.25]);
    expect(() => toFloat32(new Uint8Array(3))).toThrow(/multiple of 4/);
  });
});
