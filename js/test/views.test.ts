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
  const props = { model, el, signal: new AbortController().signal, host: {} as any, experimental: {} as any };
  const cleanup = widget.render(props);
  return { model, el, cleanup };
}

afterEach(() => {
  document.body.replaceChildren();
  delete (window as any).__pwned;
});

function card(explanation: string, offset: number): CardData {
  return {
    explanation, score: 0.42, score_text: "0.42 (0.31–0.58)", top_score: 0.5, random_score: 0.1, rsquared: 0.2,
    explainer: "baseline", simulator: "baseline sim", note: null, neuron: "L1/N3", side: "positive", max: 4, fresh: true,
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
      _data: { seqs: [{ tokens: [...HOSTILE, " x\n"], a: [0, 6] }], max: 2, min: 0, diverging: false },
      _buf: f32([2, 1, 0, 0.5, 1.5, 0]),
    });
    const toks = Array.from(el.querySelectorAll<HTMLElement>(".nw-tok"));
    expect(toks.map((t) => t.textContent)).toEqual([...HOSTILE, " x↵"]);
    expect(el.querySelector("script, img")).toBeNull();
    expect(toks[0].className).toContain("nw-p20");
    expect(toks[2].className).toBe("nw-tok"); // zero: no colour
    expect(toks[0].tabIndex).toBe(0);
    expect(toks[1].dataset.tip).toContain('""·onmouseover="window.__pwned=1" at 1: 1.00');
    expect((window as any).__pwned).toBeUndefined();
  });
  it("shows the tooltip on hover and on keyboard focus", () => {
    const { el } = mount({ _view_kind: "tokens", _data: { seqs: [{ tokens: [" a", "b"], a: [0, 2] }], max: 1, min: 0, diverging: false }, _buf: f32([0.25, 1]) });
    const [a, b] = Array.from(el.querySelectorAll<HTMLElement>(".nw-tok"));
    const tip = el.querySelector<HTMLElement>(".nw-tip")!;
    a.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toBe('"·a" at 0: 0.250 (2/10)');
    b.focus();
    expect(tip.textContent).toBe('"b" at 1: 1.00 (10/10)');
  });
});

describe("ExplanationCard", () => {
  it("shows score, legend, real vs simulated rows and failed records as failed", () => {
    const { el } = mount({ _view_kind: "card", _data: card(HOSTILE[0], 0), _buf: f32([4, 0, 10, 0]) });
    expect(el.querySelector(".nw-expl")!.textContent).toBe(HOSTILE[0]);
    expect(el.querySelector(".nw-score")!.textContent).toBe("0.42 (0.31–0.58)");
    expect(el.textContent).toContain("1 = perfect");
    expect(el.textContent).toContain("explainer: baseline");
    expect(el.querySelector(".nw-card-side")!.textContent).toContain("positive side");
    expect(el.querySelectorAll(".nw-simrec").length).toBe(2);
    expect(el.querySelector(".nw-failed .nw-error")!.textContent).toContain("unparseable output");
    expect(el.querySelector("script")).toBeNull();
  });
});

/** The view's traits: which neuron and side it shows. */
const AT = { model: "tiny", layer: 1, neuron: 3, side: "positive" };

function neuronData(): NeuronData {
  const tokens = Array.from({ length: 64 }, (_, i) => ` t${i}`);
  return {
    header: { model: "tiny (random weights — not a real GPT-2)", is_tiny: true, n_layers: 2, n_neurons: 8, max: 4, min: 0, corpus: "test corpus", signed: false },
    top: [{ tokens, a: [0, 64] }],
    top_total: 3,
    random: [{ tokens: HOSTILE, a: [64, 5] }],
    quantiles: [],
    hist: { edges: [0, 1, 2, 3, 4], counts: [100, 10, 3, 1], caption: "all tokens" },
    cards: [],
    explainer: "baseline: token lookup (no LLM)",
    simulator: "baseline",
    diverging: false,
  };
}

