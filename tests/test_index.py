"""The all-neuron index on the tiny model, checked against brute force over the same windows."""

import json

import numpy as np
import pytest
import torch

from neuronwidget import api as config
from neuronwidget.activations.corpus import bundled_corpus
from neuronwidget.subject import mlp_activations
from neuronwidget.activations.build import IndexBuilder
from neuronwidget.activations.store import QUANTILES
from neuronwidget.subject import load_model
from neuronwidget.records import NeuronRecord

SETTINGS = dict(top_k=12, bottom_k=12, n_random=9, n_quantile=3, batch_size=16, calibration_windows=64, checkpoint_every=2,
                checkpoint_seconds=0)


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def texts():
    docs = list(bundled_corpus().documents())
    return ["\n".join(docs)[:26_700], docs[-1][:3000]]  # 148 windows of real prose (tiny tokenizer)


@pytest.fixture()
def cache(tmp_path):
    config.configure(cache_dir=str(tmp_path))
    yield tmp_path
    config.configure(cache_dir=None)


def _shas(index):
    return {k: v["sha256"] for k, v in json.loads((index.folder / "manifest.json").read_text())["files"].items()}


@pytest.fixture(scope="module")
def built(lm, texts, tmp_path_factory):
    config.configure(cache_dir=str(tmp_path_factory.mktemp("idx")))
    try:
        builder = IndexBuilder(lm, texts, seed=0, **SETTINGS)
        return builder, builder.run(progress=False)
    finally:
        config.configure(cache_dir=None)


@pytest.fixture(scope="module")
def brute(lm, built):
    windows = np.array(built[1]._a["windows"])
    acts = {layer: [] for layer in range(lm.n_layers)}
    for s in range(0, len(windows), SETTINGS["batch_size"]):  # same batches as the build
        got = mlp_activations(lm, torch.from_numpy(windows[s:s + SETTINGS["batch_size"]]).long(), range(lm.n_layers))
        for layer, a in got.items():
            acts[layer].append(a.numpy())
    return {layer: np.concatenate(a) for layer, a in acts.items()}  # [W, 64, N] float32


def _ranked(values, largest):
    """Window ids per neuron ordered as the index ranks them: by value, ties by window id."""
    w = np.arange(values.shape[0])
    out = []
    for n in range(values.shape[1]):
        v = values[:, n]
        out.append(np.lexsort((w, -v if largest else v)))
    return np.stack(out)  # [N, W]


def test_top_and_bottom_k_equal_brute_force(built, brute, lm):
    _, idx = built
    k = SETTINGS["top_k"]
    for layer in range(lm.n_layers):
        a = brute[layer]  # [W, 64, N]
        for name, vals, stat, largest in (("top", a.max(1), "top_max", True), ("bottom", a.min(1), "bottom_min", False)):
            want_ids = _ranked(vals, largest)[:, :k]  # [N, k]
            got_ids = np.asarray(idx._a[f"{name}_ids"][layer])
            np.testing.assert_array_equal(got_ids, want_ids)
            np.testing.assert_array_equal(np.asarray(idx._a[stat][layer]), np.take_along_axis(vals.T, want_ids, 1))
        for n in range(0, lm.n_neurons, 5):
            for ids in (np.asarray(idx._a["top_ids"][layer, n]), np.asarray(idx._a["bottom_ids"][layer, n])):
                np.testing.assert_array_equal(idx.window_activations(layer, n, ids), a[ids, :, n].astype(np.float16))
        assert idx.max_activation(layer, 3) == float(a[:, :, 3].max())
        assert idx.min_activation(layer, 3) == float(a[:, :, 3].min())


