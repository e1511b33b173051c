"""End to end: the widgets in a real JupyterLab 4, driven by Debian's chromium via Playwright."""

from __future__ import annotations

import json
import re
import os
from pathlib import Path

import nbformat
import pytest

from neuronwidget.widgets import present as pr
from tests.browser.lab import running_lab

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".ci" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
TRAP = "window.__pwned=1"
HOSTILE_TOKENS = [f"<script>{TRAP}</script>", f"<img src=x onerror=\"{TRAP}\">", f'" onmouseover="{TRAP}',
                  "&lt;b&gt;bold&lt;/b&gt;", f"javascript:{TRAP}", " plain"]
HOSTILE_EXPLANATION = f"<img src=x onerror={TRAP}> words like \" onfocus=\"{TRAP}"
TRY_LINES = ["def main():", f"    return '<svg onload={TRAP}>'"]
UNICODE_TEXT = "東京は日本の首都です。 ok 🙂"
RAMP = [i / 20 for i in range(1, 21)]


@pytest.fixture(scope="module")
def cache(tiny_index):
    """The tiny index, built once per session; the notebook's kernel reads it from disk."""
    return tiny_index


@pytest.fixture(scope="module")
def lab(tmp_path_factory, cache):
    with running_lab(tmp_path_factory.mktemp("lab"), cache[0]) as server:
        yield server


def write_notebook(root: Path, cache_dir: Path) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import neuronwidget as nw\nnw.configure(model='tiny', cache_dir={str(cache_dir)!r})"),
        # the tiny model is GPT-2: its bottom tail is opt-in (bottom_k), here to drive the negative side
        nbformat.v4.new_code_cell("view = nw.NeuronView(1, 3, index=nw.get_engine().index(bottom_k=40))\nview"),
        nbformat.v4.new_code_cell(f"nw.TokenView({HOSTILE_TOKENS!r}, [1.0, 0.8, 0.6, 0.4, 0.2, 0.0])"),
        nbformat.v4.new_code_cell(f"nw.TokenView([[f'p{{i}}' for i in range(20)], [f'n{{i}}' for i in range(20)]], "
                                  f"[{RAMP!r}, {[-v for v in RAMP]!r}], diverging=True, title='ramp')"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "widgets.ipynb")
    return "widgets.ipynb"


CONTRAST_JS = """(root) => {
  const rgb = (s) => s.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => { const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const cr = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const page = rgb(getComputedStyle(root).backgroundColor);
  const rows = Array.from(root.querySelectorAll('.nw-seq'));
  return rows.map((row) => Array.from(row.querySelectorAll('.nw-tok')).map((t) => {
    const s = getComputedStyle(t);
    return { page: cr(rgb(s.backgroundColor), page), text: cr(rgb(s.backgroundColor), rgb(s.color)) };
  }));
}"""


def check_contrast(ramp_view, theme: str) -> dict:
    """In the real browser: every coloured token's text >= 4.5:1, and the strongest activation
    (last token of each ramp row) stands out from the page more than the weakest (first)."""
    rows = ramp_view.evaluate(CONTRAST_JS)
    assert len(rows) == 2 and all(len(r) == 20 for r in rows)
    for row in rows:
        assert min(t["text"] for t in row) >= 4.5, (theme, row)
        assert row[-1]["page"] > 2 * row[0]["page"], (theme, row[0], row[-1])
        assert row[-1]["page"] == max(t["page"] for t in row), theme
    return {"hottest": round(rows[0][-1]["page"], 2), "weakest": round(rows[0][0]["page"], 2)}


def notebook_cells(page) -> tuple[int, list]:
    return page.evaluate("() => { const nb = window.jupyterapp.shell.currentWidget.content;"
                         " return [nb.activeCellIndex, nb.widgets.map((c) => c.model.executionCount ?? null)]; }")


