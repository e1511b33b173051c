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
    return index.checksums()


def _codes_close(got, want, tol=0.04):
    """The stored 6-bit codes: within 4% of each window's largest |value| (float16 state: + 1e-3);
    the 4-bit codes of windows only the quantile samples hold: ``tol=0.2`` (15 steps shared by both signs: a side may get only 4)."""
    want = np.asarray(want, dtype=np.float32)
    scale = np.abs(want).max(-1, keepdims=True)
    err = np.abs(np.asarray(got) - want)
    assert np.all(err <= tol * scale + 1e-3), float(((err - 1e-3) / scale).max())


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
    windows = np.array(built[1]._common["windows"])
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
            got_ids = np.asarray(idx.layer_arrays(layer)[f"{name}_ids"])
            np.testing.assert_array_equal(got_ids, want_ids)
            np.testing.assert_array_equal(np.asarray(idx.layer_arrays(layer)[stat]), np.take_along_axis(vals.T, want_ids, 1))
        for n in range(0, lm.n_neurons, 5):
            arrays = idx.layer_arrays(layer)
            for ids in (np.asarray(arrays["top_ids"][n]), np.asarray(arrays["bottom_ids"][n])):
                _codes_close(idx.window_activations(layer, n, ids), a[ids, :, n])
        assert idx.max_activation(layer, 3) == float(a[:, :, 3].max())
        assert idx.min_activation(layer, 3) == float(a[:, :, 3].min())


def test_signed_records_equal_brute_force_over_all_windows(built, brute, lm):
    """record(): most_positive = the windows with the highest maximum, most_negative = the
    windows with the lowest minimum (lowest first), every token's activation as computed."""
    _, idx = built
    windows = np.asarray(idx._common["windows"])
    table = lm.token_strings()
    assert not idx.exact_values and "codes" in idx.values_note  # no model attached: the stored codes
    for layer, neuron in ((0, 0), (1, 200), (lm.n_layers - 1, lm.n_neurons - 1)):
        a = brute[layer][:, :, neuron]  # [W, 64]
        rec = idx.record(layer, neuron)
        for records, order in ((rec.most_positive_activation_records, np.lexsort((np.arange(len(a)), -a.max(1)))),
                               (rec.most_negative_activation_records, np.lexsort((np.arange(len(a)), a.min(1))))):
            assert len(records) == SETTINGS["top_k"]
            for r, w in zip(records, order):
                assert r.tokens == [table[t] for t in windows[w]]
                _codes_close([r.activations], [a[w]])
        mins = idx.bottom_min(layer, neuron)  # exact float32, whatever the codes
        assert list(mins) == sorted(mins) and mins[0] == float(a.min())
        assert idx.min_activation(layer, neuron) == float(a.min())
        assert idx.top_max(layer, neuron)[0] == idx.max_activation(layer, neuron) == float(a.max())


