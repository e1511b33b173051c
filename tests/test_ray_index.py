"""Sharded index builds on a real local Ray cluster equal the single-process build."""

import os
import signal
import sys

import numpy as np
import pytest
import torch

from neuronwidget.activations import Engine
from neuronwidget.activations.build import IndexBuilder
from neuronwidget.activations.corpus import bundled_corpus
from neuronwidget.activations.distributed import build_on_ray, init_ray
from neuronwidget.subject import load_model

ray = pytest.importorskip("ray", reason='needs ray: pip install "neuronwidget[ray]"')

SETTINGS = dict(top_k=10, n_random=7, n_quantile=2, batch_size=16, calibration_windows=32, checkpoint_seconds=0)


@pytest.fixture(scope="module")
def cluster():
    # ray.init(num_cpus=2, ...), with Ray's start-up timeouts raised and a retry: on a busy
    # 2-core machine its agents start slower than Ray's 30 s defaults allow
    init_ray(num_cpus=2, object_store_memory=200 * 1024 * 1024)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def eng():
    return Engine("tiny", device="cpu")


@pytest.fixture(scope="module")
def texts():
    docs = list(bundled_corpus().documents())
    return ["\n".join(docs)[:19_100], docs[-1][:2000]]  # 105 windows: 7 shards of one batch


@pytest.fixture(scope="module")
def reference(eng, texts, tmp_path_factory):
    """The single-process index, one thread like each Ray worker (same float summation order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # IndexBuilder, not eng.index: the engine would hand the sharded test this same object
        return IndexBuilder(eng.lm, texts, cache_dir=tmp_path_factory.mktemp("single"), **SETTINGS).run(progress=False)
    finally:
        torch.set_num_threads(threads)


def _files(index):
    """{part/array: {"sha256": ...}} over every part of the index."""
    return {name: {"sha256": sha} for name, sha in index.checksums().items()}


def test_sharded_build_equals_single_process(cluster, eng, texts, reference, tmp_path):
    seen = []
    idx = eng.index(texts, cache_dir=tmp_path, distributed="ray", progress=lambda d, t, m: seen.append((d, t)),
                    **SETTINGS)
    builder = IndexBuilder(eng.lm, texts, cache_dir=tmp_path, **SETTINGS)
    assert idx.folder == builder.folder and not builder.shard_dir.exists()  # checkpoints cleaned up
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] == builder.plan().n_batches  # one bar over all workers
    assert builder.plan().n_shards >= 4
    ref, got = _files(reference), _files(idx)
    assert ref.keys() == got.keys()
    for name in ref:  # every array byte for byte: records, statistics, histograms
        assert got[name]["sha256"] == ref[name]["sha256"], name
    rec_a, rec_b = reference.record(2, 40), idx.record(2, 40, exact=False)  # the stored codes (eng.index attaches the model)
    assert rec_a == rec_b and rec_a.most_negative_activation_records == rec_b.most_negative_activation_records
    np.testing.assert_array_equal(idx.histogram(1, 7)[1], reference.histogram(1, 7)[1])


def test_interrupted_sharded_build_resumes_per_shard(cluster, eng, texts, reference, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_3(done, total, message):
        if done >= 3:
            raise Stop

    # no checkpoint while folding: what the workers folded is saved when the build stops on an error
    settings = {**SETTINGS, "checkpoint_seconds": 3600}
    builder = IndexBuilder(eng.lm, texts, cache_dir=tmp_path, **settings)
    with pytest.raises(Stop):
        builder.run(progress=stop_after_3, distributed="ray")
    assert list(builder.shard_dir.glob("worker-*.pt")) and builder.load_cached() is None
    seen = []
    again = IndexBuilder(eng.lm, texts, cache_dir=tmp_path, **settings)
    idx = again.run(progress=lambda d, t, m: seen.append((d, m)), distributed="ray")
    assert seen[0][1] == "resumed" and seen[0][0] >= 3  # shards already folded are not redone
    assert again.timings["shards_run"] < again.timings["shards"]
    assert {k: v["sha256"] for k, v in _files(idx).items()} == {k: v["sha256"] for k, v in _files(reference).items()}


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _kill_a_worker() -> int:
    """SIGKILL one index worker process of this test's Ray cluster (as the kernel's OOM killer
    would), preferring one that is folding a shard; returns its pid. Ray's workers are children
    of the raylet this process started."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read()
            if title.startswith(b"ray::ShardWorker") and _parent(_parent(int(entry))) == os.getpid():
                found.append((not title.startswith(b"ray::ShardWorker.call"), int(entry)))
        except (OSError, ValueError):  # not a process, or it ended meanwhile
            continue
    assert found, "no ShardWorker process of this cluster found"
    pid = min(found)[1]
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_worker_killed_mid_build_is_restarted_by_ray_from_its_checkpoint(cluster, eng, texts, reference, tmp_path):
    killed, seen = [], []

    def progress(done, total, message):
        seen.append((done, message))
        if done >= 2 and not killed:
            killed.append(_kill_a_worker())

    builder = IndexBuilder(eng.lm, texts, cache_dir=tmp_path, **SETTINGS)  # workers checkpoint after every shard
    idx = builder.run(progress=progress, distributed="ray")
    assert killed and builder.timings["worker_deaths"] == 1
    deaths = [i for i, (_, m) in enumerate(seen) if "worker died" in m]
    assert len(deaths) == 1
    # Ray restarted the worker, which read its checkpoint back: every shard it had finished was
    # there, so none was folded again and the count never went back; the shard it held (if any)
    # was retried on it by Ray
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert builder.timings["shards_reassigned"] == 0
    assert seen[-1][0] == builder.plan().n_batches
    assert builder.timings["model_shipped"] == "source"  # "tiny" loaded by its spec on each worker
    assert {k: v["sha256"] for k, v in _files(idx).items()} == {k: v["sha256"] for k, v in _files(reference).items()}
    assert not builder.shard_dir.exists()


