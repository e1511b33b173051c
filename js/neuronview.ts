// NeuronView: everything about one neuron, with live requests to the kernel. A thin template
// over the presentation (neuronwidget/widgets/present.py writes every string and colour
// level); which neuron and side are the model's traits, set here to navigate. The view is a
// few named sections, each an element and a draw(data); renderNeuronView composes them.
// Requests are anywidget commands (./invoke): each section awaits its own answer.
import display from "../neuronwidget/widgets/display.json";
import { renderCard } from "./card";
import { connectionsSection } from "./connections";
import { button, h } from "./dom";
import { HEADINGS } from "./headings";
import { histogram } from "./histogram";
import { type Ask, asker, type Invoke, invokeOn, latest } from "./invoke";
import type { DoneReply, EffectReply, ErrorReply, MoreReply, NeuronData, Row, Side, SteerReply, Status, TryReply } from "./messages";
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
  caret?: [number, number]; // the selection in the box that had the keyboard
  steerText?: string;
  strength?: number;
  lastSteer?: SteerReply; // shown again when the output is drawn again (fallback refresh)
  steerKey?: string; // layer/neuron it was made for
}
// keyed by the model's _uid (anywidget hands each view its own model proxy), on globalThis
// because each widget model may evaluate its own copy of this module
const UI: Map<string, UiState> = ((globalThis as any).__neuronwidget_ui ??= new Map<string, UiState>());

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
function statusSection(ask: Ask) {
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
      el.append(bar, h("span", "nw-status-msg", s.message || `${s.task}…`), button("Cancel", () => void ask({ type: "cancel" })));
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

/** What a slow task's command answers: it started (its progress is in `_status`), or why not. */
async function started(reply: Promise<DoneReply | ErrorReply | null>, error: (message: string) => void) {
  const r = await reply;
  if (r?.type === "error") error(r.message);
}

/** The explanation cards and the Explain buttons. */
function cardsSection(ask: Ask, error: (message: string) => void) {
  const el = h("div", "nw-cards");
  function draw(d: NeuronData) {
    el.replaceChildren(h("div", "nw-section", HEADINGS.explanations));
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
      button(`Explain with ${d.explainer}`, () => started(ask({ type: "explain", best_of: 1 }), error)),
      button(`Explain (best of ${BEST_OF}, revised)`, () => started(ask({ type: "explain", best_of: BEST_OF }), error),
        `${BEST_OF} candidates simulated on held-in records, the best kept, then one revision kept if it scores higher there`),
    );
    el.appendChild(actions);
  }
  return { el, draw };
}

/** "Test your explanation": Enter is a new line, Ctrl/Cmd+Enter scores. */
function testSection(ui: UiState, ask: Ask, error: (message: string) => void) {
  const input = textarea("nw-test-input", 2, "e.g. the word “Paris” and other French cities", "your explanation to test", ui.testText);
  input.addEventListener("input", () => (ui.testText = input.value));
  const submit = () => {
    const text = input.value.trim();
    if (!text) return error("Type an explanation first, then press “Simulate & score”.");
    void started(ask({ type: "test", explanation: text }), error);
  };
  keepKeys(input, submit);
  const btn = button("Simulate & score", submit, SUBMIT_HINT);
  btn.classList.add("nw-test-btn");
  const title = h("div", "nw-section", HEADINGS.test);
  const el = h("div", "nw-box");
  el.append(title, input, btn, h("span", "nw-hint", SUBMIT_HINT));
  return { el, input, draw: (d: NeuronData) => (title.textContent = d.test_title) };
}

/** The top records, centred on their peak, and "more examples". */
function topSection(ask: Ask, status: { error(message: string): void; clearError(): void }) {
  const title = h("div", "nw-section");
  const list = h("div", "nw-top");
  let total = 0;
  const next = latest(); // a new neuron drops the answer for the one before
  const add = (records: Row[]) => {
    for (const r of records) list.appendChild(centredRow(r));
    more.hidden = list.childElementCount >= total || !records.length;
  };
  const more = button("more examples", async () => {
    const n = list.childElementCount;
    const reply = await ask<MoreReply>({ type: "more", start: n, stop: n + MORE_STEP }, next());
    if (reply?.type === "error") return status.error(reply.message);
    if (!reply || reply.start !== list.childElementCount) return; // answered for rows no longer shown
    status.clearError();
    add(reply.records);
  });
  const el = h("div", "nw-box");
  el.append(title, list, more);
  return {
    el,
    draw(d: NeuronData) {
      next();
      title.textContent = d.top_title;
      total = d.top_total;
      list.replaceChildren(...d.top.map(centredRow));
      more.hidden = d.top.length >= total;
    },
  };
}

