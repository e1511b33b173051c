"""Neurons and SAE latents indexed by ONE forward pass per batch (``Engine.index(with_units=...)``).

Each index is the one its own build writes (same windows, calibration, selections; tested bit
for bit): this module only shares the forward passes, of calibration and of folding, between the
neuron :class:`~.build.IndexBuilder` and one builder per unit space.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from .build import IndexBuilder
from .units import UnitIndex


def build_together(lm: Any, unit_models: list[Any], corpus: Any = None, *, progress: Any = True,
                   layers: Any = None, **settings: Any) -> tuple[Any, list[UnitIndex]]:
    """The neuron index of ``lm`` and the indexes of ``unit_models`` (each a
    :class:`~neuronwidget.subject.units.UnitModel` over ``lm``), built by ONE forward pass per
    batch: each batch's neurons and latents are folded while it runs. Each index is the one
    its own build gives (same windows, calibration and selections), written to its own cache
    folder; what is already on disk is loaded, not rebuilt. The pass checkpoints every builder's
    state together (``checkpoint_every`` / ``checkpoint_seconds``, as one build does) and an
    interrupted call resumes from them. ``layers``: the neuron layers to build (default all).
    Returns (neuron index, [unit indexes])."""
    import time

    from ..subject.units import run_unit_hooks
    from .state import make_progress

    nb = IndexBuilder(lm, corpus, **settings)
    ubs = [IndexBuilder(um, corpus, **settings) for um in unit_models]
    with contextlib.ExitStack() as stack:
        for b in [nb, *ubs]:
            stack.enter_context(b.locked())
        wanted = {id(nb): nb.layers if layers is None else sorted(set(int(x) for x in layers))}
        todo = [(b, [layer for layer in wanted.get(id(b), b.layers) if b._layer_ok(layer) is None]) for b in [nb, *ubs]]
        todo = [(b, missing) for b, missing in todo if missing]
        if todo:
            plans = {}
            for b, _ in todo:
                b._ensure_common()
                plans[id(b)] = b.plan()
            n_batches = plans[id(todo[0][0])].n_batches
            assert all(p.n_batches == n_batches for p in plans.values())
            has_neurons = todo[0][0] is nb
            saes = [next(iter(b.lm.saes.values())) for b, _ in todo if b is not nb]
            first = todo[0][0]
            resumed = [b._resume(plans[id(b)], missing) for b, missing in todo]
            if all(st is not None for st, _ in resumed) and len({n for _, n in resumed}) == 1:
                states, start = [st for st, _ in resumed], resumed[0][1]  # every part checkpointed at one batch
            else:
                start = 0
                # calibration: one pass over the calibration windows for all of them (the same windows)
                cals = [b.calibrator(plans[id(b)], missing) for b, missing in todo]
                pick = cals[0][1]
                assert all(np.array_equal(c[1], pick) for c in cals)
                ncal = cals[0][2] if has_neurons else None
                ucals = [c[2] for c in cals[1:]] if has_neurons else [c[2] for c in cals]
                windows = plans[id(first)].windows
                for s0 in range(0, len(pick), first.batch_size):
                    run_unit_hooks(lm, torch.from_numpy(windows[pick[s0:s0 + first.batch_size]].astype(np.int64)),
                                   cals[0][0] if has_neurons else [], ncal, saes,
                                   lambda i, latents: ucals[i](saes[i].layer, latents))
                states = [b.new_state(plans[id(b)], c[3](), missing) for (b, missing), c in zip(todo, cals)]
            neuron_state = states[0] if has_neurons else None
            report = make_progress(progress, n_batches, f"indexing {lm.short_name} neurons + "
                                   f"{', '.join(s.units for s in saes)} in one pass")
            t0 = last = time.perf_counter()
            try:
                report(start, n_batches, "resumed" if start else "started")
                for bi in range(start, n_batches):
                    folds = [st.batch_folder(bi) for st in states]
                    chunk = folds[0][0]
                    nfold = folds[0][1] if neuron_state is not None else None
                    ufolds = [f[1] for f in folds[1:]] if neuron_state is not None else [f[1] for f in folds]
                    run_unit_hooks(lm, torch.from_numpy(chunk.astype(np.int64)),
                                   neuron_state.layer_ids if neuron_state is not None else [], nfold,
                                   saes, lambda i, latents: ufolds[i](saes[i].layer, latents))
                    for f in folds:
                        f[2]()
                    done = bi + 1
                    if (done % first.checkpoint_every == 0 and done < n_batches
                            and time.perf_counter() - last >= first.checkpoint_seconds):
                        for (b, _), st in zip(todo, states):
                            b._checkpoint(st, done)
                        last = time.perf_counter()
                    report(done, n_batches, "")
            finally:
                report(-1, n_batches, "close")
            for (b, _), st in zip(todo, states):
                b.write(plans[id(b)], st)
                b.built = True
                b.timings = {"pass_s": time.perf_counter() - t0, "together": True, "resumed_at": start}
                if b.checkpoint_path.exists():
                    b.checkpoint_path.unlink()
    nidx = nb.run(progress=False, lazy=layers is not None)
    nidx.attach(lm)
    return nidx, [b.run(progress=False).attach(um) for b, um in zip(ubs, unit_models)]


__all__ = ["build_together"]
