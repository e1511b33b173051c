// @vitest-environment jsdom
// The views as templates: what the kernel's presentation says (text, tooltip, level) is what
// the DOM shows, as text; navigation sets traits; requests and replies follow the protocol.
// The strings themselves are decided and tested in Python (present.py; tests/test_widgets.py
// also renders these views in node on real payloads and compares them with the saved HTML).
import { afterEach, describe, expect, it } from "vitest";
import widget from "../widget";
import { FakeModel } from "./fakemodel";
import type { CardData, NeuronData, Row } from "../types";

const HOSTILE = ["<script>window.__pwned=1</script>", '" onmouseover="window.__pwned=1', "&lt;b&gt;", "javascript:window.__pwned=1", "<img src=x onerror=window.__pwned=1>"];

function mount(state: Record<string, unknown>) {
  const model = new FakeModel(state);
  model.answer = () => undefined; // each test answers the requests itself (model.reply)
  const el = document.createElement("div");
  document.body.appendChild(el);
  const props = { model, el, signal: new AbortController().signal, host: {} as any, experimental: { invoke: model.invoke } as any };
  const cleanup = widget.render(props);
  return { model, el, cleanup };
}

afterEach(() => {
  document.body.replaceChildren();
  delete (window as any).__pwned;
});

/** A row as the kernel sends it: tooltips and levels given, nothing computed here. */
/** Small integers as the row carries them: one character each. */
const codes = (xs: number[]) => xs.map((x) => String.fromCharCode(68 + x)).join("");

function row(text: string[], levels: number[] = text.map(() => 0), window?: [number, number]): Row {
  const r: Row = { text, value: text.map(() => "1.00").join(" "), tenth: codes(text.map(() => 5)), level: codes(levels),
    tips: Object.fromEntries(text.map((t, i) => [String(i), `tip ${i}: ${t}`])) };
  if (window) [r.lo, r.hi] = window;
  return r;
}

const LEGEND = { lo: "0", hi: "4.00", levels: [0, 5, 10, 15, 20], note: "colour = activation (one scale for the whole view)" };

function card(explanation: string): CardData {
  return {
    explanation, score: 0.42, score_text: "0.42 (0.31–0.58)", side: "positive", side_label: "positive side: what makes this neuron fire",
    sub: "top-only 0.50 · random-only 0.10 · on 1 top + 1 random held-out texts", legend: "Score = … 1 = perfect",
    who: "explainer: baseline · simulator: baseline sim", note: null, summary: "scoring details: real vs simulated activations",
    neuron: "L1/N3", explainer: "baseline", simulator: "baseline sim", fresh: true, scale: LEGEND,
    seqs: [
      { kind: "top", label: "top · r = 0.90", real: row(["a", "b"], [20, 0]), sim: row(["a", "b"], [0, 20]), error: null },
      { kind: "random", label: "random · r = undefined", real: row(["c", "d"]), sim: null, error: "simulation failed: unparseable output" },
    ],
  };
}