/** "Try your text": runs as you type (Ctrl/Cmd+Enter: now); each run also asks for the effect
 *  (`effect` draws it); a newer run drops the answers of the one before. */
function trySection(ui: UiState, ask: Ask, status: { error(message: string): void; clearError(): void },
  effect: (reply: Promise<EffectReply | ErrorReply | null>) => void) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tryNext = latest();
  const effectNext = latest();
  const out = h("div", "nw-try-out");
  const input = textarea("nw-try-input", 2, "Type any text: its activations come back from the model", "your text", ui.tryText);
  const run = async () => {
    clearTimeout(timer);
    const text = input.value;
    if (!text.trim()) {
      tryNext();
      effectNext();
      return out.replaceChildren();
    }
    const reply = ask<TryReply>({ type: "try", text }, tryNext());
    effect(ask<EffectReply>({ type: "effect", text }, effectNext()));
    const r = await reply;
    if (r?.type === "error") return status.error(r.message);
    if (!r) return;
    status.clearError();
    out.replaceChildren(tokenRow(r.row));
  };
  keepKeys(input, () => void run());
  input.addEventListener("input", () => {
    ui.tryText = input.value;
    clearTimeout(timer);
    timer = setTimeout(run, 300);
  });
  const el = h("div", "nw-box");
  el.append(h("div", "nw-section", HEADINGS.try), input, out);
  return {
    el, input, out, run,
    stop: () => {
      clearTimeout(timer);
      tryNext();
      effectNext();
    },
  };
}

/** "Effect": the try text with the neuron zeroed, and a steering box. */
function effectSection(ui: UiState, ask: Ask, status: { error(message: string): void; clearError(): void }, key: () => string) {
  const steerNext = latest();
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
  const steer = async () => {
    const prompt = input.value;
    if (!prompt.trim()) {
      err.textContent = "Type a prompt first: the model continues it with and without the neuron clamped.";
      return;
    }
    steerOut.classList.add("nw-pending");
    const shownFor = key();
    const reply = await ask<SteerReply>({ type: "steer", prompt, strength: Number(slider.value) }, steerNext());
    if (!reply) return;
    steerOut.classList.remove("nw-pending");
    if (reply.type === "error") {
      err.textContent = reply.message;
      return status.error(reply.message);
    }
    err.textContent = "";
    status.clearError();
    showSteer(reply);
    ui.lastSteer = reply;
    ui.steerKey = shownFor;
  };
  keepKeys(input, () => void steer());
  keepKeys(slider);
  slider.addEventListener("input", () => {
    ui.strength = Number(slider.value);
    describe();
  });
  slider.addEventListener("change", () => input.value.trim() && void steer());
  const btn = button("Steer", steer, `continue with the neuron clamped (${SUBMIT_HINT})`);
  btn.classList.add("nw-steer-btn");
  const controls = h("div", "nw-steer-controls");
  controls.append(low, slider, high, strength, btn);
  const el = h("div", "nw-box nw-effect");
  el.append(
    h("div", "nw-section", HEADINGS.effect),
    h("div", "nw-note", HEADINGS.effect_note),
    out,
    h("div", "nw-subsection", HEADINGS.steer),
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
    reset(shown: string) {
      steerNext();
      steerOut.classList.remove("nw-pending");
      out.replaceChildren();
      if (ui.lastSteer && ui.steerKey === shown) showSteer(ui.lastSteer);
      else steerOut.replaceChildren();
    },
    /** The effect of the try text, when it comes: coloured tokens, or the error in this section only
     *  (the try box reports a text that cannot run). */
    async effect(reply: Promise<EffectReply | ErrorReply | null>) {
      const msg = await reply;
      if (!msg) return;
      if (msg.type === "error") {
        const e = h("div", "nw-error", msg.message);
        e.setAttribute("role", "alert");
        return out.replaceChildren(e);
      }
      status.clearError();
      const row = tokenRow(msg.row);
      row.classList.add("nw-effect-row");
      out.replaceChildren(h("div", "nw-note", msg.note), row);
    },
    stop: () => steerNext(),
  };
}

