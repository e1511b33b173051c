"""Sharded index builds on Ray: ``eng.index(corpus, distributed="ray")``.

The windows of a build are cut into at most ``MAX_SHARDS`` shards of whole batches (fixed
by the corpus and settings, not by the cluster). One Ray actor per GPU (or per CPU slot
when the cluster has no GPU) loads the subject model once, then folds the shards it is
handed into its own :class:`~neuronwidget.activations.state.IndexState`; the driver hands
shards out as actors finish them, shows one progress bar over all of them, merges the
actors' states and writes the index. Because every selection is keyed canonically and moment
sums are added in shard order, the result is the index one process writes, bit for bit
(given the same hardware and thread count per worker).

Getting the model to the workers: a model loaded from a spec (hub id, local folder, .gguf,
"tiny", "smollm2-135m": ``LoadedModel.source``) is loaded by that spec on each worker, which
checks that it got exactly the driver's weights (``LoadedModel.identity``); a model object
given in memory, or one whose weights differ from what its spec loads (edited in place, a
folder changed since, a worker that cannot load it), is shipped through Ray's object store.

Worker deaths: when a worker's process dies mid-build (killed, out of memory, node lost),
the build goes on. The shards whose state the dead worker had handed back or written to its
checkpoint are kept; only its other shards (folded since, or in flight) go back into the
queue, for the surviving workers and a replacement worker. After more than
``max_worker_deaths`` deaths the build stops with a RuntimeError; what was folded is kept in
checkpoints and a rerun resumes from it.

Resumable per shard: after each shard (at most once per ``checkpoint_seconds``) an actor
writes its state to ``<cache>/index/<key>.shards/``; a rerun merges those files and only
folds the shards none of them holds.

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


def ray_module() -> Any:
    """The ``ray`` module, or an ImportError saying how to install the optional extra."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_HELP) from None
    return ray


def connect_ray() -> Any:
    """The ``ray`` module, connected: to the running Ray (an earlier ``ray.init()``, or
    ``RAY_ADDRESS``), else to a local one started here."""
    ray = ray_module()
    if not ray.is_initialized():
        init_ray(address=os.environ.get("RAY_ADDRESS") or None)
    return ray


