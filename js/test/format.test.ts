import { describe, expect, it } from "vitest";
import { displayToken, formatActivation, tooltipText, visibleToken } from "../format";
import { toFloat32, slice } from "../buffers";

describe("token formatting", () => {
  it("makes whitespace visible", () => {
    expect(displayToken("\n")).toBe("↵");
    expect(displayToken("\t")).toBe("⇥");
    expect(displayToken("")).toBe("∅");
    expect(visibleToken(" the  cat")).toBe("·the··cat");
    expect(visibleToken(" \n")).toBe("·↵");
  });
  it("writes the exact activation and the 0-10 value in the tooltip", () => {
    const t = tooltipText(" Paris", 7, 3.14159, 4, 7);
    expect(t).toContain('"·Paris"');
    expect(t).toContain("position 7");
    expect(t).toContain("activation 3.1416");
    expect(t).toContain("7/10");
    expect(formatActivation(-0.5)).toBe("-0.5000");
  });
  it("explains partial UTF-8 tokens", () => {
    expect(tooltipText("\ufffd", 0, 0, 1, 0)).toContain("multi-byte");
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