/** The histogram and the weight-based connections, beside the main column. */
function sideSection(navigate: Navigate) {
  const el = h("div", "nw-side");
  return {
    el,
    draw(d: NeuronData) {
      el.replaceChildren(h("div", "nw-section", HEADINGS.histogram), histogram(d.hist, d.header.max));
      el.append(...connectionsSection(d.connections, (layer, neuron) => navigate({ layer, neuron })));
    },
  };
}

/** Random and quantile samples, folded: a section's rows are asked for when it is first opened
 *  (the kernel puts them in `_samples`, so a saved notebook keeps the ones opened). */
function samplesSection(model: Model<NeuronState>, ask: Ask) {
  const el = h("div", "nw-samples");
  let boxes = new Map<string, HTMLDetailsElement>();
  const rows = (): Record<string, Row[]> => model.get("_samples") ?? {};
  function fill() {
    for (const [key, box] of boxes) {
      const got = rows()[key];
      if (!got || box.querySelector(".nw-seq")) continue;
      box.querySelector(".nw-samples-wait")?.remove();
      for (const r of got) box.appendChild(tokenRow(r));
    }
  }
  async function open(key: string, box: HTMLDetailsElement) {
    if (!box.open || rows()[key] || box.querySelector(".nw-samples-wait")) return;
    const wait = h("div", "nw-note nw-samples-wait", "loading…");
    box.appendChild(wait);
    const reply = await ask<DoneReply>({ type: "samples", key });
    if (reply?.type === "error") {
      wait.classList.add("nw-error");
      wait.setAttribute("role", "alert");
      wait.textContent = reply.message;
      wait.classList.remove("nw-samples-wait");
    }
  }
  return {
    el,
    draw(d: NeuronData) {
      boxes = new Map();
      el.replaceChildren();
      for (const f of d.samples) {
        const box = h("details", "nw-box");
        box.dataset.key = f.key;
        box.appendChild(h("summary", "nw-section", f.title));
        box.addEventListener("toggle", () => void open(f.key, box));
        boxes.set(f.key, box);
        el.appendChild(box);
      }
      fill();
    },
    fill,
  };
}

export function renderNeuronView(model: Model<NeuronState>, root: HTMLElement, invoke?: Invoke): () => void {
  const uid = model.get("_uid") ?? "";
  const ui: UiState = UI.get(uid) ?? { tryText: "", testText: "", focus: null };
  if (uid) UI.set(uid, ui);
  const ask = asker(invoke ?? invokeOn(model));
  /** Navigate through the view's traits; the kernel answers with the new _data (or puts them back). */
  const navigate: Navigate = (to) => {
    for (const [key, value] of Object.entries(to)) model.set(key as "layer" | "neuron" | "side", value as never);
    model.save_changes();
  };
  root.setAttribute("data-lm-suppress-shortcuts", "true");

  const neuronKey = () => `${model.get("layer")}/${model.get("neuron")}`;
  const status = statusSection(ask);
  const header = headerSection(model, navigate);
  const cards = cardsSection(ask, status.error);
  const test = testSection(ui, ask, status.error);
  const top = topSection(ask, status);
  const effect = effectSection(ui, ask, status, neuronKey);
  const tryText = trySection(ui, ask, status, (reply) => void effect.effect(reply));
  const samples = samplesSection(model, ask);
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
    for (const kind of ["input", "select", "keyup", "mouseup"]) {
      el.addEventListener(kind, () => (ui.caret = [el.selectionStart ?? 0, el.selectionEnd ?? 0]));
    }
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
      if (tryText.input.value.trim()) void tryText.run();
    }
    shownKey = shown;
    drawStatus();
  }

  function drawSamples() {
    if (!detached()) samples.fill();
  }

  draw();
  const focused = { steer: effect.input, test: test.input, try: tryText.input }[ui.focus ?? ""];
  if (focused) {
    focused.focus();
    if (ui.caret) focused.setSelectionRange(...ui.caret);
  }
  model.on("change:_data", draw);
  model.on("change:_status", drawStatus);
  model.on("change:_samples", drawSamples);
  function dispose() {
    tryText.stop();
    effect.stop();
    model.off("change:_data", draw);
    model.off("change:_status", drawStatus);
    model.off("change:_samples", drawSamples);
  }
  return dispose;
}
