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
