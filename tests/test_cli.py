"""The command line: `neuronwidget demo` for real in a subprocess, batch explain, neuron specs."""

import ast
import html
import html.parser
import os
import subprocess
import sys

import pytest
from conftest import shared_cache

from neuronwidget import cli

# Tags the static pages may contain; a token or explanation leaking in as HTML shows up as another tag.
PAGE_TAGS = {"html", "head", "meta", "title", "body", "div", "span", "b", "details", "summary", "h1", "p",
             "strong", "ul", "li", "a", "svg", "rect", "line", "text", "table", "tr", "td", "th", "br", "code"}



class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)


def test_demo_writes_standalone_pages(tmp_path, tmp_path_factory):
    env = dict(os.environ, NEURONWIDGET_CACHE=str(shared_cache(tmp_path_factory)), PYTHONIOENCODING="utf-8")
    for key in ("OPENAI_API_KEY", "NEURONWIDGET_BASE_URL", "NEURONWIDGET_MODEL"):
        env.pop(key, None)  # the offline default: the rules backend
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "neuronwidget.cli", "demo", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = proc.stdout
    assert "Explainer: rules" in stdout
    pages = sorted(out.glob("neuron-L*-N*.html"))
    signed = "smollm2-135m" in stdout.splitlines()[0]  # a gated model: both sides of each neuron
    assert len(pages) == (6 if signed else 3)
    assert len(list(out.glob("neuron-L*-N*-negative.html"))) == (3 if signed else 0)
    for page in pages:
        assert str(page.resolve()) in stdout  # the paths are printed
    index_page = (out / "index.html").read_text(encoding="utf-8")
    for page in pages:
        assert f'href="{page.name}"' in index_page

    text = pages[0].read_text(encoding="utf-8")
    if "tiny" in stdout.splitlines()[0]:
        assert "RANDOM weights" in stdout
        assert "tiny (random weights" in text and "RANDOM weights" in index_page
    if "smollm2-135m" in stdout.splitlines()[0]:  # a real model offline: said plainly, known neuron first
        assert "real weights, not GPT-2" in text and "real weights, not GPT-2" in index_page
        assert (out / "neuron-L7-N145.html").exists() and (out / "neuron-L7-N145-negative.html").exists()
    assert text.count('<span style="background:#') > 20  # coloured tokens
    assert "<script" not in text  # static: no kernel, no JS
    parser = _Tags()
    parser.feed(text)
    assert parser.tags <= PAGE_TAGS, f"unexpected tags (unescaped text?): {parser.tags - PAGE_TAGS}"
    # each page shows its neuron's explanation, escaped (e.g. the tokens &quot;st&quot;)
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Explaining layer ")]
    assert len(starts) == len(pages)
    for i in starts:
        layer, neuron = (int(w.strip(",.")) for w in lines[i].split()[2:5:2])
        suffix = "-negative" if "negative side" in lines[i] else ""
        shown = ast.literal_eval(next(x for x in lines[i:] if "explanation:" in x).split(": ", 1)[1])
        page = (out / f"neuron-L{layer}-N{neuron}{suffix}.html").read_text(encoding="utf-8")
        assert html.escape(shown) in page


