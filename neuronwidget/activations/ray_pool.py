"""One scheduler for work on Ray actors: the index build's shards (``activations.distributed``)
and the batch explainer's neurons (``explanations.distributed``) both go through
:class:`WorkerPool`.

What Ray does: a worker process that dies (killed, out of memory, its machine lost) is
restarted by Ray (the actor's ``max_restarts``) and the item it held is tried again on the
restarted worker (``max_task_retries``). Both are set from one budget, ``max_worker_deaths``:
each worker may die that many times. Ray runs the restarted worker's constructor again with
the same arguments, so a worker that keeps state (an index shard worker) restores it there
(from its checkpoint).

What this module does, and nothing more: it hands items out, one per worker at a time,
building each item's arguments only when it is handed out (300k neurons' records never sit in
the object store at once); it yields each result as it finishes; it drives one progress bar;
it tells a restart from a clean run (every call answers with the worker's *life*, new after
each restart), so a caller whose workers keep state can find what a restart lost; and it
reports an item whose retries ran out as :class:`Failed` instead of stopping, leaving that
worker out when Ray has given up on it. When every worker is gone while items remain it raises
:class:`WorkersLost`.

Why not ``ray.util.ActorPool``: its ``get_next`` raises a failed task's error without saying
which item it was (so no row could report it, and no shard could be re-queued); ``map`` queues
a submission for every item at once; when every actor has died it drops the queued items
without an error (``has_next()`` turns False); and it has no per-worker calls (collecting each
worker's state, asking every worker to checkpoint).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MAX_WORKER_DEATHS = 3  # each worker may die this often (Ray restarts it and retries what it held)

_END = object()


def check_budget(max_worker_deaths: Any) -> int:
    if isinstance(max_worker_deaths, bool) or not isinstance(max_worker_deaths, int) or max_worker_deaths < 0:
        raise ValueError(f"max_worker_deaths must be an integer >= 0, got {max_worker_deaths!r}")
    return max_worker_deaths


def placement(ray: Any, workers: Any, *, gpu: bool, items: int) -> tuple[int, dict]:
    """How many workers (``workers``, default one per GPU when ``gpu`` and the cluster has GPUs,
    else one per CPU; never more than ``items``) and what each asks of the cluster."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpu and gpus > 0
    if workers is None:
        workers = gpus if use_gpu else max(1, int(resources.get("CPU", 1)))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 or None (one per GPU, else per CPU), got {workers!r}")
    return max(1, min(workers, items)), ({"num_cpus": 1, "num_gpus": 1} if use_gpu else {"num_cpus": 1})


class Failed:
    """An item that did not finish: ``reason`` says why; ``worker_died``: its worker died more
    often than the budget allows (else it raised, or its arguments could not be built)."""

    def __init__(self, item: Any, reason: str, worker_died: bool = False):
        self.item, self.reason, self.worker_died = item, reason, worker_died

    def __repr__(self) -> str:
        return f"Failed({self.item!r}, {self.reason!r})"


class WorkersLost(RuntimeError):
    """No worker is left (each died more often than the budget allows, or could not start),
    and items are."""


class Worker:
    """What runs in each actor: the body object, built there; every call answers with the life
    it ran in (a new one after each Ray restart)."""

    def __init__(self, body: type, *args: Any):
        self.life = uuid.uuid4().hex
        self.body = body(*args)

    def call(self, method: str | None, *args: Any) -> tuple[str, Any]:
        return self.life, (None if method is None else getattr(self.body, method)(*args))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


