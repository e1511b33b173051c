"""Index format 6 on SmolLM2-135M: size, score error of the compact records, first view of a layer.

    python benchmarks/index.py [--tokens 16384] [--neurons 100] [--layer 2]

Prints (a benchmark, not a test; every figure is measured in this run, in a fresh cache):
  1. the first NeuronView(layer, n) on a fresh cache (a lazy index: layers 0..layer built,
     the forward stopping there) / one full index build, both measured here
     (goal <= 0.25);
  2. index size on disk, against what format 3 stored for the same records (float16 window
     activations, int32 ids, full histogram edges; goal <= 40% of format 3's 646 MB), and where
     the bytes go: per array, and the stored windows by the lists that reference them;
  3. simulation scores (``explanations.scoring.score``, the offline default explainer and
     simulator) from the compact records vs from exact float32 values recomputed by the model,
     on ``--neurons`` neurons, each side of these signed neurons (goal: every |difference|
     <= 0.005).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuronwidget import api as config  # noqa: E402
from neuronwidget.activations import Corpus, Engine, bundled_corpus  # noqa: E402
from neuronwidget.activations.build import IndexBuilder  # noqa: E402
from neuronwidget.activations.store import BOTTOM, QUANTILE, RANDOM, TOP, ref_layout  # noqa: E402


def stored_rows(idx, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """(neuron, flags) of every window a layer stores (see store.ref_layout)."""
    a = idx.layer_arrays(layer)
    neuron, _, flags, _ = ref_layout(a["top_ids"], a["bottom_ids"], idx._common["rand_ids"], a["q_ids"])
    return neuron, flags


def corpus_of(tokens: int) -> Corpus:
    full = bundled_corpus()
    return Corpus(f"{full.name} (first {tokens:,} tokens)", full.fingerprint, full.documents, max_tokens=tokens)


def format3_bytes(idx) -> int:
    """What format 3 wrote for the same records: float16 activations + int32 window id per
    stored window, int32 ids, float32 histogram edges, the rest as now."""
    total = 0
    for layer in range(idx.n_layers):
        a = idx.layer_arrays(layer)
        rows = len(stored_rows(idx, layer)[0])
        total += rows * (64 * 2 + 4) + (idx.n_neurons + 1) * 8  # float16 values and int32 id per window, offsets
        for name in ("top_ids", "bottom_ids", "q_ids", "hist_counts"):
            total += a[name].size * 4
        for name in ("top_max", "bottom_min", "q_bounds", "moments", "extremes"):
            total += a[name].nbytes
        total += idx.n_neurons * 51 * 4  # hist_edges
    return total + idx._common["windows"].nbytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16_384)
    ap.add_argument("--neurons", type=int, default=100)
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--scores-only", action="store_true", help="skip 1 (timings); build or reuse the index in "
                    "$NEURONWIDGET_CACHE / the default cache")
    args = ap.parse_args()
    from neuronwidget.widgets import NeuronView

    corpus = corpus_of(args.tokens)
    eng = Engine("smollm2-135m", device="cpu")
    print(f"SmolLM2-135M ({eng.n_layers} x {eng.n_neurons} neurons), {args.tokens:,} tokens of the bundled corpus, CPU")

    if args.scores_only:  # builds (lazily) only the layers the scores read; the size once complete
        idx = eng.index(corpus, progress=False, lazy=True)
        idx._builder.build_layers(score_layers(eng), progress=False)
        if len(idx.ready_layers()) == idx.n_layers:
            size(idx)
        return scores(eng, idx, args)
    # 1. first view of a layer vs a full build, each in a fresh cache
    config.configure(cache_dir=tempfile.mkdtemp(prefix="nw-bench-"), model=eng.lm)
    t = time.perf_counter()
    lazy = eng.index(corpus, lazy=True, progress=False)
    NeuronView(args.layer, 5, model=eng.lm, index=lazy)
    first_view = time.perf_counter() - t
    ready = lazy.ready_layers()
    # a whole build from nothing (a builder of its own: the engine would complete the lazy index above)
    t = time.perf_counter()
    idx = IndexBuilder(eng.lm, corpus, cache_dir=tempfile.mkdtemp(prefix="nw-bench-")).run(progress=False)
    full = time.perf_counter() - t
    idx.attach(eng.lm)
    print(f"\n1. first NeuronView({args.layer}, 5) on a fresh cache: {first_view:.1f}s (layers {ready} built); "
          f"full index build: {full:.1f}s -> ratio {first_view / full:.2f} (goal <= 0.25)")

    size(idx)
    scores(eng, idx, args)


def size(idx) -> None:
    total, old = idx.size_bytes(), format3_bytes(idx)
    per_array: dict[str, int] = {}
    for path in idx.folder.rglob("*.npy"):
        per_array[path.stem] = per_array.get(path.stem, 0) + path.stat().st_size
    kinds = {"top": 0, "bottom (not top)": 0, "random (not top/bottom)": 0, "quantile samples only": 0}
    rows = 0
    for layer in range(idx.n_layers):
        _, flags = stored_rows(idx, layer)
        rows += len(flags)
        kinds["top"] += int(((flags & TOP) != 0).sum())
        kinds["bottom (not top)"] += int(((flags & (TOP | BOTTOM)) == BOTTOM).sum())
        kinds["random (not top/bottom)"] += int(((flags & (TOP | BOTTOM | RANDOM)) == RANDOM).sum())
        kinds["quantile samples only"] += int((flags == QUANTILE).sum())
    per = idx.n_layers * idx.n_neurons
    print(f"\n2. index size: {total / 1e6:.1f} MB; format 3 stored the same records in {old / 1e6:.1f} MB "
          f"-> {total / old:.3f} ({total / 646e6:.3f} of the 646 MB the issue measured; goal <= 0.40)")
    print(f"   {rows:,} stored windows ({rows / per:.1f} per neuron: "
          + ", ".join(f"{k} {v / per:.1f}" for k, v in kinds.items()) + ")")
    print("   per array: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sorted(per_array.items(), key=lambda kv: -kv[1])))


def score_layers(eng) -> list[int]:
    return sorted({int(x) for x in np.linspace(0, eng.n_layers - 1, 4)})  # a few layers: exact windows are shared


def scores(eng, idx, args) -> None:
    from neuronwidget.explanations.backends import resolve_explainer, resolve_simulator
    from neuronwidget.explanations.explainer import explain
    from neuronwidget.explanations.scoring import score

    # 3. scores: compact vs exact
    explainer, simulator = resolve_explainer(), resolve_simulator()
    rng = np.random.default_rng(0)
    layers = score_layers(eng)
    # layer by layer: a layer's recomputed windows serve all its neurons (the cache holds a few layers)
    picks = sorted((layers[i % len(layers)], int(n))
                   for i, n in enumerate(rng.choice(eng.n_neurons, args.neurons, replace=False)))
    diffs, undefined, t = [], 0, time.perf_counter()
    for layer, neuron in picks:
        exact, compact = idx.record(layer, neuron, exact=True), idx.record(layer, neuron, exact=False)
        for side in ("positive", "negative"):
            e = explain(exact.for_side(side), explainer, simulator=simulator)[0]
            a = score(exact.for_side(side), e, simulator).score
            b = score(compact.for_side(side), e, simulator).score
            if a is None or b is None:
                undefined += (a is None) + (b is None)
                continue
            diffs.append(abs(a - b))
    d = np.array(diffs)
    print(f"\n3. score(compact records) - score(exact records), {len(picks)} neurons x 2 sides, layers {layers}, "
          f"{explainer.name} explainer and simulator ({time.perf_counter() - t:.0f}s):")
    print(f"   max |diff| {d.max():.4f}, 95th percentile {np.percentile(d, 95):.4f}, mean {d.mean():.4f} over "
          f"{len(d)} scores ({undefined} undefined) -> {'within' if d.max() <= 0.005 else 'NOT within'} 0.005")


if __name__ == "__main__":
    main()
