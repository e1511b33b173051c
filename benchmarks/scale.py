"""Index builds on Ray vs one process: prints ratios measured in one run (not a test).

    python benchmarks/scale.py [--windows N] [--layers L]

On a random-weights model of GPT-2-small width (768 / 3072 neurons per layer, ``--layers``
blocks; speed does not depend on the weights), over ``--windows`` 64-token windows of the
bundled corpus:
  1. the single-process build (all threads) and the same with one thread (what one CPU
     Ray worker gets);
  2. ``distributed="ray"`` with 1 and 2 workers on a local ``ray.init(num_cpus=2)``:
     throughput ratio against (1), Ray start-up excluded, worker start-up (model shipped
     and loaded) included;
  3. the merge (collecting the workers' states + merging them) as a share of the build;
  4. per-worker figures for paper estimates: tokens/s per worker and the index's
     bookkeeping cost per token and neuron (one thread), and a check that the Ray index
     is byte-identical to the one-thread single-process index.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuronwidget.activations.build import IndexBuilder  # noqa: E402
from neuronwidget.activations.corpus import bundled_corpus  # noqa: E402
from neuronwidget.subject import load_model  # noqa: E402


def shas(index) -> dict:
    return {k: v["sha256"] for k, v in json.loads((index.folder / "manifest.json").read_text())["files"].items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel

    tiny = load_model("tiny", device="cpu")
    torch.manual_seed(0)
    lm = load_model(GPT2LMHeadModel(GPT2Config(n_layer=args.layers)), device="cpu", tokenizer=tiny.tokenizer)
    corpus = bundled_corpus()
    corpus.max_tokens = args.windows * 64
    settings = dict(batch_size=args.batch, calibration_windows=32, checkpoint_seconds=3600)
    tok = args.windows * 64
    print(f"model: GPT-2-small width, {lm.n_layers} layers x {lm.n_neurons} neurons (random weights); "
          f"{args.windows} windows = {tok:,} tokens, batch {args.batch}; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores")

    def single(threads: int):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            b = IndexBuilder(lm, corpus, cache_dir=tempfile.mkdtemp(prefix="nw-scale-"), **settings)
            t = time.perf_counter()
            idx = b.run(progress=False)
            return time.perf_counter() - t, b, idx
        finally:
            torch.set_num_threads(old)

    all_threads = torch.get_num_threads()
    t_all, b_all, _ = single(all_threads)
    t_one, b_one, idx_one = single(1)
    print("\n1. single process")
    print(f"   {all_threads} threads: {t_all:.1f}s ({tok / t_all:,.0f} tok/s; pass {b_all.timings['pass_s']:.1f}s, "
          f"calibration {b_all.timings['calibration_s']:.1f}s, write {b_all.timings['write_s']:.1f}s)")
    print(f"   1 thread:  {t_one:.1f}s ({tok / t_one:,.0f} tok/s)")

    import ray

    from neuronwidget.activations.distributed import init_ray

    t = time.perf_counter()
    init_ray(num_cpus=2, object_store_memory=300 * 1024 * 1024)
    print(f"\n2. Ray (local cluster, num_cpus=2; ray.init took {time.perf_counter() - t:.1f}s, not counted)")
    from neuronwidget.activations.distributed import build_on_ray  # noqa: E402

    rows = []
    for workers in (1, 2):
        b = IndexBuilder(lm, corpus, cache_dir=tempfile.mkdtemp(prefix="nw-scale-"), **settings)
        t = time.perf_counter()
        build_on_ray(b, progress=False, workers=workers)
        total = time.perf_counter() - t
        idx = b.load_cached()
        same = shas(idx) == shas(idx_one)
        tm = b.timings
        merge = tm["collect_s"] + tm["merge_s"]
        busy = tm["worker_busy_s"]
        rows.append((workers, total, merge, busy))
        print(f"   {workers} worker(s): {total:.1f}s -> {tok / total:,.0f} tok/s; vs single process {all_threads} threads "
              f"{t_all / total:.2f}x, vs 1 thread {t_one / total:.2f}x; identical to the 1-thread index: {same}")
        print(f"      pass {tm['pass_s']:.1f}s (incl. worker start-up), workers busy {', '.join(f'{s:.1f}s' for s in busy)}; "
              f"collect {tm['collect_s']:.2f}s + merge {tm['merge_s']:.2f}s = {merge / total:.1%} of the build; "
              f"write {tm['write_s']:.1f}s; {tm['shards']} shards")
    ray.shutdown()

    print("\n4. per-worker figures (1 thread)")
    busy1 = rows[0][3][0]
    per_worker = tok / busy1
    neuron_tokens = tok * lm.n_layers * lm.n_neurons
    windows = b_one.plan().windows
    torch.set_num_threads(1)
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(windows), args.batch):
            lm.transformer(input_ids=torch.from_numpy(windows[s:s + args.batch]).long(), use_cache=False)
    bare = time.perf_counter() - t
    torch.set_num_threads(all_threads)
    book = max(busy1 - bare, 0.0)
    print(f"   bare forward, 1 thread: {tok / bare:,.0f} tok/s; index bookkeeping = busy - bare = {book:.1f}s "
          f"= {book / neuron_tokens * 1e9:.2f} ns per neuron-token ({book / busy1:.0%} of a worker's time)")
    print(f"   one worker folds {per_worker:,.0f} tok/s of this {lm.n_layers}-layer model "
          f"= {neuron_tokens / busy1 / 1e6:,.1f} M neuron-tokens/s (forward + bookkeeping)")


if __name__ == "__main__":
    main()
