"""End to end: the widgets in a real JupyterLab 4, driven by Debian's chromium via Playwright."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from tests.browser.lab import Lab

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".ci" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
TRAP = "window.__pwned=1"
HOSTILE_TOKENS = [f"<script>{TRAP}</script>", f"<img src=x onerror=\"{TRAP}\">", f'" onmouseover="{TRAP}',
                  "&lt;b&gt;bold&lt;/b&gt;", f"javascript:{TRAP}", " plain"]
HOSTILE_EXPLANATION = f"<img src=x onerror={TRAP}> words like \" onfocus=\"{TRAP}"
TRY_TEXT = f"def main(): return <svg onload={TRAP}>\n"


@pytest.fixture(scope="module")
def cache(tiny_index):
    """The tiny index, built once per session; the notebook's kernel reads it from disk."""
    return tiny_index


@pytest.fixture(scope="module")
def lab(tmp_path_factory, cache):
    server = Lab(tmp_path_factory.mktemp("lab"), env={"NEURONWIDGET_CACHE": str(cache[0])})
    server.start()
    yield server
    server.stop()


def write_notebook(root: Path, cache_dir: Path) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import neuronwidget as nw\nnw.configure(model='tiny', cache_dir={str(cache_dir)!r})"),
        nbformat.v4.new_code_cell("view = nw.NeuronView(1, 3)\nview"),
        nbformat.v4.new_code_cell(f"nw.TokenView({HOSTILE_TOKENS!r}, [1.0, 0.8, 0.6, 0.4, 0.2, 0.0])"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "widgets.ipynb")
    return "widgets.ipynb"


def computed(page, selector: str, prop: str) -> str:
    return page.eval_on_selector(selector, f"(el) => getComputedStyle(el).{prop}")


