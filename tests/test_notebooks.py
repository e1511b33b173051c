"""The three notebooks run top to bottom offline, in a real kernel, and show what they promise."""

import os
import re
from pathlib import Path

import nbformat
import pytest
from conftest import shared_cache
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"



def run(name, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NEURONWIDGET_CACHE", str(shared_cache(tmp_path_factory)))
    for key in ("OPENAI_API_KEY", "NEURONWIDGET_BASE_URL", "NEURONWIDGET_MODEL", "NEURONWIDGET_PUBLISHED_URL"):
        monkeypatch.delenv(key, raising=False)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=900,  # a real model's first index on a CPU: minutes
                            kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def text_of(cell):
    out = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            out.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            out.append(o.data.get("text/plain", ""))
            out.append(o.data.get("text/html", ""))
        elif o.output_type == "error":
            out.append("\n".join(o.traceback))
    return "\n".join(out)


def html_outputs(cell):
    return [o.data for o in cell.get("outputs", []) if o.output_type in ("execute_result", "display_data")
            and "text/html" in o.data]


@pytest.mark.parametrize("name", ["quickstart.ipynb", "teaching-demo.ipynb", "hypothesis-check.ipynb"])
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"


def _check_setup(cell):
    out = text_of(cell)
    assert "Model: " in out and "Explainer: rules" in out
    if "Model: 'tiny'" in out:
        assert "RANDOM" in out  # says plainly that the tiny model is not GPT-2
    if "smollm2-135m" in out:
        assert "real weights, not GPT-2" in out and "first 16,384 tokens" in out


def test_quickstart(tmp_path_factory, monkeypatch):
    nb = run("quickstart.ipynb", tmp_path_factory, monkeypatch)
    code = [c for c in nb.cells if c.cell_type == "code"]
    _check_setup(code[0])
    view = html_outputs(code[1])
    assert view, "NeuronView displayed nothing"
    assert "application/vnd.jupyter.widget-view+json" in view[0]  # the live widget ...
    fallback = view[0]["text/html"]
    assert "layer" in fallback and fallback.count('<span style="background:') > 20  # ... and its static fallback
    if "Model: 'tiny'" in text_of(code[0]):
        assert "tiny (random weights" in fallback  # the view itself says it is not GPT-2
    if "smollm2-135m" in text_of(code[0]):
        assert "real weights, not GPT-2" in fallback  # ... or that it is a real model, not GPT-2
    tokens = html_outputs(code[2])[0]["text/html"]
    assert "radio" in tokens and '<span style="background:' in tokens


def test_teaching_demo(tmp_path_factory, monkeypatch):
    nb = run("teaching-demo.ipynb", tmp_path_factory, monkeypatch)
    code = [c for c in nb.cells if c.cell_type == "code"]
    _check_setup(code[0])
    everything = "\n".join(text_of(c) for c in code)
    assert "<start>" in everything and "<end>" in everything  # the explainer prompt is shown
    # the offline default's explanation: context rules (see explanations.backends.rules)
    assert re.search(r'Explanation: ("|the token after "|the phrase "|no rule fits)', everything)
    assert "rows in pairs: real (0-10), then simulated (0-10)" in everything
    card = html_outputs(code[-1])[0]["text/html"]
    assert "nw-card" in card and "explainer: rules" in card
    assert "Token lookup: " in everything  # the paper's baseline beside it, as the control
    scores = text_of(code[-1])
    assert re.search(r"score: (-?[01]\.\d\d \(-?[01]\.\d\d\u2013-?[01]\.\d\d\)|undefined)", scores), scores
    assert "token lookup, scored by its own simulator: " in scores


def test_hypothesis_check_degrades_offline(tmp_path_factory, monkeypatch):
    nb = run("hypothesis-check.ipynb", tmp_path_factory, monkeypatch)
    code = [c for c in nb.cells if c.cell_type == "code"]
    _check_setup(code[0])
    assert "Hypothesis: the tokens" in text_of(code[2])
    tried = text_of(code[3])
    assert tried.count("should fire") == 2 and tried.count("should not") == 2
    assert re.search(r"your hypothesis +(-?[01]\.\d\d \(|undefined)", text_of(code[4]))
    last = text_of(code[-1])
    # offline here: a plain message, not a traceback
    assert "not available here" in last and "could not reach" in last and "Traceback" not in last
