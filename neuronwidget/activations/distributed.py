"""Sharded index builds on Ray: ``eng.index(corpus, distributed="ray")``.

The windows of a build are cut into at most ``MAX_SHARDS`` shards of whole batches (fixed
by the corpus and settings, not by the cluster). One Ray actor per GPU (or per CPU slot
when the cluster has no GPU) loads the subject model once, then folds the shards it is
handed into its own :class:`~neuronwidget.activations.state.IndexState`; shards are handed out
by the scheduler both Ray paths share (:class:`~neuronwidget.activations.ray_pool.WorkerPool`:
one bar over all of them), and the driver merges the actors' states and writes the index.
Because every selection is keyed canonically and moment sums are added in shard order, the
result is the index one process writes, bit for bit (given the same hardware and thread count
per worker).

Getting the model to the workers: a model loaded from a spec (hub id, local folder, .gguf,
"tiny", "smollm2-135m": ``LoadedModel.source``) is loaded by that spec on each worker, which
checks that it got exactly the driver's weights (``LoadedModel.identity``); a model object
given in memory, or one whose weights differ from what its spec loads (edited in place, a
folder changed since, a worker that cannot load it), is shipped through Ray's object store.

An index of a unit space (SAE latents, ``units="sae:NAME"``): each worker loads the model as
above and reads it through the SAEs, which travel as objects (they are small); the same index
one process writes.

Worker deaths, on Ray's own fault tolerance: a worker that dies (killed, out of memory, node
lost) is restarted by Ray and the shard it held is folded again there, up to
``max_worker_deaths`` times per worker. A restarted worker starts from its checkpoint (its
constructor runs again with the same arguments and reads it back), and every answer of a
worker says which shards its state holds: the shards it had folded since its last checkpoint
are lost with it, and the driver queues exactly those again (folding is idempotent per shard,
and merging refuses states that folded a batch twice). A shard whose worker died more often
than that stops the build with a RuntimeError; what was folded is kept in checkpoints and a
rerun resumes from it.

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
from .ray_pool import MAX_WORKER_DEATHS, Failed, WorkerPool, check_budget, placement
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


def _save(path: str, key: str, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"key": key, "state": state}, buf)
    atomic_write_bytes(path, buf.getvalue())


class ShardWorker:
    """A Ray actor's body: one subject model, one state, shards folded on request.

    ``model`` is the model object, or ``{"source": spec, "identity": ...}`` to load it by its
    spec here; ``ready()`` then says why that failed (None when the weights are the driver's).
    Its checkpoint is ``<shard_dir>/worker-<run>-<actor id>.pt``: the same file after a Ray
    restart, which starts from it."""

    def __init__(self, model: Any, tokenizer: Any, dtype: Any, plan: Plan, calib: dict, key: str, shard_dir: str,
                 run: str, checkpoint_seconds: float, threads: int, use_gpu: bool, saes: list | None = None,
                 layers: list[int] | None = None):
        import ray

        from ..subject import load_model

        t = time.perf_counter()
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
        if saes:  # a unit space: the model read through its SAEs (they travel as objects; they are small)
            from ..subject.units import UnitModel

            self.lm = UnitModel(self.lm, saes)
        self.plan, self.key = plan, key
        self.path = os.path.join(shard_dir, f"worker-{run}-{ray.get_runtime_context().get_actor_id()}.pt")
        self.state = _read_state(self.path, key, plan, self.lm.device)  # None unless Ray restarted this worker
        if self.state is None:
            self.state = IndexState(self.lm.n_layers, self.lm.n_neurons, plan,
                                    Calibration.from_dict(calib, self.lm.device), self.lm.device, layers,
                                    nonzero=bool(saes))
        self.checkpoint_seconds = checkpoint_seconds
        self.last_checkpoint = time.perf_counter()
        self.busy_s = 0.0
        self.start_s = time.perf_counter() - t

    def ready(self) -> tuple[str | None, float]:
        return self.load_error, getattr(self, "start_s", 0.0)

    def held(self) -> list[int]:
        return sorted({self.plan.shard_of_batch(b) for b in self.state.batches_done})

    def fold(self, shard: int) -> tuple[str, list[int]]:
        """Fold ``shard`` (nothing when the state holds it: a retry after a death that came once
        it was checkpointed); answers which shards the state holds now."""
        t = time.perf_counter()
        for b in self.plan.shard_batches(shard):
            if b not in self.state.batches_done:
                self.state.fold_batch(self.lm, b)
        self.busy_s += time.perf_counter() - t
        if time.perf_counter() - self.last_checkpoint >= self.checkpoint_seconds:
            self.checkpoint()
        return self.path, self.held()

    def checkpoint(self) -> None:
        if self.state.batches_done:
            _save(self.path, self.key, self.state.to_dict())
            self.last_checkpoint = time.perf_counter()

    def result(self) -> tuple[str, dict, float]:
        return self.path, self.state.to_dict(), self.busy_s


def _read_state(path: Any, key: str, plan: Plan, device: Any = None) -> IndexState | None:
    """The state a worker checkpoint holds (None when missing, damaged or of another build)."""
    if not os.path.exists(path):
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if ck.get("key") != key:
            return None
        return IndexState.from_dict(ck["state"], plan, device or torch.device("cpu"))
    except Exception:  # a damaged checkpoint only costs its shards
        return None


def _load_checkpoints(builder: Any, plan: Plan) -> IndexState | None:
    """Merge every worker checkpoint of an earlier, interrupted run (None when there is none)."""
    base = None
    for path in sorted(builder.shard_dir.glob("worker-*.pt")):
        st = _read_state(path, builder.key, plan)
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


class _Fold:
    """The driver's side of one build: which shards each worker's state holds, as it says."""

    def __init__(self, builder: Any, plan: Plan):
        self.builder, self.plan = builder, plan
        self.held: dict[str, set[int]] = {}  # worker checkpoint path -> shards its state held at its last answer
        self.refolded = 0
        self.collect_s = 0.0  # waiting for the workers' states at the end

    def lost(self, path: str, held: Any) -> list[int]:
        """Shards the worker at ``path`` reported folded before and no longer holds (a Ray
        restart took it back to its checkpoint): they go back into the queue."""
        before, now = self.held.get(path, set()), set(held)
        self.held[path] = now
        lost = sorted(before - now)
        self.refolded += len(lost)
        return lost

    def stop(self, what: str, failed: Failed) -> RuntimeError:
        return RuntimeError(
            f"the Ray index build stopped: {what} failed ({failed.reason}). The shards folded so far "
            f"are kept in {self.builder.shard_dir}: rerunning the same eng.index(..., distributed='ray') resumes "
            "from them")

    def run(self, pool: WorkerPool, todo: list[int]) -> list[tuple[IndexState, float]]:
        """Every shard of ``todo`` folded; every worker's state, with the seconds it spent folding."""
        items: list[int] = todo
        while True:
            for shard, out in pool.map(items, "fold"):
                if isinstance(out, Failed):
                    raise self.stop(f"shard {shard}", out)
                pool.put_back(self.lost(*out))
            items, states = [], []
            t = time.perf_counter()
            answers = pool.each("result")
            self.collect_s += time.perf_counter() - t
            for out in answers:
                if isinstance(out, Failed):
                    raise self.stop("handing back a worker's state", out)
                path, saved, busy_s = out
                state = IndexState.from_dict(saved, self.plan, torch.device("cpu"))
                pool.put_back(self.lost(path, {self.plan.shard_of_batch(b) for b in state.batches_done}))
                states.append((state, busy_s))
            if not pool.again:
                return states


def _model_for_workers(ray: Any, lm: Any, ship: bool) -> Any:
    """The spec every worker loads the model by (and the weights' identity to check), or the
    model object itself through the object store."""
    if lm.source is None or ship:
        return ray.put(lm.model)
    path = os.path.expanduser(lm.source)  # a worker need not share the driver's working directory
    return {"source": os.path.abspath(path) if os.path.exists(path) else lm.source, "identity": lm.identity}


def _merged(base: IndexState | None, states: list[IndexState]) -> IndexState:
    """The checkpoints' state with every worker's merged in (merging refuses states that folded
    the same batch twice)."""
    state = base
    for st in states:
        if not st.batches_done:
            continue
        if state is None:
            state = st
        else:
            state.merge(st)
    if state is None:  # nothing to fold: every shard came from checkpoints  # pragma: no cover
        raise ValueError("no index state to write")
    return state


def build_on_ray(builder: Any, progress: Any = True, *, workers: int | None = None,
                 max_worker_deaths: int = MAX_WORKER_DEATHS) -> None:
    """Build ``builder``'s index on Ray workers and write it to ``builder.folder``; each worker
    may die ``max_worker_deaths`` times (Ray restarts it from its checkpoint and the driver
    queues again what that lost)."""
    from ..subject.units import UnitModel

    budget = check_budget(max_worker_deaths)
    ray = connect_ray()
    lm = builder.lm
    saes = list(lm.saes.values()) if isinstance(lm, UnitModel) else None
    base_lm = lm.lm if saes else lm  # what a worker loads (by spec, or shipped); the SAEs travel beside it
    plan = builder.plan()
    builder.shard_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = _load_checkpoints(builder, plan)
    calib = base.calib.to_dict() if base is not None else _calibration(builder, plan)
    done_batches = len(base.batches_done) if base is not None else 0
    done_shards = {plan.shard_of_batch(b) for b in base.batches_done} if base is not None else set()
    todo = [s for s in range(plan.n_shards) if s not in done_shards]
    n, resources = placement(ray, workers, gpu=True, items=len(todo))
    use_gpu = "num_gpus" in resources
    t1 = time.perf_counter()
    report = make_progress(progress, plan.n_batches,
                           f"indexing {lm.short_name} ({plan.n_windows * WINDOW:,} tokens) on {n} Ray workers")
    plan_ref, tok_ref, run = ray.put(plan), ray.put(lm.tokenizer), uuid.uuid4().hex[:8]
    saes_ref = ray.put(saes) if saes else None

    def start(model: Any) -> tuple[WorkerPool, list]:
        args = (model, tok_ref, lm.dtype, plan_ref, calib, builder.key, str(builder.shard_dir), run,
                builder.checkpoint_seconds, torch.get_num_threads() if use_gpu else 1, use_gpu, saes_ref, builder.layers)
        pool = WorkerPool(ray, ShardWorker, args, workers=n, max_worker_deaths=budget, resources=resources,
                          progress=report, total=plan.n_batches, done=done_batches,
                          size=lambda shard: len(plan.shard_batches(shard)))
        ready = pool.each("ready")
        for out in ready:
            if isinstance(out, Failed):
                pool.close()
                raise RuntimeError(f"a Ray index worker could not start: {out.reason}")
        return pool, ready

    fold = _Fold(builder, plan)
    shipped = "object" if base_lm.source is None else "source"
    pool, ready = start(_model_for_workers(ray, base_lm, ship=False))
    why = next((error for error, _ in ready if error), None)
    if why:  # the spec does not give the driver's weights on a worker: ship the object
        pool.close()
        shipped = f"object ({why})"
        pool, ready = start(_model_for_workers(ray, base_lm, ship=True))
    try:
        report(done_batches, plan.n_batches, "resumed" if done_batches else "started")
        try:
            states = fold.run(pool, todo)
        except BaseException:
            try:
                pool.each("checkpoint", timeout=60.0)  # a rerun resumes from everything folded
            except Exception:  # noqa: BLE001 - the error that stopped the build is the one to see
                pass
            raise
    finally:
        report(-1, plan.n_batches, "close")
        pool.close()
    t3 = time.perf_counter()
    state = _merged(base, [st for st, _ in states])
    t4 = time.perf_counter()
    builder.write(plan, state)
    builder.timings = {"calibration_s": t1 - t0, "pass_s": t3 - t1 - fold.collect_s,
                       "collect_s": fold.collect_s, "merge_s": t4 - t3, "write_s": time.perf_counter() - t4, "windows": plan.n_windows, "workers": n,
                       "worker_busy_s": [busy for _, busy in states], "shards": plan.n_shards,
                       "shards_run": len(todo), "worker_start_s": [s for _, s in ready],
                       "worker_deaths": pool.restarts, "shards_reassigned": fold.refolded, "model_shipped": shipped}
    builder.discard_checkpoints()


__all__ = ["MAX_WORKER_DEATHS", "RAY_HELP", "ShardWorker", "build_on_ray", "connect_ray", "init_ray", "ray_module"]
