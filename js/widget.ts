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

const render: Render<AnyState> = ({ model, el, experimental }) => {
  const root = h("div", "nw-root");
  el.appendChild(root);
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