def test_random_and_quantile_samples_and_moments_match_brute_force(built, brute, lm):
    _, idx = built
    rand_ids = np.asarray(idx._common["rand_ids"])
    assert len(set(rand_ids.tolist())) == SETTINGS["n_random"]
    for layer in (0, lm.n_layers - 1):
        a = brute[layer]
        for n in range(0, lm.n_neurons, 11):
            _codes_close(idx.window_activations(layer, n, rand_ids), a[rand_ids, :, n])
        maxima = a.max(1)
        bounds = np.asarray(idx.layer_arrays(layer)["q_bounds"])  # [N, 4]
        assert np.all(np.diff(bounds, axis=1) >= 0)
        bins = (maxima[:, :, None] >= bounds[None]).sum(2)  # [W, N]
        q_ids = np.asarray(idx.layer_arrays(layer)["q_ids"])  # [N, 5, q]
        for n in range(0, lm.n_neurons, 7):
            for b in range(len(QUANTILES) + 1):
                chosen = q_ids[n, b][q_ids[n, b] >= 0]
                assert len(set(chosen.tolist())) == min(SETTINGS["n_quantile"], int((bins[:, n] == b).sum()))
                assert np.all(bins[chosen, n] == b)
                _codes_close(idx.window_activations(layer, n, chosen), a[chosen, :, n], tol=0.2)
        flat = a.reshape(-1, a.shape[2]).astype(np.float64)
        mean, var = flat.mean(0), flat.var(0)
        skew = ((flat - mean) ** 3).mean(0) / var ** 1.5
        kurt = ((flat - mean) ** 4).mean(0) / var ** 2 - 3
        got = np.asarray(idx.layer_arrays(layer)["moments"])
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
    """Each neuron stores each window it references once: never more rows than windows; 6 bits a
    token, 4 for windows only the quantile samples reference; a range byte only where no exact
    extreme gives it."""
    from neuronwidget.activations.store import BOTTOM, QUANTILE, TOP, ref_layout

    _, idx = built
    arrays = idx.layer_arrays(2)
    neuron, window, flags, _ = ref_layout(arrays["top_ids"], arrays["bottom_ids"], idx._common["rand_ids"],
                                          arrays["q_ids"])
    per_neuron = np.bincount(neuron, minlength=idx.n_neurons)
    assert per_neuron.max() <= idx.n_windows
    refs = SETTINGS["top_k"] * 2 + SETTINGS["n_random"] + 5 * SETTINGS["n_quantile"]
    assert per_neuron.mean() < refs  # overlaps (a top window that is also random, ...) are stored once
    sample = flags == QUANTILE
    assert 0 < sample.sum() < len(flags)
    assert np.asarray(arrays["ref_codes"]).shape == ((~sample).sum(), 48)  # 6 bits a token
    assert np.asarray(arrays["sample_codes"]).shape == (sample.sum(), 32)  # 4 bits a token
    assert np.asarray(arrays["ref_hi"]).shape == (((flags & TOP) == 0).sum(),)
    assert np.asarray(arrays["ref_lo"]).shape == (((flags & BOTTOM) == 0).sum(),)
    for n in (0, 7, idx.n_neurons - 1):
        want = set(np.asarray(arrays["top_ids"][n]).tolist()) | set(np.asarray(arrays["bottom_ids"][n]).tolist())
        want |= set(np.asarray(idx._common["rand_ids"]).tolist()) | set(np.asarray(arrays["q_ids"][n]).ravel().tolist())
        assert idx.stored_windows(2, n).tolist() == sorted(want - {-1}) == window[neuron == n].tolist()


def test_codes_round_trip_within_their_step():
    from neuronwidget.activations import codes

    rng = np.random.default_rng(0)
    acts = rng.standard_normal((200, 64)) * rng.uniform(0.01, 3, (200, 1))
    acts[:50] = np.abs(acts[:50])  # windows without a negative part
    acts[50:60] = 0  # all-zero windows
    pos, neg = np.full(200, 12.0), np.full(200, -9.0)
    ranges = codes.range_codes(acts.max(1), acts.min(1), pos, neg)
    for bits, tol in ((6, 0.04), (4, 0.2)):
        packed = codes.encode(acts, ranges, pos, neg, bits)
        assert packed.shape == (200, 8 * bits) and packed.dtype == np.uint8
        got = codes.decode(packed, ranges, pos, neg, bits)
        _codes_close(got, acts, tol)
        assert np.all(got[acts == 0] == 0)  # zero is exact
        assert np.array_equal(codes.unpack(codes.pack(np.arange(64)[None] % (1 << bits), bits), bits),
                              np.arange(64)[None] % (1 << bits))


