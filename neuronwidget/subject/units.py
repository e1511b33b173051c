"""Unit spaces: a subject model seen through SAE latents (or transcoder features) instead of its
MLP neurons, through the same capture seam.

:class:`UnitModel` wraps a :class:`~.loading.LoadedModel` and one or more :class:`~.sae.SAE`
(one per layer, all of one width) and answers everything a LoadedModel answers, except that a
layer's "neurons" are its SAE's latents: ``run_mlp_hooks(UnitModel(lm, [sae]), ids, [L], fn)``
hands ``fn`` the latents [batch, seq, d_sae] of the activations at the SAE's site, so the
index, records, explanations and scores run on latents unchanged. Its identity (the cache
key of its index) is the model's plus every SAE's.

Interventions on latents (:func:`latent_logits`, :func:`latent_greedy`): steering adds
``strength × W_dec[i]`` where the SAE writes (its site; a transcoder: the MLP output);
ablation subtracts the latent's own contribution ``f_i(x) × W_dec[i]`` there (the SAE's
reconstruction error stays in: only that latent's part of the value is removed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from .capture import _ignore, exclusive
from .intervene import _cache_io
from .sae import SAE
from .sites import SITE_WORDS, hook_site


class _Handles:
    def __init__(self, handles: list[Any]):
        self.handles = handles

    def remove(self) -> None:
        for h in reversed(self.handles):
            h.remove()


class _UnitFamily:
    """The family seen by the capture: ``hook(block, fn)`` hands ``fn`` the SAE's latents."""

    def __init__(self, um: UnitModel):
        self.um = um
        self.base = um.lm.family
        self.name = self.base.name
        self.title = self.base.title
        self.signed = False
        self.neuron_site = um.neuron_site

    def blocks(self, base: Any) -> Any:
        return self.base.blocks(base)

    def n_ctx(self, config: Any) -> int:
        return self.base.n_ctx(config)

    def n_neurons(self, config: Any) -> int:
        return self.um.n_neurons

    def hook(self, block: Any, fn: Any, *, fast: bool = True) -> Any:
        lm = self.um.lm
        layer = self.um.layer_of(block)
        sae = self.um.saes.get(layer)
        if sae is None or fn is _ignore:  # below the SAE's layer: the family's fast modules, nothing read
            return self.base.hook(block, _ignore, fast=fast)

        def encode(x: torch.Tensor) -> None:
            fn(sae.encode(x))

        handles = [] if sae.site == "mlp_post" else [self.base.hook(block, _ignore, fast=fast)]
        try:
            handles.append(hook_site(lm, layer, sae.site, encode, fast=fast))
        except BaseException:
            _Handles(handles).remove()
            raise
        return _Handles(handles)


class UnitModel:
    """``lm`` whose layer-L "neurons" are the latents of the SAE at layer L (see the module doc)."""

    def __init__(self, lm: Any, saes: Iterable[SAE]):
        saes = list(saes)
        if not saes:
            raise ValueError("a unit space needs at least one SAE")
        if isinstance(lm, UnitModel):
            raise ValueError("a unit space is built on a model, not on another unit space")
        by_layer: dict[int, SAE] = {}
        for sae in saes:
            if not isinstance(sae, SAE):
                raise ValueError(f"expected SAE objects (neuronwidget.subject.sae.load_sae), got {type(sae).__name__}")
            sae.check_model(lm)
            if sae.layer in by_layer:
                raise ValueError(f"{by_layer[sae.layer].units} and {sae.units} both read block {sae.layer}; one unit "
                                 "space holds one SAE per layer (index them as two spaces)")
            by_layer[sae.layer] = sae
        widths = {s.d_sae for s in saes}
        if len(widths) > 1:
            raise ValueError(f"the SAEs of one unit space must have one width; got {sorted(widths)}")
        self.lm = lm
        self.saes = dict(sorted(by_layer.items()))
        self._block_ids = {id(b): i for i, b in enumerate(lm.blocks)}
        self.family = _UnitFamily(self)

    def __getattr__(self, name: str) -> Any:  # everything else is the model's (tokens, device, base, pass lock, ...)
        if name == "lm":
            raise AttributeError(name)
        return getattr(self.lm, name)

    # -- what differs from the model -----------------------------------------------------------
    @property
    def units(self) -> str:
        return "+".join(s.units for s in self.saes.values())

    @property
    def unit_layers(self) -> list[int]:
        return list(self.saes)

    @property
    def n_neurons(self) -> int:
        return next(iter(self.saes.values())).d_sae

    @property
    def signed(self) -> bool:
        return False  # ReLU, TopK, JumpReLU and gated latents are never negative: no bottom tail

    @property
    def identity(self) -> str:
        return f"{self.lm.identity}+" + "+".join(f"{s.layer}.{s.site}.{s.identity}" for s in self.saes.values())

    @property
    def short_name(self) -> str:
        return f"{self.lm.short_name} {self.units}"

    @property
    def name(self) -> str:
        return f"{self.lm.name} · {self.units}"

    @property
    def neuron_site(self) -> str:
        return "; ".join(s.describe() for s in self.saes.values())

    def layer_of(self, block: Any) -> int:
        return self._block_ids[id(block)]

    def sae(self, layer: int) -> SAE:
        if layer not in self.saes:
            raise ValueError(f"{self.units} has latents at layer {', '.join(map(str, self.saes))} only, not {layer}")
        return self.saes[layer]

    def __repr__(self) -> str:
        return f"UnitModel({self.lm.short_name!r}, {self.units})"


