"""End to end: NeuronView of an SAE latent in a real JupyterLab 4, driven by Debian's chromium."""

from __future__ import annotations

import json

import nbformat
import pytest
import torch

from neuronwidget.widgets import present as pr
from tests.browser.lab import running_lab

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_index):
    with running_lab(tmp_path_factory.mktemp("lab-sae"), tiny_index[0]) as server:
        yield server


def write_sae(folder, d_in: int, d_sae: int = 32, k: int = 4) -> None:
    """A SAELens TopK folder with weights drawn here, reading block 2's output."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"W_enc": torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5, "b_enc": torch.full((d_sae,), 0.1),
               "W_dec": torch.randn(d_sae, d_in, generator=g) / d_sae ** 0.5, "b_dec": torch.zeros(d_in)},
              str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"architecture": "topk", "k": k, "d_in": d_in, "d_sae": d_sae,
                                                 "hook_name": "blocks.2.hook_resid_post", "apply_b_dec_to_input": True}))


def test_neuronview_of_a_latent_renders_and_tries_text(lab, tiny_index):
    from playwright.sync_api import sync_playwright

    cache_dir, engine, _ = tiny_index
    folder = lab.root / "sae-b"
    write_sae(folder, int(engine.lm.config.n_embd))
    engine.add_sae(folder, name="browser")
    index = engine.index(units="sae:browser", progress=False)  # built here, read from disk by the notebook's kernel
    latent = int(index.extremes()[1][0].argmax())
    top0 = index.record(2, latent).most_positive_activation_records[0]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import neuronwidget as nw\nnw.configure(model='tiny', cache_dir={str(cache_dir)!r})"),
                nbformat.v4.new_code_cell(f"sae = nw.load_sae({str(folder)!r}, model='tiny', name='browser')\n"
                                          f"nw.NeuronView(2, {latent}, units=sae.units)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lab.root / "latent.ipynb")
    text = "The tower is tall and the cat sat."
    want = engine.activations(text, 2, latent, units="sae:browser")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 1600})
        page.on("pageerror", lambda e: errors.append(str(e)))
        lab.run_notebook(page, "latent.ipynb")
        page.wait_for_selector(".nw-root .nw-top .nw-tok", timeout=120_000)
        nv = page.locator(".nw-root").filter(has=page.locator(".nw-top")).first
        assert "sae:browser" in nv.locator(".nw-model").inner_text()
        assert f"layer 2 · latent {latent}" in nv.locator(".nw-title").inner_text()
        # the top record's tokens, and its strongest token's value in a tooltip
        peak = pr.format_activation(max(top0.activations))
        assert nv.locator(".nw-top .nw-rec").first.locator(f'.nw-seq:not([hidden]) .nw-tok[data-tip*=": {peak} ("]').count()
        # "try your text": the latent's values on the user's text
        nv.locator(".nw-try-input").click()
        page.keyboard.type(text)
        page.wait_for_function(
            f"() => document.querySelectorAll('.nw-try-out .nw-tok').length === {len(want.tokens)}", timeout=60_000)
        got = nv.locator(".nw-try-out .nw-tok").evaluate_all("(els) => els.map((e) => e.dataset.tip)")
        assert [tip.split(": ")[-1].split(" (")[0] for tip in got] == [pr.format_activation(v) for v in want.activations]
        # the nearest latents by decoder cosine are buttons; Enter on one (keyboard) opens that latent
        import neuronwidget as nw

        near = nw.latent_connections(2, latent, units="sae:browser", model="tiny", k=8).nearest
        buttons = nv.locator(".nw-connections .nw-conn-neuron")
        assert buttons.evaluate_all("(els) => els.map((e) => e.textContent)") == [pr.nearest_latent(i, v) for i, v in near]
        assert "nearest latents by decoder cosine" not in nv.locator(".nw-conn-def").inner_text()  # listed once
        target = near[0][0]
        buttons.first.focus()
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => document.querySelector('.nw-root .nw-title').textContent.includes('latent {target}')",
                               timeout=60_000)
        assert nv.locator(".nw-top .nw-tok").count() > 0 and nv.locator(".nw-status .nw-error").count() == 0
        browser.close()
    assert not errors, errors
