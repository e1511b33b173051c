// NeuronView: everything about one neuron, with live requests to the kernel.
import { connectionsSection } from "./connections";
import { slice, toFloat32 } from "./buffers";
import { renderCard } from "./card";
import display from "../neuronwidget/widgets/display.json";
import { button, h } from "./dom";
import { displayToken, formatActivation } from "./format";
import { histogram } from "./histogram";
import type { EffectReply, Header, NeuronData, Rec, Reply, Request, Side, SteerReply, Status, TokenValue } from "./messages";
import { legend, Scale, Tooltip, tokenRow } from "./tokens";
import type { Model, NeuronState } from "./types";

const CONTEXT_LEFT = 12;
const CONTEXT_RIGHT = 6;
const MORE_STEP = 10;
const BEST_OF = 5; // the "best of k" button: k candidates compared on held-in records, then one revision
export const SUBMIT_HINT: string = display.submit_keys;
const STEER_RANGE = 10; // the slider runs from -STEER_RANGE to +STEER_RANGE × the neuron's max (or |min|)
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

function argmax(v: ArrayLike<number>, negative = false): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (negative ? v[i] < v[best] : v[i] > v[best]) best = i;
  return best;
}

/** A top record centred on its extreme token, with a toggle to the full context. */
export function centredRecord(rec: Rec, values: Float32Array, scale: Scale, negative = false): HTMLElement {
  const acts = slice(values, rec.a);
  const m = argmax(acts, negative);
  let lo = Math.max(0, m - CONTEXT_LEFT);
  let hi = Math.min(rec.tokens.length, m + CONTEXT_RIGHT + 1);
  for (const g of rec.g ?? []) {  // never cut a character in two
    if (g.i < lo && g.i + g.n > lo) lo = g.i;
    if (g.i < hi && g.i + g.n > hi) hi = g.i + g.n;
  }
  const box = h("div", "nw-rec");
  const groups = (rec.g ?? []).filter((g) => g.i >= lo && g.i + g.n <= hi).map((g) => ({ ...g, i: g.i - lo }));
  const short = tokenRow(rec.tokens.slice(lo, hi), acts.subarray(lo, hi), scale, { offset: lo, groups });
  if (lo > 0) short.prepend(h("span", "nw-ellipsis", "…"));
  if (hi < rec.tokens.length) short.append(h("span", "nw-ellipsis", "…"));
  const full = tokenRow(rec.tokens, acts, scale, { groups: rec.g });
  full.hidden = true;
  const toggle = button("⤢", () => {
    full.hidden = !full.hidden;
    short.hidden = !full.hidden;
    toggle.textContent = full.hidden ? "⤢" : "⤡";
  }, `show all ${rec.tokens.length} tokens`);
  toggle.classList.add("nw-expand");
  box.append(toggle, short, full);
  return box;
}

function signed(v: number): string {
  const s = Math.abs(v) >= 0.01 || v === 0 ? v.toFixed(3) : v.toPrecision(2);
  return v > 0 ? `+${s}` : s;
}

function changes(items: TokenValue[]): string {
  return items.map((x) => `"${displayToken(x.token)}" ${signed(x.value)}`).join(", ") || "none";
}

/** One token's tooltip in the effect row: KL, the next token's Δ log p, what rose and fell. */
export function effectTip(msg: EffectReply, i: number): string {
  const lines = [`"${displayToken(msg.tokens[i])}" (token ${i}) · KL(clean ‖ zeroed) ${msg.kl[i].toPrecision(3)}`];
  if (i < msg.next.length) lines.push(`next "${displayToken(msg.next[i])}": Δ log p ${signed(msg.dlogp[i])}`);
  lines.push(`promoted: ${changes(msg.promoted[i] ?? [])}`, `suppressed: ${changes(msg.suppressed[i] ?? [])}`);
  return lines.join("\n");
}

/** The user's text coloured by how much zeroing the neuron changes each next-token prediction. */
export function effectRow(msg: EffectReply): HTMLElement {
  const top = Math.max(0, ...msg.kl.filter(Number.isFinite));
  const row = tokenRow(msg.tokens, msg.kl, { max: top, diverging: false });
  row.classList.add("nw-effect-row");
  row.querySelectorAll<HTMLElement>(".nw-tok").forEach((span, i) => {
    const tip = effectTip(msg, i);
    span.dataset.tip = tip;
    span.setAttribute("aria-label", tip);
    span.dataset.kl = String(msg.kl[i]);
  });
  return row;
}

