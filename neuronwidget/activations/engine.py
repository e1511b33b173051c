"""The engine: a loaded subject model plus everything asked of it (activations, token strings, index).

``Engine(model)`` wraps :func:`neuronwidget.subject.load_model`; ``neuronwidget.api.get_engine``
returns one shared Engine per (model, device, dtype) for the kernel.

Texts longer than the model's context are processed in overlapping windows, never
truncated. With ``n`` = the text tokens one forward pass takes (``lm.max_text_tokens``:
``n_ctx`` minus the BOS the model's tokenizer prepends, if any; 1024 for GPT-2): the first
window covers tokens 0..n-1; every later window starts ``n // 2`` tokens before the first
token it reports, so each reported token sees at least ``n // 2`` tokens of left context.
Every window gets the model's BOS (if its tokenizer adds one); records never show it.

Records carry ``token_bytes`` (each token's raw bytes) so views can join a character that a
byte-level tokenizer split over several tokens (whose strings hold U+FFFD).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..records import ActivationRecord, check_layer_neuron
from ..subject import LoadedModel, load_model, mlp_activations

class Engine:
    """Activations of MLP neurons, and the corpus index, for one subject model on one device."""

    def __init__(self, model: Any = "gpt2", device: Any = None, dtype: Any = None, *, tokenizer: Any = None,
                 corpus: Any = None):
        self.lm: LoadedModel = load_model(model, device=device, dtype=dtype, tokenizer=tokenizer)
        # what index() uses when given none: a corpus source, or a zero-argument callable that
        # returns one (get_engine passes one that reads configure(corpus=...) at call time)
        self.corpus = corpus
        self._indexes: dict[tuple, Any] = {}
        self.saes: dict[str, Any] = {}  # name -> SAE (add_sae); units="sae:NAME" names one
        self._unit_models: dict[str, Any] = {}

    # -- unit spaces -------------------------------------------------------------------------
    def add_sae(self, source: Any, *, name: str | None = None, layer: int | None = None, site: str | None = None):
        """Load an SAE or transcoder (a SAELens folder, Gemma Scope params.npz, OpenAI .pt,
        ``hf:OWNER/REPO[/SUBFOLDER]``, or an SAE) for this model, checked against it, and register
        it: ``units="sae:NAME"`` then names its latents everywhere. Returns the SAE."""
        from ..subject.sae import load_sae

        sae = load_sae(source, name=name, layer=layer, site=site, lm=self.lm)
        old = self.saes.get(sae.name)
        if old is not None and old.identity != sae.identity:
            raise ValueError(f"an SAE named {sae.name!r} is already attached with other weights; pass name=...")
        self.saes[sae.name] = sae
        return sae

    def unit_model(self, units: Any = None) -> Any:
        """The model this engine reads for ``units``: itself for None / "neurons", else a
        :class:`~neuronwidget.subject.units.UnitModel` over the named SAEs ("sae:NAME")."""
        if units is None or units == "neurons":
            return self.lm
        from ..subject.units import UnitModel

        names = units.split("+") if isinstance(units, str) else None
        if not names or any(not n.startswith("sae:") for n in names):
            raise ValueError(f"units must be 'neurons' or 'sae:NAME' (an SAE attached with add_sae / nw.load_sae), "
                             f"got {units!r}")
        missing = [n[4:] for n in names if n[4:] not in self.saes]
        if missing:
            raise ValueError(f"no SAE named {missing[0]!r} is attached to {self.lm.short_name}; attached: "
                             f"{', '.join(self.saes) or 'none'} (add one with nw.load_sae(path, model=...))")
        key = "+".join(sorted(names))
        um = self._unit_models.get(key)
        if um is None or any(um.saes[self.saes[n[4:]].layer] is not self.saes[n[4:]] for n in names):
            um = self._unit_models[key] = UnitModel(self.lm, [self.saes[n[4:]] for n in names])
        return um

    # -- facts -----------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.lm.name

    @property
    def n_layers(self) -> int:
        return self.lm.n_layers

    @property
    def n_neurons(self) -> int:
        return self.lm.n_neurons

    @property
    def is_tiny(self) -> bool:
        return self.lm.is_tiny

    def __repr__(self) -> str:
        return f"Engine({self.model_name!r}, device={str(self.lm.device)!r}, layers={self.n_layers}, neurons={self.n_neurons})"

    # -- input checks ------------------------------------------------------------------------
    def _layer(self, layer: Any) -> int:
        return check_layer_neuron(layer, 0, self.n_layers, 1, self.lm.short_name)[0]

    def _neuron(self, neuron: Any) -> int:
        return check_layer_neuron(0, neuron, 1, self.n_neurons, self.lm.short_name)[1]

    def _ids(self, text: Any) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a non-empty string, got {type(text).__name__}")
        if not text:
            raise ValueError("text is empty; give at least one character of text")
        ids = self.lm.encode(text)
        if not ids:
            raise ValueError(f"text {text!r} produced no tokens; give some text")
        return list(ids)

    # -- tokens ------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """Token strings as in OpenAI's records (" Paris"); tokens holding part of a character
        show U+FFFD (their bytes, see :meth:`record`, join back to the text)."""
        return self.lm.pieces(self._ids(text), text)[0]

    def token_strings(self, ids: Any) -> list[str]:
        table = self.lm.token_strings()
        return [table[int(i)] for i in ids]

    def token_bytes(self, ids: Any) -> list[bytes]:
        """Each id's raw bytes (see :meth:`neuronwidget.subject.LoadedModel.token_bytes`)."""
        table = self.lm.token_bytes()
        return [table[int(i)] for i in ids]

    # -- activations -------------------------------------------------------------------------
    def _record(self, ids: list[int], text: str, acts: np.ndarray) -> ActivationRecord:
        strings, raw = self.lm.pieces(ids, text)
        return ActivationRecord(tokens=strings, activations=acts.astype(float).tolist(), token_bytes=raw)

    def _run_long(self, ids: list[int], layer: int, units: Any = None) -> np.ndarray:
        """float32 [len(ids), n_neurons] for any length (overlapping windows past max_text_tokens)."""
        lm = self.unit_model(units)
        if lm is not self.lm:
            lm.sae(layer)  # a ValueError naming the layers it has
        n_ctx = self.lm.max_text_tokens
        if len(ids) <= n_ctx:
            return mlp_activations(lm, torch.tensor([ids]), [layer])[layer][0].numpy()
        overlap = n_ctx // 2
        parts, start = [], 0
        while start < len(ids):
            ctx_start = max(0, start - overlap) if start else 0
            end = min(len(ids), ctx_start + n_ctx)
            acts = mlp_activations(lm, torch.tensor([ids[ctx_start:end]]), [layer])[layer][0]
            parts.append(acts[start - ctx_start:].numpy())
            start = end
        return np.concatenate(parts)

    def layer_activations(self, text: str, layer: int, *, units: Any = None) -> tuple[list[str], np.ndarray]:
        """(token strings, float32 [n_tokens, n_neurons]) for every neuron of ``layer``
        (``units="sae:NAME"``: every latent of that SAE, which must read ``layer``)."""
        layer = self._layer(layer)
        ids = self._ids(text)
        return self.lm.pieces(ids, text)[0], self._run_long(ids, layer, units)

    def activations(self, text: str, layer: int, neuron: int, *, units: Any = None) -> ActivationRecord:
        """One neuron's activation on every token of ``text`` (any length; see module doc);
        ``units="sae:NAME"``: latent ``neuron`` of that SAE."""
        layer = self._layer(layer)
        um = self.unit_model(units)
        neuron = check_layer_neuron(0, neuron, 1, um.n_neurons, um.short_name)[1]
        ids = self._ids(text)
        return self._record(ids, text, self._run_long(ids, layer, units)[:, neuron])

    def activations_many(self, texts: list[str], layer: int, neuron: int, batch_size: int = 16) -> list[ActivationRecord]:
        """:meth:`activations` for many texts, batched (right-padded; causal attention makes
        padding after a text invisible to it)."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}")
        layer, neuron = self._layer(layer), self._neuron(neuron)
        all_ids = [self._ids(t) for t in texts]
        out: list[ActivationRecord | None] = [None] * len(all_ids)
        limit = self.lm.max_text_tokens
        short = [i for i, ids in enumerate(all_ids) if len(ids) <= limit]
        for i, ids in enumerate(all_ids):
            if len(ids) > limit:
                out[i] = self._record(ids, texts[i], self._run_long(ids, layer)[:, neuron])
        short.sort(key=lambda i: len(all_ids[i]))
        pad = self.lm.eos_token_id
        for s in range(0, len(short), batch_size):
            group = short[s:s + batch_size]
            width = max(len(all_ids[i]) for i in group)
            batch = torch.tensor([all_ids[i] + [pad] * (width - len(all_ids[i])) for i in group])
            acts = mlp_activations(self.lm, batch, [layer])[layer][:, :, neuron].numpy()
            for row, i in enumerate(group):
                n = len(all_ids[i])
                out[i] = self._record(all_ids[i], texts[i], acts[row, :n])
        return out  # type: ignore[return-value]

    # -- index -------------------------------------------------------------------------------
    def index(self, corpus: Any = None, *, top_k: int = 40, n_random: int = 30, seed: int = 0,
              rebuild: bool = False, progress: Any = True, distributed: str | None = None,
              workers: int | None = None, max_worker_deaths: int | None = None, lazy: bool = False, units: Any = None,
              with_units: Any = (), **settings: Any):
        """The corpus index for every neuron (cached on disk; built with a progress bar if new).

        ``lazy=True``: returned at once; each layer is built when first read, the forward pass
        stopping after it (the first view of layer L waits for a pass to layer L only), and
        ``index.complete()`` builds the rest. The index shows exact values for the windows a
        view shows, recomputed by this engine's model (see ``NeuronIndex``).

        ``corpus``: None = this engine's ``corpus`` (for ``get_engine``'s engines:
        ``configure(corpus=...)``), else the default corpus (see
        :func:`neuronwidget.activations.corpus.default_corpus`); any source ``as_corpus`` accepts.
        Extra settings (``bottom_k``, ``n_quantile``, ``batch_size``, ``checkpoint_every``, ``cache_dir``, ...)
        go to :class:`neuronwidget.activations.build.IndexBuilder`. ``distributed="ray"``: shards
        folded on Ray workers (:mod:`neuronwidget.activations.distributed`; ``workers``: how
        many, default one per GPU else per CPU; ``max_worker_deaths``: how often each
        worker may die, Ray restarting it and retrying what it held, default 3), the same index;
        with ``units=`` too.

        ``units="sae:NAME"``: the index of that SAE's latents (attached with :meth:`add_sae`):
        a :class:`~neuronwidget.activations.units.UnitIndex` (same records, plus density and the
        histogram of non-zero values; no bottom tail), cached under a key that includes the SAE's
        weights.

        ``with_units=["sae:NAME", ...]``: build those unit spaces' indexes in the SAME forward
        pass as the neurons' (each batch's latents are folded while it runs); returns the neuron
        index, and ``index(units="sae:NAME")`` then finds its index on disk.
        """
        from .build import IndexBuilder

        if corpus is None:
            corpus = self.corpus() if callable(self.corpus) else self.corpus
        if with_units:
            if units not in (None, "neurons") or lazy or distributed is not None or rebuild:
                raise ValueError("with_units builds neurons and SAE latents in one pass in this process; it does not go "
                                 "with units=, lazy=True, rebuild=True or distributed=")
            from .together import build_together

            names = [with_units] if isinstance(with_units, str) else list(with_units)
            ums = [self.unit_model(u) for u in names]
            idx, uidx = build_together(self.lm, ums, corpus, progress=progress, top_k=top_k, n_random=n_random,
                                       seed=seed, **settings)
            for ui in uidx:
                self._indexes[ui._builder.key] = ui
            self._indexes[idx._builder.key] = idx
            return idx
        lm = self.unit_model(units)
        builder = IndexBuilder(lm, corpus, top_k=top_k, n_random=n_random, seed=seed, **settings)
        if not rebuild and builder.key in self._indexes:
            idx = self._indexes[builder.key]
            return idx if lazy else idx.complete()
        idx = builder.run(rebuild=rebuild, progress=progress, distributed=distributed, workers=workers,
                          max_worker_deaths=max_worker_deaths, lazy=lazy)
        idx.attach(lm)
        self._indexes[builder.key] = idx
        return idx


__all__ = ["Engine"]
