// @vitest-environment jsdom
import { afterEach, describe, expect, it } from "vitest";
import widget from "../widget";
import { FakeModel, f32 } from "./fakemodel";
import type { CardData, NeuronData } from "../types";

const HOSTILE = ["<script>window.__pwned=1</script>", '" onmouseover="window.__pwned=1', "&lt;b&gt;", "javascript:window.__pwned=1", "<img src=x onerror=window.__pwned=1>"];

function mount(state: Record<string, unknown>) {
  const model = new FakeModel(state);
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = widget.render({ model, el });
  return { model, el, cleanup };
}

afterEach(() => {
  document.body.replaceChildren();
  delete (window as any).__pwned;
});

function card(explanation: string, offset: number): CardData {
  return {
    explanation, score: 0.42, top_score: 0.5, random_score: 0.1, rsquared: 0.2,
    explainer: "baseline", simulator: "baseline sim", note: null, neuron: "L1/N3", max: 4,
    seqs: [
      { kind: "top", tokens: ["a", "b"], real: [offset, 2], sim: [offset + 2, 2], sim_max: 10, error: null, score: 0.9 },
      { kind: "random", tokens: ["c", "d"], real: [offset, 2], sim: null, sim_max: 10, error: "unparseable output", score: null },
    ],
  };
}

describe("TokenView", () => {
  it("colours tokens on one scale and shows hostile strings as text", () => {
    const { el } = mount({
      _view_kind: "tokens",
      _data: { seqs: [{ tokens: [...HOSTILE, " x\n"], a: [0, 6] }], max: 2, diverging: false },
      _buf: f32([2, 1, 0, 0.5, 1.5, 0]),
    });
    const toks = Array.from(el.querySelectorAll<HTMLElement>(".nw-tok"));
    expect(toks.map((t) => t.textContent)).toEqual([...HOSTILE, " x↵"]);
    expect(el.querySelector("script, img")).toBeNull();
    expect(toks[0].style.backgroundColor).not.toBe("");
    expect(toks[2].style.backgroundColor).toBe(""); // zero: no colour
    expect(toks[0].tabIndex).toBe(0);
    expect(toks[1].dataset.tip).toContain('token ""·onmouseover="window.__pwned=1"');
    expect((window as any).__pwned).toBeUndefined();
  });
  it("shows the tooltip on hover and on keyboard focus", () => {
    const { el } = mount({ _view_kind: "tokens", _data: { seqs: [{ tokens: [" a", "b"], a: [0, 2] }], max: 1, diverging: false }, _buf: f32([0.25, 1]) });
    const [a, b] = Array.from(el.querySelectorAll<HTMLElement>(".nw-tok"));
    const tip = el.querySelector<HTMLElement>(".nw-tip")!;
    a.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toContain("activation 0.2500");
    expect(tip.textContent).toContain('"·a"');
    b.focus();
    expect(tip.textContent).toContain("activation 1.0000");
    expect(tip.textContent).toContain("10/10");
  });
});

describe("ExplanationCard", () => {
  it("shows score, legend, real vs simulated rows and failed records as failed", () => {
    const { el } = mount({ _view_kind: "card", _data: card(HOSTILE[0], 0), _buf: f32([4, 0, 10, 0]) });
    expect(el.querySelector(".nw-expl")!.textContent).toBe(HOSTILE[0]);
    expect(el.querySelector(".nw-score")!.textContent).toBe("0.42");
    expect(el.textContent).toContain("1 = perfect");
    expect(el.textContent).toContain("explainer: baseline");
    expect(el.querySelectorAll(".nw-simrec").length).toBe(2);
    expect(el.querySelector(".nw-failed .nw-error")!.textContent).toContain("unparseable output");
    expect(el.querySelector("script")).toBeNull();
  });
});

function neuronData(): NeuronData {
  const tokens = Array.from({ length: 64 }, (_, i) => ` t${i}`);
  return {
    header: { model: "tiny (random weights — not a real GPT-2)", is_tiny: true, layer: 1, neuron: 3, n_layers: 2, n_neurons: 8, max: 4, corpus: "test corpus" },
    top: [{ tokens, a: [0, 64] }],
    top_total: 3,
    random: [{ tokens: HOSTILE, a: [64, 5] }],
    quantiles: [],
    hist: { edges: [0, 1, 2, 3, 4], counts: [100, 10, 3, 1] },
    cards: [],
    explainer: "baseline: token lookup (no LLM)",
    simulator: "baseline",
  };
}

