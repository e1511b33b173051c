"""Batch explanations on Ray: ``explain_neurons(..., distributed="ray")``.

The driver (the process that called ``explain_neurons``) reads each neuron's record from the
index and hands (key, record) tasks to Ray actors, one task per actor at a time. Each actor
holds its own copy of the explainer and simulator: a ``LocalBackend`` loads its model in the
actor (on the actor's GPU when the cluster has GPUs), an ``OpenAIBackend`` talks to its server
from there. Results come back to the driver as they finish and go through the same
``Recorder`` as a local run: appended to the output file at once, so a rerun resumes.

A worker that dies (killed, out of memory, its machine gone) loses nothing, by Ray's own fault
tolerance: the actor is restarted by Ray (``max_restarts``) and the neuron it held is retried on
it (``max_task_retries``); what it finished is already on disk. A neuron whose worker keeps
dying past those budgets is reported in its row (not saved, so a rerun tries it again) and the
others go on. The driver only hands out records and collects results: one task per actor at a
time, because the records are read by the driver as they are handed out (300k neurons' records
never sit in the object store at once), which is why ``ray.util.ActorPool`` (it queues
submissions and hides which task failed) is not used.

Secrets: an ``OpenAIBackend`` travels to the actors without its API key (see its
``__getstate__``); the actors read ``OPENAI_API_KEY`` from their own environment (a local
cluster started by this process inherits it).

Ray is optional: ``pip install "neuronwidget[ray]"``. The run uses the running Ray (an
earlier ``ray.init()``, or ``RAY_ADDRESS``) or starts a local one.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from ..activations.distributed import connect_ray  # one place that knows how Ray starts


class ExplainWorker:
    """A Ray actor's body: its own backends; explains and scores the records it is handed."""

    def __init__(self, work: Any, explainer: Any, simulator: Any, n: int):
        self.work, self.explainer, self.simulator, self.n = work, explainer, simulator, n

    def run(self, key: tuple, record: Any) -> tuple[tuple, Any, str | None]:
        try:
            return key, self.work(record, key, self.explainer, self.simulator, self.n), None
        except Exception as e:  # noqa: BLE001 - reported per neuron, as in a local run
            return key, None, f"{type(e).__name__}: {e}"


def _wants_gpu(backend: Any) -> bool:
    # an optional hint a backend may give (LocalBackend does): it runs a model of its own
    return bool(getattr(backend, "wants_gpu", False))


RESTARTS = 3  # per worker: Ray restarts a dead worker this many times
TASK_RETRIES = 2  # a neuron whose worker died is tried again this many times, on the restarted worker


def run_on_ray(index: Any, recorder: Any, work: Any, explainer: Any, simulator: Any, *, n: int = 1,
               workers: int | None = None, cancel: threading.Event | None = None,
               max_restarts: int | None = None) -> None:
    """Explain ``recorder.todo`` on Ray actors, recording each result as it arrives.
    ``work(record, key, explainer, simulator, n)`` is what an actor runs per neuron
    (``batch.explain_one``). ``max_restarts``: Ray restarts of each worker (default RESTARTS)."""
    ray = connect_ray()
    todo = deque(recorder.todo)
    if not todo:
        return
    workers, options = _placement(ray, explainer, simulator, workers, len(todo))
    restarts = RESTARTS if max_restarts is None else max_restarts
    actor_class = ray.remote(ExplainWorker).options(max_restarts=restarts, max_task_retries=min(restarts, TASK_RETRIES),
                                                    **options)
    # the backends go to the object store once; every actor (and every restart) gets its own unpickled copy
    explainer_ref, simulator_ref = ray.put(explainer), ray.put(simulator)
    idle = [actor_class.remote(work, explainer_ref, simulator_ref, n) for _ in range(workers)]
    running: dict[Any, tuple[Any, tuple]] = {}  # task ref -> (actor, key)
    try:
        while todo or running:
            if cancel is None or not cancel.is_set():
                _hand_out(index, recorder, todo, idle, running)
            if not running:
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                _collect(ray, ref, recorder, todo, idle, running, restarts)
    finally:
        for actor in idle + [a for a, _ in running.values()]:
            ray.kill(actor, no_restart=True)


def _placement(ray: Any, explainer: Any, simulator: Any, workers: int | None, n_todo: int) -> tuple[int, dict]:
    """How many actors, and what each asks of the cluster: a GPU each when a backend runs a model of
    its own and the cluster has GPUs, else one CPU each."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpus > 0 and (_wants_gpu(explainer) or _wants_gpu(simulator))
    if workers is None:
        workers = gpus if use_gpu else max(1, int(resources.get("CPU", 1)))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return min(workers, n_todo), ({"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1})


def _hand_out(index: Any, recorder: Any, todo: deque, idle: list, running: dict) -> None:
    """One neuron's record to each idle actor (read here, as it is handed out)."""
    while idle and todo:
        key = todo.popleft()
        try:
            record = index.record(key[0], key[1]).for_side(key[2])
        except Exception as e:  # noqa: BLE001 - a record the index cannot give
            recorder.add(key, error=f"{type(e).__name__}: {e}")
            continue
        actor = idle.pop()
        running[actor.run.remote(key, record)] = (actor, key)


def _collect(ray: Any, ref: Any, recorder: Any, todo: deque, idle: list, running: dict, restarts: int) -> None:
    """A finished task's result into the recorder; its actor back to the idle ones (unless Ray has
    given up on it: its restarts and the task's retries are spent)."""
    actor, key = running.pop(ref)
    try:
        _, result, error = ray.get(ref)
    except ray.exceptions.RayActorError as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        recorder.add(key, error=f"its Ray worker died and was restarted {restarts} times ({reason}); not saved: "
                                "run again to retry it")
        if todo and not idle and not running:
            raise RuntimeError(f"every Ray worker died more often than Ray restarts it ({restarts} times); "
                               f"{len(todo)} neurons are left (rerun to resume: finished neurons are saved)") from None
        return
    idle.append(actor)
    if result is None and error and error.startswith("Cancelled"):
        return
    recorder.add(key, result, error)
