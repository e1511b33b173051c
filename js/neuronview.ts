// NeuronView: everything about one neuron, with live requests to the kernel.
import { slice, toFloat32 } from "./buffers";
import { renderCard } from "./card";
import { button, h } from "./dom";
import { formatActivation } from "./format";
import { histogram } from "./histogram";
import { legend, Scale, Tooltip, tokenRow } from "./tokens";
import type { CardData, Model, NeuronData, Rec, Status } from "./types";

const CONTEXT_LEFT = 12;
const CONTEXT_RIGHT = 6;
const MORE_STEP = 10;

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/** A top record centred on its max token, with a toggle to the full context. */
export function centredRecord(rec: Rec, values: Float32Array, scale: Scale): HTMLElement {
  const acts = slice(values, rec.a);
  const m = argmax(acts);
  const lo = Math.max(0, m - CONTEXT_LEFT);
  const hi = Math.min(rec.tokens.length, m + CONTEXT_RIGHT + 1);
  const box = h("div", "nw-rec");
  const short = tokenRow(rec.tokens.slice(lo, hi), acts.subarray(lo, hi), scale, { offset: lo });
  if (lo > 0) short.prepend(h("span", "nw-ellipsis", "…"));
  if (hi < rec.tokens.length) short.append(h("span", "nw-ellipsis", "…"));
  const full = tokenRow(rec.tokens, acts, scale);
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

export function renderNeuronView(model: Model, root: HTMLElement): () => void {
  let tryId = 0;
  let tryTimer: ReturnType<typeof setTimeout> | undefined;
  let scale: Scale = { max: 1, diverging: false };

  const header = h("div", "nw-header");
  const status = h("div", "nw-status");
  const cards = h("div", "nw-cards");
  const topBox = h("div", "nw-top");
  const tryOut = h("div", "nw-try-out");
  const side = h("div", "nw-side");
  const samples = h("div", "nw-samples");
  const legendBox = h("div");

  // "test your explanation"
  const testInput = h("textarea", "nw-input nw-test-input");
  testInput.rows = 2;
  testInput.placeholder = "e.g. the word “Paris” and other French cities";
  testInput.setAttribute("aria-label", "your explanation to test");
  const testBtn = button("Simulate & score", () => {
    const text = testInput.value.trim();
    if (!text) return showError("Type an explanation first, then press “Simulate & score”.");
    model.send({ type: "test", explanation: text });
  });
  testBtn.classList.add("nw-test-btn");
  const testBox = h("div", "nw-box");
  testBox.append(h("div", "nw-section", "Test your explanation"), testInput, testBtn);

  // "try your text"
  const tryInput = h("textarea", "nw-input nw-try-input");
  tryInput.rows = 2;
  tryInput.placeholder = "Type any text: its activations come back from the model";
  tryInput.setAttribute("aria-label", "your text");
  const sendTry = () => {
    const text = tryInput.value;
    if (!text.trim()) return tryOut.replaceChildren();
    tryId += 1;
    model.send({ type: "try", text, id: tryId });
  };
  tryInput.addEventListener("input", () => {
    clearTimeout(tryTimer);
    tryTimer = setTimeout(sendTry, 300);
  });
  const tryBox = h("div", "nw-box");
  tryBox.append(h("div", "nw-section", "Try your text"), tryInput, tryOut);

  const topSection = h("div", "nw-box");
  const moreBtn = button("more examples", () => {
    const n = topBox.childElementCount;
    model.send({ type: "more", group: "top", start: n, stop: n + MORE_STEP });
  });
  topSection.append(h("div", "nw-section", "Top activating examples (centred on the max token)"), topBox, moreBtn);

  const main = h("div", "nw-main");
  main.append(cards, testBox, topSection, tryBox, samples);
  const body = h("div", "nw-body");
  body.append(main, side);
  root.append(header, status, body, legendBox);
  new Tooltip(root);

  function showError(message: string) {
    status.replaceChildren();
    const err = h("div", "nw-error", message);
    err.setAttribute("role", "alert");
    status.appendChild(err);
  }

  function drawStatus() {
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
    status.append(bar, msg, button("Cancel", () => model.send({ type: "cancel" })));
  }

  function drawHeader(d: NeuronData) {
    const hd = d.header;
    header.replaceChildren();
    const title = h("div", "nw-title");
    title.append(h("span", "nw-model", hd.model), h("span", "nw-id", ` · layer ${hd.layer} · neuron ${hd.neuron}`));
    const meta = h("div", "nw-meta", `max activation ${formatActivation(hd.max)} · corpus: ${hd.corpus}`);
    const nav = h("div", "nw-nav");
    const numberInput = (label: string, value: number, count: number) => {
      const el = h("input", "nw-num");
      el.type = "number";
      el.min = "0";
      el.max = String(count - 1);
      el.value = String(value);
      el.setAttribute("aria-label", label);
      return el;
    };
    const layerIn = numberInput("layer", hd.layer, hd.n_layers);
    const neuronIn = numberInput("neuron", hd.neuron, hd.n_neurons);
    const goto = (layer: number, neuron: number) => model.send({ type: "goto", layer, neuron });
    const step = (delta: number) => {
      const flat = (hd.layer * hd.n_neurons + hd.neuron + delta + hd.n_layers * hd.n_neurons) % (hd.n_layers * hd.n_neurons);
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
  }

  function drawCards(d: NeuronData, values: Float32Array) {
    cards.replaceChildren(h("div", "nw-section", "Explanations"));
    for (const c of d.cards) cards.appendChild(renderCard(c, values, scale));
    if (!d.cards.length) {
      const empty = h("div", "nw-empty");
      empty.append(
        h("div", "nw-note", "No explanation for this neuron yet."),
        button(`Explain with ${d.explainer}`, () => model.send({ type: "explain" })),
      );
      cards.appendChild(empty);
    }
  }

  function drawSamples(d: NeuronData, values: Float32Array) {
    samples.replaceChildren();
    const rnd = h("details", "nw-box");
    rnd.appendChild(h("summary", "nw-section", `Random samples (${d.random.length})`));
    for (const r of d.random) rnd.appendChild(tokenRow(r.tokens, slice(values, r.a), scale));
    samples.appendChild(rnd);
    for (const q of d.quantiles) {
      const box = h("details", "nw-box");
      box.appendChild(h("summary", "nw-section", `Quantile sample: ${q.label}`));
      for (const r of q.records) box.appendChild(tokenRow(r.tokens, slice(values, r.a), scale));
      samples.appendChild(box);
    }
  }

  function draw() {
    const d = model.get("_data") as NeuronData;
    const values = toFloat32(model.get("_buf"));
    if (!d || !d.header) return showError(d?.error ?? "No neuron loaded.");
    scale = { max: d.header.max, diverging: !!d.diverging };
    drawHeader(d);
    if (d.header.is_tiny) root.classList.add("nw-tiny");
    drawCards(d, values);
    topBox.replaceChildren(...d.top.map((r) => centredRecord(r, values, scale)));
    moreBtn.hidden = d.top.length >= d.top_total;
    side.replaceChildren(h("div", "nw-section", "Activation histogram"), histogram(d.hist.edges, d.hist.counts, d.header.max, d.hist.caption));
    drawSamples(d, values);
    legendBox.replaceChildren(legend(scale));
    tryOut.replaceChildren();
    if (tryInput.value.trim()) sendTry();
    drawStatus();
  }

  function onCustom(msg: any, buffers?: unknown[]) {
    const values = toFloat32(buffers?.[0]);
    if (msg?.type === "more") {
      for (const r of msg.records as Rec[]) topBox.appendChild(centredRecord(r, values, scale));
      const d = model.get("_data") as NeuronData;
      moreBtn.hidden = topBox.childElementCount >= d.top_total || !msg.records.length;
    } else if (msg?.type === "try") {
      if (msg.id !== tryId) return; // a newer request is on its way
      tryOut.replaceChildren(tokenRow(msg.tokens, slice(values, msg.a), scale, { hints: msg.hints }));
    } else if (msg?.type === "card") {
      const card = renderCard(msg.card as CardData, values, scale);
      card.classList.add("nw-new");
      cards.querySelector(".nw-empty")?.remove();
      cards.children[0].after(card);
    } else if (msg?.type === "error") {
      showError(String(msg.message));
    }
  }

  draw();
  model.on("change:_data", draw);
  model.on("change:_status", drawStatus);
  model.on("msg:custom", onCustom);
  return () => {
    clearTimeout(tryTimer);
    model.off("change:_data", draw);
    model.off("change:_status", drawStatus);
    model.off("msg:custom", onCustom);
  };
}
