"""Explore benchmark: prints figures and ratios measured in one run (not a test).

    python benchmarks/explore.py [--quick]

  1. top_neurons on a 200-token text, GPT-2-small-sized model (GPT2Config() defaults, random
     weights, 12 x 3072): seconds (goal < 1 s) and / a bare forward pass through all 12 blocks;
     the Explorer's precompute of every position's top 20;
  2. weight connections of one neuron (GPT-2-small size, and a SmolLM2-135M-sized random Llama):
     ms per neuron (goal: milliseconds), vs materialising one layer's vocab x neurons input matrix;
  3. bulk import of published explanations from a local HTTP server in OpenAI's layout
     (files shaped like theirs: one explanation with 20 scored 64-token simulations per neuron):
     neurons/s, and database size per 10,000 explanations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from neuronwidget import api  # noqa: E402
from neuronwidget.activations import Engine  # noqa: E402
from neuronwidget.explore.connections import connections  # noqa: E402
from neuronwidget.explore.store import ExplanationStore  # noqa: E402
from neuronwidget.explore.top import TextActivations  # noqa: E402
from neuronwidget.subject import load_model  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved(fns: dict, repeat: int) -> dict:
    """Best time of each function, measured in turns (load that comes and goes hits all alike)."""
    for f in fns.values():
        f()  # warm-up
    out = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            out[k] = min(out[k], time.perf_counter() - t)
    return out


class Maxima:
    """An index stand-in that knows every neuron's maximum (building a real index is benchmarks/engine.py's job)."""

    def __init__(self, n_layers: int, n_neurons: int):
        self.max = np.random.default_rng(0).uniform(0.5, 3.0, (n_layers, n_neurons)).astype(np.float32)

    def max_activations(self):
        return self.max


def bench_top(quick: bool, tmp: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    tiny = load_model("tiny")
    torch.manual_seed(0)
    lm = load_model(GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny.tokenizer))), device="cpu", tokenizer=tiny.tokenizer)
    engine = Engine(lm.model, device="cpu", tokenizer=tiny.tokenizer)
    words = ("The Eiffel Tower is in Paris and the river runs through the city while people "
             "def main(): return value + 1 # comment").split()
    text = " ".join(words[i % len(words)] for i in range(400))
    ids = engine._ids(text)[:200]
    text = engine.lm.tokenizer.decode(ids)
    ids = engine._ids(text)
    index = Maxima(lm.n_layers, lm.n_neurons)
    store = ExplanationStore(tmp / "top.sqlite")
    repeat = 2 if quick else 7

    def bare():
        with torch.inference_mode():
            lm.transformer(input_ids=torch.tensor([ids]), use_cache=False)

    def top(position):  # what nw.top_neurons does: tokens 0..position through every layer, rank, join
        return lambda: TextActivations(engine, text, index, upto=position).top(position, 20, store)

    fns = {"bare": bare, "last": top(-1), "mid": top(len(ids) // 2),
           "explorer": lambda: TextActivations(engine, text, index).every_position(20, store)}
    times = interleaved(fns, repeat)  # the machine is shared: interleave, keep each one's best
    t_bare, t_last, t_mid, t_explorer = times["bare"], times["last"], times["mid"], times["explorer"]
    print(f"1. top_neurons, {len(ids)} tokens, 12x3072 GPT-2-small-sized model (torch threads: {torch.get_num_threads()}):")
    print(f"   bare forward through all 12 blocks: {t_bare:.3f} s")
    print(f"   top_neurons at the last token: {t_last:.3f} s ({t_last / t_bare:.2f}x the bare forward; goal < 1 s)")
    print(f"   top_neurons at token {len(ids) // 2}: {t_mid:.3f} s ({t_mid / t_bare:.2f}x: only tokens 0..{len(ids) // 2} run)")
    print(f"   Explorer (one pass + top 20 at all {len(ids)} positions): {t_explorer:.3f} s ({t_explorer / t_bare:.2f}x)")


def _per_neuron(model, layer: int, neurons: list[int]) -> float:
    connections(model, layer, neurons[0])  # warm-up: cached rms vectors, weight views
    t = time.perf_counter()
    for n in neurons:
        connections(model, layer, n)
    return (time.perf_counter() - t) / len(neurons)


def bench_connections(quick: bool) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config()).eval()
    n = 5 if quick else 20
    neurons = list(range(0, 3072, 3072 // n))[:n]
    per = _per_neuron(gpt2, 6, neurons)
    h = gpt2.transformer.h[6]
    t = time.perf_counter()
    with torch.inference_mode():
        full = (gpt2.transformer.wte.weight * h.ln_2.weight) @ h.mlp.c_fc.weight  # [50257, 3072], 617 MB
    t_full = time.perf_counter() - t
    del full
    print("2. weight connections (input/output tokens over the whole vocabulary, up/downstream over all layers):")
    print(f"   GPT-2-small size: {per * 1000:.1f} ms per neuron; materialising one layer's vocab x neurons "
          f"input matrix alone takes {t_full:.2f} s ({t_full / per:.0f}x one neuron's full connections)")
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3)).eval()
    per_g = _per_neuron(llama, 15, neurons[: max(2, n // 2)])
    print(f"   SmolLM2-135M-sized Llama (30 layers, gated): {per_g * 1000:.1f} ms per neuron")


def _published_file(layer: int, neuron: int, rng) -> str:
    tokens = [f" w{i}" for i in range(64)]
    seqs = []
    for _ in range(20):
        acts = rng.random(64).round(3).tolist()
        seqs.append({"simulation": {"tokens": tokens, "expected_activations": acts, "activation_scale":
                                    "simulated_normalized_activations", "distribution_values": [[0, 10]] * 64,
                                    "distribution_probabilities": [[0.9, 0.1]] * 64, "uncalibrated_simulation": None,
                                    "dataclass_name": "SequenceSimulation"},
                     "true_activations": acts, "ev_correlation_score": 0.5, "rsquared_score": 0.2,
                     "absolute_dev_explained_score": 0.1, "dataclass_name": "ScoredSequenceSimulation"})
    return json.dumps({"neuron_id": {"layer_index": layer, "neuron_index": neuron, "dataclass_name": "NeuronId"},
                       "scored_explanations": [{"explanation": f" words about topic {rng.integers(1 << 30)} and things",
                                                "scored_simulation": {"scored_sequence_simulations": seqs,
                                                                      "ev_correlation_score": float(rng.random()),
                                                                      "rsquared_score": 0.1,
                                                                      "absolute_dev_explained_score": 0.1,
                                                                      "dataclass_name": "ScoredSimulation"},
                                                "dataclass_name": "ScoredExplanation"}],
                       "dataclass_name": "NeuronSimulationResults"}) + "\n"


def bench_import(quick: bool, tmp: Path) -> None:
    from neuronwidget.explore.bulk import import_published
    from servers.published_server import PublishedServer

    n = 400 if quick else 2000
    rng = np.random.default_rng(0)
    root = tmp / "bucket"
    folder = root / "gpt2_small_data" / "explanations" / "0"
    folder.mkdir(parents=True)
    sizes = []
    for i in range(n):
        body = _published_file(0, i, rng)
        sizes.append(len(body))
        (folder / f"{i}.jsonl").write_text(body)
    api.configure(cache_dir=str(tmp / "cache"))
    store = ExplanationStore(tmp / "import.sqlite")
    with PublishedServer(root) as server:
        report = import_published("gpt2", layers=[0], neurons=range(n), store=store, base_url=server.url,
                                  workers=16, progress=False)
    store.close()
    rate = report.imported / report.seconds
    size = store.size_bytes()
    print(f"3. bulk import from a local server, {n} neurons (files {statistics.mean(sizes) / 1024:.0f} KiB each, "
          f"as OpenAI's): {rate:.0f} neurons/s = {rate:.0f} explanations/s "
          f"(GPT-2 small's 36,864 neurons in ~{36864 / rate / 60:.1f} min at this rate; "
          f"a real bucket adds network latency, hidden by the 16 workers)")
    print(f"   database: {size / report.explanations * 10000 / 1e6:.2f} MB per 10,000 explanations "
          f"(text, scores and the FTS5 index; simulations are not stored)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import os

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (absolute times scale with it; ratios less)")
    with tempfile.TemporaryDirectory(prefix="nw-bench-explore-") as tmp:
        api.configure(cache_dir=tmp)
        bench_top(args.quick, Path(tmp))
        bench_connections(args.quick)
        bench_import(args.quick, Path(tmp))


if __name__ == "__main__":
    main()
