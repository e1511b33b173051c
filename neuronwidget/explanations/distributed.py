"""Batch explanations on Ray: ``explain_neurons(..., distributed="ray")``.

The neurons are handed to Ray actors by the scheduler the index build uses too
(:class:`~neuronwidget.activations.ray_pool.WorkerPool`): one neuron per actor at a time, its
record read from the index by the driver as it is handed out (300k neurons' records never sit
in the object store at once). Each actor holds its own copy of the explainer and simulator: a
``LocalBackend`` loads its model in the actor (on the actor's GPU when the cluster has GPUs), an
``OpenAIBackend`` talks to its server from there. Results come back to the driver as they finish
and go through the same ``Recorder`` as a local run: appended to the output file at once, so a
rerun resumes.

A worker that dies (killed, out of memory, its machine gone) loses nothing, by Ray's own fault
tolerance: Ray restarts it and tries the neuron it held again there, up to ``max_worker_deaths``
times per worker; what it finished is already on disk. A neuron whose worker died more often
than that is reported in its row (not saved, so a rerun tries it again) and the others go on,
on the workers left.

Secrets: an ``OpenAIBackend`` travels to the actors without its API key (see its
``__getstate__``); the actors read ``OPENAI_API_KEY`` from their own environment (a local
cluster started by this process inherits it).

Ray is optional: ``pip install "neuronwidget[ray]"``. The run uses the running Ray (an
earlier ``ray.init()``, or ``RAY_ADDRESS``) or starts a local one.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from ..activations.distributed import connect_ray  # one place that knows how Ray starts
from ..activations.ray_pool import MAX_WORKER_DEATHS, Failed, WorkerPool, WorkersLost, placement


class ExplainWorker:
    """A Ray actor's body: its own backends; explains and scores the records it is handed."""

    def __init__(self, work: Any, explainer: Any, simulator: Any, n: int):
        self.work, self.explainer, self.simulator, self.n = work, explainer, simulator, n

    def run(self, key: tuple, record: Any) -> tuple[Any, str | None]:
        try:
            return self.work(record, key, self.explainer, self.simulator, self.n), None
        except Exception as e:  # noqa: BLE001 - reported per neuron, as in a local run
            return None, f"{type(e).__name__}: {e}"


def _wants_gpu(backend: Any) -> bool:
    # an optional hint a backend may give (LocalBackend does): it runs a model of its own
    return bool(getattr(backend, "wants_gpu", False))


def run_on_ray(index: Any, recorder: Any, work: Any, explainer: Any, simulator: Any, *, n: int = 1,
               workers: int | None = None, cancel: threading.Event | None = None,
               max_worker_deaths: int = MAX_WORKER_DEATHS) -> None:
    """Explain ``recorder.todo`` on Ray actors, recording each result as it arrives.
    ``work(record, key, explainer, simulator, n)`` is what an actor runs per neuron
    (``batch.explain_one``)."""
    ray = connect_ray()
    if not recorder.todo:
        return
    count, resources = placement(ray, workers, gpu=_wants_gpu(explainer) or _wants_gpu(simulator),
                                 items=len(recorder.todo))
    # the backends go to the object store once; every actor (and every restart) gets its own unpickled copy
    pool = WorkerPool(ray, ExplainWorker, (work, ray.put(explainer), ray.put(simulator), n), workers=count,
                      max_worker_deaths=max_worker_deaths, resources=resources, progress=recorder.progress,
                      total=len(recorder.keys), done=len(recorder.keys) - len(recorder.todo))
    keys = itertools.takewhile(lambda _: cancel is None or not cancel.is_set(), recorder.todo)

    def record_of(key: tuple) -> tuple:
        return key, index.record(key[0], key[1]).for_side(key[2])

    try:
        for key, out in pool.map(keys, "run", record_of):
            if isinstance(out, Failed):
                recorder.add(key, error=out.reason + ("; not saved: run again to retry it" if out.worker_died else ""))
            elif out[0] is not None or not (out[1] or "").startswith("Cancelled"):
                recorder.add(key, *out)
    except WorkersLost as e:
        left = len([k for k in recorder.keys if k not in recorder.rows])
        raise RuntimeError(f"{e}; {left} neurons are left (rerun to resume: finished neurons are saved)") from None
    finally:
        pool.close()