def test_widgets_in_real_jupyterlab(lab, cache):
    from playwright.sync_api import sync_playwright

    cache_dir, engine, index = cache
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = write_notebook(lab.root, cache_dir)
    record = index.record(1, 3)
    top0 = record.most_positive_activation_records[0]
    expected_max = f"activation {max(top0.activations):.4f}"
    dialogs: list[str] = []
    errors: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 1600})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.add_init_script("window.__pwned = undefined;")
        page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}")
        page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=60_000)
        page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.status === 'idle'; }", timeout=60_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector(".nw-root .nw-top .nw-tok", timeout=120_000)
        page.wait_for_selector(".nw-root .nw-legend-bar", timeout=60_000)
        nv = page.locator(".nw-root").filter(has=page.locator(".nw-top")).first
        tv = page.locator(".nw-root").filter(has_not=page.locator(".nw-top")).first
        tv.wait_for(timeout=60_000)

        # coloured tokens, header with the tiny label
        assert "random weights" in nv.locator(".nw-model").inner_text()
        assert "layer 1 · neuron 3" in nv.locator(".nw-title").inner_text()
        colours = nv.locator(".nw-top .nw-rec").first.locator(".nw-seq:not([hidden]) .nw-tok").evaluate_all(
            "(els) => els.map((e) => getComputedStyle(e).backgroundColor)")
        assert any(c not in ("rgba(0, 0, 0, 0)", "transparent") for c in colours), colours

        # hover shows the exact activation of the max token of the top record
        tips = []
        for tok in nv.locator(".nw-top .nw-rec").first.locator(".nw-seq:not([hidden]) .nw-tok").all():
            tok.hover()
            tips.append(nv.locator(".nw-tip").inner_text())
        assert any(expected_max in t for t in tips), (expected_max, tips)
        nv.locator(".nw-top .nw-tok").first.focus()
        assert nv.locator(".nw-tip").is_visible() and "position" in nv.locator(".nw-tip").inner_text()
        nv.screenshot(path=str(ARTIFACTS / "neuronview-first.png"))

        # "try your text": live activations from the kernel equal the engine's
        want = engine.activations(TRY_TEXT, 1, 3)
        nv.locator(".nw-try-input").fill(TRY_TEXT)
        page.wait_for_function(
            f"() => document.querySelectorAll('.nw-try-out .nw-tok').length === {len(want.tokens)}", timeout=60_000)
        got = nv.locator(".nw-try-out .nw-tok").evaluate_all("(els) => els.map((e) => e.dataset.value)")
        assert got == [f"{v:.4f}" for v in want.activations]

        # "test your explanation": typed text comes back as a scored card
        nv.locator(".nw-test-input").fill("the word object")
        nv.get_by_role("button", name="Simulate & score").click()
        nv.locator(".nw-card.nw-new").first.wait_for(timeout=120_000)
        assert nv.locator(".nw-card.nw-new .nw-expl").first.inner_text() == "the word object"
        assert "1 = perfect" in nv.locator(".nw-card.nw-new").first.inner_text()
        assert nv.locator("text=No explanation for this neuron yet.").count() == 0
        # the README picture: light theme, a scored card, the max token's tooltip
        peak = nv.locator(".nw-top .nw-rec").first.locator(f'.nw-seq:not([hidden]) .nw-tok[data-value="{max(top0.activations):.4f}"]')
        peak.first.hover()
        nv.screenshot(path=str(ARTIFACTS / "neuronview.png"))

        # a hostile explanation is shown as text and runs nothing
        nv.locator(".nw-test-input").fill(HOSTILE_EXPLANATION)
        nv.get_by_role("button", name="Simulate & score").click()
        page.wait_for_function("() => document.querySelectorAll('.nw-card.nw-new').length === 2", timeout=120_000)
        card = nv.locator(".nw-card.nw-new").first
        assert card.locator(".nw-expl").inner_text() == HOSTILE_EXPLANATION
        assert card.locator(".nw-score").inner_text().strip()
        card.locator("summary").click()
        assert card.locator(".nw-simrec").count() >= 2
        nv.screenshot(path=str(ARTIFACTS / "neuronview-card.png"))

        # hostile tokens render as text and run nothing, even when hovered
        texts = tv.locator(".nw-tok").evaluate_all("(els) => els.map((e) => e.textContent)")
        assert texts == HOSTILE_TOKENS
        for tok in tv.locator(".nw-tok").all():
            tok.hover()
        assert page.locator(".nw-root img, .nw-root script").count() == 0
        tv.screenshot(path=str(ARTIFACTS / "tokenview-hostile.png"))

        # navigation: the kernel swaps the neuron's data (JSON + binary buffer) into the view
        nv.get_by_role("button", name="next ▶").click()
        page.wait_for_function("() => document.querySelector('.nw-root .nw-id').textContent.includes('neuron 4')",
                               timeout=30_000)
        want_max = f"max activation {index.record(1, 4).max_activation:.4f}"
        assert want_max in nv.locator(".nw-meta").inner_text()
        assert nv.locator(".nw-top .nw-rec").count() == 10
        # no explanation yet: explained on demand with the configured explainer
        nv.get_by_role("button", name="Explain with baseline: token lookup (no LLM)").click()
        nv.locator(".nw-card.nw-new").first.wait_for(timeout=120_000)
        assert "explainer: baseline" in nv.locator(".nw-card.nw-new .nw-card-who").first.inner_text()

        # VS Code's dark body class restyles the view, and removing it restores it
        before = computed(page, ".nw-root", "backgroundColor")
        page.evaluate("() => document.body.classList.add('vscode-dark')")
        assert computed(page, ".nw-root", "backgroundColor") == "rgb(30, 30, 30)"
        page.evaluate("() => document.body.classList.remove('vscode-dark')")
        assert computed(page, ".nw-root", "backgroundColor") == before

        # dark theme applies live
        light_bg = computed(page, ".nw-root", "backgroundColor")
        light_fg = computed(page, ".nw-root", "color")
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.wait_for_function(
            f"() => getComputedStyle(document.querySelector('.nw-root')).backgroundColor !== {json.dumps(light_bg)}",
            timeout=30_000)
        assert computed(page, ".nw-root", "color") != light_fg
        page.wait_for_timeout(500)
        nv.screenshot(path=str(ARTIFACTS / "neuronview-dark.png"))

        assert page.evaluate("() => window.__pwned") is None
        assert page.locator(".nw-root script, .nw-root img, .nw-root svg[onload]").count() == 0
        browser.close()

    assert dialogs == []
    assert not [e for e in errors if "pwned" in e]