describe("NeuronView", () => {
  const acts = Array.from({ length: 69 }, (_, i) => (i === 40 ? 4 : i % 3));
  it("renders header, centred records, histogram and asks the kernel for more", () => {
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: neuronData(), _buf: f32(acts), _status: {} });
    expect(el.querySelector(".nw-model")!.textContent).toContain("tiny (random weights");
    expect(el.textContent).toContain("layer 1 · neuron 3");
    const short = el.querySelector(".nw-rec .nw-seq:not([hidden])")!;
    expect(short.textContent).toContain(" t40");
    expect(short.querySelectorAll(".nw-tok").length).toBeLessThan(64);
    expect(el.querySelectorAll(".nw-hist rect").length).toBe(4);
    expect(el.textContent).toContain("Explain with baseline");
    Array.from(el.querySelectorAll<HTMLButtonElement>("button")).find((b) => b.textContent === "more examples")!.click();
    expect(model.sent.at(-1)!.content).toEqual({ type: "more", start: 1, stop: 11 });
    model.emit("msg:custom", { type: "more", records: [{ tokens: ["x", "y"], a: [0, 2] }] }, [f32([1, 4])]);
    expect(el.querySelectorAll(".nw-top .nw-rec").length).toBe(2);
  });
  it("navigates, tries text and tests explanations through messages", async () => {
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: neuronData(), _buf: f32(acts), _status: {} });
    const btn = (label: string) => Array.from(el.querySelectorAll<HTMLButtonElement>("button")).find((b) => b.textContent === label)!;
    btn("next ▶").click(); // navigation sets the traits; the kernel answers with the new _data
    expect(model.saved.at(-1)).toEqual({ layer: 1, neuron: 4 });
    model.set("neuron", 3);
    btn("◀ prev").click();
    expect(model.saved.at(-1)).toEqual({ layer: 1, neuron: 2 });
    model.state.neuron = 3; // the kernel puts it back (say, the neuron could not be opened)
    expect(model.sent.filter((m) => m.content.type === "goto")).toEqual([]);

    const input = el.querySelector<HTMLTextAreaElement>(".nw-try-input")!;
    input.value = "hello <b>world</b>";
    input.dispatchEvent(new Event("input"));
    await new Promise((r) => setTimeout(r, 350));
    const req = model.sent.filter((m) => m.content.type === "try").at(-1)!.content;
    expect(model.sent.at(-1)!.content).toEqual({ type: "effect", text: "hello <b>world</b>", id: req.id }); // same text, same id
    model.emit("msg:custom", { type: "try", id: req.id, tokens: ["hello", " <b>world</b>"], a: [0, 2] }, [f32([0, 2])]);
    expect(el.querySelector(".nw-try-out")!.textContent).toBe("hello <b>world</b>");
    // a character split over byte tokens reads as the character; hover lists each piece
    model.emit("msg:custom", { type: "try", id: req.id, tokens: ["caf", "\ufffd", "\ufffd"], a: [0, 3], g: [{ i: 1, n: 2, text: "é", bytes: ["c3", "a9"] }] }, [f32([0, 1, 2])]);
    const pieces = Array.from(el.querySelectorAll<HTMLElement>(".nw-try-out .nw-tok"));
    expect(pieces.map((p) => p.textContent)).toEqual(["caf", "é"]);
    expect(pieces[1].dataset.tip).toContain("bytes c3 at 1: 1.00");
    expect(pieces[1].dataset.tip).toContain("bytes a9 at 2: 2.00");
    expect(pieces[1].dataset.value).toBe("2.00"); // coloured by its strongest piece

    el.querySelector<HTMLTextAreaElement>(".nw-test-input")!.value = HOSTILE[1];
    btn("Simulate & score").click();
    expect(model.sent.at(-1)!.content).toEqual({ type: "test", explanation: HOSTILE[1] });
    model.set("_status", { task: "scoring", done: 2, total: 10, message: "simulating 2/10" });
    expect(el.querySelector(".nw-status")!.textContent).toContain("simulating 2/10");
    btn("Cancel").click();
    expect(model.sent.at(-1)!.content).toEqual({ type: "cancel" });
    const sentBefore = model.sent.length;
    model.state._buf = f32([...acts, 4, 0, 10, 0]);
    model.set("_data", { ...neuronData(), cards: [card(HOSTILE[1], 69)] });
    expect(model.sent.length).toBe(sentBefore); // a new card does not run the user's text again
    expect(el.querySelector(".nw-try-out")!.textContent).not.toBe("");
    expect(el.querySelector(".nw-card.nw-new .nw-expl")!.textContent).toBe(HOSTILE[1]);
    expect(el.textContent).not.toContain("No explanation for this neuron yet.");
    model.set("_status", { task: null, error: "scoring failed: simulator unreachable. Check the server." });
    expect(el.querySelector(".nw-status .nw-error")!.textContent).toContain("simulator unreachable");
    expect((window as any).__pwned).toBeUndefined();
  });
  it("keeps keys in the view: Enter is a new line, Ctrl/Cmd+Enter scores, nothing reaches the notebook", () => {
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: neuronData(), _buf: f32(acts), _status: {} });
    const seen: string[] = [];
    document.body.addEventListener("keydown", (e) => seen.push(e.key));
    const test = el.querySelector<HTMLTextAreaElement>(".nw-test-input")!;
    expect(el.querySelector(".nw-root")!.getAttribute("data-lm-suppress-shortcuts")).toBe("true");
    test.value = "dogs";
    const key = (k: string, mods: KeyboardEventInit = {}) => {
      const ev = new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true, ...mods });
      test.dispatchEvent(ev);
      return ev;
    };
    const n = model.sent.length;
    expect(key("Enter").defaultPrevented).toBe(false); // the textarea adds the newline itself
    expect(key("Enter", { shiftKey: true }).defaultPrevented).toBe(false);
    expect(model.sent.length).toBe(n);
    expect(key("Enter", { ctrlKey: true }).defaultPrevented).toBe(true);
    expect(model.sent.at(-1)!.content).toEqual({ type: "test", explanation: "dogs" });
    key("Enter", { metaKey: true });
    expect(model.sent.length).toBe(n + 2);
    expect(seen).toEqual([]);
  });
  it("clears an error when the next result arrives", async () => {
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: neuronData(), _buf: f32(acts), _status: {} });
    const input = el.querySelector<HTMLTextAreaElement>(".nw-try-input")!;
    input.value = "x".repeat(5000);
    input.dispatchEvent(new Event("input"));
    await new Promise((r) => setTimeout(r, 350));
    model.emit("msg:custom", { type: "error", message: "your text could not be run: it has 5000 characters" });
    expect(el.querySelector(".nw-status .nw-error")!.textContent).toContain("your text could not be run");
    input.value = "short";
    input.dispatchEvent(new Event("input"));
    await new Promise((r) => setTimeout(r, 350));
    const req = model.sent.at(-1)!.content;
    model.emit("msg:custom", { type: "try", id: req.id, tokens: ["short"], a: [0, 1] }, [f32([1])]);
    expect(el.querySelector(".nw-try-out")!.textContent).toBe("short");
    expect(el.querySelector(".nw-status .nw-error")).toBeNull();
  });
  it("shows a side switch for signed neurons and asks the kernel for the other side", () => {
    const d = neuronData();
    d.header = { ...d.header, signed: true, min: -6 };
    d.diverging = true;
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: d, _buf: f32(acts.map((v, i) => (i === 10 ? -6 : v))), _status: {} });
    const radios = Array.from(el.querySelectorAll<HTMLButtonElement>(".nw-side-btn"));
    expect(radios.map((r) => r.getAttribute("aria-checked"))).toEqual(["true", "false"]);
    radios[1].click();
    expect(model.saved.at(-1)).toEqual({ side: "negative" });
    expect(el.querySelector(".nw-top .nw-n20")).not.toBeNull(); // the lowest value: full blue
    model.state.side = "negative"; // the kernel's answer: the trait and the new _data in one update
    model.set("_data", { ...d, cards: [{ ...card("dogs", 0), side: "negative" }] });
    expect(el.querySelector(".nw-card-side")!.textContent).toContain("negative side");
    expect(el.textContent).toContain("Most negative examples");
    expect(el.textContent).toContain("Test your explanation of the negative side");
  });
  it("comes back as the user left it when the output is drawn again", () => {
    const state = { _view_kind: "neuron", ...AT, _data: neuronData(), _buf: f32(acts), _status: {}, _uid: "abc123" };
    const first = mount(state);
    const input = first.el.querySelector<HTMLTextAreaElement>(".nw-test-input")!;
    input.value = "half-typed\nexplanation";
    input.dispatchEvent(new Event("input"));
    first.el.remove(); // the output area replaced this view
    const again = mount(state);
    expect(again.el.querySelector<HTMLTextAreaElement>(".nw-test-input")!.value).toBe("half-typed\nexplanation");
    expect(mount({ ...state, _uid: "other" }).el.querySelector<HTMLTextAreaElement>(".nw-test-input")!.value).toBe("");
  });
  it("Effect: the try text coloured by KL with changes in tooltips; steering by slider, both sides", async () => {
    const signed = neuronData();
    signed.header = { ...signed.header, signed: true, min: -2 };
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: signed, _buf: f32(acts), _status: {} });
    const input = el.querySelector<HTMLTextAreaElement>(".nw-try-input")!;
    input.value = "a b";
    input.dispatchEvent(new Event("input"));
    await new Promise((r) => setTimeout(r, 350));
    const id = model.sent.at(-1)!.content.id;
    model.emit("msg:custom", { type: "effect", id, tokens: [HOSTILE[4], " b"], kl: [0.5, 0.01], next: [" b"], dlogp: [-0.25],
      promoted: [[{ token: HOSTILE[0], value: 0.02 }], []], suppressed: [[{ token: " b", value: -0.03 }], []] });
    const toks = Array.from(el.querySelectorAll<HTMLElement>(".nw-effect-out .nw-tok"));
    expect(toks.map((t) => t.textContent)).toEqual([HOSTILE[4], " b"]);
    expect(toks[0].dataset.tip).toContain("KL(clean ‖ zeroed) 0.500");
    expect(toks[0].dataset.tip).toContain('next " b": Δ log p -0.250');
    expect(toks[0].dataset.tip).toContain(`promoted: "${HOSTILE[0]}" +0.020`);
    expect(toks[1].dataset.tip).toContain("promoted: none");
    expect(el.querySelector(".nw-effect-out img, .nw-effect-out script")).toBeNull();
    // an effect error shows in the Effect section, as text, and leaves the status to the try box
    model.emit("msg:custom", { type: "error", message: `the effect could not be measured: ${HOSTILE[0]}`, action: "effect" });
    expect(el.querySelector(".nw-effect-out .nw-error")!.textContent).toContain(HOSTILE[0]);
    expect(el.querySelector(".nw-status .nw-error")).toBeNull();
    expect(el.querySelector(".nw-effect-out img, .nw-effect-out script")).toBeNull();

    const slider = el.querySelector<HTMLInputElement>(".nw-steer-slider")!;
    const label = () => el.querySelector(".nw-steer-strength")!.textContent;
    expect(label()).toBe("strength +4 × max → 16.0");
    slider.value = "-3";
    slider.dispatchEvent(new Event("input"));
    expect(label()).toBe("strength -3 × |min| → -6.00"); // the negative side of a signed neuron
    slider.dispatchEvent(new Event("change"));
    expect(model.sent.at(-1)!.content.type).not.toBe("steer"); // no prompt yet: nothing sent
    const prompt = el.querySelector<HTMLTextAreaElement>(".nw-steer-input")!;
    prompt.value = "Once";
    prompt.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", ctrlKey: true, bubbles: true }));
    const req = model.sent.at(-1)!.content;
    expect(req).toEqual({ type: "steer", prompt: "Once", strength: -3, id: req.id });
    model.emit("msg:custom", { type: "error", message: "the steered continuation could not be made: boom", action: "steer" });
    expect(el.querySelector(".nw-steer-error")!.textContent).toContain("boom");
    model.emit("msg:custom", { type: "steer", id: req.id, prompt: "Once", strength: -3, value: -6, plain: HOSTILE[0], steered: " upon" });
    expect(el.querySelector(".nw-steer-error")!.textContent).toBe("");
    expect(el.querySelector(".nw-status .nw-error")).toBeNull();
    expect(el.querySelector(".nw-plain .nw-steer-text")!.textContent).toBe(HOSTILE[0]);
    expect(el.querySelector(".nw-steered .nw-steer-text")!.textContent).toBe(" upon");
    expect((window as any).__pwned).toBeUndefined();
  });
  it("never renders blank: a broken state shows a message", () => {
    const { el } = mount({ _view_kind: "nope", _data: {}, _buf: f32([]) });
    expect(el.querySelector(".nw-error")!.textContent).toContain("could not draw");
  });
});