describe("TokenView", () => {
  it("shows each span's text, level and tooltip as given, hostile strings as text", () => {
    const { el } = mount({ _view_kind: "tokens", _data: { seqs: [row([...HOSTILE, " x↵"], [20, 10, 0, 3, 15, 0])], legend: LEGEND } });
    const toks = Array.from(el.querySelectorAll<HTMLElement>(".nw-tok"));
    expect(toks.map((t) => t.textContent)).toEqual([...HOSTILE, " x↵"]);
    expect(el.querySelector("script, img")).toBeNull();
    expect(toks[0].className).toBe("nw-tok nw-p20");
    expect(toks[2].className).toBe("nw-tok"); // level 0: no colour
    expect(toks[0].tabIndex).toBe(0);
    expect(toks[1].dataset.tip).toBe(`tip 1: ${HOSTILE[1]}`);
    expect(toks[1].getAttribute("aria-label")).toBe(`tip 1: ${HOSTILE[1]}`);
    expect(Array.from(el.querySelectorAll(".nw-legend-cell")).map((c) => c.className)).toEqual(
      ["nw-legend-cell", "nw-legend-cell nw-p5", "nw-legend-cell nw-p10", "nw-legend-cell nw-p15", "nw-legend-cell nw-p20"]);
    expect(el.querySelector(".nw-legend")!.textContent).toBe("04.00colour = activation (one scale for the whole view)");
    expect((window as any).__pwned).toBeUndefined();
  });
  it("fills each tooltip from the row's parts with display.json's template, after the row's label", () => {
    const r: Row = { text: [" a", "東"], value: "0.250 1.00", tenth: codes([2, 10]), level: codes([5, 20]), pos: [0, 1], label: "real",
      tips: { "1": "\"東\" = 3 tokens (one character split into bytes):\n  bytes e6 at 1: 1.00 (10/10)" } };
    const { el } = mount({ _view_kind: "tokens", _data: { seqs: [r], legend: LEGEND } });
    const tips = Array.from(el.querySelectorAll<HTMLElement>(".nw-tok")).map((t) => t.dataset.tip);
    expect(tips).toEqual(['real: " a" at 0: 0.250 (2/10)', 'real: "東" = 3 tokens (one character split into bytes):\n  bytes e6 at 1: 1.00 (10/10)']);
  });
  it("shows the tooltip on hover and on keyboard focus", () => {
    const { el } = mount({ _view_kind: "tokens", _data: { seqs: [row([" a", "b"], [-5, 20])], legend: LEGEND } });
    const [a, b] = Array.from(el.querySelectorAll<HTMLElement>(".nw-tok"));
    expect(a.className).toBe("nw-tok nw-n5");
    const tip = el.querySelector<HTMLElement>(".nw-tip")!;
    a.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toBe("tip 0:  a");
    b.focus();
    expect(tip.textContent).toBe("tip 1: b");
  });
});

describe("ExplanationCard", () => {
  it("shows score, legend, real vs simulated rows and failed records as failed", () => {
    const { el } = mount({ _view_kind: "card", _data: card(HOSTILE[0]) });
    expect(el.querySelector(".nw-expl")!.textContent).toBe(HOSTILE[0]);
    expect(el.querySelector(".nw-score")!.textContent).toBe("0.42 (0.31–0.58)");
    expect(el.querySelector(".nw-card-legend")!.textContent).toContain("1 = perfect");
    expect(el.querySelector(".nw-card-who")!.textContent).toBe("explainer: baseline · simulator: baseline sim");
    expect(el.querySelector(".nw-card-side")!.textContent).toContain("positive side");
    expect(el.querySelector(".nw-card-sub")!.textContent).toContain("on 1 top + 1 random held-out texts");
    expect(el.querySelectorAll(".nw-simrec").length).toBe(2);
    expect(el.querySelector(".nw-simrec-label")!.textContent).toBe("top · r = 0.90");
    expect(el.querySelector(".nw-failed .nw-error")!.textContent).toBe("simulation failed: unparseable output");
    expect(el.querySelector("script")).toBeNull();
  });
});

/** The view's traits: which neuron and side it shows. */
const AT = { model: "tiny", layer: 1, neuron: 3, side: "positive" };

function neuronData(): NeuronData {
  const tokens = Array.from({ length: 64 }, (_, i) => ` t${i}`);
  return {
    header: { model: "tiny (random weights — not a real GPT-2)", title: " · layer 1 · neuron 3", meta: "max activation 4.00 · corpus: test corpus",
      is_tiny: true, n_layers: 2, n_neurons: 8, max: 4, signed: false, side_note: "positive side: what makes this neuron fire" },
    top_title: "Top activating examples (centred on the max token)",
    test_title: "Test your explanation",
    empty: "No explanation for this neuron yet.",
    top: [row(tokens, tokens.map((_, i) => (i === 40 ? 20 : 0)), [28, 47])],
    top_total: 3,
    samples: [{ key: "random", title: "Random samples (1)" }, { key: "q0", title: "Quantile sample: below 0.100" }],
    hist: { edges: [0, 1, 2, 3, 4], counts: [100, 10, 3, 1], titles: ["0 to 1.00: 100 tokens", "b", "c", "d"], lo: "0", hi: "4.00", caption: "all tokens" },
    cards: [],
    explainer: "baseline: token lookup (no LLM)",
    simulator: "baseline",
    legend: LEGEND,
    strengths: { values: [-1, -0.5, 0, 0.5, 1], labels: ["strength -1 × max → -4.00", "strength -0.5 × max → -2.00", "strength 0 × max → 0", "strength +0.5 × max → 2.00", "strength +1 × max → 4.00"] },
  };
}

