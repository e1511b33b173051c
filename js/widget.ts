// The one bundle: anywidget entry for NeuronView, TokenView and ExplanationCard.
import "./widget.css";
import { renderNeuronView } from "./neuronview";
import { renderCardView, renderTokenView } from "./tokenview";
import { h } from "./dom";
import type { Model } from "./types";

function render({ model, el }: { model: Model; el: HTMLElement }): () => void {
  const root = h("div", "nw-root");
  el.appendChild(root);
  const kind = model.get("_view_kind");
  try {
    if (kind === "neuron") return renderNeuronView(model, root);
    if (kind === "tokens") return renderTokenView(model, root);
    if (kind === "card") return renderCardView(model, root);
    throw new Error(`unknown view kind ${JSON.stringify(kind)}`);
  } catch (e) {
    const err = h("div", "nw-error", `neuronwidget could not draw this view: ${(e as Error).message}. Re-run the cell; if it persists, report it with this message.`);
    root.replaceChildren(err);
    return () => {};
  }
}

export default { render };
