"""What a neuron reads from and writes to, from the weights alone (no corpus, no forward pass).

GPT-2 uses the definitions OpenAI published with its neuron dataset (HF Conv1D weights are
``[in, out]``: ``c_fc.weight`` is ``[d_model, d_mlp]``, ``c_proj.weight`` is ``[d_mlp, d_model]``):

- input token ``t`` of neuron ``(l, n)``:   ``wte[t] · diag(ln_2[l].g) · c_fc[l][:, n]``
- output token ``t`` of neuron ``(l, n)``:  ``c_proj[l][n, :] · diag(ln_f.g) · wte[t]``
- neuron ``(l1, n1)`` -> ``(l2, n2)``, l1 < l2:  ``c_proj[l1][n1, :] · diag(ln_2[l2].g) · c_fc[l2][:, n2]``

Gated MLPs (Llama, Qwen, Mistral, SmolLM, Gemma: ``act(gate_proj x) * up_proj x``) have no
single input weight, and the activation is not linear in the input, so the analogue is the
neuron's *direct-path activation*: the activation neuron ``(l, n)`` would have if the residual
stream entering its MLP held only one vector ``v`` (a token's embedding, or an upstream
neuron's output weight ``down_proj[l1][:, n1]``), passed through that MLP's RMSNorm:

    x = w ∘ v / rms(v)        (w: the MLP's input norm weight; Gemma: 1 + w)
    a(v) = act(gate_proj[l][n] · x) * (up_proj[l][n] · x)

Input tokens are ranked by ``a(embed_tokens[t])`` (most positive: "excite"; most negative:
the signed neuron's negative side); neuron -> neuron by ``a(down_proj[l1][:, n1])``. Output
tokens are linear as for GPT-2: ``down_proj[l][:, n] · diag(w_final) · lm_head[t]`` (Gemma:
``1 + w_final``). The MLP input norm is ``post_attention_layernorm`` (``pre_feedforward_layernorm``
where the model has one: Gemma 2/3).

Every list is computed per neuron with matrix-vector products: nothing of size vocab x
neurons (or neurons x neurons) is ever materialised.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from ..records import check_layer_neuron

# model object -> its weight view; weak keys: a model dropped by the kernel is not kept alive here
_weights_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


@dataclass
class Connections:
    """One neuron's weight-based connections; every list is [(name or id, value), ...], strongest first."""

    model: str
    layer: int
    neuron: int
    family: str  # "gpt2" or "gated"
    input_tokens: list[tuple[str, float]] = field(default_factory=list)  # excite the neuron most
    input_tokens_negative: list[tuple[str, float]] = field(default_factory=list)  # push it most negative
    output_promoted: list[tuple[str, float]] = field(default_factory=list)
    output_suppressed: list[tuple[str, float]] = field(default_factory=list)
    upstream: list[tuple[int, int, float]] = field(default_factory=list)  # (layer, neuron, weight), by |weight|
    downstream: list[tuple[int, int, float]] = field(default_factory=list)
    definition: str = ""

    def to_dict(self) -> dict[str, Any]:
        def toks(items):
            return [{"token": t, "value": round(float(v), 6)} for t, v in items]

        def neurons(items):
            return [{"layer": int(a), "neuron": int(b), "value": round(float(v), 6)} for a, b, v in items]

        return {
            "model": self.model, "layer": self.layer, "neuron": self.neuron, "family": self.family,
            "input_tokens": toks(self.input_tokens), "input_tokens_negative": toks(self.input_tokens_negative),
            "output_promoted": toks(self.output_promoted), "output_suppressed": toks(self.output_suppressed),
            "upstream": neurons(self.upstream), "downstream": neurons(self.downstream),
            "definition": self.definition,
        }


GPT2_DEFINITION = ("weights only (OpenAI's definitions): input wte[t]·diag(ln_2.g)·c_fc[:,n]; "
                   "output c_proj[n,:]·diag(ln_f.g)·wte[t]; neuron→neuron c_proj[l1][n1,:]·diag(ln_2.g of l2)·c_fc[l2][:,n2]")
