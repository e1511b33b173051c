"""Sharded index builds on Ray: ``eng.index(corpus, distributed="ray")``.

The windows of a build are cut into at most ``MAX_SHARDS`` shards of whole batches (fixed
by the corpus and settings, not by the cluster). One Ray actor per GPU (or per CPU slot
when the cluster has no GPU) loads the subject model once, then folds the shards it is
handed into its own :class:`~neuronwidget.activations.state.IndexState`; the driver hands
shards out as actors finish them, shows one progress bar over all of them, merges the
actors' states and writes the index. Because every selection is keyed canonically and moment
sums are added in shard order, the result is the index one process writes, bit for bit
(given the same hardware and thread count per worker).

Resumable per shard: after each shard (at most once per ``checkpoint_seconds``) an actor
writes its state to ``<cache>/index/<key>.shards/``; a rerun merges those files and only
folds the shards none of them holds. A shard that was in flight when a worker died is
folded again.

Ray is optional: ``pip install "neuronwidget[ray]"``. The build uses the running Ray (an
earlier ``ray.init()``, or ``RAY_ADDRESS``) or starts a local one.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from typing import Any

import torch

from .._io import atomic_write_bytes
from .corpus import WINDOW
from .state import Calibration, IndexState, Plan, make_progress

RAY_HELP = 'distributed="ray" needs Ray, which is optional: pip install "neuronwidget[ray]"'


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_HELP) from None
    return ray


def init_ray(attempts: int = 3, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` that survives a slow start: on a busy machine Ray's agents can take
    longer than Ray's own start-up timeouts (30 s), so those are raised and a failed start is
    retried."""
    ray = _ray()
    for var, value in (("RAY_raylet_start_wait_time_s", "180"), ("RAY_agent_register_timeout_ms", "180000")):
        os.environ.setdefault(var, value)
    kwargs = {"include_dashboard": False, "log_to_driver": False, **kwargs}
    for attempt in range(attempts):
        try:
            ray.init(**kwargs)
            return
        except Exception:  # Ray raises a bare Exception when its node times out during start-up
            ray.shutdown()
            if attempt == attempts - 1 or kwargs.get("address"):
                raise


class ShardWorker:
    """A Ray actor's body: one subject model, one state, shards folded on request."""

    def __init__(self, model: Any, tokenizer: Any, dtype: Any, plan: Plan, calib: dict, key: str,
                 checkpoint_path: str, checkpoint_seconds: float, threads: int, use_gpu: bool):
        from ..subject import load_model

        torch.set_num_threads(max(1, threads))
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.lm = load_model(model, device=device, dtype=dtype, tokenizer=tokenizer)
        self.plan, self.key = plan, key
        self.state = IndexState(self.lm.n_layers, self.lm.n_neurons, plan,
                                Calibration.from_dict(calib, self.lm.device), self.lm.device)
        self.checkpoint_path, self.checkpoint_seconds = checkpoint_path, checkpoint_seconds
        self.last_checkpoint = time.perf_counter()
        self.busy_s = 0.0

    def fold(self, shard: int) -> tuple[int, int]:
        t = time.perf_counter()
        batches = self.plan.shard_batches(shard)
        for b in batches:
            self.state.fold_batch(self.lm, b)
        self.busy_s += time.perf_counter() - t
        if time.perf_counter() - self.last_checkpoint >= self.checkpoint_seconds:
            self.checkpoint()
        return shard, len(batches)

    def checkpoint(self) -> None:
        if not self.state.batches_done:
            return
        buf = io.BytesIO()
        torch.save({"key": self.key, "state": self.state.to_dict()}, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())
        self.last_checkpoint = time.perf_counter()

    def result(self) -> tuple[dict, float]:
        return self.state.to_dict(), self.busy_s


def _load_checkpoints(builder: Any, plan: Plan) -> IndexState | None:
    """Merge every worker checkpoint of an earlier, interrupted run (None when there is none)."""
    base = None
    for path in sorted(builder.shard_dir.glob("worker-*.pt")):
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
            if ck.get("key") != builder.key:
                continue
            st = IndexState.from_dict(ck["state"], plan, torch.device("cpu"))
        except Exception:  # a damaged checkpoint only costs its shards
            continue
        if base is None:
            base = st
        elif not (base.batches_done & st.batches_done):
            base.merge(st)
    return base