def test_what_a_restarted_worker_lost_since_its_checkpoint_is_folded_again(cluster, eng, texts, reference, tmp_path):
    """No checkpoint while folding: the one worker, killed after 2 shards and restarted by Ray,
    starts empty; the driver sees that from its answers and queues those shards again."""
    killed, seen = [], []

    def progress(done, total, message):
        seen.append(done)
        if done >= 2 and not killed:
            killed.append(_kill_a_worker())

    builder = IndexBuilder(eng.lm, texts, cache_dir=tmp_path, **{**SETTINGS, "checkpoint_seconds": 3600})
    idx = builder.run(progress=progress, distributed="ray", workers=1)
    assert killed and builder.timings["worker_deaths"] == 1
    assert builder.timings["shards_reassigned"] >= 2  # what it had folded before it died
    assert seen != sorted(seen) and seen[-1] == builder.plan().n_batches  # the bar went back, then to the end
    assert {k: v["sha256"] for k, v in _files(idx).items()} == {k: v["sha256"] for k, v in _files(reference).items()}


def test_too_many_worker_deaths_stop_with_a_clear_error_and_a_rerun_resumes(cluster, eng, texts, reference, tmp_path):
    killed = []

    def progress(done, total, message):
        if done >= 2 and not killed:
            killed.append(_kill_a_worker())

    builder = IndexBuilder(eng.lm, texts, cache_dir=tmp_path, **SETTINGS)  # one worker: it is the one killed
    with pytest.raises(RuntimeError, match=r"stopped: shard \d+ failed \(its Ray worker died more often than Ray "
                                           r"restarts it \(max_worker_deaths=0\).*rerunning .* resumes"):
        build_on_ray(builder, progress, workers=1, max_worker_deaths=0)
    assert killed and builder.load_cached() is None
    seen = []
    again = IndexBuilder(eng.lm, texts, cache_dir=tmp_path, **SETTINGS)
    idx = again.run(progress=lambda d, t, m: seen.append((d, m)), distributed="ray")
    assert seen[0][1] == "resumed" and seen[0][0] >= 2  # from the dead worker's checkpoint
    assert {k: v["sha256"] for k, v in _files(idx).items()} == {k: v["sha256"] for k, v in _files(reference).items()}


def test_weights_edited_after_loading_are_shipped_not_reloaded(cluster, eng, texts, reference, tmp_path):
    lm = load_model("tiny", device="cpu", tokenizer=eng.lm.tokenizer)  # its own copy (another cache key)
    assert lm is not eng.lm and lm.source == "tiny"
    with torch.no_grad():
        lm.blocks[1].mlp.c_fc.weight.mul_(1.5)  # what loading "tiny" on a worker does not give
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        edited = IndexBuilder(lm, texts, cache_dir=tmp_path / "single", **SETTINGS).run(progress=False)
    finally:
        torch.set_num_threads(threads)
    builder = IndexBuilder(lm, texts, cache_dir=tmp_path / "ray", **SETTINGS)
    idx = builder.run(progress=False, distributed="ray")
    shipped = builder.timings["model_shipped"]
    assert shipped.startswith("object (") and "other weights" in shipped
    got, want = _files(idx), _files(edited)
    assert {k: v["sha256"] for k, v in got.items()} == {k: v["sha256"] for k, v in want.items()}
    assert got["layer-001/top_max"]["sha256"] != _files(reference)["layer-001/top_max"]["sha256"]  # the edit changed it


def test_without_ray_the_error_says_how_to_get_it(eng, texts, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is not installed
    builder = IndexBuilder(eng.lm, texts, cache_dir=tmp_path, **SETTINGS)  # nothing cached in tmp_path
    with pytest.raises(ImportError, match=r'pip install "neuronwidget\[ray\]"'):
        builder.run(distributed="ray", progress=False)
    with pytest.raises(ValueError, match="distributed must be None"):
        builder.run(distributed="dask", progress=False)
