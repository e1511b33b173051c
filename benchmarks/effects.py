"""Intervention benchmark: prints ratios measured in one run (not a test).

    python benchmarks/effects.py [--rounds N] [--models gpt2-small,smollm2] [--sections 1,2,3]

Every figure is a ratio against a baseline measured in the same process, interleaved (baseline,
then the measured call, round after round; the median of the per-round ratios), so a busy
machine disturbs both sides alike. Models: a GPT-2-small-sized model (GPT2Config() defaults,
random weights: speed does not depend on them) and SmolLM2-135M (real weights, offline).

  1. effect on a 64-token text (clean + intervened logits, ``edited_logits``; and the whole
     per-token table, ``effect_table``) / one plain forward of the LM on the same 64 tokens
     (goal <= 2.2x). The edited pass re-runs only the blocks from the edited layer up, so the
     figure depends on the layer: shown for the first, middle and last layer;
  2. attribution over every neuron of every layer at the last of 64 tokens (one forward +
     one backward) / one plain forward (goal <= 4x); and with the 10 strongest checked by
     true ablation (``top_neurons(by="effect")``'s work);
  3. a 40-token steered greedy generation (our KV-cached loop with a clamp) / plain greedy
     ``model.generate(max_new_tokens=40, min_new_tokens=40, do_sample=False)`` (goal <= 1.3x);
     also our loop without a clamp, and ``steer()``'s whole work (plain + steered).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuronwidget.activations import Engine  # noqa: E402
from neuronwidget.explore.effects import effect_ranking, effect_table  # noqa: E402
from neuronwidget.subject import Edit, attribution, edited_logits, greedy, load_model  # noqa: E402

TEXT = ("The history of the city begins in the Roman period, when a small settlement grew up at the crossing of "
        "two roads. Over the following centuries it became a market town, and by the twelfth century its cathedral "
        "and walls were known across the region. Merchants came from far away to trade wool, salt and wine.")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ratio(base, fn, rounds: int) -> tuple[float, float]:
    """(median of per-round time ratios fn/base, median baseline seconds); one warm-up each."""
    base(), fn()
    ratios, bases = [], []
    for _ in range(rounds):
        b = timed(base)
        f = timed(fn)
        ratios.append(f / b)
        bases.append(b)
    return statistics.median(ratios), statistics.median(bases)


def gpt2_small():
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_model("tiny").tokenizer
    torch.manual_seed(0)
    return Engine(GPT2LMHeadModel(GPT2Config()).eval(), device="cpu", tokenizer=tok), "GPT-2-small-sized (random)"


def smollm2():
    return Engine("smollm2-135m", device="cpu"), "SmolLM2-135M (real weights)"


def report(label: str, r: float, base: float, goal: float | None) -> None:
    verdict = "" if goal is None else ("  goal <= %.1fx: MET" % goal if r <= goal else "  goal <= %.1fx: NOT MET" % goal)
    print(f"  {label:<58} {r:5.2f}x  (baseline {base * 1000:7.1f} ms){verdict}")


def run(engine: Engine, name: str, rounds: int, sections: set[str]) -> None:
    lm = engine.lm
    ids = lm.encode(TEXT * 3)[:64]
    assert len(ids) == 64
    x = torch.tensor([ids])
    torch.set_grad_enabled(False)

    def forward():
        with torch.inference_mode():
            lm.model(input_ids=x, use_cache=False)

    print(f"\n{name}: {lm.n_layers} layers x {lm.n_neurons} neurons, 64-token text, {torch.get_num_threads()} threads")
    text = lm.tokenizer.decode(ids)
    t_ids = lm.encode(text)
    layer = lm.n_layers // 2
    if "1" in sections:
        effect(engine, x, forward, text, t_ids, rounds)
    if "2" in sections:
        attributions(engine, ids, forward, text, t_ids, rounds)
    if "3" in sections:
        generation(lm, ids, layer, rounds)


def effect(engine, x, forward, text, t_ids, rounds) -> None:
    lm = engine.lm
    print("1. effect on a 64-token text / one plain forward")
    for layer in (0, lm.n_layers // 2, lm.n_layers - 1):
        r, b = ratio(forward, lambda: edited_logits(lm, x, [Edit(layer, 7, "zero")]), rounds)
        report(f"clean + intervened logits, layer {layer}", r, b, 2.2)
    layer = lm.n_layers // 2
    r, b = ratio(forward, lambda: effect_table(engine, t_ids, text, layer, 7, "zero", 0.0), rounds)
    report(f"whole per-token table (KL, Δ log p, top tokens), layer {layer}", r, b, None)



def attributions(engine, ids, forward, text, t_ids, rounds) -> None:
    lm = engine.lm
    print("2. attribution over every neuron of every layer / one plain forward")
    r, b = ratio(forward, lambda: attribution(lm, ids, 63), rounds)
    report(f"activation x gradient, all {lm.n_layers * lm.n_neurons:,} neurons", r, b, 4.0)
    from neuronwidget.explore.store import ExplanationStore
    import tempfile

    st = ExplanationStore(Path(tempfile.mkdtemp()) / "s.sqlite")
    r, b = ratio(forward, lambda: effect_ranking(engine, text, len(t_ids) - 1, 20, check=10, store=st), rounds)
    report("  + the top 10 checked by true ablation (by='effect')", r, b, None)



def generation(lm, ids, layer, rounds) -> None:
    print("3. 40-token greedy generation / plain greedy model.generate")
    prompt = ids[:16]
    p = torch.tensor([prompt])
    gen_kwargs = dict(max_new_tokens=40, min_new_tokens=40, do_sample=False, temperature=None, top_p=None, top_k=None,
                      pad_token_id=lm.eos_token_id)

    def generate():
        with torch.inference_mode():
            lm.model.generate(p, attention_mask=torch.ones_like(p), **gen_kwargs)

    clamp = [Edit(layer, 7, "constant", 5.0)]
    n = len(greedy(lm, prompt, clamp, 40, stop_at_eos=False))
    assert n == 40, n
    r, b = ratio(generate, lambda: greedy(lm, prompt, clamp, 40, stop_at_eos=False), rounds)
    report("steered (one neuron clamped at every token)", r, b, 1.3)
    r, b = ratio(generate, lambda: greedy(lm, prompt, [], 40, stop_at_eos=False), rounds)
    report("our loop, no clamp", r, b, None)
    r, b = ratio(generate, lambda: (greedy(lm, prompt, [], 40, stop_at_eos=False),
                                    greedy(lm, prompt, clamp, 40, stop_at_eos=False)), rounds)
    report("steer()'s work: plain + steered", r, b, None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--models", default="gpt2-small,smollm2")
    ap.add_argument("--sections", default="1,2,3")
    args = ap.parse_args()
    for m in args.models.split(","):
        engine, name = {"gpt2-small": gpt2_small, "smollm2": smollm2}[m]()
        run(engine, name, args.rounds, set(args.sections.split(",")))


if __name__ == "__main__":
    main()