def test_explain_batch_writes_and_resumes(tmp_path, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setenv("NEURONWIDGET_CACHE", str(shared_cache(tmp_path_factory)))
    for key in ("OPENAI_API_KEY", "NEURONWIDGET_BASE_URL", "NEURONWIDGET_MODEL"):
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "results"
    argv = ["explain", "--model", "tiny", "--layers", "0", "1", "--neurons", "0-3", "7", "--out", str(out)]
    assert cli.main(argv) == 0
    lines = (out / "explanations.jsonl").read_text().splitlines()
    assert len(lines) == 10
    from neuronwidget.records import loads

    done = {(r.neuron_id.layer_index, r.neuron_id.neuron_index) for r in map(loads, lines)}
    assert done == {(layer, n) for layer in (0, 1) for n in (0, 1, 2, 3, 7)}
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 11
    assert cli.main(argv) == 0  # a rerun resumes: nothing is explained twice
    assert len((out / "explanations.jsonl").read_text().splitlines()) == 10
    capsys.readouterr()
    best = tmp_path / "best"
    assert cli.main(["explain", "--model", "tiny", "--layers", "1", "--neurons", "4", "--best-of", "3",
                     "--out", str(best)]) == 0
    (line,) = (best / "explanations.jsonl").read_text().splitlines()
    assert "(best of 3" in loads(line).scored_explanations[0].explainer
    capsys.readouterr()


def test_bad_arguments_are_explained(tmp_path, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setenv("NEURONWIDGET_CACHE", str(shared_cache(tmp_path_factory)))
    argv = ["explain", "--model", "tiny", "--layers", "0", "--neurons", "0-x", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "bad neuron spec '0-x'" in capsys.readouterr().err
    argv = ["explain", "--model", "tiny", "--layers", "9", "--neurons", "0", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "layer must be in 0..3 for tiny, got 9" in capsys.readouterr().err
    argv = ["explain", "--model", "tiny", "--layers", "0", "--neurons", "380-390", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "neuron must be in 0..383 for tiny, got 384" in capsys.readouterr().err


def test_parse_neurons():
    assert cli.parse_neurons(["0-3", "7,9", "3"]) == [0, 1, 2, 3, 7, 9]
    with pytest.raises(ValueError, match="ranges like 0-49"):
        cli.parse_neurons(["5-2"])
    with pytest.raises(ValueError, match=r"neurons must be in 0\.\.383"):
        cli.parse_neurons(["380-390"], n_neurons=384)


def test_index_command_reports_the_index(tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setenv("NEURONWIDGET_CACHE", str(shared_cache(tmp_path_factory)))
    assert cli.main(["index", "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "Model: 'tiny' (asked for with --model)" in out
    assert "Index: 4 layer(s) x 384 neurons over bundled offline corpus" in out


def test_pick_interesting_without_a_cheap_scorer(tmp_path_factory, monkeypatch):
    """With an LLM backend the demo cannot score 64 neurons for free: it picks by repeated peaks."""
    from collections import Counter

    from neuronwidget.api import get_engine

    monkeypatch.setenv("NEURONWIDGET_CACHE", str(shared_cache(tmp_path_factory)))
    index = get_engine("tiny").index(progress=False)

    def share(neuron):
        top = index.top_records(2, neuron, 0, 20)
        peaks = [r.tokens[r.activations.index(max(r.activations))].strip().lower() for r in top]
        return Counter(peaks).most_common(1)[0][1] / len(peaks)

    picked = cli.pick_interesting(index, 2, range(16), count=3)
    assert len(picked) == 3
    shares = sorted((share(n) for n in range(16)), reverse=True)
    assert [round(share(n), 2) for n in picked] == [round(s, 2) for s in shares[:3]]


def test_demo_with_a_bad_layer_says_what_is_allowed(tmp_path, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setenv("NEURONWIDGET_CACHE", str(shared_cache(tmp_path_factory)))
    for key in ("OPENAI_API_KEY", "NEURONWIDGET_BASE_URL", "NEURONWIDGET_MODEL"):
        monkeypatch.delenv(key, raising=False)
    assert cli.main(["demo", "--model", "tiny", "--layer", "7", "--out", str(tmp_path)]) == 2
    assert "layer must be in 0..3 for tiny, got 7" in capsys.readouterr().err


def test_explain_and_index_an_saes_latents(tmp_path, tmp_path_factory, monkeypatch, capsys):
    """`--sae` explains (and indexes) an SAE's latents: records of latents, stored under the unit space."""
    from test_sae import D_SAE, draw, write_saelens

    import neuronwidget as nw

    monkeypatch.setenv("NEURONWIDGET_CACHE", str(shared_cache(tmp_path_factory)))
    monkeypatch.setenv("NEURONWIDGET_STORE", str(tmp_path / "store.sqlite"))
    for key in ("OPENAI_API_KEY", "NEURONWIDGET_BASE_URL", "NEURONWIDGET_MODEL"):
        monkeypatch.delenv(key, raising=False)
    w = draw(int(nw.get_engine("tiny").lm.config.hidden_size), seed=21)
    folder = write_saelens(tmp_path / "sae-l1", w, "topk", 1, "hook_resid_post", k=6)
    out = tmp_path / "results"
    sae = ["--sae", str(folder), "--sae-name", "sae-l1"]
    assert cli.main(["explain", "--model", "tiny", *sae, "--neurons", "0-2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Units: SAE 'sae-l1': {D_SAE} TopK k=6 latents reading" in printed
    assert f"Index: 1 layer(s) x {D_SAE} sae:sae-l1 latents" in printed
    from neuronwidget.records import loads

    lines = (out / "explanations.jsonl").read_text().splitlines()
    assert {(r.neuron_id.layer_index, r.neuron_id.neuron_index) for r in map(loads, lines)} == {(1, 0), (1, 1), (1, 2)}
    from neuronwidget.explore.store import get_store

    store = get_store()
    assert store.count("tiny sae:sae-l1") == 3 and store.count("tiny") == 0  # under the unit space, not the neurons
    for r in map(loads, lines):
        got = store.explanations("tiny sae:sae-l1", 1, r.neuron_id.neuron_index)
        assert [s.explanation for s in got] == [r.scored_explanations[0].explanation]
    # the SAE reads layer 1 only; its latents are 0..63; no trained SAE for tiny in this cache
    assert cli.main(["explain", "--model", "tiny", *sae, "--layers", "2", "--neurons", "0",
                     "--out", str(out)]) == 2
    assert "sae:sae-l1 reads layer 1 only, got --layers 2" in capsys.readouterr().err
    assert cli.main(["explain", "--model", "tiny", *sae, "--neurons", "64", "--out", str(out)]) == 2
    assert "neuron must be in 0..63" in capsys.readouterr().err
    assert cli.main(["explain", "--model", "tiny", "--sae", "trained", "--neurons", "0", "--out", str(out)]) == 2
    assert "no trained SAE for tiny in the cache" in capsys.readouterr().err
    assert cli.main(["explain", "--model", "tiny", "--neurons", "0", "--out", str(out)]) == 2
    assert "--layers is required when explaining neurons" in capsys.readouterr().err
    assert cli.main(["explain", "--model", "tiny", "--sae-name", "x", "--layers", "0", "--neurons", "0", "--out", str(out)]) == 2
    assert "--sae-name names the SAE given with --sae" in capsys.readouterr().err
    assert cli.main(["index", "--model", "tiny", *sae]) == 0
    assert f"Index: 1 layer(s) x {D_SAE} sae:sae-l1 latents" in capsys.readouterr().out