GATED_DEFINITION = ("weights only: a(v) = act(gate·x)·(up·x), x = norm weight ∘ v / rms(v), the activation if the "
                    "residual held only v (a token embedding or an upstream neuron's down_proj column); output "
                    "down_proj[:,n]·diag(final norm)·lm_head[t]")


class _Weights:
    """One model's connection arithmetic over the weights its subject family points at
    (``Family.mlp_weights``): in_[l] [m, d] (rows = neurons), out[l] [m, d]. Only the kind of MLP
    ("linear" as GPT-2, or "gated") changes the arithmetic; where the weights are, and a family's
    own norm convention (Gemma's ``1 + w``), is the family's to say, so a new family is one class."""

    def __init__(self, model: Any):
        from ..subject import family_for, supported

        config = getattr(model, "config", None)
        if config is None:
            raise ValueError(f"weight connections need a transformers model with a .config (a GPT-2 model (any size) or a gated-MLP "
                             f"decoder; supported: {supported()}); got {type(model).__name__}")
        mw = family_for(config).mlp_weights(model)
        self.family = "gpt2" if mw.kind == "linear" else "gated"  # the payload's names for the two definitions
        self.gain, self.w_in, self.gate, self.up, self.w_out = mw.gain, mw.w_in, mw.gate, mw.up, mw.w_out
        self.act, self.embed, self.final_gain, self.unembed = mw.act, mw.embed, mw.final_gain, mw.unembed
        self._embed_rms: torch.Tensor | None = None
        self._out_rms: dict[int, torch.Tensor] = {}

    @property
    def n_layers(self) -> int:
        return len(self.w_out)

    @property
    def n_neurons(self) -> int:
        return int(self.w_out[0].shape[0])

    # gated helpers: rms of the rows of a matrix (cached; one pass over the weights each, ever)
    def embed_rms(self) -> torch.Tensor:
        if self._embed_rms is None:
            self._embed_rms = self.embed.float().pow(2).mean(1).sqrt().clamp(min=1e-12)
        return self._embed_rms

    def out_rms(self, layer: int) -> torch.Tensor:
        if layer not in self._out_rms:
            self._out_rms[layer] = self.w_out[layer].float().pow(2).mean(1).sqrt().clamp(min=1e-12)
        return self._out_rms[layer]

    # -- the three kinds of connection, each one neuron at a time -------------------------
    def token_scores(self, layer: int, neuron: int) -> tuple[torch.Tensor, torch.Tensor]:
        """([vocab] how much each token's embedding drives the neuron, [vocab] each token's logit
        change per unit of the neuron's activation): matrix-vector products over the embedding
        (and unembedding) matrix, never a vocab x neurons matrix."""
        g = self.gain[layer].float()
        out_vec = self.w_out[layer][neuron].float() * self.final_gain.float()
        if self.family == "gpt2":
            vecs = [g * self.w_in[layer][neuron].float()]
        else:
            vecs = [g * self.gate[layer][neuron].float(), g * self.up[layer][neuron].float()]
        tied = self.unembed is self.embed
        scores = _mm(self.embed, vecs + [out_vec] if tied else vecs)
        out = scores[:, -1] if tied else _mv(self.unembed, out_vec)
        if self.family == "gpt2":
            return scores[:, 0], out
        rms = self.embed_rms()
        return self.act(scores[:, 0] / rms) * (scores[:, 1] / rms), out

    def downstream_scores(self, layer: int, neuron: int, later: int) -> torch.Tensor:
        """[m] connection from (layer, neuron) to every neuron of layer ``later``."""
        d = self.w_out[layer][neuron].float()
        g = self.gain[later].float()
        if self.family == "gpt2":
            return _mv(self.w_in[later], g * d)
        x = g * d / d.pow(2).mean().sqrt().clamp(min=1e-12)
        return self.act(_mv(self.gate[later], x)) * _mv(self.up[later], x)

    def upstream_scores(self, layer: int, neuron: int, earlier: int) -> torch.Tensor:
        """[m] connection from every neuron of layer ``earlier`` to (layer, neuron)."""
        g = self.gain[layer].float()
        if self.family == "gpt2":
            return _mv(self.w_out[earlier], g * self.w_in[layer][neuron].float())
        rms = self.out_rms(earlier)
        z = _mm(self.w_out[earlier], [g * self.gate[layer][neuron].float(), g * self.up[layer][neuron].float()])
        return self.act(z[:, 0] / rms) * (z[:, 1] / rms)


