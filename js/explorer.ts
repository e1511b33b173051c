// Explorer (text -> the neurons firing at each token) and SearchBox (words -> explanations).
// Both open a NeuronView in place: the kernel puts a NeuronView widget in `_child` and this
// file renders that widget's own model with renderNeuronView, with a button back.
import "./explorer.css";
import { button, h } from "./dom";
import { HEADINGS } from "./headings";
import { asker, type Invoke, invokeOn, latest } from "./invoke";
import type { DoneReply, ExplorerData, OpenReply, OpenRequest, SearchData } from "./messages";
import { renderNeuronView } from "./neuronview";
import { levelClass } from "./tokens";
import display from "../neuronwidget/widgets/display.json";

export type { ExplorerData, SearchData, SearchRow, TopRow } from "./messages";

export type { Invoke } from "./invoke";

type AnyModel = {
  get(name: string): any;
  set(name: string, value: any): void;
  save_changes(): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string | null, cb?: ((...args: any[]) => void) | null): void;
  send(content: unknown, callbacks?: unknown, buffers?: any): void;
  widget_manager?: { get_model(id: string): Promise<any> };
};

/** The model id inside a widget reference ("anywidget:<id>" or "IPY_MODEL_<id>"). */
export function refId(ref: unknown): string | null {
  if (typeof ref !== "string" || !ref) return null;
  for (const prefix of ["anywidget:", "IPY_MODEL_"]) if (ref.startsWith(prefix)) return ref.slice(prefix.length);
  return ref;
}

/** The part of a view that shows the child NeuronView in place of `main`, with a way back.
 * `open` asks the kernel (the open_request command) and shows its answer; a new `_child` is
 * shown too; dispose() stops. */
function inPlace(model: AnyModel, root: HTMLElement, main: HTMLElement, status: StatusLine, invoke?: Invoke) {
  const showError = status.error;
  const panel = h("div", "nw-inplace");
  panel.hidden = true;
  const back = button("◀ back", () => {
    panel.hidden = true;
    main.hidden = false;
  }, "back to where you were");
  back.classList.add("nw-back");
  const holder = h("div", "nw-child");
  panel.append(back, holder);
  root.appendChild(panel);
  let mountedId: string | null = null;
  let cleanup: (() => void) | null = null;

  async function show() {
    const id = refId(model.get("_child"));
    if (!id) return;
    main.hidden = true;
    panel.hidden = false;
    if (id === mountedId) return;
    const wm = model.widget_manager;
    if (!wm) return showError("This notebook front end cannot show a NeuronView inside another view; display nw.NeuronView(layer, neuron) in a cell instead.");
    try {
      const child = await wm.get_model(id);
      cleanup?.();
      const childRoot = h("div", "nw-root nw-nested");
      holder.replaceChildren(childRoot);
      cleanup = renderNeuronView(child, childRoot);
      mountedId = id;
    } catch (e) {
      showError(`could not show the neuron: ${(e as Error).message}`);
    }
  }
  const aborter = new AbortController();
  async function open(req: OpenRequest, busy: string) {
    if (!invoke) return showError("This notebook front end cannot open a neuron here (its anywidget has no commands); display nw.NeuronView(layer, neuron) in a cell instead.");
    status.busy(busy);
    try {
      const [reply] = await invoke<OpenReply>("open_request", req, { signal: aborter.signal });
      if (reply.type === "error") return status.error(reply.message);
      status.clear();
      await show();
    } catch (e) {
      if (!aborter.signal.aborted) showError(`could not open the neuron: ${(e as Error).message}`);
    }
  }
  const onChild = () => void show();
  model.on("change:_child", onChild);
  return {
    show,
    open,
    dispose: () => {
      aborter.abort();
      model.off("change:_child", onChild);
      cleanup?.();
    },
  };
}

function statusLine(root: HTMLElement) {
  const status = h("div", "nw-status");
  root.appendChild(status);
  return {
    el: status,
    error(message: string) {
      const err = h("div", "nw-error", message);
      err.setAttribute("role", "alert");
      status.replaceChildren(err);
    },
    busy(message: string) {
      status.replaceChildren(h("span", "nw-status-msg", message));
    },
    clear() {
      status.replaceChildren();
    },
  };
}

type StatusLine = ReturnType<typeof statusLine>;

function neuronButton(label: string, detail: string, explanation: string | null, score: string | null, onOpen: () => void): HTMLElement {
  const row = button("", onOpen, "open this neuron's view");
  row.classList.add("nw-xrow");
  row.append(h("span", "nw-xid", label), h("span", "nw-xval", detail));
  const expl = h("span", explanation ? "nw-xexpl" : "nw-xexpl nw-note", explanation ?? HEADINGS.no_explanation_yet);
  row.append(expl);
  if (score) row.append(h("span", "nw-xscore", score));
  return row;
}

/** The Explorer: `text` and `position` (the token selected) are the model's traits; the
 *  kernel answers a new text with new `_data`. */
