"""End to end: Explorer and SearchBox in a real JupyterLab 4, driven by Debian's chromium."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from neuronwidget.widgets import present as pr
from tests.browser.lab import running_lab

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".ci" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
TEXT = "The Eiffel Tower is in Paris. <b>bold</b>"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_index):
    with running_lab(tmp_path_factory.mktemp("lab"), tiny_index[0]) as server:
        yield server


def write_notebook(root: Path, cache_dir: Path) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import neuronwidget as nw\nnw.configure(model='tiny', cache_dir={str(cache_dir)!r})"),
        nbformat.v4.new_code_cell(f"ex = nw.Explorer({TEXT!r}, k=5)\nex"),
        nbformat.v4.new_code_cell(
            "from neuronwidget.records import NeuronId, ScoredExplanation, ScoredSimulation\n"
            "nw.record_explanation(ScoredExplanation('quokka wombat words', ScoredSimulation([], ev_correlation_score=0.5),"
            " NeuronId(2, 9)), 'tiny')\nnw.SearchBox('quokka')"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "explorer.ipynb")
    return "explorer.ipynb"


# what an Explorer / SearchBox shows, read from the live DOM: tokens (text, colour level, selected),
# the table's heading, every row's cells, the search box's query
LIVE_JS = """(root) => ({
  tokens: Array.from(root.querySelectorAll('.nw-xtok')).map((e) =>
    [e.textContent, Array.from(e.classList).find((c) => /^nw-[pn]\\d+$/.test(c)) ?? '', e.classList.contains('nw-xsel')]),
  head: Array.from(root.querySelectorAll('.nw-xtable > .nw-section')).map((e) => e.textContent),
  rows: Array.from(root.querySelectorAll('.nw-xrow')).map((r) => Array.from(r.children).map((c) => c.textContent)),
  notes: Array.from(root.querySelectorAll('.nw-xtable > .nw-note')).map((e) => e.textContent),
  query: Array.from(root.querySelectorAll('.nw-search-input')).map((e) => e.value),
})"""


def saved_view(page, cell: int) -> dict:
    """The same parts read from the cell's saved HTML fallback (what GitHub or nbviewer show)."""
    html = page.evaluate("(i) => window.jupyterapp.shell.currentWidget.content.widgets[i].model.outputs.toJSON()"
                         ".map((o) => (o.data || {})['text/html'] || '').join('')", cell)
    colours = {pr.hex_color(pr.level_color(lv)): pr.level_class(lv) for lv in range(-pr.LEVELS, pr.LEVELS + 1) if lv}
    out: dict = {"tokens": [], "head": [], "rows": [], "notes": [], "query": []}

    class P(HTMLParser):
        into: tuple[list, int] | None = None  # where the text being read goes

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            cls, style = a.get("class") or "", a.get("style") or ""
            if cls == "nw-xtok":
                bg = style.split("background:")[1].split(";")[0] if "background:" in style else ""
                out["tokens"].append(["", colours.get(bg, ""), "outline" in style])
                self.into = (out["tokens"][-1], 0)
            elif cls == "nw-xrow":
                out["rows"].append([])
            elif cls in ("nw-section", "nw-search-input") or (cls.startswith("nw-x") and out["rows"]):
                where = out["rows"][-1] if cls.startswith("nw-x") else out["head" if cls == "nw-section" else "query"]
                where.append("")
                self.into = (where, len(where) - 1)

        def handle_data(self, data):
            if self.into is not None:
                self.into[0][self.into[1]] += data

        def handle_endtag(self, tag):
            self.into = None

    P().feed(html)
    out["tokens"] = [tuple(t) for t in out["tokens"]]
    return out


def same_as_saved(page, root, cell: int) -> dict:
    """The live view's parts equal its saved fallback's."""
    live = root.evaluate(LIVE_JS)
    live["tokens"] = [tuple(t) for t in live["tokens"]]
    saved = saved_view(page, cell)
    for part in ("tokens", "head", "rows", "query"):
        assert live[part] == saved[part], (part, live[part], saved[part])
    return live


