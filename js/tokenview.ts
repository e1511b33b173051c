// TokenView and ExplanationCard: plain data in, coloured tokens out.
import { slice, toFloat32 } from "./buffers";
import { renderCard } from "./card";
import { h } from "./dom";
import { legend, Scale, Tooltip, tokenRow } from "./tokens";
import type { CardState, Model, TokensState } from "./types";

export function renderTokenView(model: Model<TokensState>, root: HTMLElement): () => void {
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  const draw = () => {
    root.replaceChildren();
    new Tooltip(root);
    const data = model.get("_data");
    const values = toFloat32(model.get("_buf"));
    const scale: Scale = { max: data.max, min: data.min, diverging: data.diverging };
    if (data.title) root.appendChild(h("div", "nw-title", data.title));
    for (const rec of data.seqs) root.appendChild(tokenRow(rec.tokens, slice(values, rec.a), scale, { groups: rec.g }));
    root.appendChild(legend(scale));
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
    const values = toFloat32(model.get("_buf"));
    root.appendChild(renderCard(card, values));
    root.appendChild(legend({ max: card.max, diverging: false }));
  };
  draw();
  model.on("change:_data", draw);
  return () => model.off("change:_data", draw);
}
