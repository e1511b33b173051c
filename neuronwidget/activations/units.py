"""The index of a unit space other than the neurons (SAE latents, transcoder features).

``Engine.index(units="sae:NAME")`` builds it with the same builder, over the same windows, with
the same records: an :class:`UnitIndex` is a :class:`~.store.NeuronIndex` whose layers are the
SAEs' layers (numbered as the model's blocks) and whose "neurons" are latents, so
``record(layer, latent)``, explain / score, the rules explainer and the views work unchanged.
Latents are never negative: no bottom tail is kept. What a unit space adds:

* :meth:`UnitIndex.density`: the fraction of corpus tokens where a latent is active (exact:
  counted while the index is built);
* :meth:`UnitIndex.histogram`: the histogram of its NON-ZERO values (the zeros, most tokens,
  are left out; the density says how many there are).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from ..records import check_layer_neuron
from .store import NeuronIndex


class UnitIndex(NeuronIndex):
    """A :class:`NeuronIndex` over a unit space: only the SAEs' layers exist."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.units: str = self._meta["units"]
        self.unit_layers: list[int] = [int(x) for x in self._meta["unit_layers"]]
        self.histogram_caption = "non-zero values over every corpus token (count, log scale)"

    def __repr__(self) -> str:
        return (f"UnitIndex({self.units!r}, model={self.model_name!r}, corpus={self.corpus_name!r}, "
                f"layers={self.unit_layers}, units={self.n_neurons})")

    def _check(self, layer: Any, neuron: Any) -> tuple[int, int]:
        layer, neuron = check_layer_neuron(layer, neuron, self.n_layers, self.n_neurons, self._short)
        if layer not in self.unit_layers:
            raise ValueError(f"{self.units} has latents at layer {', '.join(map(str, self.unit_layers))} only; got layer "
                             f"{layer}")
        return layer, neuron

    def ready_layers(self) -> list[int]:
        return [layer for layer in super().ready_layers() if layer in self.unit_layers]

    def layer_arrays(self, layer: int) -> dict[str, np.ndarray]:
        if layer not in self.unit_layers:
            raise ValueError(f"{self.units} has latents at layer {', '.join(map(str, self.unit_layers))} only; got layer "
                             f"{layer}")
        return super().layer_arrays(layer)

    def complete(self) -> UnitIndex:
        missing = [layer for layer in self.unit_layers if layer not in self.ready_layers()]
        if missing and self._builder is not None:
            self._builder.build_layers(missing)
        for layer in self.unit_layers:
            self.layer_arrays(layer)
        return self

    def extremes(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) float32 [len(unit_layers), units], in the order of ``unit_layers``."""
        e = np.stack([np.asarray(self.layer_arrays(layer)["extremes"], dtype=np.float32) for layer in self.unit_layers])
        return e[:, :, 0], e[:, :, 1]

    # -- what latents add ------------------------------------------------------------------------
    def nonzero_count(self, layer: int, latent: int) -> int:
        layer, latent = self._check(layer, latent)
        return int(self.layer_arrays(layer)["nonzero_counts"][latent])

    def density(self, layer: int, latent: int) -> float:
        """The fraction of corpus tokens where the latent is active (not 0)."""
        return self.nonzero_count(layer, latent) / self.n_tokens

    def densities(self, layer: int) -> np.ndarray:
        """float64 [units]: :meth:`density` of every latent of ``layer``."""
        self._check(layer, 0)
        return np.asarray(self.layer_arrays(layer)["nonzero_counts"], dtype=np.float64) / self.n_tokens

    def histogram(self, layer: int, neuron: int) -> tuple[np.ndarray, np.ndarray]:
        """(edges, counts) of the latent's non-zero values over every corpus token: the zeros
        (``n_tokens - nonzero_count``) are taken out of the bin holding 0."""
        edges, counts = super().histogram(layer, neuron)
        zeros = self.n_tokens - self.nonzero_count(layer, neuron)
        if zeros:
            inside = np.nonzero((edges[:-1] <= 0) & (edges[1:] > 0))[0]
            b = int(inside[0]) if inside.size else int(np.argmin(np.abs(edges[:-1])))
            counts = counts.copy()
            counts[b] = max(0, counts[b] - zeros)
        return edges, counts


def build_together(lm: Any, unit_models: list[Any], corpus: Any = None, *, progress: Any = True,
                   layers: Any = None, **settings: Any) -> tuple[Any, list[UnitIndex]]:
    """The neuron index of ``lm`` and the indexes of ``unit_models`` (each a
    :class:`~neuronwidget.subject.units.UnitModel` over ``lm``), built by ONE forward pass per
    batch: each batch's neurons and latents are folded while it runs. Each index is the one
    its own build gives (same windows, calibration and selections), written to its own cache
    folder; what is already on disk is loaded, not rebuilt. (No checkpoints within this pass:
    an interrupted build starts again.) ``layers``: the neuron layers to build (default all).
    Returns (neuron index, [unit indexes])."""
    import time

    from ..subject.units import run_unit_hooks
    from .build import IndexBuilder
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
            # calibration: one pass over the calibration windows for all of them (the same windows)
            cals = [b.calibrator(plans[id(b)], missing) for b, missing in todo]
            pick, first = cals[0][1], todo[0][0]
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
            t0 = time.perf_counter()
            try:
                for bi in range(n_batches):
                    folds = [st.batch_folder(bi) for st in states]
                    chunk = folds[0][0]
                    nfold = folds[0][1] if neuron_state is not None else None
                    ufolds = [f[1] for f in folds[1:]] if neuron_state is not None else [f[1] for f in folds]
                    run_unit_hooks(lm, torch.from_numpy(chunk.astype(np.int64)),
                                   neuron_state.layer_ids if neuron_state is not None else [], nfold,
                                   saes, lambda i, latents: ufolds[i](saes[i].layer, latents))
                    for f in folds:
                        f[2]()
                    report(bi + 1, n_batches, "")
            finally:
                report(-1, n_batches, "close")
            for (b, _), st in zip(todo, states):
                b.write(plans[id(b)], st)
                b.built = True
                b.timings = {"pass_s": time.perf_counter() - t0, "together": True}
    nidx = nb.run(progress=False, lazy=layers is not None)
    nidx.attach(lm)
    return nidx, [b.run(progress=False).attach(um) for b, um in zip(ubs, unit_models)]


__all__ = ["UnitIndex", "build_together"]
