// NeuronView: everything about one neuron, with live requests to the kernel. A thin template
// over the presentation (neuronwidget/widgets/present.py writes every string and colour
// level); which neuron and side are the model's traits, set here to navigate. The view is a
// few named sections, each an element and a draw(data); renderNeuronView composes them.
import display from "../neuronwidget/widgets/display.json";
import { renderCard } from "./card";
import { connectionsSection } from "./connections";
import { button, h } from "./dom";
import { histogram } from "./histogram";
import type { EffectReply, NeuronData, Reply, Request, Side, SteerReply, Status } from "./messages";
import { centredRow, legend, Tooltip, tokenRow } from "./tokens";
import type { Model, NeuronState } from "./types";

const MORE_STEP = 10;
const BEST_OF = 5; // the "best of k" button: k candidates compared on held-in records, then one revision
export const SUBMIT_HINT: string = display.submit_keys;
const STEER_DEFAULT = 4;

/** What the user typed, per model: a view drawn again (the kernel refreshing the saved
 *  notebook's fallback re-renders the output) comes back as the user left it. */
interface UiState {
  tryText: string;
  testText: string;
  focus: string | null;
  steerText?: string;
  strength?: number;
  lastSteer?: SteerReply; // shown again when the output is drawn again (fallback refresh)
  steerKey?: string; // layer/neuron it was made for
}
// keyed by the model's _uid (anywidget hands each view its own model proxy), on globalThis
// because each widget model may evaluate its own copy of this module
const UI: Map<string, UiState> = ((globalThis as any).__neuronwidget_ui ??= new Map<string, UiState>());

type Send = (msg: Request) => void;
type Navigate = (to: { layer?: number; neuron?: number; side?: Side }) => void;

/** Keys typed into the view stay in the view: JupyterLab's shortcuts (Shift+Enter runs the
 *  cell, A/B/D,D in command mode…) never see them. Ctrl/Cmd+Enter calls `submit`. */
export function keepKeys(input: HTMLElement, submit?: () => void): void {
  input.setAttribute("data-lm-suppress-shortcuts", "true");
  input.addEventListener("keydown", (ev: KeyboardEvent) => {
    ev.stopPropagation();
    if (submit && ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      submit();
    }
  });
  for (const kind of ["keypress", "keyup"]) input.addEventListener(kind, (ev) => ev.stopPropagation());
}

function textarea(cls: string, rows: number, placeholder: string, label: string, value: string): HTMLTextAreaElement {
  const el = h("textarea", `nw-input ${cls}`);
  el.rows = rows;
  el.placeholder = placeholder;
  el.setAttribute("aria-label", label);
  el.value = value;
  return el;
}

/** The status line: progress of slow work with Cancel, or the last error. */
function statusSection(send: Send) {
  const el = h("div", "nw-status");
  el.setAttribute("aria-live", "polite");
  function error(message: string) {
    const err = h("div", "nw-error", message);
    err.setAttribute("role", "alert");
    el.replaceChildren(err);
  }
  return {
    el,
    error,
    /** Every new result clears the previous error. */
    clearError: () => el.querySelector(".nw-error")?.remove(),
    draw(s: Status) {
      el.replaceChildren();
      if (s.error) return error(s.error);
      if (!s.task) return;
      const bar = h("progress", "nw-progress");
      if (s.total) {
        bar.max = s.total;
        bar.value = s.done ?? 0;
      }
      el.append(bar, h("span", "nw-status-msg", s.message || `${s.task}…`), button("Cancel", () => send({ type: "cancel" })));
    },
  };
}

