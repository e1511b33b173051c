// An explanation with its score, and the scoring details: real vs simulated per record. Every
// string comes from the card's presentation (present.card).
import { h } from "./dom";
import type { CardData } from "./messages";
import { tokenRow } from "./tokens";

export function renderCard(card: CardData): HTMLElement {
  const box = h("div", "nw-card");
  box.dataset.side = card.side;
  const head = h("div", "nw-card-head");
  head.append(h("span", "nw-score", card.score_text), h("span", "nw-expl", card.explanation));
  box.append(
    head,
    h("div", `nw-card-side nw-side-${card.side}`, card.side_label),
    h("div", "nw-card-sub", card.sub),
    h("div", "nw-card-legend", card.legend),
    h("div", "nw-card-who", card.who),
  );
  if (card.note) box.appendChild(h("div", "nw-note", card.note));
  const details = h("details", "nw-details");
  details.appendChild(h("summary", undefined, card.summary));
  for (const seq of card.seqs) {
    const item = h("div", seq.sim ? "nw-simrec" : "nw-simrec nw-failed");
    item.append(h("div", "nw-simrec-label", seq.label), h("span", "nw-rowlabel", "real"), tokenRow(seq.real));
    item.appendChild(h("span", "nw-rowlabel", "simulated"));
    // the simulated row comes without its text: it is the real row's, token for token
    item.appendChild(seq.sim ? tokenRow({ ...seq.sim, text: seq.real.text }) : h("div", "nw-error", seq.error ?? ""));
    details.appendChild(item);
  }
  box.appendChild(details);
  return box;
}