def test_codes_decode_inside_their_step_with_exact_extremes_kept():
    """Each value decodes to a point of its own step (its mean, not an end: re-encoding the decoded
    values gives the same codes), the sign is kept and zero is exact; a top window's exact maximum
    and a bottom window's exact minimum decode exactly and their part gets more of the steps;
    a range code cuts a window's extreme by at most MAX_CUT."""
    from neuronwidget.activations import codes

    rng = np.random.default_rng(1)
    n = 300
    acts = rng.standard_t(3, (n, 64)) * rng.uniform(0.01, 2, (n, 1))
    acts[:40] = np.abs(acts[:40])  # no negative part
    acts[40:60] = -np.abs(acts[40:60])  # no positive part
    acts[60:70, ::3] = 0
    pos, neg = np.full(n, np.abs(acts).max() * 1.1), np.full(n, -np.abs(acts).max() * 1.2)
    hi, lo = np.full(n, np.nan), np.full(n, np.nan)
    hi[100:200], lo[150:250] = acts[100:200].max(1), acts[150:250].min(1)  # top, bottom, both (150-199)
    ranges = codes.range_codes(np.where(np.isnan(hi), acts.max(1), hi), np.where(np.isnan(lo), acts.min(1), lo), pos, neg)
    top, bottom = codes._bounds(ranges, pos, neg, hi, lo)
    frac = np.maximum(acts.max(1), 0)[:, None] / pos[:, None]
    assert np.all(top >= (1 - codes.MAX_CUT) * frac * pos[:, None] - 1e-12)  # cut by at most 1%
    assert np.all(bottom <= (1 - codes.MAX_CUT) * np.minimum(acts.min(1), 0)[:, None] + 1e-12)
    for bits in (6, 4):
        packed = codes.encode(acts, ranges, pos, neg, bits, hi, lo)
        got = codes.decode(packed, ranges, pos, neg, bits, hi, lo)
        again = codes.encode(got, ranges, pos, neg, bits, hi, lo)
        assert np.array_equal(again, packed)  # each decoded value lies in its own step
        assert np.all(got[acts == 0] == 0) and np.all(np.sign(got) * np.sign(acts) >= 0)
        rows = np.arange(100, 200)
        assert np.array_equal(got[rows, acts[rows].argmax(1)], acts[rows].max(1).astype(np.float32))
        rows = np.arange(150, 250)
        assert np.array_equal(got[rows, acts[rows].argmin(1)], acts[rows].min(1).astype(np.float32))
    # the part a window's exact extreme bounds gets more steps than the same range without it
    same = np.full((3, 2), 120, np.uint8)
    p = codes._split(same, np.array([1.0, np.nan, 1.0]), np.array([np.nan, -1.0, -1.0]), 63)[:, 0]
    assert p[0] > 32 and p[1] < 31 and p[2] in (31, 32)


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


def test_cpu_kernel_rounds_to_float16_as_torch_does():
    import numba
    from neuronwidget.activations import fused

    @numba.njit
    def halves(bits, out):
        for i in range(bits.size):
            out[i] = fused._half(bits[i])

    # every 997th float32 bit pattern, and the edges: half's subnormal, normal and overflow
    # boundaries, ties at each, signed zeros, infinities
    edges = [0, 0x32FFFFFF, 0x33000000, 0x33000001, 0x33C00000, 0x387FC000, 0x387FFFFF, 0x38800000, 0x38801000,
             0x38803000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000, 0x7F800000]
    bits = np.concatenate([np.arange(0, 1 << 32, 997, dtype=np.int64).astype(np.uint32),
                           np.array(edges, dtype=np.uint32), np.array(edges, dtype=np.uint32) | 0x80000000]).view(np.int32)
    got = np.empty(bits.size, np.int16)
    halves(bits, got)
    want = torch.from_numpy(bits.copy()).view(torch.float32).half().view(torch.int16).numpy()
    numbers = ~np.isnan(bits.view(np.float32))  # a NaN stays a NaN; its payload bits may differ
    assert np.array_equal(got[numbers], want[numbers])
    assert np.isnan(got[~numbers].view(np.float16)).all()