/** Title, range, navigation (prev / next / random / layer and neuron boxes) and the side switch. */
function headerSection(model: Model<NeuronState>, navigate: Navigate) {
  const el = h("div", "nw-header");
  // a box left empty or not a whole number goes to the kernel as null, which says what is allowed
  const goto = (layer: number, neuron: number) =>
    navigate({ layer: Number.isInteger(layer) ? layer : (null as never), neuron: Number.isInteger(neuron) ? neuron : (null as never) });

  function sideSwitch(current: Side, note: string): HTMLElement {
    const box = h("div", "nw-sides");
    box.setAttribute("role", "radiogroup");
    box.setAttribute("aria-label", "which side of the neuron to explain");
    box.appendChild(h("span", "nw-label", "side:"));
    for (const s of ["positive", "negative"] as Side[]) {
      const b = button(s === "positive" ? "positive ▲" : "negative ▼", () => s !== current && navigate({ side: s }), display.sides[s]);
      b.classList.add("nw-side-btn", `nw-side-${s}`);
      b.setAttribute("role", "radio");
      b.setAttribute("aria-checked", String(s === current));
      if (s === current) b.classList.add("nw-on");
      box.appendChild(b);
    }
    box.appendChild(h("span", "nw-note", note));
    return box;
  }

  function draw(d: NeuronData) {
    const hd = d.header;
    const layer = model.get("layer");
    const neuron = model.get("neuron");
    const title = h("div", "nw-title");
    title.append(h("span", "nw-model", hd.model), h("span", "nw-id", hd.title));
    const numberInput = (label: string, value: number, count: number) => {
      const input = h("input", "nw-num");
      input.type = "number";
      input.min = "0";
      input.max = String(count - 1);
      input.value = String(value);
      input.setAttribute("aria-label", label);
      keepKeys(input, () => goto(Number(layerIn.value), Number(neuronIn.value)));
      return input;
    };
    const layerIn = numberInput("layer", layer, hd.n_layers);
    const neuronIn = numberInput("neuron", neuron, hd.n_neurons);
    const total = hd.n_layers * hd.n_neurons;
    const step = (delta: number) => {
      const flat = (layer * hd.n_neurons + neuron + delta + total) % total;
      goto(Math.floor(flat / hd.n_neurons), flat % hd.n_neurons);
    };
    const nav = h("div", "nw-nav");
    nav.append(
      button("◀ prev", () => step(-1), "previous neuron"),
      button("next ▶", () => step(1), "next neuron"),
      button("random", () => goto(Math.floor(Math.random() * hd.n_layers), Math.floor(Math.random() * hd.n_neurons)), "a random neuron"),
      h("span", "nw-label", "layer"),
      layerIn,
      h("span", "nw-label", "neuron"),
      neuronIn,
      button("go", () => goto(Number(layerIn.value), Number(neuronIn.value))),
    );
    el.replaceChildren(title, h("div", "nw-meta", hd.meta), nav);
    if (hd.signed) el.appendChild(sideSwitch(model.get("side"), hd.side_note));
  }
  return { el, draw };
}

/** The explanation cards and the Explain buttons. */
function cardsSection(send: Send) {
  const el = h("div", "nw-cards");
  function draw(d: NeuronData) {
    el.replaceChildren(h("div", "nw-section", "Explanations"));
    for (const c of d.cards) {
      const card = renderCard(c);
      if (c.fresh) card.classList.add("nw-new");
      el.appendChild(card);
    }
    if (!d.cards.length) {
      const empty = h("div", "nw-empty");
      empty.append(h("div", "nw-note", d.empty));
      el.appendChild(empty);
    }
    const actions = h("div", "nw-actions");
    actions.append(
      button(`Explain with ${d.explainer}`, () => send({ type: "explain", best_of: 1 })),
      button(`Explain (best of ${BEST_OF}, revised)`, () => send({ type: "explain", best_of: BEST_OF }),
        `${BEST_OF} candidates simulated on held-in records, the best kept, then one revision kept if it scores higher there`),
    );
    el.appendChild(actions);
  }
  return { el, draw };
}

