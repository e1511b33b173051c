"""`neuronwidget ...`: the demo page, batch explanations and index building from a shell.

    neuronwidget demo --out demo-output          # what `make demo` runs
    neuronwidget explain --layers 0 1 --neurons 0-49 --out results/
    neuronwidget explain --model smollm2-135m --sae trained --neurons 0-49    # an SAE's latents
    neuronwidget index --model tiny
    neuronwidget published --layer 5 --neurons 131 --records     # OpenAI's GPT-2 data, cached

Also runs as ``python -m neuronwidget.cli``.
"""

from __future__ import annotations

import argparse
import html
import sys
from collections import Counter
from pathlib import Path

from neuronwidget._io import atomic_write_text

def choose_model(requested: str | None = None) -> tuple[str, str]:
    """The subject model to use and a sentence saying why: --model, else the demo model
    (GPT-2 when on disk, else SmolLM2-135M with real weights, else tiny; see api.use_demo_model)."""
    from neuronwidget.api import use_demo_model

    if requested:
        return requested, f"Model: {requested!r} (asked for with --model)"
    model, _, why = use_demo_model()
    return model, why


def parse_neurons(specs: list[str], n_neurons: int | None = None) -> list[int]:
    """``["0-9", "20,22"]`` -> [0, 1, ..., 9, 20, 22] (ranges include both ends)."""
    out: list[int] = []
    for spec in specs:
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part:
                    lo, hi = (int(x) for x in part.split("-", 1))
                    if hi < lo:
                        raise ValueError
                    out.extend(range(lo, hi + 1))
                else:
                    out.append(int(part))
            except ValueError:
                raise ValueError(
                    f"bad neuron spec {part!r}: use numbers, ranges like 0-49, or commas like 3,7,9"
                ) from None
    if n_neurons is not None:
        bad = [n for n in out if not 0 <= n < n_neurons]
        if bad:
            raise ValueError(f"neurons must be in 0..{n_neurons - 1} for this model, got {bad[:5]}")
    return sorted(set(out))


def pick_interesting(index, layer: int, candidates: range, scorer=None, count: int = 1) -> list[int]:
    """Neurons of ``layer`` worth showing first.

    With ``scorer`` (a function record -> score or None; cheap for the offline explainers) the
    best-scoring candidates win. Without it: neurons whose top records peak on the same
    token again and again (a clear pattern), ties broken by the strength of the peak.
    """
    keys = []
    for neuron in candidates:
        if scorer is not None:
            s = scorer(index.record(layer, neuron))
            keys.append(((-1.0 if s is None else s), neuron))
            continue
        top = [r for r in index.top_records(layer, neuron, 0, 20) if r.activations]
        if not top:
            continue
        peaks = [r.tokens[max(range(len(r.activations)), key=r.activations.__getitem__)] for r in top]
        share = Counter(t.strip().lower() for t in peaks).most_common(1)[0][1] / len(peaks)
        keys.append(((round(share, 2), max(r.max_activation for r in top)), neuron))
    keys.sort(key=lambda k: k[0], reverse=True)
    return [n for _, n in keys[:count]] or [candidates[0]]


def _progress():
    """A progress callback printing one line per step and its end, not every tick."""
    last = [None]

    def report(done: int, total: int, message: str) -> None:
        if message != last[0] or done >= total:
            print(f"  [{done}/{total}] {message}", flush=True)
        last[0] = message

    return report


def _attach_sae(engine, source: str, name: str | None = None):
    """Attach the SAE ``--sae`` names to the engine: a path, ``hf:OWNER/REPO[/SUBFOLDER]``, or
    ``trained`` (the one ``neuronwidget sae-train`` wrote for this model, with its default settings)."""
    if source == "trained":
        from neuronwidget.activations.sae_train import sae_folder

        folder = sae_folder(engine.lm)[0]
        if not (folder / "cfg.json").exists():
            raise ValueError(f"no trained SAE for {engine.lm.short_name} in the cache ({folder}); train it first with "
                             f"`neuronwidget sae-train --model {engine.lm.short_name}` (or `make sae`), or give --sae a path")
        source = str(folder)
    sae = engine.add_sae(source, name=name)
    print(f"Units: {sae.describe()}", flush=True)
    return sae