def test_explorer_click_a_token_see_neurons_open_one(lab, tiny_index):
    from playwright.sync_api import sync_playwright

    import neuronwidget as nw

    cache_dir, engine, _ = tiny_index
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = write_notebook(lab.root, cache_dir)
    tokens = engine.tokenize(TEXT)
    errors: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 1600})
        page.on("pageerror", lambda e: errors.append(str(e)))
        lab.run_notebook(page, name)
        page.wait_for_selector(".nw-root .nw-xtok", timeout=120_000)
        ex = page.locator(".nw-root").filter(has=page.locator(".nw-explorer")).first

        # the text as tokens (hostile markup stays text)
        assert ex.locator(".nw-xtok").evaluate_all("(els) => els.map((e) => e.textContent)") == tokens
        assert ex.locator("b").count() == 0

        # click a token: its top neurons appear, as top_neurons computes them
        position = 5
        ex.locator(".nw-xtok").nth(position).click()
        want = nw.top_neurons(TEXT, position, k=5, model="tiny")
        ex.locator(".nw-xrow").first.wait_for(timeout=30_000)
        shown = ex.locator(".nw-xrow .nw-xid").evaluate_all("(els) => els.map((e) => e.textContent)")
        assert shown == [f"L{a}/N{b}" for a, b in zip(want.layer, want.neuron)]
        ex.screenshot(path=str(ARTIFACTS / "explorer.png"))
        # the arrow keys walk the tokens; the view is not drawn again under them (the saved output waits)
        for _ in range(2):
            page.keyboard.press("ArrowRight")
        position += 2
        want = nw.top_neurons(TEXT, position, k=5, model="tiny")
        page.wait_for_function(f"() => document.querySelector('.nw-xtable > .nw-section')?.textContent.includes('(token {position})')",
                               timeout=30_000)
        page.wait_for_timeout(1_000)
        assert page.evaluate("() => document.activeElement.dataset.position") == str(position)
        shown = ex.locator(".nw-xrow .nw-xid").evaluate_all("(els) => els.map((e) => e.textContent)")
        assert shown == [f"L{a}/N{b}" for a, b in zip(want.layer, want.neuron)]
        # the saved page follows the token selected once the keyboard leaves, and shows what the live view shows
        page.evaluate("() => document.activeElement.blur()")
        page.wait_for_function("() => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets[1]"
                               f".model.outputs.toJSON()).includes('(token {position})')", timeout=30_000)
        live = same_as_saved(page, ex, 1)
        assert len(live["tokens"]) == len(tokens) and len(live["rows"]) == 5 and live["tokens"][position][2]

        # rank by effect (the switch, by keyboard): the rows are top_neurons(by="effect")'s, then back
        effect = nw.top_neurons(TEXT, position, k=5, model="tiny", by="effect", check=5)
        switch = ex.locator('.nw-xrank-btn[data-by="effect"]')
        switch.focus()
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('.nw-xrow .nw-xval')?.textContent.startsWith('Δ log p if zeroed')",
                               timeout=60_000)
        assert switch.get_attribute("aria-pressed") == "true"
        shown = ex.locator(".nw-xrow .nw-xid").evaluate_all("(els) => els.map((e) => e.textContent)")
        assert shown == [f"L{a}/N{b}" for a, b in zip(effect.layer, effect.neuron)]
        ex.screenshot(path=str(ARTIFACTS / "explorer-effect.png"))
        ex.locator('.nw-xrank-btn[data-by="activation"]').click()
        page.wait_for_function("() => !document.querySelector('.nw-xrow .nw-xval')?.textContent.startsWith('Δ log p if zeroed')",
                               timeout=60_000)
        shown = ex.locator(".nw-xrow .nw-xid").evaluate_all("(els) => els.map((e) => e.textContent)")
        assert shown == [f"L{a}/N{b}" for a, b in zip(want.layer, want.neuron)]

        # open one: its NeuronView appears in place, with its connections, and a way back
        layer, neuron = int(want.layer[1]), int(want.neuron[1])
        ex.locator(".nw-xrow").nth(1).click()
        panel = ex.locator(".nw-inplace")
        panel.locator(".nw-top .nw-tok").first.wait_for(timeout=120_000)
        assert f"layer {layer} · neuron {neuron}" in panel.locator(".nw-id").first.inner_text()
        assert ex.locator(".nw-explorer").is_hidden()
        assert panel.locator(".nw-connections .nw-conn-token").count() > 0
        ex.screenshot(path=str(ARTIFACTS / "explorer-neuronview.png"))
        # the nested view is live: "next" asks the kernel and the header follows
        panel.get_by_role("button", name="next ▶").click()
        page.wait_for_function(
            f"() => Array.from(document.querySelectorAll('.nw-inplace .nw-id')).some("
            f"(e) => e.textContent.includes('neuron {neuron + 1}'))", timeout=60_000)
        ex.locator(".nw-back").click()
        assert ex.locator(".nw-explorer").is_visible() and panel.is_hidden()

        # the search box: a recorded explanation is found and opens its NeuronView
        sb = page.locator(".nw-root").filter(has=page.locator(".nw-search")).first
        sb.locator(".nw-xrow").first.wait_for(timeout=60_000)
        assert sb.locator(".nw-xexpl").first.inner_text() == "quokka wombat words"
        live = same_as_saved(page, sb, 2)  # its saved page: the query and the same rows
        assert live["query"] == ["quokka"] and live["rows"][0][2] == "quokka wombat words"
        sb.locator(".nw-xrow").first.click()
        sb.locator(".nw-inplace .nw-top .nw-tok").first.wait_for(timeout=120_000)
        assert "layer 2 · neuron 9" in sb.locator(".nw-inplace .nw-id").first.inner_text()
        browser.close()
    assert not errors, errors