/** What a slider strength means for this neuron: × its max, or × |min| below 0 on a signed neuron. */
export function steerValue(strength: number, hd: Pick<Header, "max" | "min" | "signed">): number {
  return strength < 0 && hd.signed && hd.min < 0 ? -strength * hd.min : strength * hd.max;
}

/** The plain and the steered continuation side by side (text, never HTML). */
export function steerTable(msg: SteerReply): HTMLElement {
  const box = h("div", "nw-steer-result");
  box.append(h("div", "nw-note", `clamped to ${formatActivation(msg.value)} (strength ${msg.strength > 0 ? "+" : ""}${msg.strength}) at every token of “${msg.prompt}” and its continuation`));
  const cols = h("div", "nw-steer-cols");
  for (const [title, text, cls] of [["plain", msg.plain, "nw-plain"], ["steered", msg.steered, "nw-steered"]] as const) {
    const col = h("div", `nw-steer-col ${cls}`);
    col.append(h("div", "nw-label", title), h("div", "nw-steer-text", text));
    cols.appendChild(col);
  }
  box.appendChild(cols);
  return box;
}

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

export function renderNeuronView(model: Model<NeuronState>, root: HTMLElement): () => void {
  let tryId = 0;
  let steerId = 0;
  let current: Header | null = null;
  let tryTimer: ReturnType<typeof setTimeout> | undefined;
  let scale: Scale = { max: 1, diverging: false };
  let side: Side = "positive";
  let shownKey = "";
  const uid = model.get("_uid") ?? "";
  const ui: UiState = UI.get(uid) ?? { tryText: "", testText: "", focus: null };
  if (uid) UI.set(uid, ui);
  const send = (msg: Request) => model.send(msg);
  /** Navigate through the view's traits; the kernel answers with the new _data (or puts them back). */
  const navigate = (to: { layer?: number; neuron?: number; side?: Side }) => {
    for (const [key, value] of Object.entries(to)) model.set(key as "layer" | "neuron" | "side", value as never);
    model.save_changes();
  };
  // a box left empty or not a whole number goes to the kernel as null, which says what is allowed
  const goto = (layer: number, neuron: number) =>
    navigate({ layer: Number.isInteger(layer) ? layer : (null as never), neuron: Number.isInteger(neuron) ? neuron : (null as never) });
  root.setAttribute("data-lm-suppress-shortcuts", "true");
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

  const header = h("div", "nw-header");
  const status = h("div", "nw-status");
  status.setAttribute("aria-live", "polite");
  const cards = h("div", "nw-cards");
  const topBox = h("div", "nw-top");
  const topTitle = h("div", "nw-section");
  const tryOut = h("div", "nw-try-out");
  const sideBox = h("div", "nw-side");
  const samples = h("div", "nw-samples");
  const legendBox = h("div");

  // "test your explanation": Enter is a new line, Ctrl/Cmd+Enter scores
  const testInput = h("textarea", "nw-input nw-test-input");
  testInput.rows = 2;
  testInput.placeholder = "e.g. the word “Paris” and other French cities";
  testInput.setAttribute("aria-label", "your explanation to test");
  testInput.value = ui.testText;
  testInput.addEventListener("input", () => (ui.testText = testInput.value));
  const submitTest = () => {
    const text = testInput.value.trim();
    if (!text) return showError("Type an explanation first, then press “Simulate & score”.");
    send({ type: "test", explanation: text });
  };
  keepKeys(testInput, submitTest);
  const testBtn = button("Simulate & score", submitTest, SUBMIT_HINT);
  testBtn.classList.add("nw-test-btn");
  const testBox = h("div", "nw-box");
  const testTitle = h("div", "nw-section", "Test your explanation");
  testBox.append(testTitle, testInput, testBtn, h("span", "nw-hint", SUBMIT_HINT));

  // "try your text": runs as you type (Ctrl/Cmd+Enter: now)
  const tryInput = h("textarea", "nw-input nw-try-input");
  tryInput.rows = 2;
  tryInput.placeholder = "Type any text: its activations come back from the model";
  tryInput.setAttribute("aria-label", "your text");
  tryInput.value = ui.tryText;
  const sendTry = () => {
    clearTimeout(tryTimer);
    const text = tryInput.value;
    if (!text.trim()) return tryOut.replaceChildren();
    tryId += 1;
    send({ type: "try", text, id: tryId });
    send({ type: "effect", text, id: tryId });
  };
  keepKeys(tryInput, sendTry);
  tryInput.addEventListener("input", () => {
    ui.tryText = tryInput.value;
    clearTimeout(tryTimer);
    tryTimer = setTimeout(sendTry, 300);
  });
  const tryBox = h("div", "nw-box");
  tryBox.append(h("div", "nw-section", "Try your text"), tryInput, tryOut);

  // "Effect": the try text with the neuron zeroed, and a steering box
  const effectOut = h("div", "nw-effect-out");
  const effectNote = h("div", "nw-note", "Type text in “Try your text”: each token shows how much zeroing this neuron there and before changes the model's next-token prediction.");
  const steerInput = h("textarea", "nw-input nw-steer-input");
  steerInput.rows = 1;
  steerInput.placeholder = "A prompt for the model to continue";
  steerInput.setAttribute("aria-label", "prompt to steer");
  steerInput.value = ui.steerText ?? "";
  steerInput.addEventListener("input", () => (ui.steerText = steerInput.value));
  const slider = h("input", "nw-steer-slider");
  slider.type = "range";
  slider.min = String(-STEER_RANGE);
  slider.max = String(STEER_RANGE);
  slider.step = "0.5";
  slider.value = String(ui.strength ?? STEER_DEFAULT);
  slider.setAttribute("aria-label", "steering strength");
  const strengthLabel = h("span", "nw-steer-strength");
  const steerErr = h("div", "nw-steer-error");
  const steerOut = h("div", "nw-steer-out");
  const describeStrength = () => {
    const s = Number(slider.value);
    const hd = current;
    const unit = s < 0 && hd?.signed ? "× |min|" : "× max";
    const value = hd ? ` → ${formatActivation(steerValue(s, hd))}` : "";
    strengthLabel.textContent = `strength ${s > 0 ? "+" : ""}${s} ${unit}${value}`;
    slider.setAttribute("aria-valuetext", strengthLabel.textContent);
  };
  const sendSteer = () => {
    const prompt = steerInput.value;
    if (!prompt.trim()) {
      steerErr.textContent = "Type a prompt first: the model continues it with and without the neuron clamped.";
      return;
    }
    steerId += 1;
    steerOut.classList.add("nw-pending");
    send({ type: "steer", prompt, strength: Number(slider.value), id: steerId });
  };
  keepKeys(steerInput, sendSteer);
  keepKeys(slider);
  slider.addEventListener("input", () => {
    ui.strength = Number(slider.value);
    describeStrength();
  });
  slider.addEventListener("change", () => steerInput.value.trim() && sendSteer());
  const steerBtn = button("Steer", sendSteer, `continue with the neuron clamped (${SUBMIT_HINT})`);
  steerBtn.classList.add("nw-steer-btn");
  const sliderRow = h("div", "nw-steer-controls");
  sliderRow.append(h("span", "nw-label", `−${STEER_RANGE}`), slider, h("span", "nw-label", `+${STEER_RANGE}`), strengthLabel, steerBtn);
  const effectBox = h("div", "nw-box nw-effect");
  effectBox.append(
    h("div", "nw-section", "Effect: what zeroing or clamping this neuron does"),
    effectNote,
    effectOut,
    h("div", "nw-subsection", "Steer: the model continues a prompt with this neuron clamped at every token"),
    steerInput,
    sliderRow,
    steerErr,
    steerOut,
  );

  const topSection = h("div", "nw-box");
  const moreBtn = button("more examples", () => {
    const n = topBox.childElementCount;
    send({ type: "more", start: n, stop: n + MORE_STEP });
  });
  topSection.append(topTitle, topBox, moreBtn);

  const main = h("div", "nw-main");
  main.append(cards, testBox, topSection, tryBox, effectBox, samples);
  const body = h("div", "nw-body");
  body.append(main, sideBox);
  root.append(header, status, body, legendBox);
  new Tooltip(root);
  for (const [el, name] of [[testInput, "test"], [tryInput, "try"], [steerInput, "steer"]] as const) {
    el.addEventListener("focus", () => (ui.focus = name));
    el.addEventListener("blur", () => (ui.focus = ui.focus === name ? null : ui.focus));
  }

  function showError(message: string) {
    status.replaceChildren();
    const err = h("div", "nw-error", message);
    err.setAttribute("role", "alert");
    status.appendChild(err);
  }
  /** Every new result clears the previous error. */
  function clearError() {
    status.querySelector(".nw-error")?.remove();
  }

  function drawStatus() {
    if (detached()) return;
    const s = (model.get("_status") ?? {}) as Status;
    status.replaceChildren();
    if (s.error) return showError(s.error);
    if (!s.task) return;
    const bar = h("progress", "nw-progress");
    if (s.total) {
      bar.max = s.total;
      bar.value = s.done ?? 0;
    }
    const msg = h("span", "nw-status-msg", s.message || `${s.task}…`);
    status.append(bar, msg, button("Cancel", () => send({ type: "cancel" })));
  }

  function drawHeader(d: NeuronData) {
    const hd = d.header;
    header.replaceChildren();
    const title = h("div", "nw-title");
    title.append(h("span", "nw-model", hd.model), h("span", "nw-id", ` · layer ${model.get("layer")} · neuron ${model.get("neuron")}`));
    const range = hd.signed ? `activations ${formatActivation(hd.min)} to ${formatActivation(hd.max)}` : `max activation ${formatActivation(hd.max)}`;
    const meta = h("div", "nw-meta", `${range} · corpus: ${hd.corpus}`);
    const nav = h("div", "nw-nav");
    const numberInput = (label: string, value: number, count: number) => {
      const el = h("input", "nw-num");
      el.type = "number";
      el.min = "0";
      el.max = String(count - 1);
      el.value = String(value);
      el.setAttribute("aria-label", label);
      keepKeys(el, () => goto(Number(layerIn.value), Number(neuronIn.value)));
      return el;
    };
    const layer = model.get("layer");
    const neuron = model.get("neuron");
    const layerIn = numberInput("layer", layer, hd.n_layers);
    const neuronIn = numberInput("neuron", neuron, hd.n_neurons);
    const step = (delta: number) => {
      const flat = (layer * hd.n_neurons + neuron + delta + hd.n_layers * hd.n_neurons) % (hd.n_layers * hd.n_neurons);
      goto(Math.floor(flat / hd.n_neurons), flat % hd.n_neurons);
    };
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
    header.append(title, meta, nav);
    if (hd.signed) header.appendChild(sideSwitch(side));
  }

  function sideSwitch(current: Side): HTMLElement {
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
    box.appendChild(h("span", "nw-note", display.sides[current]));
    return box;
  }

  function drawCards(d: NeuronData, values: Float32Array) {
    cards.replaceChildren(h("div", "nw-section", "Explanations"));
    for (const c of d.cards) {
      const el = renderCard(c, values);
      if (c.fresh) el.classList.add("nw-new");
      cards.appendChild(el);
    }
    if (!d.cards.length) {
      const empty = h("div", "nw-empty");
      const which = d.header.signed ? ` (${side} side)` : "";
      empty.append(
        h("div", "nw-note", `No explanation for this neuron${which} yet.`),
      );
      cards.appendChild(empty);
    }
    const actions = h("div", "nw-actions");
    actions.append(
      button(`Explain with ${d.explainer}`, () => send({ type: "explain", best_of: 1 })),
      button(`Explain (best of ${BEST_OF}, revised)`, () => send({ type: "explain", best_of: BEST_OF }),
        `${BEST_OF} candidates simulated on held-in records, the best kept, then one revision kept if it scores higher there`),
    );
    cards.appendChild(actions);
  }

  function drawSamples(d: NeuronData, values: Float32Array) {
    samples.replaceChildren();
    const rnd = h("details", "nw-box");
    rnd.appendChild(h("summary", "nw-section", `Random samples (${d.random.length})`));
    for (const r of d.random) rnd.appendChild(tokenRow(r.tokens, slice(values, r.a), scale, { groups: r.g }));
    samples.appendChild(rnd);
    for (const q of d.quantiles) {
      const box = h("details", "nw-box");
      box.appendChild(h("summary", "nw-section", `Quantile sample: ${q.label}`));
      for (const r of q.records) box.appendChild(tokenRow(r.tokens, slice(values, r.a), scale, { groups: r.g }));
      samples.appendChild(box);
    }
  }

  function draw() {
    if (detached()) return;
    const d = model.get("_data") as NeuronData;
    const values = toFloat32(model.get("_buf"));
    if (!d || !d.header) return showError("No neuron loaded.");
    side = model.get("side") ?? "positive";
    scale = { max: d.header.max, min: d.header.min, diverging: !!d.diverging };
    current = d.header;
    describeStrength();
    drawHeader(d);
    root.classList.toggle("nw-tiny", !!d.header.is_tiny);
    drawCards(d, values);
    const negative = side === "negative";
    topTitle.textContent = negative
      ? "Most negative examples (centred on the lowest token)"
      : "Top activating examples (centred on the max token)";
    testTitle.textContent = d.header.signed ? `Test your explanation of the ${side} side` : "Test your explanation";
    topBox.replaceChildren(...d.top.map((r) => centredRecord(r, values, scale, negative)));
    moreBtn.hidden = d.top.length >= d.top_total;
    sideBox.replaceChildren(h("div", "nw-section", "Activation histogram"), histogram(d.hist.edges, d.hist.counts, d.header.max, d.hist.caption));
    sideBox.append(...connectionsSection(d.connections, (layer, neuron) => navigate({ layer, neuron })));
    drawSamples(d, values);
    legendBox.replaceChildren(legend(scale));
    // the user's text runs again only when the neuron or side changed (not for a new card)
    const shown = `${model.get("model")}/${model.get("layer")}/${model.get("neuron")}/${side}`;
    if (shown !== shownKey || !tryOut.childElementCount) {
      tryOut.replaceChildren();
      effectOut.replaceChildren();
      const neuronKey = `${model.get("layer")}/${model.get("neuron")}`;
      if (ui.lastSteer && ui.steerKey === neuronKey) steerOut.replaceChildren(steerTable(ui.lastSteer));
      else steerOut.replaceChildren(); // none yet, or a continuation of another neuron
      if (tryInput.value.trim()) sendTry();
    }
    shownKey = shown;
    drawStatus();
  }

  function onCustom(msg: Reply, buffers?: unknown[]) {
    if (detached()) return;
    const values = toFloat32(buffers?.[0]);
    if (msg?.type === "more") {
      clearError();
      for (const r of msg.records) topBox.appendChild(centredRecord(r, values, scale, side === "negative"));
      const d = model.get("_data") as NeuronData;
      moreBtn.hidden = topBox.childElementCount >= d.top_total || !msg.records.length;
    } else if (msg?.type === "try") {
      if (msg.id !== tryId) return; // a newer request is on its way
      clearError();
      tryOut.replaceChildren(tokenRow(msg.tokens, slice(values, msg.a), scale, { groups: msg.g }));
    } else if (msg?.type === "effect") {
      if (msg.id !== tryId) return;
      clearError();
      effectOut.replaceChildren(
        h("div", "nw-note", "colour = KL(clean ‖ zeroed) of each next-token prediction; hover or click a token for what it promotes and suppresses"),
        effectRow(msg),
      );
    } else if (msg?.type === "steer") {
      if (msg.id !== steerId) return;
      clearError();
      steerErr.textContent = "";
      steerOut.classList.remove("nw-pending");
      steerOut.replaceChildren(steerTable(msg));
      ui.lastSteer = msg;
      ui.steerKey = `${model.get("layer")}/${model.get("neuron")}`;
    } else if (msg?.type === "error") {
      if (msg.action === "effect") {
        const err = h("div", "nw-error", String(msg.message));
        err.setAttribute("role", "alert");
        return effectOut.replaceChildren(err); // the try box reports a text that cannot run
      }
      if (msg.action === "steer") {
        steerErr.textContent = String(msg.message);
        steerOut.classList.remove("nw-pending");
      }
      showError(String(msg.message));
    }
  }

  draw();
  if (ui.focus === "steer") steerInput.focus();
  if (ui.focus === "test") testInput.focus();
  if (ui.focus === "try") tryInput.focus();
  model.on("change:_data", draw);
  model.on("change:_status", drawStatus);
  model.on("msg:custom", onCustom);
  function dispose() {
    clearTimeout(tryTimer);
    model.off("change:_data", draw);
    model.off("change:_status", drawStatus);
    model.off("msg:custom", onCustom);
  }
  return dispose;
}
