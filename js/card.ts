// An explanation with its score, and the scoring details: real vs simulated per record.
import { slice } from "./buffers";
import { h } from "./dom";
import { formatScore } from "./format";
import { Scale, tokenRow } from "./tokens";
import type { CardData } from "./types";

export const SCORE_LEGEND =
  "Score = correlation between simulated and real activations, pooled over held-out top-activating and random texts; 1 = perfect, 0 = no better than chance.";

export function renderCard(card: CardData, values: Float32Array, scale?: Scale): HTMLElement {
  const sc: Scale = scale ?? { max: card.max, diverging: false };
  const box = h("div", "nw-card");
  const head = h("div", "nw-card-head");
  head.appendChild(h("span", "nw-score", formatScore(card.score)));
  head.appendChild(h("span", "nw-expl", card.explanation));
  box.appendChild(head);

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
  details.appendChild(h("summary", undefined, "scoring details: real vs simulated activations"));
  for (const seq of card.seqs) {
    const item = h("div", seq.error ? "nw-simrec nw-failed" : "nw-simrec");
    const label = `${seq.kind ?? "record"} · r = ${formatScore(seq.score)}`;
    item.appendChild(h("div", "nw-simrec-label", label));
    const real = slice(values, seq.real);
    item.appendChild(h("span", "nw-rowlabel", "real"));
    item.appendChild(tokenRow(seq.tokens, real, sc, { label: "real activation" }));
    item.appendChild(h("span", "nw-rowlabel", "simulated"));
    if (seq.error || !seq.sim) {
      item.appendChild(h("div", "nw-error", `simulation failed: ${seq.error ?? "no prediction"}`));
    } else {
      item.appendChild(tokenRow(seq.tokens, slice(values, seq.sim), sc, { label: "simulated", tenthsScale: seq.sim_max }));
    }
    details.appendChild(item);
  }
  box.appendChild(details);
  return box;
}
