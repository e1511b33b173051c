// An explanation with its score, and the scoring details: real vs simulated per record.
import display from "../neuronwidget/widgets/display.json";
import { slice } from "./buffers";
import { h } from "./dom";
import { formatScore } from "./format";
import type { CardData } from "./messages";
import { Scale, tokenRow } from "./tokens";

export const SCORE_LEGEND: string = display.score_legend;

/** The card's activations are those the method scored (-activation on the negative side),
 *  on the card's own positive scale. */
export function renderCard(card: CardData, values: Float32Array): HTMLElement {
  const sc: Scale = { max: card.max, diverging: false };
  const box = h("div", "nw-card");
  box.dataset.side = card.side;
  const head = h("div", "nw-card-head");
  head.appendChild(h("span", "nw-score", card.score_text));
  head.appendChild(h("span", "nw-expl", card.explanation));
  box.appendChild(head);
  box.appendChild(h("div", `nw-card-side nw-side-${card.side}`, display.sides[card.side] ?? card.side));

  const nTop = card.seqs.filter((s) => s.kind === "top").length;
  const nRandom = card.seqs.filter((s) => s.kind === "random").length;
  const sub = [
    `top-only ${formatScore(card.top_score)}`,
    `random-only ${formatScore(card.random_score)}`,
    `on ${nTop} top + ${nRandom} random held-out texts`,
  ];
  box.appendChild(h("div", "nw-card-sub", sub.join(" · ")));
  box.appendChild(h("div", "nw-card-legend", SCORE_LEGEND));
  const who = `explainer: ${card.explainer ?? "unknown"} · simulator: ${card.simulator ?? "unknown"}`;
  box.appendChild(h("div", "nw-card-who", who));
  if (card.note) box.appendChild(h("div", "nw-note", card.note));

  const details = h("details", "nw-details");
  const what = card.side === "negative" ? "real (−activation) vs simulated" : "real vs simulated activations";
  details.appendChild(h("summary", undefined, `scoring details: ${what}`));
  for (const seq of card.seqs) {
    const item = h("div", seq.error ? "nw-simrec nw-failed" : "nw-simrec");
    const label = `${seq.kind ?? "record"} · r = ${formatScore(seq.score)}`;
    item.appendChild(h("div", "nw-simrec-label", label));
    const real = slice(values, seq.real);
    item.appendChild(h("span", "nw-rowlabel", "real"));
    item.appendChild(tokenRow(seq.tokens, real, sc, { label: "real", groups: seq.g }));
    item.appendChild(h("span", "nw-rowlabel", "simulated"));
    if (seq.error || !seq.sim) {
      item.appendChild(h("div", "nw-error", `simulation failed: ${seq.error ?? "no prediction"}`));
    } else {
      item.appendChild(tokenRow(seq.tokens, slice(values, seq.sim), sc, { label: "simulated", tenthsScale: seq.sim_max, groups: seq.g }));
    }
    details.appendChild(item);
  }
  box.appendChild(details);
  return box;
}