def settled(page) -> None:
    """Wait until the NeuronView is no longer being drawn again (a display update re-renders it):
    the same element for longer than the kernel's pause before it re-sends the output."""
    for _ in range(15):
        page.evaluate("() => { window.__nwSeen = document.querySelector('.nw-root .nw-top'); }")
        page.wait_for_timeout(2_000)
        if page.evaluate("() => !!window.__nwSeen && window.__nwSeen.isConnected"):
            return
    raise AssertionError("the view kept being drawn again for 30 s")


def test_widgets_in_real_jupyterlab(lab, cache):
    from playwright.sync_api import sync_playwright

    cache_dir, engine, _ = cache
    index = engine.index(bottom_k=40, progress=False)  # built here, read from disk by the notebook's kernel
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = write_notebook(lab.root, cache_dir)
    record = index.record(1, 3)
    top0 = record.most_positive_activation_records[0]
    peak_value = pr.format_activation(max(top0.activations))
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
        lab.run_notebook(page, name)
        page.wait_for_selector(".nw-root .nw-top .nw-tok", timeout=120_000)
        page.wait_for_selector(".nw-root .nw-legend-bar", timeout=60_000)
        nv = page.locator(".nw-root").filter(has=page.locator(".nw-top")).first
        tv = page.locator(".nw-root").filter(has_not=page.locator(".nw-top")).filter(has_not=page.locator(".nw-title")).first
        ramp = page.locator(".nw-root").filter(has=page.locator(".nw-title", has_text="ramp")).first
        tv.wait_for(timeout=60_000)
        ramp.wait_for(timeout=60_000)
        page.wait_for_function("() => window.jupyterapp.shell.currentWidget.content.widgets"
                               ".every((c) => c.model.executionCount !== null)", timeout=60_000)

        # coloured tokens, header with the tiny label, a side switch (tiny's gated-free GELU still dips below 0)
        assert "random weights" in nv.locator(".nw-model").inner_text()
        assert "layer 1 · neuron 3" in nv.locator(".nw-title").inner_text()
        colours = nv.locator(".nw-top .nw-rec").first.locator(".nw-seq:not([hidden]) .nw-tok").evaluate_all(
            "(els) => els.map((e) => getComputedStyle(e).backgroundColor)")
        assert any(c not in ("rgba(0, 0, 0, 0)", "transparent") for c in colours), colours

        # hover shows the stored value of the max token of the top record, printed as storage supports
        tips = []
        for tok in nv.locator(".nw-top .nw-rec").first.locator(".nw-seq:not([hidden]) .nw-tok").all():
            tok.hover()
            tips.append(nv.locator(".nw-tip").inner_text())
        assert any(f": {peak_value} (10/10)" in t for t in tips), (peak_value, tips)
        nv.locator(".nw-top .nw-tok").first.focus()
        assert nv.locator(".nw-tip").is_visible() and " at " in nv.locator(".nw-tip").inner_text()
        nv.screenshot(path=str(ARTIFACTS / "neuronview-first.png"))
        cells_before = notebook_cells(page)

        # "try your text", typed: Enter is a new line, Shift+Enter too, and the cell is not re-run
        try_box = nv.locator(".nw-try-input")
        try_box.click()
        page.keyboard.type(TRY_LINES[0])
        page.keyboard.press("Enter")
        page.keyboard.type(TRY_LINES[1])
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("x")
        typed = f"{TRY_LINES[0]}\n{TRY_LINES[1]}\nx"
        assert try_box.input_value() == typed
        want = engine.activations(typed, 1, 3)
        page.wait_for_function(
            f"() => document.querySelectorAll('.nw-try-out .nw-tok').length === {len(want.tokens)}", timeout=60_000)
        got = nv.locator(".nw-try-out .nw-tok").evaluate_all("(els) => els.map((e) => e.dataset.tip)")
        assert [tip.split(": ")[-1].split(" (")[0] for tip in got] == [pr.format_activation(v) for v in want.activations]
        assert notebook_cells(page) == cells_before  # no cell ran, none was selected
        assert page.locator(".nw-root .nw-top").count() == 1

        # an error (text over the length limit), then a valid text: its tokens show and the error goes
        page.keyboard.press("Control+A")
        page.keyboard.insert_text("y" * 4001)
        nv.locator(".nw-status .nw-error").wait_for(timeout=60_000)
        assert nv.locator(".nw-status .nw-error").inner_text().startswith("your text could not be run: it has 4001")
        page.keyboard.press("Control+A")
        page.keyboard.type(UNICODE_TEXT)
        page.wait_for_function(f"() => document.querySelector('.nw-try-out').textContent === {json.dumps(UNICODE_TEXT)}",
                               timeout=60_000)  # characters split over byte tokens read back as the text
        assert nv.locator(".nw-status .nw-error").count() == 0
        kanji = nv.locator(".nw-try-out .nw-tok", has_text="東").first
        kanji.hover()
        tip = nv.locator(".nw-tip").inner_text()
        assert '"東" = 3 tokens' in tip and "bytes e6 at 0" in tip and "bytes 9d at 1" in tip, tip
        assert nv.locator(".nw-try-out .nw-tok", has_text="🙂").count() == 1

        # "test your explanation", typed: Enter and Shift+Enter are new lines, Ctrl+Enter scores
        test_box = nv.locator(".nw-test-input")
        test_box.click()
        page.keyboard.type("the word")
        page.keyboard.press("Enter")
        page.keyboard.type("object")
        page.keyboard.press("Shift+Enter")
        assert test_box.input_value() == "the word\nobject\n"
        assert nv.locator(".nw-card").count() == 0 and notebook_cells(page) == cells_before
        page.keyboard.press("Control+Enter")
        nv.locator(".nw-card.nw-new").first.wait_for(timeout=120_000)
        card = nv.locator(".nw-card.nw-new").first
        assert card.locator(".nw-expl").inner_text() == "the word\nobject"
        test_box.blur()  # the saved output waits while a box has the keyboard
        assert "1 = perfect" in card.inner_text() and "positive side" in card.locator(".nw-card-side").inner_text()
        assert nv.locator("text=No explanation for this neuron").count() == 0
        # the saved notebook's fallback of this output now shows the card (display update)
        page.wait_for_function(
            "() => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets[1].model.outputs.toJSON())"
            ".includes('the word')", timeout=30_000)
        # the fallback refresh re-rendered the output: what was typed is still there
        assert nv.locator(".nw-try-input").input_value() == UNICODE_TEXT
        peak = nv.locator(".nw-top .nw-rec").first.locator(f'.nw-seq:not([hidden]) .nw-tok[data-tip*=": {peak_value} ("]')
        peak.first.hover()
        nv.screenshot(path=str(ARTIFACTS / "neuronview.png"))

        # a hostile explanation is shown as text and runs nothing
        nv.locator(".nw-test-input").fill(HOSTILE_EXPLANATION)
        nv.get_by_role("button", name="Simulate & score").click()
        page.wait_for_function("() => document.querySelectorAll('.nw-card.nw-new').length === 2", timeout=120_000)
        # the fallback refresh re-renders the output once more: wait for it before using the new card
        page.wait_for_function(
            "() => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets[1].model.outputs.toJSON())"
            ".includes('words like')", timeout=30_000)
        page.wait_for_function("() => document.querySelectorAll('.nw-card.nw-new').length === 2", timeout=30_000)
        settled(page)
        card = nv.locator(".nw-card.nw-new").first
        assert card.locator(".nw-expl").inner_text() == HOSTILE_EXPLANATION
        assert card.locator(".nw-score").inner_text().strip()
        card.locator("summary").click()
        assert card.locator(".nw-simrec").count() >= 2
        nv.screenshot(path=str(ARTIFACTS / "neuronview-card.png"))

        # the negative side: switch, its records, and a card that says which side it explains
        nv.get_by_role("radio", name="negative ▼").click()
        page.wait_for_function("() => document.querySelector('.nw-root .nw-side-negative')"
                               ".getAttribute('aria-checked') === 'true'", timeout=60_000)
        assert "Most negative examples" in nv.inner_text()
        low = pr.format_activation(record.most_negative_activation_records[0].min_activation)
        assert nv.locator(f'.nw-top .nw-tok[data-tip*=": {low} ("]').count() >= 1
        nv.locator(".nw-test-input").click()
        page.keyboard.press("Control+A")
        page.keyboard.type("closing brackets")
        page.keyboard.press("Meta+Enter")
        nv.locator(".nw-card.nw-new").first.wait_for(timeout=120_000)
        assert "negative side" in nv.locator(".nw-card.nw-new .nw-card-side").first.inner_text()
        nv.screenshot(path=str(ARTIFACTS / "neuronview-negative.png"))

        # hostile tokens render as text and run nothing, even when hovered
        texts = tv.locator(".nw-tok").evaluate_all("(els) => els.map((e) => e.textContent)")
        assert texts == HOSTILE_TOKENS
        for tok in tv.locator(".nw-tok").all():
            tok.hover()
        assert page.locator(".nw-root img, .nw-root script").count() == 0
        tv.screenshot(path=str(ARTIFACTS / "tokenview-hostile.png"))

        # navigation: the kernel swaps the neuron's data (JSON + binary buffer) into the view
        nv.get_by_role("radio", name="positive ▲").click()
        nv.get_by_role("button", name="next ▶").click()
        page.wait_for_function("() => document.querySelector('.nw-root .nw-id').textContent.includes('neuron 4')",
                               timeout=30_000)
        assert pr.format_activation(index.record(1, 4).max_activation) in nv.locator(".nw-meta").inner_text()
        assert nv.locator(".nw-top .nw-rec").count() == 10
        # no explanation yet: explained on demand with the configured explainer
        nv.get_by_role("button", name="Explain with rules (fitted context rules, no LLM)").click()
        nv.locator(".nw-card.nw-new").first.wait_for(timeout=120_000)
        assert "explainer: rules" in nv.locator(".nw-card.nw-new .nw-card-who").first.inner_text()
        page.wait_for_function(  # the saved output was refreshed (and the view drawn again) before going on
            "() => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets[1].model.outputs.toJSON())"
            ".includes('layer 1 · neuron 4')", timeout=30_000)
        page.wait_for_timeout(500)
        bg = lambda prop="backgroundColor": ramp.evaluate(f"(el) => getComputedStyle(el).{prop}")  # noqa: E731

        # contrast, light theme: the strongest activation stands out most, text readable everywhere
        light = check_contrast(ramp, "light")

        # VS Code's dark body class restyles the view, and removing it restores it
        before = bg()
        page.evaluate("() => document.body.classList.add('vscode-dark')")
        assert bg() == "rgb(30, 30, 30)"
        vscode = check_contrast(ramp, "vscode-dark")
        page.evaluate("() => document.body.classList.remove('vscode-dark')")
        assert bg() == before

        # JupyterLab's dark theme applies live, with the dark ramp
        light_bg = bg()
        light_fg = bg("color")
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.wait_for_function(
            f"() => getComputedStyle(document.querySelector('.nw-root')).backgroundColor !== {json.dumps(light_bg)}",
            timeout=30_000)
        assert bg("color") != light_fg
        page.wait_for_timeout(500)
        dark = check_contrast(ramp, "dark")
        print(f"\ncontrast vs page (hottest / weakest token): light {light}, JupyterLab dark {dark}, VS Code dark {vscode}")
        nv.screenshot(path=str(ARTIFACTS / "neuronview-dark.png"))

        assert page.evaluate("() => window.__pwned") is None
        assert page.locator(".nw-root script, .nw-root img, .nw-root svg[onload]").count() == 0
        assert page.locator(".nw-root .nw-top").count() == 1  # the view survived everything typed into it
        browser.close()

    assert dialogs == []
    assert not [e for e in errors if "pwned" in e]


