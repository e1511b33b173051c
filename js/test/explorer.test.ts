// @vitest-environment jsdom
import { afterEach, describe, expect, it } from "vitest";
import { renderExplorer, renderSearchBox, refId } from "../explorer";
import { renderConnections } from "../connections";
import { FakeModel } from "./fakemodel";

const HOSTILE = "<img src=x onerror=window.__pwned=1>";

function row(layer: number, neuron: number, explanation: string | null) {
  return { layer, neuron, label: `L${layer}/N${neuron}`, side: "positive" as const, activation: 1.5, normalized: 0.75, explanation, score: explanation ? 0.4 : null,
    detail: "0.750× max · 1.50", score_text: explanation ? "score 0.40" : null };
}

function neuronState() {
  const tokens = ["a", "b", "c"];
  return {
    _view_kind: "neuron",
    model: "tiny",
    layer: 1,
    neuron: 3,
    side: "positive",
    _data: {
      header: { model: "tiny", title: " · layer 1 · neuron 3", meta: "max activation 4.00 · corpus: c", is_tiny: true, n_layers: 2,
        n_neurons: 8, max: 4, signed: false, side_note: "" },
      top_title: "Top", test_title: "Test", empty: "none",
      top: [{ text: tokens, value: "0 4.00 1.00", tenth: "DND", level: "DXI" }], top_total: 1, samples: [],
      hist: { edges: [0, 1, 2], counts: [3, 1], titles: ["a", "b"], lo: "0", hi: "2.00", caption: "all tokens" }, cards: [],
      explainer: "baseline", simulator: "baseline",
      legend: { lo: "0", hi: "4.00", levels: [0, 20], note: "" }, strengths: { values: [0, 1], labels: ["0", "1"] },
      connections: { family: "gpt2", input_tokens: [{ token: HOSTILE, value: 1 }], output_promoted: [], output_suppressed: [],
        upstream: [{ layer: 0, neuron: 5, value: -0.5 }], downstream: [], definition: "weights" },
    },
    _status: {},
  };
}

function mountExplorer() {
  const model = new FakeModel({
    _view_kind: "explorer",
    _data: { model: "tiny", is_tiny: true, tokens: ["The", HOSTILE, " end"], text: ["The", HOSTILE, " end"],
      level: "HXD", heads: ["Top 1 neurons at \"The\" (token 0)", "Top 2", "Top 0"], k: 2,
      tops: [[row(0, 1, null)], [row(2, 7, HOSTILE), row(1, 4, "commas")], []], peak: [0.2, 0.9, 0] },
    _status: {},
    _child: null,
    text: "The <img> end",
    position: 1,
  });
  const root = document.createElement("div");
  root.className = "nw-root";
  document.body.appendChild(root);
  const cleanup = renderExplorer(model as any, root, model.invoke);
  return { model, root, cleanup };
}

afterEach(() => {
  document.body.replaceChildren();
  delete (window as any).__pwned;
});