export function renderExplorer(model: AnyModel, root: HTMLElement, invoke?: Invoke): () => void {
  const main = h("div", "nw-explorer");
  const status = statusLine(root);
  root.prepend(main);
  const title = h("div", "nw-title");
  const hint = h("div", "nw-note", HEADINGS.explorer_hint);
  const text = h("div", "nw-xtext");
  const table = h("div", "nw-xtable");
  // the ranking: the `by` trait ("activation" or "effect"); the kernel measures effects when asked
  const ranking = h("div", "nw-xrank");
  ranking.setAttribute("role", "group");
  ranking.setAttribute("aria-label", "rank neurons by");
  main.append(title, hint, ranking, text, table);
  const place = inPlace(model, root, main, status, invoke);
  let spans: HTMLElement[] = [];
  let selected = -1;

  function drawRanking() {
    const d = model.get("_data") as ExplorerData;
    const by = model.get("by") ?? "activation";
    ranking.replaceChildren(...Object.entries(d.rankings ?? {}).map(([value, label]) => {
      const b = button(label, () => {
        model.set("by", value);
        model.save_changes();
      });
      b.classList.add("nw-xrank-btn");
      b.dataset.by = value;
      b.setAttribute("aria-pressed", String(value === by));
      return b;
    }));
  }

  function draw() {
    const d = model.get("_data") as ExplorerData;
    drawRanking();
    title.replaceChildren(h("span", "nw-model", d.model), h("span", "nw-id", " · explorer"));
    root.classList.toggle("nw-tiny", !!d.is_tiny);
    const levels = Array.from(d.level, (c) => c.charCodeAt(0) - display.code_zero);
    spans = d.tokens.map((tok, i) => {
      const span = h("span", "nw-tok nw-xtok", d.text[i]);
      span.tabIndex = 0;
      span.dataset.keyboard = ""; // walked with the arrow keys: the saved output waits (widget.ts)
      span.setAttribute("role", "button");
      span.setAttribute("aria-label", `token ${i}: ${tok}`);
      span.dataset.position = String(i);
      if (levels[i]) span.classList.add(levelClass(levels[i]));
      span.addEventListener("click", () => choose(i));
      span.addEventListener("focus", () => choose(i));
      span.addEventListener("keydown", (ev: KeyboardEvent) => {
        ev.stopPropagation();
        const step = ev.key === "ArrowRight" ? 1 : ev.key === "ArrowLeft" ? -1 : 0;
        if (step && spans[i + step]) {
          ev.preventDefault();
          spans[i + step].focus();
        }
      });
      return span;
    });
    text.replaceChildren(...spans);
    selected = -1;
    select(model.get("position") ?? 0);
  }

  /** The user picks a token: the position trait follows (the kernel and Python see it). */
  function choose(i: number) {
    if (i === model.get("position")) return select(i);
    model.set("position", i);
    model.save_changes();
  }

  function select(i: number) {
    const d = model.get("_data") as ExplorerData;
    if (i === selected || !spans[i]) return;
    spans[selected]?.classList.remove("nw-xsel");
    selected = i;
    spans[i].classList.add("nw-xsel");
    const byEffect = model.get("by") === "effect";
    const measured = d.effect?.[String(i)];
    if (byEffect && !measured) {
      table.replaceChildren(h("div", "nw-note nw-xwait", "measuring which neurons matter here…"));
      return;
    }
    const rows = byEffect ? measured! : d.tops[i] ?? [];
    table.replaceChildren(h("div", "nw-section", byEffect ? d.effect_heads[String(i)] : d.heads[i]));
    if (!rows.length) table.appendChild(h("div", "nw-note", HEADINGS.explorer_none));
    for (const r of rows) {
      table.appendChild(neuronButton(r.label, r.detail, r.explanation, r.score_text, () =>
        void place.open({ type: "open", layer: r.layer, neuron: r.neuron, side: r.side },
          `opening layer ${r.layer}, neuron ${r.neuron}…`)));
    }
  }

  const onPosition = () => select(model.get("position") ?? 0);
  const onBy = () => {
    drawRanking();
    selected = -1;
    onPosition();
  };
  draw();
  model.on("change:_data", draw);
  model.on("change:position", onPosition);
  model.on("change:by", onBy);
  return () => {
    model.off("change:_data", draw);
    model.off("change:position", onPosition);
    model.off("change:by", onBy);
    place.dispose();
  };
}

export function renderSearchBox(model: AnyModel, root: HTMLElement, invoke?: Invoke): () => void {
  const main = h("div", "nw-search");
  const status = statusLine(root);
  root.prepend(main);
  const input = h("input", "nw-input nw-search-input");
  input.type = "search";
  input.placeholder = "words to search explanations for, e.g. capital cities";
  input.setAttribute("aria-label", "search explanations");
  // the search_request command: results come back in _data, a failure as its answer
  const ask = asker(invoke ?? invokeOn(model));
  const next = latest();
  const go = async () => {
    const reply = await ask<DoneReply>({ type: "search", query: input.value }, next());
    if (reply?.type === "error") status.error(reply.message);
  };
  // keys typed here stay here: JupyterLab's shortcuts (Shift+Enter, A, B, D,D…) never see them
  input.setAttribute("data-lm-suppress-shortcuts", "true");
  input.addEventListener("keydown", (ev: KeyboardEvent) => {
    ev.stopPropagation();
    if (ev.key === "Enter") void go();
  });
  for (const kind of ["keypress", "keyup"]) input.addEventListener(kind, (ev) => ev.stopPropagation());
  const results = h("div", "nw-xtable nw-search-results");
  main.append(h("div", "nw-section", HEADINGS.search), input, button("Search", () => void go()), results);
  const place = inPlace(model, root, main, status, invoke);

  function draw() {
    const d = model.get("_data") as SearchData;
    if (document.activeElement !== input) input.value = d.query ?? "";
    results.replaceChildren();
    if (d.error) return status.error(d.error);
    status.clear();
    if (d.query && !d.results.length) results.appendChild(h("div", "nw-note", HEADINGS.search_none));
    for (const r of d.results) {
      results.appendChild(neuronButton(r.label, r.explainer ?? "", r.explanation, r.score_text, () =>
        void place.open({ type: "open", layer: r.layer, neuron: r.neuron, model: r.model, side: r.side },
          `opening ${r.label}…`)));
    }
  }
  draw();
  model.on("change:_data", draw);
  return () => {
    model.off("change:_data", draw);
    place.dispose();
  };
}