@pytest.mark.parametrize("width", [40, 100])
def test_cpu_kernel_folds_any_number_of_neurons(width):
    """The kernel works in blocks of 64 neurons: a narrower layer is padded with zero lanes, and a
    last partial block reaches back into the block before. Either way each neuron keeps exactly
    what it keeps in a fold of a wider layer (whose blocks are whole)."""
    from neuronwidget.activations import fused

    rng = np.random.default_rng(0)
    b, t, n, k, q, nb, bins = 16, 8, 192, 6, 2, 5, 48
    batches = [(rng.standard_normal((b, t, n)) * rng.uniform(0.1, 3, n)).astype(np.float32) for _ in range(3)]
    off, inv = np.full(n, 25.0, np.float32), np.full(n, 8.0, np.float32)
    q_bounds = np.sort(rng.standard_normal((n, nb - 1)), 1).astype(np.float32)
    mix = rng.integers(0, 1 << 40, n)
    empty = np.iinfo(np.int64).max

    def fold(m: int) -> dict[str, np.ndarray]:
        st = {"sums": np.zeros((m, 4)), "hist": np.zeros((m, bins + 2), np.int64),
              "lowest": np.full(m, np.inf, np.float32), "highest": np.full(m, -np.inf, np.float32),
              "nonzero": np.zeros(m, np.int64), "top_key": np.full((m, k), empty), "top_a": np.zeros((m, k, t), np.int16),
              "bot_key": np.full((m, k), empty), "bot_a": np.zeros((m, k, t), np.int16),
              "q_key": np.full((m * nb, q), empty), "q_a": np.zeros((m * nb, q, t), np.int16),
              "rand_a": np.zeros((m, 6, t), np.int16)}
        for i, a in enumerate(batches):
            fused.fold_layer(np.ascontiguousarray(a[..., :m]), i * b, off[:m], inv[:m], bins, st["sums"], st["hist"],
                             st["lowest"], st["highest"], st["nonzero"], True, st["top_key"], st["top_a"],
                             st["bot_key"], st["bot_a"], st["q_key"], st["q_a"], np.ascontiguousarray(q_bounds[:m]),
                             12345, mix[:m], np.array([3, 9]), np.array([2 * i, 2 * i + 1]), st["rand_a"], threads=2)
        return st

    wide, narrow = fold(n), fold(width)
    assert (wide["top_key"] != empty).all() and (wide["q_key"] != empty).any()
    for name, got in narrow.items():
        want = wide[name][:width * nb] if name.startswith("q_") else wide[name][:width]
        assert np.array_equal(got, want), name


def test_cpu_kernel_keeps_what_the_torch_ops_keep(lm, texts, tmp_path):
    """The one-pass CPU kernel (activations/fused.py) and the torch ops (the GPU's path) fold
    the same batches into the same state: the same kept keys and float16 values per row, the
    same histogram, extremes and non-zero counts; moment sums to float rounding."""
    builder = IndexBuilder(lm, texts, seed=0, **SETTINGS, cache_dir=tmp_path)
    plan = builder.plan()
    calib = builder.calibrate(plan)
    states = []
    for one_pass in (True, False):
        st = builder.new_state(plan, calib)
        st.fused, st.count_nonzero = one_pass, True
        for batch in range(plan.n_batches):
            st.fold_batch(lm, batch)
        states.append(st)
    kernel, ops = states
    assert plan.n_batches > 2 and len(plan.rand_ids) > 0
    for mine, theirs in zip(kernel.layers, ops.layers):
        for key, vals in (("top_key", "top_a"), ("bot_key", "bot_a"), ("q_key", "q_a")):
            k1, k2 = getattr(mine, key), getattr(theirs, key)
            o1, o2 = k1.argsort(1), k2.argsort(1)
            assert torch.equal(k1.gather(1, o1), k2.gather(1, o2)), key
            v1 = getattr(mine, vals).gather(1, o1[..., None].expand_as(getattr(mine, vals)))
            v2 = getattr(theirs, vals).gather(1, o2[..., None].expand_as(getattr(theirs, vals)))
            filled = k1.gather(1, o1) != torch.iinfo(torch.int64).max  # empty slots hold whatever
            assert filled.any() and torch.equal(v1[filled].view(torch.int16), v2[filled].view(torch.int16)), vals
        assert torch.equal(mine.rand_a.view(torch.int16), theirs.rand_a.view(torch.int16))
        for field in ("hist", "lowest", "highest", "nonzero"):
            assert torch.equal(getattr(mine, field), getattr(theirs, field)), field
        assert mine.nonzero.sum() > 0 and bool((mine.hist.sum(1) == plan.windows.size).all())
    for shard, m in kernel.shard_moments.items():
        torch.testing.assert_close(m, ops.shard_moments[shard], rtol=1e-5, atol=1e-6)


