"""SAE latents as units (issue 19): the offline SAE's quality, index throughput with an SAE
attached, and how well the rules explainer explains latents vs neurons of the same layer.

    .venv/bin/python benchmarks/sae.py                 # SmolLM2-135M, 8,192 tokens, 100 units each
    .venv/bin/python benchmarks/sae.py --quick         # 4,096 tokens, 30 units each

Prints figures, never pass/fail:

1. The offline TopK SAE (``nw.train_sae()``: SmolLM2-135M layer 8 MLP output, bundled corpus;
   trained once, then read from the cache): training seconds, fraction of variance explained
   and next-token loss clean / spliced in / MLP output zeroed, on held-out windows.
2. Index throughput: the neurons of layers 0..8 indexed alone, and the same build with the SAE
   attached (``build_together``: one forward pass per batch folds neurons and latents), over the
   first ``--max-tokens`` tokens of the bundled corpus, each in a fresh cache folder, alternated
   ``--rounds`` times (best of each). Ratio = tokens/s with the SAE / tokens/s without (goal >= 0.8).
3. Rules explainer, scored by its own simulator (as benchmarks/quality.py "own"): ``--units``
   latents sampled among those active on the corpus, and as many layer-8 neurons (positive
   side; the negative side too), over the same corpus. Median score (defined ones), undefined
   count, median with undefined as 0, and the share of latents scoring above the neurons' median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuronwidget.activations.build import IndexBuilder  # noqa: E402
from neuronwidget.activations.corpus import bundled_corpus  # noqa: E402
from neuronwidget.activations.sae_train import train_sae  # noqa: E402
from neuronwidget.activations.together import build_together  # noqa: E402
from neuronwidget.api import explain, score  # noqa: E402
from neuronwidget.explanations import RulesBackend  # noqa: E402
from neuronwidget.subject import SMOLLM2, load_model  # noqa: E402
from neuronwidget.subject.units import UnitModel  # noqa: E402


def corpus(max_tokens: int):
    c = bundled_corpus()
    c.max_tokens = max_tokens
    return c


def rules_scores(idx, layer: int, units: list[int], side: str = "positive") -> list[float | None]:
    rules = RulesBackend()
    out = []
    for u in units:
        rec = idx.record(layer, u)
        if side == "negative":
            rec = rec.for_side("negative")
        expl = explain(rec, rules)[0]
        out.append(score(rec, expl, rules, store=False).score)
    return out


def summary(name: str, scores: list[float | None]) -> float:
    defined = [s for s in scores if s is not None]
    med = statistics.median(defined) if defined else float("nan")
    med0 = statistics.median([s if s is not None else 0.0 for s in scores])
    p90 = float(np.percentile(defined, 90)) if defined else float("nan")
    print(f"  {name:<28} n={len(scores):>3} undefined={len(scores) - len(defined):>3} median={med:.3f} "
          f"p90={p90:.3f} median(undef=0)={med0:.3f}")
    return med0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--units", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sections", default="1,2,3")
    ap.add_argument("--all-layers", action="store_true", help="section 2 over every layer's neurons, not 0..8")
    args = ap.parse_args()
    if args.quick:
        args.max_tokens, args.units, args.rounds = 4096, 30, 1
    sections = {int(s) for s in args.sections.split(",")}
    lm = load_model(SMOLLM2, device="cpu")

    print("1. the offline TopK SAE (SmolLM2-135M, bundled corpus)", flush=True)
    t = time.perf_counter()
    sae, rep = train_sae(lm)
    print(f"  {sae.describe()}\n  ready in {time.perf_counter() - t:.1f} s (training itself took {rep['train_s']:.0f} s "
          f"+ {rep['collect_s']:.0f} s reading {rep['train_tokens']:,} + {rep['heldout_tokens']:,} tokens of activations)")
    print(f"  held out: fraction of variance explained {rep['fraction_variance_explained']:.3f}, L0 {rep['l0']:.1f}; "
          f"next-token loss {rep['loss_clean']:.3f} clean, {rep['loss_spliced']:.3f} spliced in "
          f"(+{rep['loss_increase']:.3f}), {rep['loss_zero_ablated']:.3f} with the site zeroed "
          f"(+{rep['loss_zero_ablated'] - rep['loss_clean']:.3f}); dead latents {rep['dead_latents_at_end']}", flush=True)
    um = UnitModel(lm, [sae])
    layers = list(range(lm.n_layers if args.all_layers else sae.layer + 1))

    if 2 in sections:
        print(f"\n2. index throughput, neurons of layers 0-{layers[-1]} with and without the SAE, "
              f"{args.max_tokens:,} tokens", flush=True)
        alone, both = [], []
        for r in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                b = IndexBuilder(lm, corpus(args.max_tokens), cache_dir=Path(tmp) / "a")
                t = time.perf_counter()
                b.build_layers(layers, progress=False)
                alone.append(time.perf_counter() - t)
                t = time.perf_counter()
                build_together(lm, [um], corpus(args.max_tokens), layers=layers, progress=False,
                               cache_dir=Path(tmp) / "b")
                both.append(time.perf_counter() - t)
            print(f"  round {r + 1}: neurons alone {alone[-1]:.1f} s, with the SAE {both[-1]:.1f} s", flush=True)
        print(f"  throughput with the SAE / neurons alone: {min(alone) / min(both):.2f} (best of {args.rounds}; goal >= 0.8)")

    if 3 in sections:
        print(f"\n3. rules explainer (own simulator), layer {sae.layer}, latents vs neurons, {args.max_tokens:,} tokens",
              flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            nidx, (uidx,) = build_together(lm, [um], corpus(args.max_tokens), layers=[sae.layer], progress=True,
                                           cache_dir=tmp)
            dens = uidx.densities(sae.layer)
            print(f"  latents active on the corpus: {int((dens > 0).sum())} of {sae.d_sae}; median density of those "
                  f"{float(np.median(dens[dens > 0])):.4f}")
            rng = np.random.default_rng(args.seed)
            alive = np.flatnonzero(dens > 0)
            lat = sorted(rng.choice(alive, size=min(args.units, alive.size), replace=False).tolist())
            neu = sorted(rng.choice(lm.n_neurons, size=min(args.units, lm.n_neurons), replace=False).tolist())
            t = time.perf_counter()
            s_lat = rules_scores(uidx, sae.layer, lat)
            s_pos = rules_scores(nidx, sae.layer, neu)
            s_neg = rules_scores(nidx, sae.layer, neu, "negative")
            print(f"  ({time.perf_counter() - t:.0f} s to explain and score)")
            summary("SAE latents", s_lat)
            m_pos = summary("neurons, positive side", s_pos)
            summary("neurons, negative side", s_neg)
            better = sum(1 for s in s_lat if (s if s is not None else 0.0) > m_pos)
            print(f"  latents scoring above the neurons' median (positive side, undefined = 0): {better} of {len(s_lat)}")
            best = sorted(((s, u) for s, u in zip(s_lat, lat) if s is not None), reverse=True)[:3]
            for s, u in best:
                print(f"    latent {u}: {explain(uidx.record(sae.layer, u), RulesBackend())[0]!r} (score {s:.2f})")


if __name__ == "__main__":
    main()