def test_signed_records_equal_brute_force_over_all_windows(built, brute, lm):
    """record(): most_positive = the windows with the highest maximum, most_negative = the
    windows with the lowest minimum (lowest first), every token's activation as computed."""
    _, idx = built
    windows = np.asarray(idx._a["windows"])
    table = lm.token_strings()
    for layer, neuron in ((0, 0), (1, 200), (lm.n_layers - 1, lm.n_neurons - 1)):
        a = brute[layer][:, :, neuron]  # [W, 64]
        rec = idx.record(layer, neuron)
        for records, order in ((rec.most_positive_activation_records, np.lexsort((np.arange(len(a)), -a.max(1)))),
                               (rec.most_negative_activation_records, np.lexsort((np.arange(len(a)), a.min(1))))):
            assert len(records) == SETTINGS["top_k"]
            for r, w in zip(records, order):
                assert r.tokens == [table[t] for t in windows[w]]
                assert r.activations == a[w].astype(np.float16).astype(np.float32).tolist()
        mins = [r.min_activation for r in rec.most_negative_activation_records]
        assert mins == sorted(mins) and mins[0] == float(a.min().astype(np.float16))
        assert idx.min_activation(layer, neuron) == float(a.min())  # exact float32
        neg = rec.for_side("negative")
        assert neg.max_activation == -mins[0]