def _engine_and_index(model: str, rebuild: bool = False, layers: list[int] = (), neurons: list[int] = (),
                      sae: str | None = None, sae_name: str | None = None, ray: dict | None = None):
    """The engine and its default-corpus index (of the neurons, or with ``sae`` of that SAE's
    latents; ``ray``: _ray_options, to fold it on Ray workers); layers/neurons are checked
    before the slow build."""
    from neuronwidget.api import get_engine
    from neuronwidget.records import check_layer_neuron

    engine = get_engine(model)
    if sae_name and not sae:
        raise ValueError("--sae-name names the SAE given with --sae")
    units = _attach_sae(engine, sae, sae_name).units if sae else None
    um = engine.unit_model(units)
    for layer in layers:
        if units and layer not in um.unit_layers:
            raise ValueError(f"{units} reads layer {um.unit_layers[0]} only, got --layers {layer}")
        check_layer_neuron(layer, 0, engine.n_layers, um.n_neurons, engine.lm.short_name)
    for neuron in neurons:
        check_layer_neuron(0, neuron, engine.n_layers, um.n_neurons, f"{engine.lm.short_name} {units or ''}".strip())
    what = f"{engine.model_name} {units}" if units else engine.model_name
    print(f"Building (or loading) the activation index of {what}{' on Ray' if ray else ''} ...", flush=True)
    index = engine.index(units=units, rebuild=rebuild, progress=True, **(ray or {}))
    kind = f"{units} latents" if units else "neurons"
    layers_held = index.unit_layers if units else range(index.n_layers)
    print(f"Index: {len(layers_held)} layer(s) x {index.n_neurons} {kind} over {index.corpus_name}", flush=True)
    return engine, index


