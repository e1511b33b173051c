"""An SAE's index built on a real local Ray cluster equals the single-process one, byte for byte."""

import pytest
import torch
from test_ray_index import SETTINGS, _files, cluster, texts  # noqa: F401 - fixtures
from test_sae import draw, write_saelens

from neuronwidget.activations import Engine
from neuronwidget.activations.build import IndexBuilder

ray = pytest.importorskip("ray", reason='needs ray: pip install "neuronwidget[ray]"')


def test_sae_index_on_ray_equals_single_process(cluster, texts, tmp_path):  # noqa: F811 - fixtures
    eng = Engine("tiny", device="cpu")
    w = draw(int(eng.lm.config.hidden_size), seed=17)
    sae = eng.add_sae(write_saelens(tmp_path / "s", w, "topk", 2, "hook_resid_post", k=6), name="ray-topk")
    um = eng.unit_model(sae.units)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread, like each Ray worker (the same float summation order)
    try:
        reference = IndexBuilder(um, texts, cache_dir=tmp_path / "single", **SETTINGS).run(progress=False)
    finally:
        torch.set_num_threads(threads)
    idx = eng.index(texts, units=sae.units, cache_dir=tmp_path / "ray", distributed="ray", progress=False, **SETTINGS)
    assert type(idx).__name__ == "UnitIndex" and idx.unit_layers == [2]
    ref, got = _files(reference), _files(idx)
    assert ref.keys() == got.keys() and len(ref) > 5
    for name in ref:
        assert got[name]["sha256"] == ref[name]["sha256"], name
    latent = int(idx.densities(2).argmax())
    assert idx.record(2, latent, exact=False) == reference.record(2, latent)
    assert idx.density(2, latent) == reference.density(2, latent) > 0


def test_cli_index_on_ray_with_an_sae(cluster, tmp_path, monkeypatch, capsys):  # noqa: F811 - fixtures
    """`neuronwidget index --sae ... --ray`: the SAE's index folded on Ray workers, from the shell."""
    from neuronwidget import cli

    monkeypatch.setenv("NEURONWIDGET_CACHE", str(tmp_path / "cache"))
    w = draw(int(Engine("tiny", device="cpu").lm.config.hidden_size), seed=19)
    folder = write_saelens(tmp_path / "s", w, "standard", 1, "hook_mlp_out")
    assert cli.main(["index", "--model", "tiny", "--sae", str(folder), "--sae-name", "r", "--ray", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "activation index of tiny (random weights — not a real GPT-2) sae:r on Ray" in out
    assert "Index: 1 layer(s) x 64 sae:r latents" in out
    assert cli.main(["index", "--model", "tiny", "--workers", "2"]) == 2
    assert "--workers and --max-worker-deaths only apply with --ray" in capsys.readouterr().err