def test_records_carry_token_bytes(built, lm):
    _, idx = built
    rec = idx.record(1, 3)
    table = lm.token_bytes()
    for r in rec.most_positive_activation_records[:3] + rec.random_sample[:2]:
        assert r.token_bytes is not None and len(r.token_bytes) == len(r.tokens)
        assert b"".join(r.token_bytes).decode("utf-8", errors="replace") == "".join(r.tokens)
    windows = np.asarray(idx._common["windows"])
    w = int(idx.layer_arrays(1)["top_ids"][3, 0])
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
    assert not np.array_equal(np.asarray(other._common["rand_ids"]), np.asarray(first._common["rand_ids"]))
    np.testing.assert_array_equal(np.asarray(other.layer_arrays(1)["top_max"]), np.asarray(first.layer_arrays(1)["top_max"]))


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
    assert builder.checkpoint_path.exists() and builder.load_cached() is None
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
    path = first.folder / "layer-001" / "sample_codes.npy"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert IndexBuilder(lm, texts, seed=0, **SETTINGS).load_cached() is None
    again = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    idx = again.run(progress=False)
    assert again.built and _shas(idx) == _shas(reference)
    (again.folder / "layer-002" / "q_ids.npy").write_bytes(b"truncated")
    assert IndexBuilder(lm, texts, seed=0, **SETTINGS).load_cached() is None
    cached = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    cached.run(progress=False)
    assert cached.built
    reused = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    reused.run(progress=False)
    assert not reused.built  # a valid cache is trusted