def test_effect_section_steering_by_keyboard_and_mouse(lab, cache):
    """NeuronView's Effect section: the try text coloured by the effect of zeroing the neuron, and the
    steering box driven by keyboard (prompt, Ctrl+Enter, slider arrows/Home) and mouse (slider click)."""
    from playwright.sync_api import sync_playwright

    import neuronwidget as nw

    cache_dir, engine, index = cache
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import neuronwidget as nw\nnw.configure(model='tiny', cache_dir={str(cache_dir)!r})"),
                nbformat.v4.new_code_cell("nw.NeuronView(1, 3)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lab.root / "effect.ipynb")
    mx = index.record(1, 3).max_activation
    text, prompt = "The tower is tall", "The tower"
    eff = nw.neuron_effect(text, 1, 3, model="tiny", records=0, k=3).table

    def expected(strength: float):
        return nw.steer(prompt, {(1, 3): strength * mx}, max_new_tokens=24, model="tiny", absolute=True)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 1600})
        page.on("pageerror", lambda e: errors.append(str(e)))
        lab.run_notebook(page, "effect.ipynb")
        page.wait_for_selector(".nw-root .nw-effect", timeout=120_000)
        nv = page.locator(".nw-root").filter(has=page.locator(".nw-effect")).first
        page.wait_for_function("() => window.jupyterapp.shell.currentWidget.content.widgets"
                               ".every((c) => c.model.executionCount !== null)", timeout=60_000)
        cells_before = notebook_cells(page)

        def saved_output() -> str:
            return page.evaluate("() => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets[1]"
                                 ".model.outputs.toJSON())")

        def fallback_has(part: str) -> None:
            """The user leaves the box; the saved output's HTML gets ``part`` (a display update, which
            draws the view again: it waits while a box has the keyboard)."""
            page.evaluate("() => document.activeElement?.blur()")
            page.wait_for_function("(s) => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets[1]"
                                   ".model.outputs.toJSON()).includes(s)", arg=part, timeout=30_000)
            page.wait_for_timeout(500)

        # the effect row under "Try your text": one token per token, coloured by KL, changes on hover / click
        nv.locator(".nw-try-input").click()
        page.keyboard.type(text)
        effect_shown = f"() => document.querySelectorAll('.nw-effect-out .nw-tok').length === {len(eff)}"
        page.wait_for_function(effect_shown, timeout=60_000)
        page.evaluate("() => { window.__nwDrawn = document.querySelector('.nw-effect').closest('.nw-root'); }")
        page.wait_for_timeout(3_000)  # twice the kernel's pause before it re-sends the output
        assert "Effect of zeroing" not in saved_output()  # held while the box has the keyboard...
        assert page.evaluate("() => window.__nwDrawn.isConnected")  # ...so the view was not drawn again
        assert page.evaluate("() => document.activeElement.classList.contains('nw-try-input')")
        fallback_has("Effect of zeroing L1/N3")  # the fallback follows, and the view drawn again asks again
        page.wait_for_function(effect_shown, timeout=60_000)
        tips = nv.locator(".nw-effect-out .nw-tok").evaluate_all("(els) => els.map((e) => e.dataset.tip)")
        assert [re.search(r"KL\(clean ‖ zeroed\) (\S+)", t)[1] for t in tips] == [f"{x:.3g}" for x in eff.kl.tolist()]
        strongest = int(eff.kl.to_numpy().argmax())
        assert "nw-p20" in nv.locator(".nw-effect-out .nw-tok").nth(strongest).get_attribute("class")
        nv.locator(".nw-effect-out .nw-tok").nth(strongest).click()
        tip = nv.locator(".nw-tip").inner_text()
        assert "KL(clean ‖ zeroed)" in tip and "promoted:" in tip and "suppressed:" in tip, tip
        assert eff.promoted[strongest][0][0].strip() in tip

        # steering by keyboard: the prompt, Ctrl+Enter; Enter and Shift+Enter stay in the box
        steer_box = nv.locator(".nw-steer-input")
        steer_box.click()
        page.keyboard.press("Control+Enter")  # no prompt yet: an inline message, nothing sent
        assert "Type a prompt first" in nv.locator(".nw-steer-error").inner_text()
        page.keyboard.type(prompt)
        page.keyboard.press("Control+Enter")
        want = expected(4.0)  # the slider starts at +4 x max
        nv.locator(".nw-steer-out .nw-steered").wait_for(timeout=60_000)
        assert nv.locator(".nw-steer-out .nw-steered .nw-steer-text").inner_text() == want.steered
        assert nv.locator(".nw-steer-out .nw-plain .nw-steer-text").inner_text() == want.plain
        assert nv.locator(".nw-steer-error").inner_text() == ""  # the result cleared the message
        fallback_has("Steering: strength +4")
        nv.locator(".nw-steer-out .nw-steered").wait_for(timeout=60_000)  # drawn again, the result stays
        assert nv.locator(".nw-steer-out .nw-steered .nw-steer-text").inner_text() == want.steered

        # the slider by keyboard: arrows step 0.5, Home goes to -10; each change steers again
        slider = nv.locator(".nw-steer-slider")
        slider.focus()
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        assert slider.input_value() == "3"
        page.keyboard.press("Home")
        assert slider.input_value() == "-10"
        assert "strength -10 × max" in nv.locator(".nw-steer-strength").inner_text()
        page.wait_for_function("() => document.querySelector('.nw-steer-out .nw-note')?.textContent.includes('strength -10')",
                               timeout=60_000)
        assert nv.locator(".nw-steer-out .nw-steered .nw-steer-text").inner_text() == expected(-10.0).steered
        fallback_has("Steering: strength -10")

        # the slider by mouse: a click at its right end is +10
        box = slider.bounding_box()
        page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
        assert slider.input_value() == "10"
        page.wait_for_function("() => document.querySelector('.nw-steer-out .nw-note')?.textContent.includes('strength +10')",
                               timeout=60_000)
        assert nv.locator(".nw-steer-out .nw-steered .nw-steer-text").inner_text() == expected(10.0).steered
        assert notebook_cells(page) == cells_before  # none of those keys ran or selected a cell
        fallback_has("Steering: strength +10")

        # a kernel error shows inline, and clears on the next result; a hostile prompt stays text
        steer_box.click()
        page.keyboard.press("Control+A")
        page.keyboard.insert_text("y" * 4001)
        page.keyboard.press("Control+Enter")
        nv.locator(".nw-steer-error", has_text="the prompt has 4001 characters").wait_for(timeout=60_000)
        page.keyboard.press("Control+A")
        page.keyboard.type(f"<img src=x onerror=\"{TRAP}\">")
        page.keyboard.press("Control+Enter")
        page.wait_for_function("() => document.querySelector('.nw-steer-error').textContent === ''", timeout=60_000)
        assert nv.locator(".nw-status .nw-error").count() == 0
        assert TRAP in nv.locator(".nw-steer-out .nw-note").inner_text()
        # the saved notebook's fallback shows the last effect and continuation, the prompt as text
        fallback_has("&lt;img src=x onerror=")
        assert TRAP in nv.locator(".nw-steer-out .nw-note").inner_text()
        nv.screenshot(path=str(ARTIFACTS / "neuronview-effect.png"))
        assert page.evaluate("() => window.__pwned") is None
        assert page.locator(".nw-root img").count() == 0
        browser.close()
    assert not errors, errors