def cmd_demo(args: argparse.Namespace) -> int:
    from neuronwidget.api import explain, resolve_explainer, resolve_simulator, score
    from neuronwidget.widgets import NeuronView

    model, why = choose_model(args.model)
    print(why, flush=True)
    engine, index = _engine_and_index(model, layers=[args.layer] if args.layer is not None else [],
                                      neurons=[args.neuron] if args.neuron is not None else [])
    explainer, simulator = resolve_explainer(), resolve_simulator()
    print(f"Explainer: {explainer.name}\nSimulator: {simulator.name}", flush=True)

    from neuronwidget.api import DEMO_NEURONS

    known = DEMO_NEURONS.get(model) if args.layer is None and args.neuron is None else None
    layer = args.layer if args.layer is not None else (known[0] if known else index.n_layers // 2)
    if args.neuron is not None:
        neurons = [args.neuron]
    else:
        candidates = range(min(index.n_neurons, args.candidates))
        cheap = explainer.cheap and simulator.cheap
        scorer = (lambda rec: score(rec, explain(rec, explainer)[0], simulator).score) if cheap else None
        neurons = pick_interesting(index, layer, candidates, scorer, count=args.count if cheap else 1)
        how = "best offline scores" if cheap else "clearest repeated peak token"
        print(f"Picked neuron(s) {neurons} of layer {layer} ({how} among neurons 0..{len(candidates) - 1})")
        if known and known[1] not in neurons:  # a neuron known to be readable comes first
            neurons = [known[1]] + neurons[: max(0, args.count - 1)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    pages = []
    signed = False
    for neuron in neurons:
        whole = index.record(layer, neuron)
        lows = [r.min_activation for r in whole.most_negative_activation_records]
        sides = ["positive", "negative"] if lows and min(lows) < 0 else ["positive"]  # both tails of a signed neuron
        signed = signed or len(sides) > 1
        for side in sides:
            print(f"Explaining layer {layer}, neuron {neuron}, {side} side ...", flush=True)
            record = whole.for_side(side)
            explanations = explain(record, explainer, progress=_progress())
            scored = score(record, explanations[0], simulator, progress=_progress())
            scored.explainer = explainer.name
            print(f"  explanation: {explanations[0]!r}\n  score: {scored.formatted()}", flush=True)
            view = NeuronView(layer, neuron, model=model, index=index, explainer=explainer, simulator=simulator,
                              side=side)
            view.explanations.insert(0, scored)  # the live list the view shows, newest first
            page = out / (f"neuron-L{layer}-N{neuron}.html" if side == "positive"
                          else f"neuron-L{layer}-N{neuron}-{side}.html")
            view.save_html(page)
            pages.append((page, layer, neuron, side, explanations[0], scored.formatted()))

    links = "\n".join(
        f'<li><a href="{html.escape(p.name)}">layer {lay}, neuron {n}'
        f'{", " + side + " side" if signed else ""}</a>: '
        f"{html.escape(expl)} (score {html.escape(s)})</li>"
        for p, lay, n, side, expl, s in pages
    )
    note = f"<p><strong>Model:</strong> {html.escape(engine.model_name)}</p><p>{html.escape(why)}</p>"
    atomic_write_text(
        out / "index.html",
        f"<!doctype html><meta charset='utf-8'><title>neuronwidget demo</title>"
        f"<body style='font-family:system-ui,sans-serif;max-width:60em;margin:2em auto'>"
        f"<h1>neuronwidget demo</h1>{note}<ul>{links}</ul>\n",
    )
    print("\nWrote:")
    for page, *_ in pages:
        print(f"  {page.resolve()}")
    print(f"  {(out / 'index.html').resolve()}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from neuronwidget.api import explain_neurons

    if not args.layers and not args.sae:
        raise ValueError("--layers is required when explaining neurons (e.g. --layers 0 1)")
    model, why = choose_model(args.model)
    print(why, flush=True)
    neurons = parse_neurons(args.neurons)
    _, index = _engine_and_index(model, layers=args.layers or [], neurons=neurons, sae=args.sae, sae_name=args.sae_name)
    layers = args.layers or list(index.unit_layers if args.sae else range(index.n_layers))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "explanations.jsonl"
    table = explain_neurons(index, layers, neurons, out=results, sides=args.sides, best_of=args.best_of,
                            revise=args.revise, **_ray_options(args))
    atomic_write_text(out / "summary.csv", table.to_csv(index=False))
    from neuronwidget.explanations import read_explanations_jsonl, write_explanations_jsonl

    write_explanations_jsonl(read_explanations_jsonl(results), out / "openai")
    print(table.to_string(max_rows=20))
    print(f"\nWrote {results.resolve()} (neuronwidget's format, one neuron per line; reruns resume)")
    print(f"Wrote {(out / 'openai').resolve()}/<layer>/<neuron>.jsonl (OpenAI's format and layout)")
    print(f"Wrote {(out / 'summary.csv').resolve()}")
    from neuronwidget.explore.store import get_store

    n = get_store().import_jsonl(results, index.model)  # searchable with nw.search(...); latents under "model sae:NAME"
    print(f"Recorded {n} explanations in the searchable store {get_store().path}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    model, why = choose_model(args.model)
    print(why, flush=True)
    _engine_and_index(model, rebuild=args.rebuild, sae=args.sae, sae_name=args.sae_name, ray=_ray_options(args))
    return 0


def cmd_published_all(args: argparse.Namespace) -> int:
    """`published --all`: bulk-import OpenAI's explanations into the explanation store."""
    from neuronwidget.activations.published import PublishedDataUnavailable
    from neuronwidget.explore.bulk import import_published
    from neuronwidget.explore.store import get_store

    layers = parse_neurons(args.layers) if args.layers else ([args.layer] if args.layer is not None else None)
    neurons = parse_neurons(args.neurons) if args.neurons else None
    store = get_store()
    print(f"Importing OpenAI's published {args.model} explanations into {store.path} "
          f"(a rerun resumes where this one stops) ...", flush=True)
    try:
        report = import_published(args.model, layers=layers, neurons=neurons, store=store, workers=args.workers)
    except PublishedDataUnavailable as e:
        print(f"neuronwidget published --all: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"Store: {store.count(args.model):,} {args.model} explanations; search them with nw.search(...)")
    return 0 if not report.failed else 1


def cmd_published(args: argparse.Namespace) -> int:
    from neuronwidget.activations.published import (PublishedDataError, PublishedDataUnavailable, published_explanations,
                                        published_record)

    if args.all:
        return cmd_published_all(args)
    if args.layer is None or not args.neurons:
        raise ValueError("give --layer and --neurons, or --all to import every published explanation")

    for neuron in parse_neurons(args.neurons):
        where = f"layer {args.layer} neuron {neuron}"
        try:
            results = published_explanations(args.layer, neuron, model=args.model)
            for s in results.scored_explanations if results else []:
                print(f"{where}: {s.formatted()}  {s.explanation.strip()!r}")
            if not results or not results.scored_explanations:
                print(f"{where}: no published explanation")
            if args.records:
                record = published_record(args.layer, neuron, model=args.model)
                print(f"{where}: activation record cached ({len(record.most_positive_activation_records)} top, "
                      f"{len(record.random_sample)} random)")
        except PublishedDataUnavailable as e:
            print(f"neuronwidget published: {e}", file=sys.stderr)
            return 1
        except PublishedDataError as e:  # e.g. no record published for this neuron: go on with the next
            print(f"{where}: {e}")
    return 0


def cmd_sae_train(args: argparse.Namespace) -> int:
    """Train (or load from the cache) the small TopK SAE on the model's activations over the
    bundled corpus, and print where it lives and how well it reconstructs."""
    from .subject import load_model
    from .activations.sae_train import sae_folder, train_sae

    lm = load_model(args.model)
    settings = {k: getattr(args, k) for k in ("layer", "site", "d_sae", "k", "steps", "max_tokens")}
    sae, report = train_sae(lm, progress=not args.quiet, retrain=args.retrain, **settings)
    print(f"{sae.describe()}\n  folder: {sae_folder(lm, None, None, **settings)[0]}")
    print(f"  trained on {report['train_tokens']:,} tokens in {report['train_s']:.0f} s "
          f"(+{report['collect_s']:.0f} s reading activations); held out {report['heldout_tokens']:,} tokens:")
    print(f"  fraction of variance explained {report['fraction_variance_explained']:.3f}; next-token loss "
          f"{report['loss_clean']:.3f} clean, {report['loss_spliced']:.3f} spliced in (+{report['loss_increase']:.3f}), "
          f"{report['loss_zero_ablated']:.3f} with the site zeroed")
    return 0


def _add_ray_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--ray", action="store_true", help=f"{what} on Ray workers (the running Ray, RAY_ADDRESS, "
                        "or a local one); needs pip install \"neuronwidget[ray]\"")
    parser.add_argument("--workers", type=int, metavar="N", help="with --ray: how many (default one per GPU, else per CPU)")
    parser.add_argument("--max-worker-deaths", dest="max_worker_deaths", type=int, metavar="K",
                        help="with --ray: how often each worker may die (Ray restarts it and retries what it held; "
                             "default 3)")


def _ray_options(args: argparse.Namespace) -> dict:
    """The keywords of --ray, --workers and --max-worker-deaths for explain_neurons / eng.index."""
    if not args.ray:
        if args.workers is not None or args.max_worker_deaths is not None:
            raise ValueError("--workers and --max-worker-deaths only apply with --ray")
        return {}
    return {"distributed": "ray", "workers": args.workers, "max_worker_deaths": args.max_worker_deaths}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuronwidget", description="Explain GPT-2 MLP neurons.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write a standalone NeuronView page for one interesting neuron")
    demo.add_argument("--out", default="demo-output", help="folder for the HTML pages")
    demo.add_argument("--model", help="subject model (default: gpt2 when available, else tiny)")
    demo.add_argument("--layer", type=int, help="layer to look at (default: the middle layer)")
    demo.add_argument("--neuron", type=int, help="neuron to show (default: picked automatically)")
    demo.add_argument("--candidates", type=int, default=64, help="neurons searched for a clear pattern")
    demo.add_argument("--count", type=int, default=3, help="pages to write (offline explainers only)")
    demo.set_defaults(func=cmd_demo)

    ex = sub.add_parser("explain", help="explain and score many neurons (resumable)")
    ex.add_argument("--layers", type=int, nargs="+",
                    help="layers to explain (required for neurons; with --sae default: the SAE's layer)")
    ex.add_argument("--neurons", nargs="+", required=True, help="e.g. 0-49 or 3,7,9")
    ex.add_argument("--out", default="results", help="folder for the results (resumes from it)")
    ex.add_argument("--model", help="subject model (default: gpt2 when available, else tiny)")
    ex.add_argument("--sae", metavar="SOURCE", help="explain this SAE's latents instead of neurons: a SAELens folder, "
                    "Gemma Scope params.npz, OpenAI .pt, hf:OWNER/REPO[/SUBFOLDER], or 'trained' (neuronwidget sae-train's)")
    ex.add_argument("--sae-name", dest="sae_name", metavar="NAME",
                    help="the SAE's name: its latents are units='sae:NAME' and stored under '<model> sae:NAME' "
                    "(default: from its path)")
    ex.add_argument("--sides", nargs="+", choices=["positive", "negative"], default=["positive"],
                    help="which side(s) of each neuron to explain (negative: what drives it most negative)")
    ex.add_argument("--best-of", type=int, default=1, metavar="K",
                    help="keep the best of K explanations, compared on held-in (calibration) records")
    ex.add_argument("--revise", action="store_true",
                    help="then let the explainer revise it from the held-in records it gets most wrong "
                         "(kept only if it scores higher there)")
    _add_ray_flags(ex, "explain")
    ex.set_defaults(func=cmd_explain)

    ix = sub.add_parser("index", help="build the activation index of a model over the default corpus")
    ix.add_argument("--model", help="subject model (default: gpt2 when available, else tiny)")
    ix.add_argument("--rebuild", action="store_true", help="ignore the cached index")
    ix.add_argument("--sae", metavar="SOURCE", help="the index of this SAE's latents instead (as explain --sae)")
    ix.add_argument("--sae-name", dest="sae_name", metavar="NAME", help="the SAE's name (as explain --sae-name)")
    _add_ray_flags(ix, "fold the corpus")
    ix.set_defaults(func=cmd_index)
    st = sub.add_parser("sae-train", help="train (or load) a small TopK SAE on a model's activations, offline")
    st.add_argument("--model", default="smollm2-135m", help="subject model (default: smollm2-135m, real weights, offline)")
    st.add_argument("--layer", type=int, default=None, help="block to read (default 8)")
    st.add_argument("--site", default=None, help="resid_pre, resid_mid, resid_post, attn_out, mlp_out (default mlp_out)")
    st.add_argument("--d-sae", dest="d_sae", type=int, default=None, help="latents (default 1536)")
    st.add_argument("--k", type=int, default=None, help="active latents per token (default 32)")
    st.add_argument("--steps", type=int, default=None, help="Adam steps (default 600)")
    st.add_argument("--max-tokens", dest="max_tokens", type=int, default=None,
                    help="corpus tokens read (default 65536; a tenth held out)")
    st.add_argument("--retrain", action="store_true", help="train again even when cached")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.set_defaults(func=cmd_sae_train)
    pub = sub.add_parser("published", help="print (and cache) OpenAI's published GPT-2 explanations")
    pub.add_argument("--model", default="gpt2", help="gpt2 (= gpt2-small) or gpt2-xl")
    pub.add_argument("--layer", type=int)
    pub.add_argument("--neurons", nargs="+", help="e.g. 0-49 or 3,7,9 (with --all: default every neuron)")
    pub.add_argument("--all", action="store_true",
                     help="import every published explanation into the searchable store (resumable)")
    pub.add_argument("--layers", nargs="+", help="with --all: only these layers, e.g. 0-5 (default: all)")
    pub.add_argument("--workers", type=int, default=16, help="with --all: concurrent downloads")
    pub.add_argument("--records", action="store_true", help="also fetch the activation records (for offline use)")
    pub.set_defaults(func=cmd_published)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``neuronwidget`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"neuronwidget {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
