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

from typing import Any

import numpy as np

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


__all__ = ["UnitIndex"]