def init_ray(attempts: int = 3, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` that survives a slow start: on a busy machine Ray's agents can take
    longer than Ray's own start-up timeouts (30 s), so those are raised and a failed start is
    retried."""
    ray = ray_module()
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


MAX_WORKER_DEATHS = 3  # worker deaths one build survives (each costs only the dead worker's unsaved shards)


def _save(path: str, key: str, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"key": key, "state": state}, buf)
    atomic_write_bytes(path, buf.getvalue())


class ShardWorker:
    """A Ray actor's body: one subject model, one state, shards folded on request.

    ``model`` is the model object, or ``{"source": spec, "identity": ...}`` to load it by its
    spec here; ``ready()`` then says why that failed (None when the weights are the driver's)."""

    def __init__(self, model: Any, tokenizer: Any, dtype: Any, plan: Plan, calib: dict, key: str,
                 checkpoint_path: str, checkpoint_seconds: float, threads: int, use_gpu: bool):
        from ..subject import load_model

        torch.set_num_threads(max(1, threads))
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.load_error: str | None = None
        if isinstance(model, dict):
            try:
                self.lm = load_model(model["source"], device=device, dtype=dtype, tokenizer=tokenizer)
                if self.lm.identity != model["identity"]:
                    self.load_error = f"{model['source']!r} loads other weights here than the driver's model has"
            except Exception as e:  # not installed / not downloadable on this node: ship the object instead
                self.load_error = f"cannot load {model['source']!r} here ({type(e).__name__}: {e})"
            if self.load_error:
                return
        else:
            self.lm = load_model(model, device=device, dtype=dtype, tokenizer=tokenizer)
        self.plan, self.key = plan, key
        self.state = IndexState(self.lm.n_layers, self.lm.n_neurons, plan,
                                Calibration.from_dict(calib, self.lm.device), self.lm.device)
        self.checkpoint_path, self.checkpoint_seconds = checkpoint_path, checkpoint_seconds
        self.last_checkpoint = time.perf_counter()
        self.busy_s = 0.0

    def ready(self) -> str | None:
        return self.load_error

    def fold(self, shard: int) -> tuple[int, int]:
        t = time.perf_counter()
        batches = self.plan.shard_batches(shard)
        if self.state.batches_done.intersection(batches):
            raise ValueError(f"shard {shard} was already folded by this worker")
        for b in batches:
            self.state.fold_batch(self.lm, b)
        self.busy_s += time.perf_counter() - t
        if time.perf_counter() - self.last_checkpoint >= self.checkpoint_seconds:
            self.checkpoint()
        return shard, len(batches)

    def checkpoint(self) -> None:
        if self.state.batches_done:
            _save(self.checkpoint_path, self.key, self.state.to_dict())
            self.last_checkpoint = time.perf_counter()

    def result(self) -> tuple[dict, float]:
        return self.state.to_dict(), self.busy_s


def _read_state(path: Any, builder: Any, plan: Plan) -> IndexState | None:
    """The state a worker checkpoint holds (None when missing, damaged or of another build)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if ck.get("key") != builder.key:
            return None
        return IndexState.from_dict(ck["state"], plan, torch.device("cpu"))
    except Exception:  # a damaged checkpoint only costs its shards
        return None


def _load_checkpoints(builder: Any, plan: Plan) -> IndexState | None:
    """Merge every worker checkpoint of an earlier, interrupted run (None when there is none)."""
    base = None
    for path in sorted(builder.shard_dir.glob("worker-*.pt")):
        st = _read_state(path, builder, plan)
        if st is None or not st.batches_done:
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


class _Slot:
    """The driver's view of one worker."""

    def __init__(self, actor: Any, path: str, via: str):
        self.actor, self.path, self.via = actor, path, via
        self.ready = False
        self.started = time.perf_counter()
        self.folded: set[int] = set()  # shards it finished
        self.in_flight: list[int] = []
        self.result: IndexState | None = None  # the state it last handed back
        self.busy_s = 0.0


class _Pool:
    """Hands shards to workers, replaces dead ones, and collects their states."""

    def __init__(self, ray: Any, builder: Any, plan: Plan, calib: dict, todo: list[int], use_gpu: bool,
                 max_deaths: int, report: Any, done_batches: int):
        self.ray, self.builder, self.plan, self.calib, self.use_gpu = ray, builder, plan, calib, use_gpu
        self.max_deaths, self.report, self.done_batches = max_deaths, report, done_batches
        self.queue = sorted(todo)
        self.slots: list[_Slot] = []
        self.pending: dict[Any, tuple[_Slot, int | None]] = {}  # ref -> (worker, shard; None: its ready())
        self.dead: list[tuple[IndexState, str, bool]] = []  # (state, its path, on disk yet) of dead workers
        self.deaths, self.reassigned, self.started = 0, 0, 0
        self.collect_s = 0.0
        self.start_s: list[float] = []  # start-up of each worker (model loaded or received), until ready
        self.fallback: str | None = None  # why the model is shipped as an object although it has a source
        self.run = uuid.uuid4().hex[:8]
        self.actor_cls = ray.remote(num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0,
                                    max_restarts=0)(ShardWorker)
        self.plan_ref, self.tok_ref = ray.put(plan), ray.put(builder.lm.tokenizer)
        self.model_ref: Any = None

    # -- workers ---------------------------------------------------------------------
    def start_worker(self) -> None:
        lm = self.builder.lm
        if lm.source is not None and self.fallback is None:
            path = os.path.expanduser(lm.source)  # a worker need not share the driver's working directory
            source = os.path.abspath(path) if os.path.exists(path) else lm.source
            model, via = {"source": source, "identity": lm.identity}, "source"
        else:
            if self.model_ref is None:
                self.model_ref = self.ray.put(lm.model)
            model, via = self.model_ref, "object"
        path = str(self.builder.shard_dir / f"worker-{self.run}-{self.started}.pt")
        self.started += 1
        actor = self.actor_cls.remote(model, self.tok_ref, lm.dtype, self.plan_ref, self.calib, self.builder.key,
                                      path, self.builder.checkpoint_seconds,
                                      torch.get_num_threads() if self.use_gpu else 1, self.use_gpu)
        slot = _Slot(actor, path, via)
        self.slots.append(slot)
        self.pending[actor.ready.remote()] = (slot, None)

    def _drop(self, slot: _Slot) -> None:
        self.slots.remove(slot)
        for ref in [r for r, (s, _) in self.pending.items() if s is slot]:
            del self.pending[ref]
        try:
            self.ray.kill(slot.actor, no_restart=True)
        except Exception:  # already gone
            pass

    def died(self, slot: _Slot, error: Exception) -> None:
        """Keep what the dead worker had saved or handed back; queue its other shards again."""
        self.deaths += 1
        self._drop(slot)
        saved, on_disk = _read_state(slot.path, self.builder, self.plan), True
        if slot.result is not None and (saved is None or len(slot.result.batches_done) >= len(saved.batches_done)):
            saved, on_disk = slot.result, False  # both are snapshots of one growing state: keep the bigger
        covered = {self.plan.shard_of_batch(b) for b in saved.batches_done} if saved is not None else set()
        if covered:
            self.dead.append((saved, slot.path, on_disk))
        lost = (slot.folded | set(slot.in_flight)) - covered
        self.done_batches -= sum(len(self.plan.shard_batches(s)) for s in slot.folded - covered)
        self.queue = sorted(self.queue + sorted(lost))
        self.reassigned += len(lost)
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        self.report(self.done_batches, self.plan.n_batches,
                    f"a Ray worker died ({reason}); {len(lost)} of its shards go to other workers")
        if self.deaths > self.max_deaths:
            raise RuntimeError(
                f"the Ray index build stopped after {self.deaths} worker deaths (it survives at most "
                f"max_worker_deaths={self.max_deaths}); last: {reason}. The shards folded so far are kept in "
                f"{self.builder.shard_dir}: rerunning the same eng.index(..., distributed='ray') resumes from them"
            ) from error
        self.start_worker()

    # -- shards ----------------------------------------------------------------------
    def dispatch(self) -> None:
        for slot in self.slots:  # two shards in flight per worker: no idle gap between shards
            while slot.ready and len(slot.in_flight) < 2 and self.queue:
                shard = self.queue.pop(0)
                slot.in_flight.append(shard)
                self.pending[slot.actor.fold.remote(shard)] = (slot, shard)

    def step(self) -> None:
        ray = self.ray
        ready, _ = ray.wait(list(self.pending), num_returns=1)
        slot, shard = self.pending.pop(ready[0])
        try:
            out = ray.get(ready[0])
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
            self.died(slot, e)
        else:
            if shard is None and out is not None:  # could not load the model by its spec: ship the object
                self.fallback = out
                self._drop(slot)
                self.start_worker()
            elif shard is None:
                slot.ready = True
                self.start_s.append(time.perf_counter() - slot.started)
            else:
                slot.in_flight.remove(shard)
                slot.folded.add(shard)
                self.done_batches += out[1]
                self.report(self.done_batches, self.plan.n_batches, "")
        self.dispatch()

    def fold_all(self) -> None:
        """Every queued shard folded and every surviving worker's state handed back."""
        ray = self.ray
        while True:
            self.dispatch()
            while self.queue or any(shard is not None for _, shard in self.pending.values()):
                self.step()
            for slot in [s for s in self.slots if not s.ready]:  # replacements nothing is left for
                self._drop(slot)
            for slot in list(self.slots):
                have = set() if slot.result is None else {self.plan.shard_of_batch(b) for b in slot.result.batches_done}
                if slot.folded == have:
                    continue
                t = time.perf_counter()
                try:
                    saved, slot.busy_s = ray.get(slot.actor.result.remote())
                    slot.result = IndexState.from_dict(saved, self.plan, torch.device("cpu"))
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                    self.died(slot, e)
                self.collect_s += time.perf_counter() - t
            if not self.queue:
                return

    def keep_progress(self, timeout: float = 60.0) -> None:
        """On the way out after an error: every surviving worker writes its checkpoint, so a rerun
        resumes from everything folded (bounded wait; what does not make it is folded again)."""
        refs = [s.actor.checkpoint.remote() for s in self.slots if s.ready]
        try:
            self.ray.wait(refs, num_returns=len(refs), timeout=timeout)
        except Exception:
            pass
        for st, path, on_disk in self.dead:  # handed back by a worker that died since: newer than its file
            if not on_disk:
                _save(path, self.builder.key, st.to_dict())

    def states(self) -> list[IndexState]:
        return [st for st, _, _ in self.dead] + [s.result for s in self.slots if s.result is not None]

    def close(self) -> None:
        """Every worker ends (their states, once handed back, live on here)."""
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor, no_restart=True)
            except Exception:  # already gone
                pass
        self.pending.clear()


def build_on_ray(builder: Any, progress: Any = True, *, workers: int | None = None,
                 max_worker_deaths: int = MAX_WORKER_DEATHS) -> None:
    """Build ``builder``'s index on Ray workers and write it to ``builder.folder``; survives up to
    ``max_worker_deaths`` worker deaths (their unsaved shards are folded again elsewhere)."""
    if not isinstance(max_worker_deaths, int) or isinstance(max_worker_deaths, bool) or max_worker_deaths < 0:
        raise ValueError(f"max_worker_deaths must be an integer >= 0, got {max_worker_deaths!r}")
    ray = connect_ray()
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
    pool = _Pool(ray, builder, plan, calib, todo, use_gpu, max_worker_deaths, report, done_batches)
    try:
        report(done_batches, plan.n_batches, "resumed" if done_batches else "started")
        for _ in range(n):
            pool.start_worker()
        try:
            pool.fold_all()
        except Exception:
            pool.keep_progress()
            raise
    finally:
        report(-1, plan.n_batches, "close")
        pool.close()
    t2 = time.perf_counter()
    state = base
    for st in pool.states():
        if not st.batches_done:
            continue
        if state is None:
            state = st
        else:
            state.merge(st)  # refuses states that folded the same batch twice
    if state is None:  # nothing to fold: every shard came from checkpoints  # pragma: no cover
        raise ValueError("no index state to write")
    t3 = time.perf_counter()
    builder.write(plan, state)
    builder.timings = {"calibration_s": t1 - t0, "pass_s": t2 - t1 - pool.collect_s, "collect_s": pool.collect_s,
                       "merge_s": t3 - t2,
                       "write_s": time.perf_counter() - t3, "windows": plan.n_windows, "workers": n,
                       "worker_busy_s": [s.busy_s for s in pool.slots if s.result is not None], "shards": plan.n_shards,
                       "shards_run": len(todo), "worker_start_s": pool.start_s, "worker_deaths": pool.deaths,
                       "shards_reassigned": pool.reassigned,
                       "model_shipped": "object" if lm.source is None else
                       ("source" if pool.fallback is None else f"object ({pool.fallback})")}
    builder.discard_checkpoints()


__all__ = ["MAX_WORKER_DEATHS", "RAY_HELP", "ShardWorker", "build_on_ray", "connect_ray", "init_ray", "ray_module"]