def test_random_and_quantile_samples_and_moments_match_brute_force(built, brute, lm):
    _, idx = built
    rand_ids = np.asarray(idx._a["rand_ids"])
    assert len(set(rand_ids.tolist())) == SETTINGS["n_random"]
    for layer in (0, lm.n_layers - 1):
        a = brute[layer]
        for n in range(0, lm.n_neurons, 11):
            np.testing.assert_array_equal(idx.window_activations(layer, n, rand_ids), a[rand_ids, :, n].astype(np.float16))
        maxima = a.max(1)
        bounds = np.asarray(idx._a["q_bounds"][layer])  # [N, 4]
        assert np.all(np.diff(bounds, axis=1) >= 0)
        bins = (maxima[:, :, None] >= bounds[None]).sum(2)  # [W, N]
        q_ids = np.asarray(idx._a["q_ids"][layer])  # [N, 5, q]
        for n in range(0, lm.n_neurons, 7):
            for b in range(len(QUANTILES) + 1):
                chosen = q_ids[n, b][q_ids[n, b] >= 0]
                assert len(set(chosen.tolist())) == min(SETTINGS["n_quantile"], int((bins[:, n] == b).sum()))
                assert np.all(bins[chosen, n] == b)
                np.testing.assert_array_equal(idx.window_activations(layer, n, chosen), a[chosen, :, n].astype(np.float16))
        flat = a.reshape(-1, a.shape[2]).astype(np.float64)
        mean, var = flat.mean(0), flat.var(0)
        skew = ((flat - mean) ** 3).mean(0) / var ** 1.5
        kurt = ((flat - mean) ** 4).mean(0) / var ** 2 - 3
        got = np.asarray(idx._a["moments"][layer])
        np.testing.assert_allclose(got[:, 0], mean, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(got[:, 1], var, rtol=1e-4)
        np.testing.assert_allclose(got[:, 2], skew, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got[:, 3], kurt, rtol=1e-3, atol=1e-3)
        for n in (5, 100, lm.n_neurons - 1):
            edges, counts = idx.histogram(layer, n)
            assert counts.sum() == idx.n_tokens and len(edges) == len(counts) + 1 and np.all(np.diff(edges) > 0)
            assert edges[0] <= float(flat[:, n].min()) and edges[-1] >= float(flat[:, n].max())  # the true range
            want_counts, _ = np.histogram(flat[:, n], bins=edges)
            assert np.abs(want_counts - counts).sum() <= 0.001 * idx.n_tokens  # only float rounding at bin edges


def test_size_follows_the_data(built, lm):
    """Each neuron stores each window it references once: never more rows than windows."""
    _, idx = built
    off = np.asarray(idx._a["ref_offsets"])
    per_neuron = np.diff(off)
    assert per_neuron.max() <= idx.n_windows
    refs = SETTINGS["top_k"] * 2 + SETTINGS["n_random"] + 5 * SETTINGS["n_quantile"]
    assert per_neuron.mean() < refs  # overlaps (a top window that is also random, ...) are stored once
    assert np.asarray(idx._a["ref_acts"]).shape == (off[-1], 64)


def test_ordered_keys_and_hash_match_python():
    from neuronwidget.activations.state import _mix, ordered, unordered

    x = torch.tensor([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf], dtype=torch.float32)
    o = ordered(x)
    assert torch.all(o[1:] >= o[:-1]) and o[3] < o[4]
    assert torch.equal(unordered(o).view(torch.int32), x.view(torch.int32))

    def mix(v):  # splitmix64 finaliser on unsigned 64-bit Python ints
        m = (1 << 64) - 1
        v ^= v >> 30
        v = (v * 0xBF58476D1CE4E5B9) & m
        v ^= v >> 27
        v = (v * 0x94D049BB133111EB) & m
        return v ^ (v >> 31)

    vals = [0, 1, 12345, 2**40 + 7, -5 & ((1 << 63) - 1)]
    got = _mix(torch.tensor(vals, dtype=torch.long)).tolist()
    assert [g & ((1 << 64) - 1) for g in got] == [mix(v) for v in vals]


def test_records_carry_token_bytes(built, lm):
    _, idx = built
    rec = idx.record(1, 3)
    table = lm.token_bytes()
    for r in rec.most_positive_activation_records[:3] + rec.random_sample[:2]:
        assert r.token_bytes is not None and len(r.token_bytes) == len(r.tokens)
        assert b"".join(r.token_bytes).decode("utf-8", errors="replace") == "".join(r.tokens)
    windows = np.asarray(idx._a["windows"])
    w = int(idx._a["top_ids"][1, 3, 0])
    assert rec.most_positive_activation_records[0].token_bytes == [table[t] for t in windows[w]]


def test_record_has_openai_layout(built, lm, texts):
    _, idx = built
    rec = idx.record(2, 17)
    assert isinstance(rec, NeuronRecord) and rec.neuron_id.layer_index == 2 and rec.neuron_id.neuron_index == 17
    assert len(rec.most_positive_activation_records) == SETTINGS["top_k"]
    assert len(rec.random_sample) == SETTINGS["n_random"] and len(rec.random_split("valid")) == 3
    assert len(rec.random_sample_by_quantile) == 5 and len(rec.quantile_boundaries) == 4
    tops = [r.max_activation for r in rec.most_positive_activation_records]
    assert tops == sorted(tops, reverse=True) and rec.max_activation == tops[0]
    assert all(len(r.tokens) == 64 for r in rec.most_positive_activation_records)
    assert "".join(rec.most_positive_activation_records[0].tokens) in "<|endoftext|>".join(texts)
    assert idx.top_records(2, 17, 1, 3) == rec.most_positive_activation_records[1:3]
    assert NeuronRecord.from_json(rec.to_json(extras=True)) == rec
    openai_view = NeuronRecord.from_json(rec.to_json())  # OpenAI's fields only: the positive side unchanged
    assert openai_view.most_positive_activation_records == rec.most_positive_activation_records
    assert idx.corpus_name == f"2 texts given, {idx.n_tokens:,} tokens"
    assert idx.model_name.startswith("tiny")
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.3 for tiny, got 4"):
        idx.record(4, 0)
    with pytest.raises(ValueError, match=r"neuron must be in 0\.\.383 for tiny, got 384"):
        idx.record(0, 384)


def test_seeded_samples_are_reproducible(built, lm, texts, cache):
    _, first = built
    again = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    assert again.folder != first.folder  # a fresh cache dir: really rebuilt
    assert _shas(again.run(progress=False)) == _shas(first)
    other = IndexBuilder(lm, texts, seed=1, **SETTINGS).run(progress=False)
    assert not np.array_equal(np.asarray(other._a["rand_ids"]), np.asarray(first._a["rand_ids"]))
    np.testing.assert_array_equal(np.asarray(other._a["top_max"]), np.asarray(first._a["top_max"]))


def test_interrupted_build_resumes_to_the_identical_index(built, lm, texts, cache):
    _, reference = built

    class Stop(Exception):
        pass

    def stop_after_5(done, total, message):
        if done == 5:
            raise Stop

    builder = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    with pytest.raises(Stop):
        builder.run(progress=stop_after_5)
    assert builder.checkpoint_path.exists() and not builder.folder.exists()
    seen = []
    resumed = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    idx = resumed.run(progress=lambda done, total, msg: seen.append((done, msg)))
    assert seen[0] == (4, "resumed")  # last checkpoint was after batch 4
    assert _shas(idx) == _shas(reference)
    assert not resumed.checkpoint_path.exists()


def test_corrupted_cache_is_detected_and_rebuilt(built, lm, texts, cache):
    _, reference = built
    first = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    first.run(progress=False)
    path = first.folder / "ref_acts.npy"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert IndexBuilder(lm, texts, seed=0, **SETTINGS).load_cached() is None
    again = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    idx = again.run(progress=False)
    assert again.built and _shas(idx) == _shas(reference)
    (again.folder / "q_ids.npy").write_bytes(b"truncated")
    assert IndexBuilder(lm, texts, seed=0, **SETTINGS).load_cached() is None
    cached = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    cached.run(progress=False)
    assert cached.built
    reused = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    reused.run(progress=False)
    assert not reused.built  # a valid cache is trusted


def test_older_format_is_rebuilt_never_misread(built, lm, texts, cache):
    first = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    first.run(progress=False)
    manifest = first.folder / "manifest.json"
    meta = json.loads(manifest.read_text())
    meta["format_version"] = 1
    manifest.write_text(json.dumps(meta))
    assert IndexBuilder(lm, texts, seed=0, **SETTINGS).load_cached() is None
    again = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    again.run(progress=False)
    assert again.built


def test_bad_settings(lm, texts):
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        IndexBuilder(lm, texts, top_k=0)
    with pytest.raises(ValueError, match="n_random must be an integer"):
        IndexBuilder(lm, texts, n_random="30")
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="bottom_k must be an integer >= 0"):
            IndexBuilder(lm, texts, bottom_k=bad)
    with pytest.raises(ValueError, match="only apply with distributed='ray'"):
        IndexBuilder(lm, texts).run(workers=2)
    for seed in (True, 1.5, "0"):  # bools are not seeds
        with pytest.raises(ValueError, match="seed must be an integer"):
            IndexBuilder(lm, texts, seed=seed)
    assert IndexBuilder(lm, texts, seed=3).seed == 3


