// The one bundle: anywidget entry for every neuronwidget view. A view is one entry in
// VIEWS, keyed by the Python class's _view_kind.
import type { Render } from "@anywidget/types";
import "./widget.css";
import "./levels.css";
import { h } from "./dom";
import { renderExplorer, renderSearchBox } from "./explorer";
import type { Invoke } from "./invoke";
import { renderNeuronView } from "./neuronview";
import { renderCardView, renderTokenView } from "./tokenview";
import type { AnyState, Model } from "./types";

type ViewRenderer = (model: Model<any>, root: HTMLElement, invoke?: Invoke) => () => void;

export const VIEWS: Record<string, ViewRenderer> = {
  neuron: renderNeuronView,
  tokens: renderTokenView,
  card: renderCardView,
  explorer: renderExplorer,
  search: renderSearchBox,
};

/** Tell the kernel while one of the view's text boxes or sliders, or an element marked
 *  `data-keyboard` (the Explorer's tokens, walked with the arrow keys), has the keyboard: it holds
 *  back re-sending the view's output (a display update draws the view again, and the keyboard
 *  would be taken from the box mid-word) and sends it once the keyboard leaves. */
export function reportEditing(root: HTMLElement, invoke: Invoke) {
  let editing: boolean | null = null; // the first state is always sent: it replaces the last drawing's
  const update = () => {
    const active = document.activeElement;
    const now = !!active && root.contains(active) && active.matches("input, textarea, select, [data-keyboard]");
    if (now === editing) return;
    editing = now;
    invoke("editing_request", { type: "editing", editing: now }).catch(() => {}); // a closed kernel: nothing to hold
  };
  root.addEventListener("focus", update, true); // capture: before the element's own focus handler sends anything
  root.addEventListener("focusout", () => setTimeout(update)); // focus has moved on only after focusout
  setTimeout(update); // once the view is drawn (and has taken the keyboard back, if it had it)
}

const render: Render<AnyState> = ({ model, el, experimental }) => {
  const root = h("div", "nw-root");
  el.appendChild(root);
  if (experimental?.invoke) reportEditing(root, experimental.invoke as Invoke);
  const kind = model.get("_view_kind");
  try {
    const view = VIEWS[kind];
    if (!view) throw new Error(`unknown view kind ${JSON.stringify(kind)}`);
    return view(model, root, experimental?.invoke as Invoke | undefined);
  } catch (e) {
    const err = h("div", "nw-error", `neuronwidget could not draw this view: ${(e as Error).message}. Re-run the cell; if it persists, report it with this message.`);
    root.replaceChildren(err);
    return () => {};
  }
};

export default { render };