# -- interventions on latents ------------------------------------------------------------------

class _LatentEditor:
    """Steering (add strength × W_dec[i]) and ablation (remove f_i(x) × W_dec[i]) where ``sae``
    writes; text positions only (never a BOS). ``offset``: absolute position of the first
    position the next call feeds (0, or the cache length when generating)."""

    def __init__(self, lm: Any, sae: SAE, steer: Mapping[int, float], ablate: Sequence[int]):
        self.lm, self.sae, self.skip, self.offset = lm, sae, len(lm.prefix_ids), 0
        self.steer = {sae.check_latent(i): float(v) for i, v in steer.items()}
        self.ablate = [sae.check_latent(i) for i in ablate]
        for v in self.steer.values():
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError(f"a steering strength must be a finite number, got {v!r}")
        if not self.steer and not self.ablate:
            raise ValueError("give at least one latent to steer or ablate")
        self._read: torch.Tensor | None = None  # transcoder: the latents read at the MLP input

    def _text(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[1], device=x.device) + self.offset
        return (pos >= self.skip).to(x.dtype)[None, :, None]

    def _delta(self, f: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        sae = self.sae
        delta = torch.zeros(x.shape[-1], dtype=torch.float32, device=x.device)
        for i, s in self.steer.items():
            delta = delta + s * sae.W_dec[i].to(x.device)
        out = delta.expand(*x.shape[:-1], -1)
        if self.ablate:
            idx = torch.tensor(self.ablate, device=x.device)
            out = out - f[..., idx] @ sae.W_dec[idx].to(x.device)
        # decoder directions of an SAE that normalises its input live in the normalised space: back
        # to the site's scale (x is the site's value here: an SAE writes where it reads)
        return out * sae.output_scale(x)

    def install(self) -> list[Any]:
        sae, handles = self.sae, []

        def write(x: torch.Tensor) -> torch.Tensor:
            f = None
            if self.ablate:
                f = self._read if sae.transcoder else sae.encode(x)
            return (x.float() + self._delta(f, x) * self._text(x)).to(x.dtype)

        def read(x: torch.Tensor) -> None:
            self._read = sae.encode(x)

        try:
            if sae.transcoder and self.ablate:
                handles.append(hook_site(self.lm, sae.layer, sae.site, read, fast=False))
            handles.append(hook_site(self.lm, sae.layer, sae.writes, write, fast=False))
        except BaseException:
            _Handles(handles).remove()
            raise
        return handles


def _model(lm: Any) -> Any:
    return lm.model


def _with_prefix(lm: Any, ids: torch.Tensor) -> torch.Tensor:
    skip = lm.prefix_ids
    if skip:
        ids = torch.cat([torch.tensor([skip], dtype=ids.dtype).expand(ids.shape[0], -1), ids], 1)
    return ids.to(lm.device)


@exclusive
def latent_logits(lm: Any, sae: SAE, input_ids: Sequence[int], *, steer: Mapping[int, float] | None = None,
                  ablate: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, edited) float32 logits [text length, vocab] of ``input_ids`` (text tokens), the
    edited pass with latents steered (``{latent: strength}``, added × W_dec) and / or ablated."""
    sae.check_model(lm)
    ids = _with_prefix(lm, torch.tensor([list(input_ids)]))
    skip = len(lm.prefix_ids)
    editor = _LatentEditor(lm, sae, steer or {}, ablate)
    with torch.inference_mode():
        clean = _model(lm)(input_ids=ids, use_cache=False).logits[0, skip:].float()
        handles = editor.install()
        try:
            edited = _model(lm)(input_ids=ids, use_cache=False).logits[0, skip:].float()
        finally:
            _Handles(handles).remove()
    return clean, edited


@exclusive
def latent_greedy(lm: Any, sae: SAE, prompt_ids: Sequence[int], max_new_tokens: int, *,
                  steer: Mapping[int, float] | None = None, ablate: Sequence[int] = ()) -> list[int]:
    """Greedy continuation of ``prompt_ids`` with the latent edits at every text position (prompt
    and generated), using the KV cache; stops at ``max_new_tokens`` or the end-of-text token."""
    sae.check_model(lm)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or not 1 <= max_new_tokens <= 512:
        raise ValueError(f"max_new_tokens must be an integer in 1..512, got {max_new_tokens!r}")
    model = _model(lm)
    ids = _with_prefix(lm, torch.tensor([list(prompt_ids)]))
    editor = _LatentEditor(lm, sae, steer or {}, ablate)
    room = min(max_new_tokens, lm.n_ctx - ids.shape[1])
    new: list[int] = []
    cache_arg, read_cache = _cache_io(model)
    handles = editor.install()
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=True)
            length = ids.shape[1]
            for step in range(room):
                nxt = int(out.logits[0, -1].argmax())
                new.append(nxt)
                if nxt == lm.eos_token_id or step == room - 1:
                    break
                editor.offset = length
                out = model(input_ids=torch.tensor([[nxt]], device=ids.device), use_cache=True,
                            **{cache_arg: read_cache(out)})
                length += 1
    finally:
        _Handles(handles).remove()
    return new


class _Stop(Exception):
    pass


@exclusive
def run_unit_hooks(lm: Any, input_ids: torch.Tensor, neuron_layers: Iterable[int], neuron_fn: Any,
                   saes: Sequence[SAE], sae_fn: Any) -> None:
    """ONE forward pass over ``input_ids`` (text tokens) that hands ``neuron_fn(layer, acts)`` the
    neurons of ``neuron_layers`` and ``sae_fn(i, latents)`` the latents of ``saes[i]`` (BOS
    excluded, float32 latents), stopping after the last block any of them needs. The neurons
    see the same values as :func:`~.capture.run_mlp_hooks` (the family's fast modules in every
    block that runs); so do the latents (:class:`UnitModel`)."""
    wanted = sorted(set(int(x) for x in neuron_layers))
    for sae in saes:
        sae.check_model(lm)
    last = max(wanted + [s.layer for s in saes])
    blocks = lm.blocks
    ids = _with_prefix(lm, input_ids)
    skip = len(lm.prefix_ids)

    def neuron_hook(layer: int) -> Any:
        return lambda acts: neuron_fn(layer, acts[:, skip:] if skip else acts)

    def sae_hook(i: int) -> Any:
        sae = saes[i]
        return lambda x: sae_fn(i, sae.encode(x[:, skip:] if skip else x))

    def stop(_m: Any, _a: Any, _o: Any) -> None:
        raise _Stop

    handles: list[Any] = []
    try:
        for layer in range(last + 1):
            handles.append(lm.family.hook(blocks[layer], neuron_hook(layer) if layer in wanted else _ignore))
        for i, sae in enumerate(saes):
            handles.append(hook_site(lm, sae.layer, sae.site, sae_hook(i)))
        handles.append(blocks[last].register_forward_hook(stop))
        with torch.inference_mode():
            lm.base(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        _Handles(handles).remove()


@exclusive
def site_values(lm: Any, input_ids: torch.Tensor, layer: int, site: str) -> torch.Tensor:
    """float32 [batch, text length, width]: the values at ``site`` of block ``layer`` for
    ``input_ids`` (text tokens; BOS excluded), the forward stopped there. Blocks below run with
    the family's fast modules, as in the index's capture."""
    ids = _with_prefix(lm, input_ids)
    skip = len(lm.prefix_ids)
    got: list[torch.Tensor] = []

    def keep(x: torch.Tensor) -> None:
        got.append(x[:, skip:].detach().float().cpu())
        raise _Stop

    handles = []
    try:
        for i in range(layer + (0 if site == "mlp_post" else 1)):
            handles.append(lm.family.hook(lm.blocks[i], _ignore))
        handles.append(hook_site(lm, layer, site, keep))
        with torch.inference_mode():
            lm.base(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        _Handles(handles).remove()
    return got[0]


@exclusive
def spliced_loss(lm: Any, sae: SAE, input_ids: torch.Tensor) -> tuple[float, float, float]:
    """(clean, spliced, zero-ablated) mean next-token cross-entropy over ``input_ids`` [batch,
    seq] (text tokens), where *spliced* replaces the value the SAE writes by its reconstruction
    (a transcoder: the MLP output by its prediction from the MLP input) and *zero-ablated* by 0."""
    sae.check_model(lm)
    ids = _with_prefix(lm, input_ids)
    skip = len(lm.prefix_ids)
    model = _model(lm)
    read: dict[str, torch.Tensor] = {}

    def loss() -> float:
        logits = model(input_ids=ids, use_cache=False).logits[:, skip:-1].float()
        target = ids[:, skip + 1:]
        return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1)))

    def take(x: torch.Tensor) -> None:
        read["x"] = x

    def splice(x: torch.Tensor) -> torch.Tensor:
        src = read["x"] if sae.transcoder else x
        return sae.decode(sae.encode(src), src).to(x.dtype)

    out = []
    with torch.inference_mode():
        out.append(loss())
        for fn in (splice, lambda x: torch.zeros_like(x)):
            handles = []
            try:
                if sae.transcoder:
                    handles.append(hook_site(lm, sae.layer, sae.site, take, fast=False))
                handles.append(hook_site(lm, sae.layer, sae.writes, fn, fast=False))
                out.append(loss())
            finally:
                _Handles(handles).remove()
    return out[0], out[1], out[2]


def _final_norm_weight(lm: Any) -> torch.Tensor | None:
    """The elementwise weight of the final norm before the unembedding (GPT-2 ``ln_f``, gated
    decoders ``norm``; Gemma's RMSNorm scales by 1 + weight), or None."""
    norm = getattr(lm.base, "ln_f", None) or getattr(lm.base, "norm", None)
    w = getattr(norm, "weight", None)
    if w is None:
        return None
    w = w.detach().float()
    return 1 + w if str(getattr(lm.config, "model_type", "")).startswith("gemma") else w


def unembed_scores(lm: Any, direction: torch.Tensor) -> torch.Tensor:
    """float32 [vocab]: ``direction`` (a residual-stream vector) through the final norm's weight
    and the unembedding: the logits it adds, up to the norm's per-token scale."""
    d = direction.float()
    w = _final_norm_weight(lm)
    if w is not None:
        d = d * w.to(d.device)
    head = lm.model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{lm.short_name} has no unembedding (LM head) to read output tokens through")
    return (head.weight.detach().float() @ d.to(head.weight.device)).cpu()


def embed_scores(lm: Any, direction: torch.Tensor) -> torch.Tensor:
    """float32 [vocab]: every token embedding's dot product with ``direction`` (an encoder column)."""
    emb = lm.base.get_input_embeddings().weight.detach().float()
    return (emb @ direction.float().to(emb.device)).cpu()


def describe_site(sae: SAE) -> str:
    return SITE_WORDS[sae.site].format(L=sae.layer)


__all__ = ["UnitModel", "run_unit_hooks", "embed_scores", "latent_greedy", "latent_logits", "site_values", "spliced_loss", "unembed_scores"]