def test_corpus_smaller_than_top_k(lm, cache):
    text = "\n".join(bundled_corpus().documents())[:600]  # 3 windows
    idx = IndexBuilder(lm, [text], top_k=40, bottom_k=40, n_random=30, seed=0, checkpoint_seconds=0).run(progress=False)
    rec = idx.record(0, 0)
    assert 0 < idx.n_windows < 40
    assert len(rec.most_positive_activation_records) == idx.n_windows  # no padding records
    assert len(rec.most_negative_activation_records) == idx.n_windows
    assert np.asarray(idx._a["top_ids"]).shape[2] == idx.n_windows  # nor padding slots on disk
    assert len(rec.random_sample) == idx.n_windows
    assert sum(len(q) for q in rec.random_sample_by_quantile) <= idx.n_windows
    assert idx.histogram(0, 0)[1].sum() == idx.n_tokens


def test_bottom_tail_follows_the_subject(lm, texts, cache, brute):
    """GELU neurons (GPT-2) record no bottom tail by default (GELU never goes below -0.17: it
    is not a side of the neuron); their true minimum and histogram still cover every token.
    Gated-MLP neurons are signed: both tails by default."""
    from transformers import LlamaConfig, LlamaForCausalLM

    builder = IndexBuilder(lm, texts, seed=0, **{**SETTINGS, "bottom_k": None})
    assert not lm.signed and builder.bottom_k == 0
    idx = builder.run(progress=False)
    rec = idx.record(1, 4)
    assert rec.most_negative_activation_records == [] and len(rec.most_positive_activation_records) == SETTINGS["top_k"]
    a = brute[1][:, :, 4]
    assert idx.min_activation(1, 4) == float(a.min()) and idx.max_activation(1, 4) == float(a.max())
    lows, highs = idx.extremes()
    assert lows.shape == highs.shape == (lm.n_layers, lm.n_neurons)
    assert highs[1, 4] == float(a.max())
    edges, counts = idx.histogram(1, 4)
    assert counts.sum() == idx.n_tokens and edges[0] <= a.min() and edges[-1] >= a.max()
    both = IndexBuilder(lm, texts, seed=0, **SETTINGS).run(progress=False)  # same records, plus the bottom tail
    assert both.record(1, 4).most_positive_activation_records == rec.most_positive_activation_records
    assert both.size_bytes() > idx.size_bytes()

    cfg = LlamaConfig(vocab_size=len(lm.tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    gated = load_model(LlamaForCausalLM(cfg), device="cpu", tokenizer=lm.tokenizer)
    assert gated.signed and IndexBuilder(gated, texts, top_k=5).bottom_k == 5