def test_older_format_is_detected_said_and_rebuilt(built, lm, texts, cache):
    from neuronwidget.activations.build import IndexFormatWarning

    first = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    reference = first.run(progress=False)
    # a format-3 index as that format laid it out: one folder keyed with its format, one manifest
    old = first.root / first.old_keys[3]
    old.mkdir()
    (old / "ref_acts.npy").write_bytes(b"\0" * 1000)
    (old / "manifest.json").write_text(json.dumps({"format_version": 3, "files": {}}))
    again = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    with pytest.warns(IndexFormatWarning, match=r"older format 3 .*rebuilt in format 6"):
        idx = again.run(progress=False)
    assert not old.exists()  # replaced: the disk it took is back
    assert _shas(idx) == _shas(reference)
    # a manifest of another format in this folder: never read as this one, rebuilt with a note
    manifest = first.folder / "common" / "manifest.json"
    meta = json.loads(manifest.read_text())
    meta["format_version"] = 3
    manifest.write_text(json.dumps(meta))
    assert IndexBuilder(lm, texts, seed=0, **SETTINGS).load_cached() is None
    again = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    with pytest.warns(IndexFormatWarning, match="older format 3"):
        idx = again.run(progress=False)
    assert again.built and _shas(idx) == _shas(reference)
    assert not [p for p in first.root.iterdir() if p.name.startswith(".")]  # nothing left aside
    # a format-4 index as that format laid it out (same key, common/ + layer folders, its own
    # arrays), and a format-5 one (the same files as 6, codes read differently): found in place,
    # reported with its size, rebuilt in format 6, then removed
    for fmt, stray in ((4, "ref_windows.npy"), (5, None)):
        for manifest in first.folder.glob("*/manifest.json"):
            meta = json.loads(manifest.read_text())
            meta["format_version"] = fmt
            manifest.write_text(json.dumps(meta))
        if stray:
            (first.folder / "layer-000" / stray).write_bytes(b"\0" * 2_000_000)
        again = IndexBuilder(lm, texts, seed=0, **SETTINGS)
        assert again.load_cached() is None
        with pytest.warns(IndexFormatWarning, match=rf"older format {fmt} \([0-9]+ MB\); it is rebuilt in format 6"):
            idx = again.run(progress=False)
        assert again.built and _shas(idx) == _shas(reference)
        assert not (idx.folder / "layer-000" / "ref_windows.npy").exists()
        assert not [p for p in first.root.iterdir() if p.name.startswith(".")]
    # opened lazily (as a first view does): the old index stays aside until the new one is complete
    for manifest in first.folder.glob("*/manifest.json"):
        meta = json.loads(manifest.read_text())
        meta["format_version"] = 4
        manifest.write_text(json.dumps(meta))
    lazy = IndexBuilder(lm, texts, seed=0, **SETTINGS)
    with pytest.warns(IndexFormatWarning, match=r"older format 4"):
        idx = lazy.run(progress=False, lazy=True)
    assert idx.ready_layers() == [] and [p for p in first.root.iterdir() if p.name.startswith(".")]
    idx.record(1, 0)  # builds layers 0-1
    assert idx.ready_layers() == [0, 1] and [p for p in first.root.iterdir() if p.name.startswith(".")]
    idx.complete()
    assert _shas(idx) == _shas(reference)
    assert not [p for p in first.root.iterdir() if p.name.startswith(".")]


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
    assert np.asarray(idx.layer_arrays(0)["top_ids"]).shape[1] == idx.n_windows  # nor padding slots on disk
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
    tops = both.record(1, 4).most_positive_activation_records
    # same windows; values within the codes' step (a window also in the bottom tail gets its exact minimum too)
    assert [r.tokens for r in tops] == [r.tokens for r in rec.most_positive_activation_records]
    for got, want in zip(tops, rec.most_positive_activation_records):
        _codes_close(got.activations, want.activations)
    assert both.size_bytes() > idx.size_bytes()

    cfg = LlamaConfig(vocab_size=len(lm.tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    gated = load_model(LlamaForCausalLM(cfg), device="cpu", tokenizer=lm.tokenizer)
    assert gated.signed and IndexBuilder(gated, texts, top_k=5).bottom_k == 5


# -- format 4: compact records, exact where shown, layers on demand, builds that take turns -------
EXACT = dict(SETTINGS, bottom_k=12)


@pytest.fixture(scope="module")
def engine_index(texts, tmp_path_factory):
    """The same index opened through an Engine: a model attached, shown values exact."""
    from neuronwidget.activations import Engine

    eng = Engine("tiny", device="cpu")
    return eng, eng.index(texts, progress=False, cache_dir=tmp_path_factory.mktemp("eng"), **EXACT)


def test_compact_and_exact_records_rank_the_same_windows_with_the_same_extremes(engine_index):
    eng, idx = engine_index
    assert idx.exact_values and "exact" in idx.values_note
    for layer, neuron in ((0, 7), (2, 100), (3, 383)):
        compact, exact = idx.record(layer, neuron, exact=False), idx.record(layer, neuron, exact=True)
        for side in ("most_positive_activation_records", "most_negative_activation_records"):
            assert [r.tokens for r in getattr(compact, side)] == [r.tokens for r in getattr(exact, side)]
        top_max, bottom_min = idx.top_max(layer, neuron), idx.bottom_min(layer, neuron)
        assert top_max[0] == idx.max_activation(layer, neuron) and bottom_min[0] == idx.min_activation(layer, neuron)
        assert list(top_max) == sorted(top_max, reverse=True) and list(bottom_min) == sorted(bottom_min)
        # the exact values recomputed now are the values the pass ranked by
        np.testing.assert_allclose([r.max_activation for r in exact.most_positive_activation_records], top_max,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([r.min_activation for r in exact.most_negative_activation_records], bottom_min,
                                   rtol=1e-5, atol=1e-6)
        # the compact records keep every top window's exact maximum and bottom window's exact minimum
        assert [r.max_activation for r in compact.most_positive_activation_records] == [float(x) for x in top_max]
        assert [r.min_activation for r in compact.most_negative_activation_records] == [float(x) for x in bottom_min]
        assert compact != exact  # the codes are not exact: the tests above compare different values


def _sig3(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b) <= 5e-4 * np.maximum(np.abs(a), np.abs(b)) + 1e-6


def test_shown_values_equal_engine_activations_to_3_significant_digits(engine_index):
    from neuronwidget.activations.store import SHOWN_RANDOM, SHOWN_TOP

    eng, idx = engine_index
    windows = np.asarray(idx._common["windows"])
    checked = 0
    for layer, neuron in ((1, 3), (3, 250)):
        rec = idx.record(layer, neuron)  # what NeuronView reads
        arrays = idx.layer_arrays(layer)
        shown = [(rec.most_positive_activation_records[:SHOWN_TOP], arrays["top_ids"][neuron][:SHOWN_TOP]),
                 (rec.most_negative_activation_records[:SHOWN_TOP], arrays["bottom_ids"][neuron][:SHOWN_TOP]),
                 (rec.random_sample[:SHOWN_RANDOM], idx._common["rand_ids"][:SHOWN_RANDOM]),
                 (idx.top_records(layer, neuron, SHOWN_TOP, SHOWN_TOP + 5),  # "more" in the view
                  arrays["top_ids"][neuron][SHOWN_TOP:SHOWN_TOP + 5])]
        for records, ids in shown:
            assert len(records) == len(ids)
            for r, w in zip(records, ids):
                text = "".join(r.tokens)
                if eng.lm.encode(text) != windows[w].tolist():  # the text must give back the window's tokens
                    continue
                want = eng.activations(text, layer, neuron)
                assert want.tokens == r.tokens and np.all(_sig3(r.activations, want.activations))
                checked += 1
    assert checked >= 40


def test_scores_from_codes_equal_scores_from_exact_values(engine_index):
    from neuronwidget.explanations.backends import resolve_explainer, resolve_simulator
    from neuronwidget.explanations.explainer import explain
    from neuronwidget.explanations.scoring import score

    eng, idx = engine_index
    explainer, simulator = resolve_explainer(), resolve_simulator()
    diffs = []
    for layer, neuron in [(layer, n) for layer in range(4) for n in (5, 77, 301)]:
        exact, compact = idx.record(layer, neuron, exact=True), idx.record(layer, neuron, exact=False)
        for side in ("positive", "negative"):
            e = explain(exact.for_side(side), explainer, simulator=simulator)[0]
            a, b = score(exact.for_side(side), e, simulator).score, score(compact.for_side(side), e, simulator).score
            assert (a is None) == (b is None)
            if a is not None:
                diffs.append(abs(a - b))
    assert len(diffs) >= 12 and max(diffs) <= 0.005


def test_a_view_of_layer_l_is_built_before_the_layers_above_it(texts, cache):
    from neuronwidget.activations.build import IndexBuilder as Builder
    from neuronwidget.api import get_engine
    from neuronwidget.widgets import NeuronView

    eng = get_engine("tiny", device="cpu")
    seen = []
    idx = eng.index(texts, lazy=True, progress=lambda d, t, m: seen.append((d, m)), **EXACT)
    assert idx.ready_layers() == []  # nothing built yet
    view = NeuronView(1, 5, model="tiny", index=idx)
    assert view.record.neuron_id.layer_index == 1
    assert idx.ready_layers() == [0, 1]  # the pass stopped after layer 1
    assert seen[0] == (0, "started: layers 0-1 of 4")  # the progress says which
    idx.record(3, 2)  # a neuron of layer 3: the missing layers are built on demand
    assert idx.ready_layers() == [0, 1, 2, 3]
    assert "started: layers 2-3 of 4" in [m for _, m in seen]
    whole = Builder(eng.lm, texts, cache_dir=cache / "whole", **EXACT).run(progress=False)
    assert idx.checksums() == whole.checksums()  # layer by layer == one pass over every layer


_BUILD_SCRIPT = """
import json, sys
from neuronwidget.activations.build import IndexBuilder
from neuronwidget.subject import load_model
args = json.load(open(sys.argv[1]))
builder = IndexBuilder(load_model("tiny", device="cpu"), args["texts"], cache_dir=args["cache"], **args["settings"])
idx = builder.run(progress=False)
print(json.dumps({"built": builder.built, "checksums": idx.checksums()}))
"""


def test_two_processes_building_the_same_index_leave_one_valid_index(lm, texts, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    args = tmp_path / "args.json"
    args.write_text(json.dumps({"texts": texts, "cache": str(tmp_path / "cache"), "settings": EXACT}))
    root = str(Path(__file__).resolve().parent.parent)
    env = {**__import__("os").environ, "PYTHONPATH": root}
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, str(args)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["built"] for o in outs) == [False, True]  # one built, the other took its turn and read it
    assert outs[0]["checksums"] == outs[1]["checksums"]
    builder = IndexBuilder(lm, texts, cache_dir=tmp_path / "cache", **EXACT)
    idx = builder.load_cached()  # every file checked against its manifest
    assert idx is not None and idx.checksums() == outs[0]["checksums"]
    assert not [p.name for p in builder.root.iterdir() if p.name.startswith(".")]  # no temporary parts left