describe("Explorer", () => {
  it("shows tokens as text, the top neurons of the focused token, and asks to open one", async () => {
    const { model, root } = mountExplorer();
    const toks = Array.from(root.querySelectorAll<HTMLElement>(".nw-xtok"));
    expect(toks.map((t) => t.textContent)).toEqual(["The", HOSTILE, " end"]);
    expect(root.querySelector("img")).toBeNull();
    // the token selected is the position trait (the kernel starts it at the strongest token)
    expect(toks[1].classList.contains("nw-xsel")).toBe(true);
    expect(Array.from(root.querySelectorAll(".nw-xrow .nw-xid")).map((e) => e.textContent)).toEqual(["L2/N7", "L1/N4"]);
    expect(root.querySelector(".nw-xrow .nw-xexpl")!.textContent).toBe(HOSTILE);
    toks[0].dispatchEvent(new FocusEvent("focus"));
    expect(model.saved.at(-1)).toEqual({ position: 0 }); // the user's choice goes to the kernel as the trait
    expect(Array.from(root.querySelectorAll(".nw-xrow .nw-xid")).map((e) => e.textContent)).toEqual(["L0/N1"]);
    expect(root.querySelector(".nw-xrow .nw-xexpl")!.textContent).toBe("no explanation yet");
    toks[2].click();
    expect(root.textContent).toContain("No neuron fires above zero here.");
    model.set("position", 1); // from Python: ex.position = 1
    expect(toks[1].classList.contains("nw-xsel") && !toks[2].classList.contains("nw-xsel")).toBe(true);
    // opening is a command (request/response): its error answer shows in the view
    (root.querySelectorAll<HTMLButtonElement>(".nw-xrow")[1]).click();
    expect(model.invoked.at(-1)).toEqual({ name: "open_request", msg: { type: "open", layer: 1, neuron: 4, side: "positive" } });
    await new Promise((r) => setTimeout(r, 0));
    expect(root.querySelector(".nw-error")!.textContent).toBe("no kernel in tests");
    // a new text from the kernel: new tokens, the position it chose
    model.state.position = 0;
    model.set("_data", { model: "tiny", is_tiny: true, tokens: ["a", "b"], text: ["a", "b"], level: "XD", heads: ["A", "B"], k: 2, tops: [[row(1, 1, null)], []], peak: [0.5, 0] });
    expect(Array.from(root.querySelectorAll(".nw-xtok")).map((t) => t.textContent)).toEqual(["a", "b"]);
    expect(root.querySelector(".nw-xsel")!.textContent).toBe("a");
  });

  it("renders the NeuronView the kernel opens in place, and goes back", async () => {
    const { model, root } = mountExplorer();
    const child = new FakeModel(neuronState());
    (model as any).widget_manager = { get_model: async (id: string) => (id === "abc" ? child : Promise.reject(new Error(id))) };
    model.set("_child", "anywidget:abc");
    await new Promise((r) => setTimeout(r, 0));
    const panel = root.querySelector<HTMLElement>(".nw-inplace")!;
    expect(panel.hidden).toBe(false);
    expect(root.querySelector<HTMLElement>(".nw-explorer")!.hidden).toBe(true);
    expect(panel.querySelector(".nw-id")!.textContent).toContain("layer 1 · neuron 3");
    // the connections section is in the NeuronView, tokens as text; a neuron link navigates
    expect(panel.querySelector(".nw-conn-token")!.textContent).toBe(HOSTILE);
    expect(panel.querySelector("img")).toBeNull();
    panel.querySelector<HTMLButtonElement>(".nw-conn-neuron")!.click();
    expect(child.saved.at(-1)).toEqual({ layer: 0, neuron: 5 });
    // its requests are anywidget commands on its own model (the same messages anywidget's invoke sends)
    child.set("_data", { ...child.state._data, top_total: 2 });
    Array.from(panel.querySelectorAll<HTMLButtonElement>("button")).find((b) => b.textContent === "more examples")!.click();
    const req = child.sent.at(-1)!.content;
    expect(req).toMatchObject({ kind: "anywidget-command", name: "more_request", msg: { type: "more", start: 1, stop: 11 } });
    child.emit("msg:custom", { id: "another", kind: "anywidget-command-response",
      response: { type: "more", start: 1, records: [{ text: ["wrong"], value: "1.00", tenth: "D", level: "D" }] } });
    child.emit("msg:custom", { id: req.id, kind: "anywidget-command-response",
      response: { type: "more", start: 1, records: [{ text: [HOSTILE], value: "1.00", tenth: "D", level: "D" }] } });
    await new Promise((r) => setTimeout(r, 0));
    const recs = Array.from(panel.querySelectorAll(".nw-top .nw-rec"));
    expect(recs.length).toBe(2);
    expect(recs[1].querySelector(".nw-tok")!.textContent).toBe(HOSTILE); // the answer to this request, not another's
    expect(panel.querySelector("img")).toBeNull();
    root.querySelector<HTMLButtonElement>(".nw-back")!.click();
    expect(panel.hidden).toBe(true);
    expect(root.querySelector<HTMLElement>(".nw-explorer")!.hidden).toBe(false);
  });

  it("says so when the front end cannot nest widgets", async () => {
    const { model, root } = mountExplorer();
    (model as any).widget_manager = undefined;
    model.answer = () => ({ type: "opened", layer: 1, neuron: 3 });
    model.set("_child", "anywidget:abc");
    await new Promise((r) => setTimeout(r, 0));
    expect(root.querySelector(".nw-error")!.textContent).toContain("cannot show a NeuronView inside");
  });
});