/** "Test your explanation": Enter is a new line, Ctrl/Cmd+Enter scores. */
function testSection(ui: UiState, send: Send, error: (message: string) => void) {
  const input = textarea("nw-test-input", 2, "e.g. the word “Paris” and other French cities", "your explanation to test", ui.testText);
  input.addEventListener("input", () => (ui.testText = input.value));
  const submit = () => {
    const text = input.value.trim();
    if (!text) return error("Type an explanation first, then press “Simulate & score”.");
    send({ type: "test", explanation: text });
  };
  keepKeys(input, submit);
  const btn = button("Simulate & score", submit, SUBMIT_HINT);
  btn.classList.add("nw-test-btn");
  const title = h("div", "nw-section", "Test your explanation");
  const el = h("div", "nw-box");
  el.append(title, input, btn, h("span", "nw-hint", SUBMIT_HINT));
  return { el, input, draw: (d: NeuronData) => (title.textContent = d.test_title) };
}

/** The top records, centred on their peak, and "more examples". */
function topSection(send: Send) {
  const title = h("div", "nw-section");
  const list = h("div", "nw-top");
  let total = 0;
  const more = button("more examples", () => {
    const n = list.childElementCount;
    send({ type: "more", start: n, stop: n + MORE_STEP });
  });
  const el = h("div", "nw-box");
  el.append(title, list, more);
  return {
    el,
    draw(d: NeuronData) {
      title.textContent = d.top_title;
      total = d.top_total;
      list.replaceChildren(...d.top.map(centredRow));
      more.hidden = d.top.length >= total;
    },
    add(records: NeuronData["top"]) {
      for (const r of records) list.appendChild(centredRow(r));
      more.hidden = list.childElementCount >= total || !records.length;
    },
  };
}

/** "Try your text": runs as you type (Ctrl/Cmd+Enter: now); each run also asks for the effect. */
function trySection(ui: UiState, send: Send) {
  let id = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const out = h("div", "nw-try-out");
  const input = textarea("nw-try-input", 2, "Type any text: its activations come back from the model", "your text", ui.tryText);
  const run = () => {
    clearTimeout(timer);
    const text = input.value;
    if (!text.trim()) return out.replaceChildren();
    id += 1;
    send({ type: "try", text, id });
    send({ type: "effect", text, id });
  };
  keepKeys(input, run);
  input.addEventListener("input", () => {
    ui.tryText = input.value;
    clearTimeout(timer);
    timer = setTimeout(run, 300);
  });
  const el = h("div", "nw-box");
  el.append(h("div", "nw-section", "Try your text"), input, out);
  return { el, input, out, run, current: () => id, stop: () => clearTimeout(timer) };
}