describe("NeuronView", () => {
  it("renders header, centred records, histogram and asks the kernel for more", async () => {
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: neuronData(), _status: {} });
    expect(el.querySelector(".nw-model")!.textContent).toContain("tiny (random weights");
    expect(el.querySelector(".nw-id")!.textContent).toBe(" · layer 1 · neuron 3");
    expect(el.querySelector(".nw-meta")!.textContent).toBe("max activation 4.00 · corpus: test corpus");
    const short = el.querySelector(".nw-rec .nw-seq:not([hidden])")!;
    expect(short.textContent).toBe(`…${Array.from({ length: 19 }, (_, i) => ` t${28 + i}`).join("")}…`); // the row's window
    expect(short.querySelector(".nw-p20")!.textContent).toBe(" t40");
    expect(el.querySelector(".nw-rec .nw-seq[hidden]")!.querySelectorAll(".nw-tok").length).toBe(64);
    expect(el.querySelectorAll(".nw-hist rect").length).toBe(4);
    expect(el.querySelector(".nw-hist title")!.textContent).toBe("0 to 1.00: 100 tokens");
    expect(el.textContent).toContain("Explain with baseline");
    expect(el.textContent).toContain("No explanation for this neuron yet.");
    Array.from(el.querySelectorAll<HTMLButtonElement>("button")).find((b) => b.textContent === "more examples")!.click();
    expect(model.invoked.at(-1)).toEqual({ name: "more_request", msg: { type: "more", start: 1, stop: 11 } });
    await model.reply(-1, { type: "more", start: 1, records: [row(["x", "y"], [5, 20], [0, 2])] });
    expect(el.querySelectorAll(".nw-top .nw-rec").length).toBe(2);
  });
  it("asks for a folded section's samples when it is opened, and draws them from _samples", async () => {
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: neuronData(), _status: {}, _samples: {} });
    const boxes = Array.from(el.querySelectorAll<HTMLDetailsElement>(".nw-samples details"));
    expect(boxes.map((b) => b.querySelector("summary")!.textContent)).toEqual(["Random samples (1)", "Quantile sample: below 0.100"]);
    expect(el.querySelectorAll(".nw-samples .nw-tok").length).toBe(0); // nothing carried until opened
    boxes[0].open = true;
    boxes[0].dispatchEvent(new Event("toggle"));
    expect(model.invoked.at(-1)).toEqual({ name: "samples_request", msg: { type: "samples", key: "random" } });
    model.set("_samples", { random: [row(HOSTILE)] }); // the kernel's answer is in the trait
    await model.reply(-1, { type: "done" });
    expect(Array.from(boxes[0].querySelectorAll(".nw-tok")).map((t) => t.textContent)).toEqual(HOSTILE);
    expect(boxes[0].open).toBe(true);
    boxes[1].open = true;
    boxes[1].dispatchEvent(new Event("toggle"));
    await model.reply(-1, { type: "error", message: `the samples could not be loaded: ${HOSTILE[0]}` });
    expect(boxes[1].querySelector(".nw-error")!.textContent).toContain(HOSTILE[0]);
    expect((window as any).__pwned).toBeUndefined();
  });
  it("navigates, tries text and tests explanations through commands", async () => {
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: neuronData(), _status: {} });
    const btn = (label: string) => Array.from(el.querySelectorAll<HTMLButtonElement>("button")).find((b) => b.textContent === label)!;
    btn("next ▶").click(); // navigation sets the traits; the kernel answers with the new _data
    expect(model.saved.at(-1)).toEqual({ layer: 1, neuron: 4 });
    model.set("neuron", 3);
    btn("◀ prev").click();
    expect(model.saved.at(-1)).toEqual({ layer: 1, neuron: 2 });
    model.state.neuron = 3; // the kernel puts it back (say, the neuron could not be opened)
    const layerBox = el.querySelector<HTMLInputElement>(".nw-num")!;
    layerBox.value = "";
    layerBox.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", ctrlKey: true }));
    expect(model.saved.at(-1)).toEqual({ layer: 0, neuron: 3 });
    model.state.layer = 1;

    const input = el.querySelector<HTMLTextAreaElement>(".nw-try-input")!;
    input.value = "hello <b>world</b>";
    input.dispatchEvent(new Event("input"));
    await new Promise((r) => setTimeout(r, 350));
    expect(model.invoked.slice(-2)).toEqual([{ name: "try_request", msg: { type: "try", text: "hello <b>world</b>" } },
      { name: "effect_request", msg: { type: "effect", text: "hello <b>world</b>" } }]);
    input.value = "hello <b>world</b>!";
    input.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", ctrlKey: true }));
    await model.reply(-4, { type: "try", row: row(["stale"]) });
    expect(el.querySelector(".nw-try-out")!.textContent).toBe(""); // the answer to an older text is dropped
    await model.reply(-2, { type: "try", row: row(["hello", " <b>world</b>"], [0, 20]) });
    expect(el.querySelector(".nw-try-out")!.textContent).toBe("hello <b>world</b>");
    expect(el.querySelector(".nw-try-out .nw-p20")!.textContent).toBe(" <b>world</b>");

    el.querySelector<HTMLTextAreaElement>(".nw-test-input")!.value = HOSTILE[1];
    btn("Simulate & score").click();
    expect(model.invoked.at(-1)).toEqual({ name: "test_request", msg: { type: "test", explanation: HOSTILE[1] } });
    await model.reply(-1, { type: "done" });
    model.set("_status", { task: "scoring", done: 2, total: 10, message: "simulating 2/10" });
    expect(el.querySelector(".nw-status")!.textContent).toContain("simulating 2/10");
    btn("Cancel").click();
    expect(model.invoked.at(-1)).toEqual({ name: "cancel_request", msg: { type: "cancel" } });
    const sentBefore = model.invoked.length;
    model.set("_data", { ...neuronData(), cards: [card(HOSTILE[1])] });
    expect(model.invoked.length).toBe(sentBefore); // a new card does not run the user's text again
    expect(el.querySelector(".nw-try-out")!.textContent).not.toBe("");
    expect(el.querySelector(".nw-card.nw-new .nw-expl")!.textContent).toBe(HOSTILE[1]);
    expect(el.textContent).not.toContain("No explanation for this neuron yet.");
    model.set("_status", { task: null, error: "scoring failed: simulator unreachable. Check the server." });
    expect(el.querySelector(".nw-status .nw-error")!.textContent).toContain("simulator unreachable");
    expect((window as any).__pwned).toBeUndefined();
  });
  it("keeps keys in the view: Enter is a new line, Ctrl/Cmd+Enter scores, nothing reaches the notebook", () => {
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: neuronData(), _status: {} });
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
    const n = model.invoked.length;
    expect(key("Enter").defaultPrevented).toBe(false); // the textarea adds the newline itself
    expect(key("Enter", { shiftKey: true }).defaultPrevented).toBe(false);
    expect(model.invoked.length).toBe(n);
    expect(key("Enter", { ctrlKey: true }).defaultPrevented).toBe(true);
    expect(model.invoked.at(-1)).toEqual({ name: "test_request", msg: { type: "test", explanation: "dogs" } });
    key("Enter", { metaKey: true });
    expect(model.invoked.length).toBe(n + 2);
    expect(seen).toEqual([]);
  });
  it("clears an error when the next result arrives", async () => {
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: neuronData(), _status: {} });
    const input = el.querySelector<HTMLTextAreaElement>(".nw-try-input")!;
    input.value = "x".repeat(5000);
    input.dispatchEvent(new Event("input"));
    await new Promise((r) => setTimeout(r, 350));
    await model.reply(-2, { type: "error", message: "your text could not be run: it has 5000 characters" });
    expect(el.querySelector(".nw-status .nw-error")!.textContent).toContain("your text could not be run");
    input.value = "short";
    input.dispatchEvent(new Event("input"));
    await new Promise((r) => setTimeout(r, 350));
    await model.reply(-2, { type: "try", row: row(["short"]) });
    expect(el.querySelector(".nw-try-out")!.textContent).toBe("short");
    expect(el.querySelector(".nw-status .nw-error")).toBeNull();
  });
  it("shows a side switch for signed neurons and sets the side trait", () => {
    const d = neuronData();
    d.header = { ...d.header, signed: true, side_note: "positive side: what makes this neuron fire" };
    d.top = [row(["a", "b"], [-20, 3], [0, 2])];
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: d, _status: {} });
    const radios = Array.from(el.querySelectorAll<HTMLButtonElement>(".nw-side-btn"));
    expect(radios.map((r) => r.getAttribute("aria-checked"))).toEqual(["true", "false"]);
    radios[1].click();
    expect(model.saved.at(-1)).toEqual({ side: "negative" });
    expect(el.querySelector(".nw-top .nw-n20")).not.toBeNull();
    model.state.side = "negative"; // the kernel's answer: the trait and the new _data in one update
    model.set("_data", { ...d, top_title: "Most negative examples (centred on the lowest token)", test_title: "Test your explanation of the negative side",
      cards: [{ ...card("dogs"), side: "negative", side_label: "negative side: what drives this neuron most negative" }] });
    expect(el.querySelector(".nw-card-side")!.textContent).toContain("negative side");
    expect(el.querySelector(".nw-side-btn.nw-on")!.textContent).toBe("negative ▼");
    expect(el.textContent).toContain("Most negative examples");
    expect(el.textContent).toContain("Test your explanation of the negative side");
  });
  it("comes back as the user left it when the output is drawn again", () => {
    const state = { _view_kind: "neuron", ...AT, _data: neuronData(), _status: {}, _uid: "abc123" };
    const first = mount(state);
    const input = first.el.querySelector<HTMLTextAreaElement>(".nw-test-input")!;
    input.value = "half-typed\nexplanation";
    input.dispatchEvent(new Event("input"));
    first.el.remove(); // the output area replaced this view
    const again = mount(state);
    expect(again.el.querySelector<HTMLTextAreaElement>(".nw-test-input")!.value).toBe("half-typed\nexplanation");
    expect(mount({ ...state, _uid: "other" }).el.querySelector<HTMLTextAreaElement>(".nw-test-input")!.value).toBe("");
  });
  it("tells the kernel while a box has the keyboard, and puts the caret back when drawn again", async () => {
    const state = { _view_kind: "neuron", ...AT, _data: neuronData(), _status: {}, _uid: "caret" };
    const first = mount(state);
    const editing = () => first.model.invoked.filter((r) => r.name === "editing_request").map((r) => r.msg.editing);
    const tick = () => new Promise((r) => setTimeout(r, 0));
    await tick();
    expect(editing()).toEqual([false]); // a new drawing says where the keyboard is
    const input = first.el.querySelector<HTMLTextAreaElement>(".nw-try-input")!;
    input.focus();
    await tick();
    first.el.querySelector<HTMLButtonElement>("button")!.focus(); // a button does not take typing
    await tick();
    input.focus();
    input.value = "the tower is tall";
    input.dispatchEvent(new Event("input"));
    input.setSelectionRange(4, 9);
    input.dispatchEvent(new Event("select"));
    await tick();
    expect(editing()).toEqual([false, true, false, true]);
    expect(first.model.invoked.at(-1)).toEqual({ name: "editing_request", msg: { type: "editing", editing: true } });

    first.el.remove(); // the output area drew the view again
    const again = mount(state);
    const box = again.el.querySelector<HTMLTextAreaElement>(".nw-try-input")!;
    expect(document.activeElement).toBe(box);
    expect([box.selectionStart, box.selectionEnd]).toEqual([4, 9]);
    await tick();
    expect(again.model.invoked.at(-1)).toEqual({ name: "editing_request", msg: { type: "editing", editing: true } });
    box.blur();
    await tick();
    expect(again.model.invoked.at(-1)).toEqual({ name: "editing_request", msg: { type: "editing", editing: false } });
  });
  it("Effect: the try text as the kernel coloured it; steering by slider with the kernel's labels", async () => {
    const { el, model } = mount({ _view_kind: "neuron", ...AT, _data: neuronData(), _status: {} });
    const input = el.querySelector<HTMLTextAreaElement>(".nw-try-input")!;
    input.value = "a b";
    input.dispatchEvent(new Event("input"));
    await new Promise((r) => setTimeout(r, 350));
    await model.reply(-1, { type: "effect", tokens: [HOSTILE[4], " b"], kl: [0.5, 0.01], next: [" b"], dlogp: [-0.25],
      promoted: [[], []], suppressed: [[], []], row: row([HOSTILE[4], " b"], [20, 0]), title: "Effect of zeroing L1/N3 at every token",
      note: "colour = KL(clean ‖ zeroed) of each next-token prediction (darkest 0.5)" });
    const toks = Array.from(el.querySelectorAll<HTMLElement>(".nw-effect-out .nw-tok"));
    expect(toks.map((t) => t.textContent)).toEqual([HOSTILE[4], " b"]);
    expect(toks[0].className).toBe("nw-tok nw-p20");
    expect(toks[0].dataset.tip).toBe(`tip 0: ${HOSTILE[4]}`);
    expect(el.querySelector(".nw-effect-out .nw-note")!.textContent).toContain("darkest 0.5");
    expect(el.querySelector(".nw-effect-out img, .nw-effect-out script")).toBeNull();
    // an effect error shows in the Effect section, as text, and leaves the status to the try box
    input.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", ctrlKey: true }));
    await model.reply(-1, { type: "error", message: `the effect could not be measured: ${HOSTILE[0]}` });
    expect(el.querySelector(".nw-effect-out .nw-error")!.textContent).toContain(HOSTILE[0]);
    expect(el.querySelector(".nw-status .nw-error")).toBeNull();

    const slider = el.querySelector<HTMLInputElement>(".nw-steer-slider")!;
    const label = () => el.querySelector(".nw-steer-strength")!.textContent;
    expect([slider.min, slider.max, slider.step]).toEqual(["-1", "1", "0.5"]);
    slider.value = "-0.5";
    slider.dispatchEvent(new Event("input"));
    expect(label()).toBe("strength -0.5 × max → -2.00");
    slider.dispatchEvent(new Event("change"));
    expect(model.invoked.at(-1)!.name).not.toBe("steer_request"); // no prompt yet: nothing sent
    const prompt = el.querySelector<HTMLTextAreaElement>(".nw-steer-input")!;
    prompt.value = "Once";
    prompt.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", ctrlKey: true, bubbles: true }));
    expect(model.invoked.at(-1)).toEqual({ name: "steer_request", msg: { type: "steer", prompt: "Once", strength: -0.5 } });
    await model.reply(-1, { type: "error", message: "the steered continuation could not be made: boom" });
    expect(el.querySelector(".nw-steer-error")!.textContent).toContain("boom");
    prompt.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", ctrlKey: true, bubbles: true }));
    await model.reply(-1, { type: "steer", prompt: "Once", strength: -0.5, value: -2, plain: HOSTILE[0], steered: " upon",
      title: "Steering: strength -0.5", note: "clamped to -2.00 (strength -0.5) at every token of “Once” and its continuation" });
    expect(el.querySelector(".nw-steer-error")!.textContent).toBe("");
    expect(el.querySelector(".nw-steer-result .nw-note")!.textContent).toContain("clamped to -2.00");
    expect(el.querySelector(".nw-plain .nw-steer-text")!.textContent).toBe(HOSTILE[0]);
    expect(el.querySelector(".nw-steered .nw-steer-text")!.textContent).toBe(" upon");
    expect((window as any).__pwned).toBeUndefined();
  });
  it("never renders blank: a broken state shows a message", () => {
    const { el } = mount({ _view_kind: "nope", _data: {} });
    expect(el.querySelector(".nw-error")!.textContent).toContain("could not draw");
  });
});