def _calibration(builder: Any, plan: Plan) -> dict:
    """The calibration every worker shares, computed once and kept with the shard checkpoints."""
    path = builder.shard_dir / "calibration.pt"
    if path.exists():
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
            if ck.get("key") == builder.key:
                return ck["calib"]
        except Exception:
            pass
    calib = builder.calibrate(plan).to_dict()
    buf = io.BytesIO()
    torch.save({"key": builder.key, "calib": calib}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return calib


def _n_workers(ray: Any, workers: int | None) -> tuple[int, bool]:
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if workers is not None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1 or None (one per GPU, else per CPU), got {workers!r}")
        return workers, gpus > 0
    return (gpus, True) if gpus else (max(1, int(res.get("CPU", 1))), False)


def build_on_ray(builder: Any, progress: Any = True, *, workers: int | None = None) -> None:
    """Build ``builder``'s index on Ray workers and write it to ``builder.folder``."""
    ray = _ray()
    if not ray.is_initialized():
        init_ray(address=os.environ.get("RAY_ADDRESS") or None)
    lm = builder.lm
    plan = builder.plan()
    builder.shard_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = _load_checkpoints(builder, plan)
    calib = base.calib.to_dict() if base is not None else _calibration(builder, plan)
    done_batches = len(base.batches_done) if base is not None else 0
    done_shards = {plan.shard_of_batch(b) for b in base.batches_done} if base is not None else set()
    todo = [s for s in range(plan.n_shards) if s not in done_shards]
    n, use_gpu = _n_workers(ray, workers)
    n = max(1, min(n, len(todo)))
    t1 = time.perf_counter()
    report = make_progress(progress, plan.n_batches,
                           f"indexing {lm.short_name} ({plan.n_windows * WINDOW:,} tokens) on {n} Ray workers")
    actor_cls = ray.remote(num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0)(ShardWorker)
    run = uuid.uuid4().hex[:8]
    model_ref, plan_ref = ray.put(lm.model), ray.put(plan)
    actors = [actor_cls.remote(model_ref, lm.tokenizer, lm.dtype, plan_ref, calib, builder.key,
                               str(builder.shard_dir / f"worker-{run}-{j}.pt"), builder.checkpoint_seconds,
                               1 if not use_gpu else torch.get_num_threads(), use_gpu) for j in range(n)]
    busy: list[float] = []
    try:
        report(done_batches, plan.n_batches, "resumed" if done_batches else "started")
        queue = list(todo)
        pending: dict[Any, Any] = {}
        for actor in actors:  # two shards in flight per actor: no idle gap between shards
            for _ in range(2):
                if queue:
                    pending[actor.fold.remote(queue.pop(0))] = actor
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ready[0])
            _, n_batches = ray.get(ready[0])
            done_batches += n_batches
            report(done_batches, plan.n_batches, "")
            if queue:
                pending[actor.fold.remote(queue.pop(0))] = actor
        t2 = time.perf_counter()
        results = ray.get([a.result.remote() for a in actors])
    finally:
        report(-1, plan.n_batches, "close")
        for actor in actors:
            ray.kill(actor)
    t3 = time.perf_counter()
    state = base
    for saved, busy_s in results:
        busy.append(busy_s)
        st = IndexState.from_dict(saved, plan, torch.device("cpu"))
        if not st.batches_done:
            continue
        if state is None:
            state = st
        else:
            state.merge(st)
    if state is None:  # nothing to fold: every shard came from checkpoints  # pragma: no cover
        raise ValueError("no index state to write")
    t4 = time.perf_counter()
    builder.write(plan, state)
    builder.timings = {"calibration_s": t1 - t0, "pass_s": t2 - t1, "collect_s": t3 - t2, "merge_s": t4 - t3,
                       "write_s": time.perf_counter() - t4, "windows": plan.n_windows, "workers": n,
                       "worker_busy_s": busy, "shards": plan.n_shards, "shards_run": len(todo)}
    builder.discard_checkpoints()


__all__ = ["RAY_HELP", "ShardWorker", "build_on_ray", "init_ray"]