/** "Effect": the try text with the neuron zeroed, and a steering box. */
function effectSection(ui: UiState, send: Send) {
  let id = 0;
  let labels: string[] = [];
  const out = h("div", "nw-effect-out");
  const input = textarea("nw-steer-input", 1, "A prompt for the model to continue", "prompt to steer", ui.steerText ?? "");
  input.addEventListener("input", () => (ui.steerText = input.value));
  const slider = h("input", "nw-steer-slider");
  slider.type = "range";
  slider.setAttribute("aria-label", "steering strength");
  const low = h("span", "nw-label");
  const high = h("span", "nw-label");
  const strength = h("span", "nw-steer-strength");
  const err = h("div", "nw-steer-error");
  const steerOut = h("div", "nw-steer-out");
  let values: number[] = [];
  const describe = () => {
    strength.textContent = labels[values.indexOf(Number(slider.value))] ?? "";
    slider.setAttribute("aria-valuetext", strength.textContent);
  };
  const steer = () => {
    const prompt = input.value;
    if (!prompt.trim()) {
      err.textContent = "Type a prompt first: the model continues it with and without the neuron clamped.";
      return;
    }
    id += 1;
    steerOut.classList.add("nw-pending");
    send({ type: "steer", prompt, strength: Number(slider.value), id });
  };
  keepKeys(input, steer);
  keepKeys(slider);
  slider.addEventListener("input", () => {
    ui.strength = Number(slider.value);
    describe();
  });
  slider.addEventListener("change", () => input.value.trim() && steer());
  const btn = button("Steer", steer, `continue with the neuron clamped (${SUBMIT_HINT})`);
  btn.classList.add("nw-steer-btn");
  const controls = h("div", "nw-steer-controls");
  controls.append(low, slider, high, strength, btn);
  const el = h("div", "nw-box nw-effect");
  el.append(
    h("div", "nw-section", "Effect: what zeroing or clamping this neuron does"),
    h("div", "nw-note", "Type text in “Try your text”: each token shows how much zeroing this neuron there and before changes the model's next-token prediction."),
    out,
    h("div", "nw-subsection", "Steer: the model continues a prompt with this neuron clamped at every token"),
    input,
    controls,
    err,
    steerOut,
  );
  const showSteer = (msg: SteerReply) => {
    const box = h("div", "nw-steer-result");
    box.append(h("div", "nw-note", msg.note));
    const cols = h("div", "nw-steer-cols");
    for (const [title, text, cls] of [["plain", msg.plain, "nw-plain"], ["steered", msg.steered, "nw-steered"]] as const) {
      const col = h("div", `nw-steer-col ${cls}`);
      col.append(h("div", "nw-label", title), h("div", "nw-steer-text", text));
      cols.appendChild(col);
    }
    box.appendChild(cols);
    steerOut.replaceChildren(box);
  };
  return {
    el,
    input,
    out,
    draw(d: NeuronData) {
      values = d.strengths.values;
      labels = d.strengths.labels;
      slider.min = String(values[0]);
      slider.max = String(values[values.length - 1]);
      slider.step = String(values[1] - values[0]);
      slider.value = String(ui.strength ?? STEER_DEFAULT);
      low.textContent = slider.min.replace("-", "−");
      high.textContent = `+${slider.max}`;
      describe();
    },
    /** A new neuron: no effect yet; the last steering shown again only for the neuron it was made for. */
    reset(key: string) {
      out.replaceChildren();
      if (ui.lastSteer && ui.steerKey === key) showSteer(ui.lastSteer);
      else steerOut.replaceChildren();
    },
    effect(msg: EffectReply) {
      const row = tokenRow(msg.row);
      row.classList.add("nw-effect-row");
      out.replaceChildren(h("div", "nw-note", msg.note), row);
    },
    effectError(message: string) {
      const e = h("div", "nw-error", message);
      e.setAttribute("role", "alert");
      out.replaceChildren(e); // the try box reports a text that cannot run
    },
    steered(msg: SteerReply, key: string): boolean {
      if (msg.id !== id) return false;
      err.textContent = "";
      steerOut.classList.remove("nw-pending");
      showSteer(msg);
      ui.lastSteer = msg;
      ui.steerKey = key;
      return true;
    },
    steerError(message: string) {
      err.textContent = message;
      steerOut.classList.remove("nw-pending");
    },
  };
}

/** The histogram and the weight-based connections, beside the main column. */
function sideSection(navigate: Navigate) {
  const el = h("div", "nw-side");
  return {
    el,
    draw(d: NeuronData) {
      el.replaceChildren(h("div", "nw-section", "Activation histogram"), histogram(d.hist, d.header.max));
      el.append(...connectionsSection(d.connections, (layer, neuron) => navigate({ layer, neuron })));
    },
  };
}

/** Random and quantile samples, folded. */
function samplesSection() {
  const el = h("div", "nw-samples");
  return {
    el,
    draw(d: NeuronData) {
      el.replaceChildren();
      const rnd = h("details", "nw-box");
      rnd.appendChild(h("summary", "nw-section", `Random samples (${d.random.length})`));
      for (const r of d.random) rnd.appendChild(tokenRow(r));
      el.appendChild(rnd);
      for (const q of d.quantiles) {
        const box = h("details", "nw-box");
        box.appendChild(h("summary", "nw-section", `Quantile sample: ${q.label}`));
        for (const r of q.records) box.appendChild(tokenRow(r));
        el.appendChild(box);
      }
    },
  };
}