describe("NeuronView", () => {
  const acts = Array.from({ length: 69 }, (_, i) => (i === 40 ? 4 : i % 3));
  it("renders header, centred records, histogram and asks the kernel for more", () => {
    const { el, model } = mount({ _view_kind: "neuron", _data: neuronData(), _buf: f32(acts), _status: {} });
    expect(el.querySelector(".nw-model")!.textContent).toContain("tiny (random weights");
    expect(el.textContent).toContain("layer 1 · neuron 3");
    const short = el.querySelector(".nw-rec .nw-seq:not([hidden])")!;
    expect(short.textContent).toContain(" t40");
    expect(short.querySelectorAll(".nw-tok").length).toBeLessThan(64);
    expect(el.querySelectorAll(".nw-hist rect").length).toBe(4);
    expect(el.textContent).toContain("Explain with baseline");
    Array.from(el.querySelectorAll<HTMLButtonElement>("button")).find((b) => b.textContent === "more examples")!.click();
    expect(model.sent.at(-1)!.content).toEqual({ type: "more", group: "top", start: 1, stop: 11 });
    model.emit("msg:custom", { type: "more", records: [{ tokens: ["x", "y"], a: [0, 2] }] }, [f32([1, 4])]);
    expect(el.querySelectorAll(".nw-top .nw-rec").length).toBe(2);
  });
  it("navigates, tries text and tests explanations through messages", async () => {
    const { el, model } = mount({ _view_kind: "neuron", _data: neuronData(), _buf: f32(acts), _status: {} });
    const btn = (label: string) => Array.from(el.querySelectorAll<HTMLButtonElement>("button")).find((b) => b.textContent === label)!;
    btn("next ▶").click();
    expect(model.sent.at(-1)!.content).toEqual({ type: "goto", layer: 1, neuron: 4 });
    btn("◀ prev").click();
    expect(model.sent.at(-1)!.content).toEqual({ type: "goto", layer: 1, neuron: 2 });

    const input = el.querySelector<HTMLTextAreaElement>(".nw-try-input")!;
    input.value = "hello <b>world</b>";
    input.dispatchEvent(new Event("input"));
    await new Promise((r) => setTimeout(r, 350));
    const req = model.sent.at(-1)!.content;
    expect(req.type).toBe("try");
    model.emit("msg:custom", { type: "try", id: req.id, tokens: ["hello", " <b>world</b>"], a: [0, 2] }, [f32([0, 2])]);
    expect(el.querySelector(".nw-try-out")!.textContent).toBe("hello <b>world</b>");
    model.emit("msg:custom", { type: "try", id: req.id, tokens: ["\ufffd", "\ufffd"], a: [0, 2], hints: ["bytes c3 of “é”", "bytes a9 of “é”"] }, [f32([0, 2])]);
    expect(el.querySelector<HTMLElement>(".nw-try-out .nw-tok")!.dataset.tip).toContain("bytes c3 of “é”");

    el.querySelector<HTMLTextAreaElement>(".nw-test-input")!.value = HOSTILE[1];
    btn("Simulate & score").click();
    expect(model.sent.at(-1)!.content).toEqual({ type: "test", explanation: HOSTILE[1] });
    model.set("_status", { task: "scoring", done: 2, total: 10, message: "simulating 2/10" });
    expect(el.querySelector(".nw-status")!.textContent).toContain("simulating 2/10");
    btn("Cancel").click();
    expect(model.sent.at(-1)!.content).toEqual({ type: "cancel" });
    model.emit("msg:custom", { type: "card", card: card(HOSTILE[1], 0) }, [f32([4, 0, 10, 0])]);
    expect(el.querySelector(".nw-card.nw-new .nw-expl")!.textContent).toBe(HOSTILE[1]);
    expect(el.textContent).not.toContain("No explanation for this neuron yet.");
    model.set("_status", { task: null, error: "scoring failed: simulator unreachable. Check the server." });
    expect(el.querySelector(".nw-status .nw-error")!.textContent).toContain("simulator unreachable");
    expect((window as any).__pwned).toBeUndefined();
  });
  it("never renders blank: a broken state shows a message", () => {
    const { el } = mount({ _view_kind: "nope", _data: {}, _buf: f32([]) });
    expect(el.querySelector(".nw-error")!.textContent).toContain("could not draw");
  });
});
