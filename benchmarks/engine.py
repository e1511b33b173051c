"""Engine benchmark: prints ratios measured in one run (not a test).

    python benchmarks/engine.py [--quick] [--code PATH]

``--code PATH`` imports neuronwidget from another checkout (e.g. a ``git worktree`` of an
older commit) so figure 1 and the sizes can be compared before/after on the same machine.

Figures, on a GPT-2-small-sized model (GPT2Config() defaults, random weights; speed does
not depend on the weights) unless said otherwise:
  1. all-neuron index throughput / bare ``model.transformer(...)`` throughput, same batches
     (goal >= 0.9). Measured interleaved, batch by batch (bare forward of batch i, then the
     index's forward + bookkeeping of batch i), the median of ``--rounds`` rounds' ratios: a
     shared, busy machine then disturbs both sides alike; then SmolLM2-135M (both
     tails), folding with the one-pass CPU kernel (the default on a CPU) and with the torch
     ops (the GPU's path) for comparison; ``--profile``: where SmolLM2's pass spends its time;
  2. the same index with activations from TransformerLens ``run_with_cache`` (goal: ours
     >= 1.5x faster) when transformer_lens imports. TransformerLens 4 removed
     HookedTransformer; 3.9 works with this transformers when installed aside, e.g.
     ``pip install --target /tmp/tl --no-deps transformer_lens==3.9.0 better_abc einops
     fancy-einsum jaxtyping typeguard wadler_lindig beartype datasets dill multiprocess
     xxhash`` then ``PYTHONPATH=/tmp/tl python benchmarks/engine.py``;
  3. ``layer_activations(text, L)`` time / full forward time (goal <= (L+1)/12 + 0.05);
  4. first index on a fresh cache with the offline default corpus: tiny model and the
     GPT-2-small-sized model (seconds to ready, tokens covered);
  5. one neuron's record from the index (goal <= 50 ms); index size on disk.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

_code = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv else str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, _code)

from neuronwidget import api as config  # noqa: E402
from neuronwidget.activations.corpus import bundled_corpus  # noqa: E402
from neuronwidget.activations import Engine  # noqa: E402
from neuronwidget.activations.build import IndexBuilder  # noqa: E402
from neuronwidget.subject import load_model  # noqa: E402


def fresh_cache() -> None:
    config.configure(cache_dir=tempfile.mkdtemp(prefix="nw-bench-"))


def small_gpt2(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return load_model(GPT2LMHeadModel(GPT2Config()), device="cpu", tokenizer=tokenizer)


def bare_forward(lm, windows: np.ndarray, batch: int) -> float:
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(windows), batch):
            lm.transformer(input_ids=torch.from_numpy(windows[s:s + batch]).long(), use_cache=False)
    return time.perf_counter() - t


class TLBuilder(IndexBuilder):
    """The same index bookkeeping, activations captured by TransformerLens run_with_cache."""

    tl_model = None

    def _forward(self, ids, fn):
        names = [f"blocks.{i}.mlp.hook_post" for i in range(self.lm.n_layers)]
        with torch.inference_mode():
            _, cache = self.tl_model.run_with_cache(torch.from_numpy(ids.astype(np.int64)),
                                                    names_filter=lambda n: n in names)
        for i, name in enumerate(names):
            fn(i, cache[name])


def tl_model_or_reason():
    try:
        import warnings

        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except Exception as e:  # noqa: BLE001
        return None, f"transformer_lens not importable ({type(e).__name__}: {str(e)[:200]})"
    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_ctx=1024, d_head=64, n_heads=12, d_mlp=3072,
                                  d_vocab=50257, act_fn="gelu_new", normalization_type="LN", device="cpu")
    torch.manual_seed(0)
    return HookedTransformer(cfg).eval(), None


def interleaved_ratio(lm, corpus, batch: int, rounds: int = 5, fused_bare: bool = False, torch_ops: bool = False,
                      **settings) -> tuple[float, float, float, list[float]]:
    """(bare s, index s, median ratio, every round's ratio): ``rounds`` rounds, each a fresh
    index state over every batch, the bare forward of batch i run just before the index's
    forward + bookkeeping of batch i; a round's ratio is its bare seconds / its index seconds,
    and the median over rounds is reported (a shared, busy machine disturbs both sides alike
    within a batch, and a disturbed round is outvoted). ``fused_bare``: the bare forward runs
    GPT-2's GELU as the capture does (one fused kernel), so the ratio is the bookkeeping's
    share alone. ``torch_ops``: the index folds with the torch ops (the GPU's path) instead of
    the one-pass CPU kernel (activations/fused.py)."""
    from neuronwidget.activations import build

    b = IndexBuilder(lm, corpus, batch_size=batch, calibration_windows=64, **settings)
    if hasattr(b, "new_state"):  # this checkout's mergeable state
        plan = b.plan()
        windows, calib = plan.windows, b.calibrate(plan)

        def fresh():
            state = b.new_state(plan, calib)
            if torch_ops:
                state.fused = False
            return lambda bi: state.fold_batch(lm, bi)
    else:  # the format-1 builder (before the mergeable state)
        windows = corpus.windows(lm.tokenizer, lm.eos_token_id)
        cal = [build._LayerState(lm.n_neurons, b.top_k, 0, b.n_quantile, 64, lm.device) for _ in range(lm.n_layers)]
        b._calibrate(windows, cal)

        def fresh():
            states = [build._LayerState(lm.n_neurons, b.top_k, 0, b.n_quantile, 64, lm.device) for _ in range(lm.n_layers)]
            for st, c in zip(states, cal):
                st.q_bounds.copy_(c.q_bounds)
                st.hist_hi.copy_(c.hist_hi)

            def fold(bi):
                w0 = bi * batch
                b._forward(windows[w0:w0 + batch], lambda layer, acts: b._fold(states[layer], layer, acts, w0, [], bi))
            return fold
    n_batches = (len(windows) + batch - 1) // batch
    ratios, bare_total, index_total = [], [], []
    for _ in range(rounds):
        bare = np.zeros(n_batches)
        index = np.zeros(n_batches)
        fold = fresh()
        for bi in range(n_batches):
            ids = torch.from_numpy(windows[bi * batch:(bi + 1) * batch]).long()
            acts = [blk.mlp.act for blk in lm.blocks] if fused_bare else []
            for blk in lm.blocks if fused_bare else []:
                blk.mlp.act = torch.nn.GELU(approximate="tanh")
            t = time.perf_counter()
            with torch.inference_mode():
                lm.transformer(input_ids=ids, use_cache=False)
            bare[bi] = time.perf_counter() - t
            for blk, act in zip(lm.blocks, acts):
                blk.mlp.act = act
            t = time.perf_counter()
            fold(bi)
            index[bi] = time.perf_counter() - t
        ratios.append(float(bare.sum() / index.sum()))
        bare_total.append(float(bare.sum()))
        index_total.append(float(index.sum()))
    return statistics.median(bare_total), statistics.median(index_total), statistics.median(ratios), ratios


def profile_fold(lm, corpus, batch: int, n_batches: int = 3) -> None:
    """Where an index pass's time goes beyond the forward (torch.profiler, self CPU time by op,
    over ``n_batches`` batches after a warm-up batch): ops under IndexState._token_stats split into
    window max/min, moment sums and histogram by op name; _select (top / bottom / quantile
    selection, random copies) whole; everything else is the forward pass and its hooks."""
    from torch.profiler import ProfilerActivity, profile, record_function
    from neuronwidget.activations import state as S

    b = IndexBuilder(lm, corpus, batch_size=batch, calibration_windows=64)
    plan = b.plan()
    st = b.new_state(plan, b.calibrate(plan))
    originals = {name: getattr(S.IndexState, name) for name in ("_token_stats", "_select", "_fold_fused")}

    def labelled(name, fn):
        def run(*a, **k):
            with record_function(name):
                return fn(*a, **k)
        return run

    for name, fn in originals.items():
        setattr(S.IndexState, name, labelled(f"nw.{name.strip('_')}", fn))
    try:
        st.fold_batch(lm, 0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for bi in range(1, 1 + n_batches):
                st.fold_batch(lm, bi % plan.n_batches)
    finally:
        for name, fn in originals.items():
            setattr(S.IndexState, name, fn)
    groups = {"window max/min": ("aten::amax", "aten::amin"),
              "moment sums": ("aten::mul", "aten::sum", "aten::add_", "aten::fill_", "aten::zeros"),
              "histogram": ("aten::addcmul", "aten::clamp_", "aten::copy_", "aten::index_add_", "aten::bincount")}
    share: dict[str, float] = {}
    total = 0.0
    for ev in prof.events():
        kernel = ev.name == "nw.fold_fused"  # not a torch op: the kernel's time is this label's own
        if (ev.name.startswith("nw.") and not kernel) or ev.cpu_parent is None and ev.name.startswith("ProfilerStep"):
            continue
        owner = ev if kernel else ev.cpu_parent
        while owner is not None and not owner.name.startswith("nw."):
            owner = owner.cpu_parent
        us = ev.self_cpu_time_total
        total += us
        if owner is None:
            key = "forward (model ops, hooks)"
        elif owner.name == "nw.fold_fused":
            key = "one-pass CPU kernel (statistics and selections)"
        elif owner.name == "nw.select":
            key = "selection (top/bottom/quantile, random copies)"
        else:
            key = next((g for g, ops in groups.items() if ev.name in ops), "other statistics ops")
        share[key] = share.get(key, 0.0) + us
    fwd = share.get("forward (model ops, hooks)", 0.0)
    print(f"   profile over {n_batches} batches of {batch} windows (self CPU time; shares of the whole pass, and "
          f"of the time beyond the forward):")
    for key, us in sorted(share.items(), key=lambda kv: -kv[1]):
        extra = "" if key.startswith("forward") else f", {us / max(total - fwd, 1e-9):.0%} of the bookkeeping"
        print(f"     {key}: {us / 1e6:.2f} s, {us / total:.0%}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller corpus, skips the gpt2-small default-corpus index")
    ap.add_argument("--code", help="import neuronwidget from this checkout instead")
    ap.add_argument("--ratio-only", action="store_true", help="figure 1 only (and --profile)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the interleaved ratio (median reported)")
    ap.add_argument("--profile", action="store_true", help="also profile SmolLM2's index pass: where the time goes")
    ap.add_argument("--windows", type=int, help="corpus windows for figure 1 (default 384, --quick 96)")
    args = ap.parse_args()
    import neuronwidget

    print(f"neuronwidget from {Path(neuronwidget.__file__).parent}")
    n_windows = args.windows or (96 if args.quick else 384)
    batch = 64
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; corpus slice: {n_windows} windows "
          f"({n_windows * 64:,} tokens), batch {batch} windows")

    tiny = load_model("tiny", device="cpu")
    lm = small_gpt2(tiny.tokenizer)
    corpus = bundled_corpus()
    corpus.max_tokens = n_windows * 64
    windows = corpus.windows(lm.tokenizer, lm.eos_token_id)

    # 1. index vs bare forward, interleaved batch by batch
    tok = len(windows) * 64
    rounds = args.rounds
    how = f"interleaved per batch; median of {rounds} rounds"
    bare_s, index_s, ratio, each = interleaved_ratio(lm, corpus, batch, rounds)
    print("\n1. all-neuron index vs bare model.transformer forward (gpt2-small size, 12x3072 neurons)")
    print(f"   bare forward: {tok / bare_s:,.0f} tok/s; index streaming pass: {tok / index_s:,.0f} tok/s "
          f"-> ratio {ratio:.2f}  (goal >= 0.9; {how}: {', '.join(f'{r:.2f}' for r in each)})")
    bare_s, index_s, ratio, each = interleaved_ratio(lm, corpus, batch, rounds, fused_bare=True)
    print(f"   the same with the bare forward also running GELU fused, as the capture does (the "
          f"bookkeeping's cost alone): bare {tok / bare_s:,.0f} tok/s; index {tok / index_s:,.0f} tok/s "
          f"-> ratio {ratio:.2f} ({', '.join(f'{r:.2f}' for r in each)})")
    if "bottom_k" in inspect.signature(IndexBuilder).parameters:  # GELU: the top tail alone by default
        bare_s, index_s, ratio, each = interleaved_ratio(lm, corpus, batch, rounds, bottom_k=40)
        print(f"   with a bottom tail as well (bottom_k=40, what signed neurons record): bare {tok / bare_s:,.0f} "
              f"tok/s; index {tok / index_s:,.0f} tok/s -> ratio {ratio:.2f} ({', '.join(f'{r:.2f}' for r in each)})")
    if not args.quick:
        smol = load_model("smollm2-135m", device="cpu")
        smol_windows = corpus.windows(smol.tokenizer, smol.eos_token_id)
        stok = len(smol_windows) * 64
        bare_s, index_s, ratio, each = interleaved_ratio(smol, corpus, batch, rounds)
        print(f"   SmolLM2-135M (30x1536 gated neurons, both tails): bare {stok / bare_s:,.0f} tok/s; index "
              f"{stok / index_s:,.0f} tok/s -> ratio {ratio:.2f}  (goal >= 0.9; {', '.join(f'{r:.2f}' for r in each)})")
        bare_s, index_s, ratio, each = interleaved_ratio(smol, corpus, batch, rounds, torch_ops=True)
        print(f"   the same folding with torch ops instead of the one-pass CPU kernel (the GPU's path; before "
              f"activations/fused.py): index {stok / index_s:,.0f} tok/s -> ratio {ratio:.2f} "
              f"({', '.join(f'{r:.2f}' for r in each)})")
        if args.profile:
            profile_fold(smol, corpus, batch)
    if args.ratio_only:
        return
    fresh_cache()
    b = IndexBuilder(lm, corpus, batch_size=batch, calibration_windows=64)
    t = time.perf_counter()
    idx = b.run(progress=False)
    total = time.perf_counter() - t
    print(f"   one whole build incl. calibration ({min(64, len(windows))} windows) and write: {total:.1f}s "
          f"(pass {b.timings['pass_s']:.1f}s, write {b.timings['write_s']:.1f}s)")

    # 2. TransformerLens
    print("\n2. same index through TransformerLens run_with_cache")
    tl, why = tl_model_or_reason()
    if tl is None:
        print(f"   not measured: {why}")
    else:
        fresh_cache()
        tb = TLBuilder(lm, corpus, batch_size=batch, calibration_windows=64)
        tb.tl_model = tl
        tb.run(progress=False)
        print(f"   TL streaming pass: {tok / tb.timings['pass_s']:,.0f} tok/s; ours is "
              f"{tb.timings['pass_s'] / b.timings['pass_s']:.2f}x faster (goal >= 1.5)")

    # 3. activations(text, layer) vs full forward
    eng = Engine(lm.model, device="cpu", tokenizer=tiny.tokenizer)
    text = "\n".join(corpus.documents())[:6000]
    ids = torch.tensor([eng.lm.tokenizer(text, add_special_tokens=False)["input_ids"][:512]])
    text = "".join(eng.token_strings(ids[0].tolist()))
    reps = 2 if args.quick else 4

    def timeit(fn) -> float:
        fn()
        return min(_t(fn) for _ in range(reps))  # min: least disturbed by other load

    def _t(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def full() -> None:
        with torch.inference_mode():
            lm.transformer(input_ids=ids, use_cache=False)

    full_s = timeit(full)
    print(f"\n3. layer_activations(text of {ids.shape[1]} tokens, L) / full forward ({full_s * 1000:.0f} ms)")
    for layer in (0, 3, 6, 11):
        r = timeit(lambda: eng.layer_activations(text, layer)) / full_s
        print(f"   L={layer:2d}: {r:.2f}  (goal <= {(layer + 1) / 12 + 0.05:.2f})")

    # 4. first index on a fresh cache, offline default corpus
    print("\n4. first index, fresh cache, offline default corpus (incl. tokenising, calibration, write)")
    for name, model in (("tiny", "tiny"), ("gpt2-small-sized", lm.model)):
        if args.quick and name != "tiny":
            print(f"   {name}: skipped in --quick")
            continue
        fresh_cache()
        e = Engine(model, device="cpu", tokenizer=tiny.tokenizer)
        t = time.perf_counter()
        i = e.index(progress=False)
        print(f"   {name}: ready in {time.perf_counter() - t:.1f}s, {i.n_tokens:,} tokens ({i.corpus_name})")
        if name == "tiny":
            tiny_idx = i

    # 5. record latency and size
    print("\n5. records and size")
    for name, index in (("gpt2-small-sized", idx), ("tiny", tiny_idx)):
        rng = np.random.default_rng(0)
        times = []
        for _ in range(20):
            layer, neuron = int(rng.integers(index.n_layers)), int(rng.integers(index.n_neurons))
            t = time.perf_counter()
            index.record(layer, neuron)
            times.append(time.perf_counter() - t)
        size = index.size_bytes()
        dense = index.n_tokens * index.n_layers * index.n_neurons * 2
        print(f"   {name}: record() median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
              f"(goal <= 50); index {size / 1e6:.1f} MB for {index.n_tokens:,} tokens "
              f"({index.n_windows} windows); every activation of the corpus in float16 would be {dense / 1e6:.1f} MB")
        if hasattr(index, "layer_arrays"):  # format >= 4: one folder per layer
            per = np.array([len(index.stored_windows(layer, n)) for layer in range(index.n_layers)
                            for n in range(0, index.n_neurons, 97)])
            print(f"      windows stored per neuron: mean {per.mean():.1f} of {index.n_windows} "
                  f"(settings {index.settings})")
        big = sorted(index.folder.rglob("*.npy"), key=lambda p: -p.stat().st_size)[:4]
        print("      largest files: " + ", ".join(f"{p.stem} {p.stat().st_size / 1e6:.1f} MB" for p in big))


if __name__ == "__main__":
    main()