export function renderNeuronView(model: Model<NeuronState>, root: HTMLElement): () => void {
  const uid = model.get("_uid") ?? "";
  const ui: UiState = UI.get(uid) ?? { tryText: "", testText: "", focus: null };
  if (uid) UI.set(uid, ui);
  const send: Send = (msg) => model.send(msg);
  /** Navigate through the view's traits; the kernel answers with the new _data (or puts them back). */
  const navigate: Navigate = (to) => {
    for (const [key, value] of Object.entries(to)) model.set(key as "layer" | "neuron" | "side", value as never);
    model.save_changes();
  };
  root.setAttribute("data-lm-suppress-shortcuts", "true");

  const status = statusSection(send);
  const header = headerSection(model, navigate);
  const cards = cardsSection(send);
  const test = testSection(ui, send, status.error);
  const top = topSection(send);
  const tryText = trySection(ui, send);
  const effect = effectSection(ui, send);
  const samples = samplesSection();
  const side = sideSection(navigate);
  const legendBox = h("div");
  const main = h("div", "nw-main");
  main.append(cards.el, test.el, top.el, tryText.el, effect.el, samples.el);
  const body = h("div", "nw-body");
  body.append(main, side.el);
  root.append(header.el, status.el, body, legendBox);
  new Tooltip(root);
  for (const [el, name] of [[test.input, "test"], [tryText.input, "try"], [effect.input, "steer"]] as const) {
    el.addEventListener("focus", () => (ui.focus = name));
    el.addEventListener("blur", () => (ui.focus = ui.focus === name ? null : ui.focus));
  }

  // A view whose output was re-rendered elsewhere (display update) is detached for good:
  // it stops listening instead of drawing and asking the kernel in the background.
  let wasConnected = false;
  const detached = (): boolean => {
    if (root.isConnected) wasConnected = true;
    else if (wasConnected) {
      dispose();
      return true;
    }
    return false;
  };
  const neuronKey = () => `${model.get("layer")}/${model.get("neuron")}`;
  let shownKey = "";

  function drawStatus() {
    if (!detached()) status.draw((model.get("_status") ?? {}) as Status);
  }

  function draw() {
    if (detached()) return;
    const d = model.get("_data") as NeuronData;
    if (!d || !d.header) return status.error("No neuron loaded.");
    root.classList.toggle("nw-tiny", !!d.header.is_tiny);
    header.draw(d);
    cards.draw(d);
    test.draw(d);
    top.draw(d);
    effect.draw(d);
    side.draw(d);
    samples.draw(d);
    legendBox.replaceChildren(legend(d.legend));
    // the user's text runs again only when the neuron or side changed (not for a new card)
    const shown = `${model.get("model")}/${neuronKey()}/${model.get("side")}`;
    if (shown !== shownKey || !tryText.out.childElementCount) {
      tryText.out.replaceChildren();
      effect.reset(neuronKey());
      if (tryText.input.value.trim()) tryText.run();
    }
    shownKey = shown;
    drawStatus();
  }

  function onCustom(msg: Reply) {
    if (detached()) return;
    if (msg?.type === "more") {
      status.clearError();
      top.add(msg.records);
    } else if (msg?.type === "try") {
      if (msg.id !== tryText.current()) return; // a newer request is on its way
      status.clearError();
      tryText.out.replaceChildren(tokenRow(msg.row));
    } else if (msg?.type === "effect") {
      if (msg.id !== tryText.current()) return;
      status.clearError();
      effect.effect(msg);
    } else if (msg?.type === "steer") {
      if (effect.steered(msg, neuronKey())) status.clearError();
    } else if (msg?.type === "error") {
      if (msg.action === "effect") return effect.effectError(String(msg.message));
      if (msg.action === "steer") effect.steerError(String(msg.message));
      status.error(String(msg.message));
    }
  }

  draw();
  if (ui.focus === "steer") effect.input.focus();
  if (ui.focus === "test") test.input.focus();
  if (ui.focus === "try") tryText.input.focus();
  model.on("change:_data", draw);
  model.on("change:_status", drawStatus);
  model.on("msg:custom", onCustom);
  function dispose() {
    tryText.stop();
    model.off("change:_data", draw);
    model.off("change:_status", drawStatus);
    model.off("msg:custom", onCustom);
  }
  return dispose;
}