class WorkerPool:
    """``workers`` actors, each running ``body(*args)``; see the module's docstring.

    ``progress(done, total, message)`` (optional) is called after every item (``done`` grows by
    ``size(item)``, default 1, from ``done``) and when a worker was restarted."""

    def __init__(self, ray: Any, body: type, args: tuple, *, workers: int, max_worker_deaths: int,
                 resources: dict, progress: Callable[[int, int, str], None] | None = None, total: int = 0,
                 done: int = 0, size: Callable[[Any], int] | None = None):
        self.ray, self.budget = ray, check_budget(max_worker_deaths)
        # named after its body: Ray's process titles and errors say ray::ShardWorker.call
        host = ray.remote(type(body.__name__, (Worker,), {"__doc__": Worker.__doc__}))
        host = host.options(max_restarts=self.budget, max_task_retries=self.budget, **resources)
        self.args = args  # held while the pool lives: a restart needs the objects they refer to
        self.actors = [host.remote(body, *args) for _ in range(workers)]
        self.alive = set(range(workers))
        self.lives: dict[int, str] = {}  # worker -> the life its last answer came from
        self.restarts = 0  # restarts seen (a worker that died and answered again from a new life)
        self.lost: str | None = None  # why the last worker Ray gave up on died
        self.progress, self.total, self.done = progress, total, done
        self.size = size or (lambda item: 1)
        self.again: deque = deque()  # items put back, handed out before the rest

    # -- per worker ------------------------------------------------------------------------
    def each(self, method: str | None, *args: Any, timeout: float | None = None) -> list[Any]:
        """``method(*args)`` on every live worker: its result, or Failed (item: the worker's
        number) when the worker died for good or raised; workers that did not answer within
        ``timeout`` are left out."""
        ray = self.ray
        refs = {self.actors[i].call.remote(method, *args): i for i in sorted(self.alive)}
        if not refs:
            return []
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        return [self._outcome(refs[ref], refs[ref], ref) for ref in ready]

    # -- items ---------------------------------------------------------------------------
    def put_back(self, items: Iterable[Any]) -> None:
        """Items to do again (a restarted worker lost them): handed out next; progress goes back."""
        for item in items:
            self.again.append(item)
            self.done -= self.size(item)

    def map(self, items: Iterable[Any], method: str,
            args_of: Callable[[Any], tuple] = lambda item: (item,)) -> Iterator[tuple[Any, Any]]:
        """Yield ``(item, method(*args_of(item)) or Failed)`` as each finishes, handing every
        worker one item at a time. ``args_of`` runs when the item is handed out; an exception
        there fails that item alone."""
        if not self.lives:
            self.each(None)  # every worker's first life, so that a restart during its first item shows
        items = iter(items)
        running: dict[Any, tuple[int, Any]] = {}  # task -> (worker, item)
        idle = sorted(self.alive, reverse=True)
        while True:
            while idle:
                item = self._next(items)
                if item is _END:
                    break
                try:
                    args = args_of(item)
                except Exception as e:  # noqa: BLE001 - that item fails, the others go on
                    yield item, self._count(item, Failed(item, f"{type(e).__name__}: {e}"))
                    continue
                worker = idle.pop()
                running[self.actors[worker].call.remote(method, *args)] = (worker, item)
            if not running:
                if not self.alive and (self.again or self._peek(items)):
                    raise WorkersLost(f"no Ray worker is left: each died more often than Ray restarts it "
                                      f"(max_worker_deaths={self.budget}) or could not start; last: {self.lost}")
                return
            [ref], _ = self.ray.wait(list(running), num_returns=1)
            worker, item = running.pop(ref)
            outcome = self._outcome(worker, item, ref)
            if worker in self.alive:
                idle.append(worker)
            yield item, self._count(item, outcome)

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already gone  # noqa: BLE001
                pass

    # -- inside ----------------------------------------------------------------------------
    def _next(self, items: Iterator[Any]) -> Any:
        return self.again.popleft() if self.again else next(items, _END)

    def _peek(self, items: Iterator[Any]) -> bool:
        item = next(items, _END)
        if item is _END:
            return False
        self.again.appendleft(item)
        return True

    def _outcome(self, worker: int, item: Any, ref: Any) -> Any:
        ray = self.ray
        try:
            life, result = ray.get(ref)
        except ray.exceptions.RayActorError as e:  # its worker died more often than Ray restarts it
            if isinstance(e, ray.exceptions.ActorDiedError):  # Ray gave up on it (else: still restarting)
                self.alive.discard(worker)
                self.lost = _first_line(e)
            return Failed(item, f"its Ray worker died more often than Ray restarts it (max_worker_deaths="
                                f"{self.budget}): {_first_line(e)}", worker_died=True)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None) or e
            return Failed(item, f"{type(cause).__name__}: {_first_line(cause)}")
        if self.lives.get(worker, life) != life:
            self.restarts += 1
            self._report(f"a Ray worker died; Ray restarted it and retried what it held "
                         f"({self.restarts} restart(s) so far)")
        self.lives[worker] = life
        return result

    def _count(self, item: Any, outcome: Any) -> Any:
        self.done += self.size(item)
        self._report("")
        return outcome

    def _report(self, message: str) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total, message)


__all__ = ["MAX_WORKER_DEATHS", "Failed", "Worker", "WorkerPool", "WorkersLost", "check_budget", "placement"]