def _mm(matrix: torch.Tensor, vectors: list[torch.Tensor]) -> torch.Tensor:
    """matrix [r, d] @ each vector -> float32 [r, k]. One matrix-vector product per vector: on CPU
    torch's GEMV is ~1.5-4x faster than a GEMM with 2-3 columns (measured; benchmarks/explore.py)."""
    return torch.stack([_mv(matrix, v) for v in vectors], 1)


def _mv(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """matrix [r, d] @ vector [d] -> float32 [r], in the matrix's dtype and device."""
    return (matrix @ vector.to(device=matrix.device, dtype=matrix.dtype)).float()


def weights_of(model: Any) -> _Weights:
    """The (cached) weight view of a model object."""
    with _lock:
        try:
            w = _weights_cache.get(model)
        except TypeError:  # not weak-referenceable: no caching
            return _Weights(model)
        if w is None:
            w = _Weights(model)
            _weights_cache[model] = w
        return w


def _top(values: torch.Tensor, k: int, largest: bool = True) -> tuple[list[int], list[float]]:
    k = min(k, values.numel())
    v, i = torch.topk(values, k, largest=largest)
    return i.tolist(), v.tolist()


def connections(model: Any, layer: int, neuron: int, *, token_strings: list[str] | None = None, k: int = 10,
                model_name: str = "") -> Connections:
    """Connections of one neuron of ``model`` (a transformers GPT-2 or gated-MLP model object).

    ``token_strings``: the vocabulary as text (id -> string); ids are shown when None.
    Upstream and downstream neurons are ranked by |weight| over every earlier / later layer.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    w = weights_of(model)
    layer, neuron = check_layer_neuron(layer, neuron, w.n_layers, w.n_neurons, model_name or type(model).__name__)

    def name(i: int) -> str:
        return token_strings[i] if token_strings is not None and i < len(token_strings) else f"#{i}"

    with torch.inference_mode():
        inp, out = w.token_scores(layer, neuron)
        up = [(l1, w.upstream_scores(layer, neuron, l1)) for l1 in range(layer)]
        down = [(l2, w.downstream_scores(layer, neuron, l2)) for l2 in range(layer + 1, w.n_layers)]

    def tokens(values: torch.Tensor, largest: bool) -> list[tuple[str, float]]:
        ids, vals = _top(values, k, largest)
        return [(name(i), v) for i, v in zip(ids, vals) if (v > 0) == largest and v != 0]

    def strongest(per_layer: list[tuple[int, torch.Tensor]]) -> list[tuple[int, int, float]]:
        if not per_layer:
            return []
        flat = torch.cat([s for _, s in per_layer])
        idx, _ = _top(flat.abs(), k, True)
        m = w.n_neurons
        return [(per_layer[i // m][0], i % m, float(flat[i])) for i in idx]

    return Connections(
        model=model_name, layer=layer, neuron=neuron, family=w.family,
        input_tokens=tokens(inp, True), input_tokens_negative=tokens(inp, False),
        output_promoted=tokens(out, True), output_suppressed=tokens(out, False),
        upstream=strongest(up), downstream=strongest(down),
        definition=GPT2_DEFINITION if w.family == "gpt2" else GATED_DEFINITION,
    )


__all__ = ["Connections", "connections", "weights_of", "GPT2_DEFINITION", "GATED_DEFINITION"]
