"""Index throughput on an accelerator: prints figures measured in one run (not a test, never in CI).

    python benchmarks/gpu.py [--device cuda] [--windows 1024] [--max-batch 4096] [--dtypes ...]

GPT-2 small and SmolLM2-135M, as random-weights models of their shapes (speed does not depend on
the weights, and a lent device machine can neither download nor carry real ones), in each of
``--dtypes`` (float32, float16, bfloat16 by default):
  1. tokens/s of the plain forward (``lm.transformer``) and of the index pass (the same forward
     with every layer hooked and folded: by the torch ops on a GPU, by activations/fused.py on a
     CPU), batch 64, interleaved batch by batch as in benchmarks/engine.py (a busy machine
     disturbs both sides alike), and their ratio;
  2. the largest batch of 64-token windows whose index pass fits in memory (doubling from 64
     until out of memory or ``--max-batch``), and its tokens/s.

On a lent machine (its python3 holds torch and transformers), the corpus is the one thing to carry:
``run(command="python3 benchmarks/gpu.py", carry=["neuronwidget/data/brown"])`` (after ``npm run
build:corpus`` here). ``--device cpu --windows 64 --max-batch 64 --dtypes float32`` checks the script itself here
(float16 matrix products on a CPU are very slow).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuronwidget.activations.build import IndexBuilder  # noqa: E402
from neuronwidget.activations.corpus import bundled_corpus  # noqa: E402
from neuronwidget.subject import load_model  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def shapes() -> dict:
    """The two models' shapes, random weights (the tiny tokenizer's ids are within both vocabularies)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    smollm2 = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                          rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    return {"GPT-2 small (12x3072 neurons)": lambda: GPT2LMHeadModel(GPT2Config()),
            "SmolLM2-135M (30x1536 gated neurons, both tails)": lambda: LlamaForCausalLM(smollm2)}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def interleaved(lm, corpus, batch: int, n_batches: int) -> tuple[float, float]:
    """(bare s, index s) over ``n_batches`` batches: batch i's bare forward, then its index fold."""
    b = IndexBuilder(lm, corpus, batch_size=batch, calibration_windows=64)
    plan = b.plan()
    state = b.new_state(plan, b.calibrate(plan))
    dev = lm.device
    bare = index = 0.0
    for bi in range(min(n_batches, plan.n_batches)):
        ids = torch.from_numpy(plan.windows[bi * batch:(bi + 1) * batch]).long().to(dev)
        sync(dev)
        t = time.perf_counter()
        with torch.inference_mode():
            lm.transformer(input_ids=ids, use_cache=False)
        sync(dev)
        bare += time.perf_counter() - t
        t = time.perf_counter()
        state.fold_batch(lm, bi)
        sync(dev)
        index += time.perf_counter() - t
    return bare, index


def largest_batch(lm, corpus, max_batch: int) -> tuple[int, float]:
    """(the largest batch whose index pass fits, its tokens/s), doubling from 64."""
    best, speed, batch = 0, 0.0, 64
    while batch <= max_batch:
        try:
            b = IndexBuilder(lm, corpus, batch_size=batch, calibration_windows=64)
            plan = b.plan()
            if plan.n_batches < 1 or len(plan.windows) < batch:
                break  # the corpus slice is smaller than the batch
            state = b.new_state(plan, b.calibrate(plan))
            state.fold_batch(lm, 0)  # warm-up, and the peak memory
            sync(lm.device)
            t = time.perf_counter()
            state.fold_batch(lm, 0)
            sync(lm.device)
            best, speed = batch, batch * 64 / (time.perf_counter() - t)
        except torch.OutOfMemoryError:
            break
        finally:
            if lm.device.type == "cuda":
                torch.cuda.empty_cache()
        batch *= 2
    return best, speed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--windows", type=int, default=1024, help="corpus windows for figure 1 (batch 64)")
    ap.add_argument("--max-batch", type=int, default=4096, help="largest batch tried for figure 2")
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    args = ap.parse_args()
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{time.strftime('%Y-%m-%d')}: {name}; torch {torch.__version__}; figure 1 over {args.windows} windows "
          f"({args.windows * 64:,} tokens), batch 64")
    tokenizer = load_model("tiny", device="cpu").tokenizer
    corpus = bundled_corpus()
    corpus.max_tokens = max(args.windows, args.max_batch) * 64
    for label, make in shapes().items():
        for dname in args.dtypes:
            torch.manual_seed(0)
            lm = load_model(make(), device=dev, dtype=DTYPES[dname], tokenizer=tokenizer)
            interleaved(lm, corpus, 64, 2)  # warm-up: kernels chosen, memory pools grown
            bare, index = interleaved(lm, corpus, 64, args.windows // 64)
            tok = (args.windows // 64) * 64 * 64
            biggest, speed = largest_batch(lm, corpus, args.max_batch)
            print(f"{label}, {dname}: bare {tok / bare:,.0f} tok/s, index {tok / index:,.0f} tok/s -> ratio "
                  f"{bare / index:.2f}; largest batch that fits {biggest} windows ({speed:,.0f} tok/s"
                  f"{', the largest tried' if biggest == args.max_batch else ''})")
            del lm
            if dev.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
