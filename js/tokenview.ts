// TokenView and ExplanationCard: their presentation in, coloured tokens out.
import { renderCard } from "./card";
import { h } from "./dom";
import { legend, Tooltip, tokenRow } from "./tokens";
import type { CardState, Model, TokensState } from "./types";

export function renderTokenView(model: Model<TokensState>, root: HTMLElement): () => void {
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  const draw = () => {
    root.replaceChildren();
    new Tooltip(root);
    const data = model.get("_data");
    if (data.title) root.appendChild(h("div", "nw-title", data.title));
    for (const row of data.seqs) root.appendChild(tokenRow(row));
    root.appendChild(legend(data.legend));
  };
  draw();
  model.on("change:_data", draw);
  return () => model.off("change:_data", draw);
}

export function renderCardView(model: Model<CardState>, root: HTMLElement): () => void {
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  const draw = () => {
    root.replaceChildren();
    new Tooltip(root);
    const card = model.get("_data");
    root.append(renderCard(card), legend(card.scale));
  };
  draw();
  model.on("change:_data", draw);
  return () => model.off("change:_data", draw);
}
