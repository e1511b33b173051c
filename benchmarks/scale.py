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
     is byte-identical to the one-thread single-process index;
  5. a worker SIGKILLed half way through a build (its shards reassigned in the same call):
     time against a clean build; and workers loading the model from a local folder by its
     spec (and checking the weights) vs receiving the object through Ray's object store.
"""

from __future__ import annotations

import argparse
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
    return index.checksums()


def _kill_a_worker() -> bool:
    """SIGKILL one index worker of the local Ray cluster this process started (its raylet's children)."""
    import signal

    def parent(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])

    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::ShardWorker.call") and parent(parent(int(entry))) == os.getpid():
                    os.kill(int(entry), signal.SIGKILL)
                    return True
        except (OSError, ValueError):
            continue
    return False


def deaths_and_shipping(lm, corpus, settings: dict, tok: int, reference: dict) -> None:
    """5. what a worker death costs one build, and loading the model by its spec vs shipping it."""
    from neuronwidget.activations.distributed import build_on_ray

    def build(model, progress=False):
        b = IndexBuilder(model, corpus, cache_dir=tempfile.mkdtemp(prefix="nw-scale-"), **settings)
        t = time.perf_counter()
        build_on_ray(b, progress=progress, workers=2)
        return time.perf_counter() - t, b

    print("\n5. worker deaths and model shipping (2 workers; no checkpoint while folding)")
    clean, b_clean = build(lm)
    killed: list[bool] = []

    def kill_half_way(done, total, message):
        if done >= total // 2 and not killed:
            killed.append(_kill_a_worker())

    hurt, b_hurt = build(lm, kill_half_way)
    tm = b_hurt.timings
    print(f"   clean build {clean:.1f}s; with one worker SIGKILLed half way {hurt:.1f}s = {hurt / clean:.2f}x "
          f"(killed: {bool(killed and killed[0])}, deaths {tm['worker_deaths']}, {tm['shards_reassigned']} of "
          f"{tm['shards']} shards folded again, replacement start-up included); identical to the 1-thread index: "
          f"{shas(b_hurt.load_cached()) == reference}")
    folder = tempfile.mkdtemp(prefix="nw-scale-model-")
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    from_folder = load_model(folder, device="cpu")
    by_spec, b_spec = build(from_folder)
    starts = {"object": b_clean.timings["worker_start_s"], "source": b_spec.timings["worker_start_s"]}
    print(f"   model from a local folder: workers {b_spec.timings['model_shipped']!r}, start-up "
          f"{', '.join(f'{x:.1f}s' for x in starts['source'])} (load + weights check) vs shipped object "
          f"{', '.join(f'{x:.1f}s' for x in starts['object'])}; build {by_spec:.1f}s = {by_spec / clean:.2f}x the "
          f"shipped one; identical: {shas(b_spec.load_cached()) == reference}")


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
    deaths_and_shipping(lm, corpus, settings, tok, shas(idx_one))
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