describe("SearchBox", () => {
  it("sends the query, lists results as text, opens one with its model", async () => {
    const model = new FakeModel({ _view_kind: "search", _data: { query: "", model: null, limit: 20, results: [], error: null }, _child: null, _status: {} });
    const root = document.createElement("div");
    document.body.appendChild(root);
    renderSearchBox(model as any, root, model.invoke);
    const input = root.querySelector<HTMLInputElement>(".nw-search-input")!;
    input.value = "capital cities";
    input.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter" }));
    expect(model.invoked.at(-1)).toEqual({ name: "search_request", msg: { type: "search", query: "capital cities" } });
    await new Promise((r) => setTimeout(r, 0));
    expect(root.querySelector(".nw-error")!.textContent).toBe("no kernel in tests"); // the command's error answer
    model.set("_data", { query: "capital cities", model: null, limit: 20, error: null,  // the results, in the trait
      results: [{ model: "gpt2", label: "gpt2 L5/N131", layer: 5, neuron: 131, side: "positive", explanation: HOSTILE, score: 0.8, explainer: "x", source: "s" }] });
    expect(root.querySelector(".nw-xexpl")!.textContent).toBe(HOSTILE);
    expect(root.querySelector("img")).toBeNull();
    model.answer = () => ({ type: "opened", layer: 5, neuron: 131 });
    root.querySelector<HTMLButtonElement>(".nw-xrow")!.click();
    expect(model.invoked.at(-1)).toEqual({ name: "open_request", msg: { type: "open", layer: 5, neuron: 131, model: "gpt2", side: "positive" } });
    await new Promise((r) => setTimeout(r, 0));
    expect(root.querySelector(".nw-error")).toBeNull();
    model.set("_data", { query: "*", model: null, limit: 20, results: [], error: "query '*' has no words to search for" });
    expect(root.querySelector(".nw-error")!.textContent).toContain("no words");
  });
});

describe("connections", () => {
  it("draws nothing without data and a message on error", () => {
    expect(renderConnections(null, () => {})).toBeNull();
    expect(renderConnections({ error: "connections unavailable: x" }, () => {})!.textContent).toContain("unavailable");
  });
  it("lists a latent's nearest latents as buttons that go to the latent", () => {
    const went: [number, number][] = [];
    const box = renderConnections({ family: "latent", input_tokens: [], output_promoted: [], nearest: [
      { layer: 2, neuron: 17, value: 0.31, label: "latent 17 (cos 0.31)", title: "go to latent 17" },
      { layer: 2, neuron: 4, value: -0.2, label: HOSTILE, title: "go to latent 4" }] }, (l, n) => went.push([l, n]))!;
    const buttons = Array.from(box.querySelectorAll<HTMLButtonElement>("button.nw-conn-neuron"));
    expect(box.textContent).toContain("Nearest latents (decoder cosine)");
    // <button type="button">: Tab reaches them, Enter and Space press them
    expect(buttons.map((b) => [b.textContent, b.title, b.type])).toEqual([
      ["latent 17 (cos 0.31)", "go to latent 17", "button"], [HOSTILE, "go to latent 4", "button"]]);
    expect(box.querySelector("img")).toBeNull(); // labels are text
    buttons[0].click();
    buttons[1].click();
    expect(went).toEqual([[2, 17], [2, 4]]);
  });
  it("reads widget references", () => {
    expect(refId("anywidget:abc")).toBe("abc");
    expect(refId("IPY_MODEL_xyz")).toBe("xyz");
    expect(refId(null)).toBeNull();
  });
});
