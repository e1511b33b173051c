"""What a subject model is: the :class:`SubjectModel` protocol, and model families.

A *family* knows where one architecture keeps its blocks and its MLP neurons. The neuron
is always the input of the MLP's output projection (TransformerLens ``hook_post``):

* GPT-2: ``gelu_new(c_fc x)``, the output of ``transformer.h[L].mlp.act``;
* gated-MLP decoders (Llama, SmolLM, Qwen2/3, Mistral, Gemma 1-3): ``act(gate x) * (up x)``,
  the input of ``mlp.down_proj``, read by a forward PRE-hook on ``down_proj``.

A new architecture is one new :class:`Family` subclass: defining it (with ``model_types``)
registers it in :data:`FAMILIES`; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch


@runtime_checkable
class SubjectModel(Protocol):
    """The model being explained, as every layer above ``subject`` sees it."""

    name: str  # what users see, e.g. "SmolLM2-135M-Instruct — real weights, not GPT-2"
    tokenizer: Any  # a transformers tokenizer
    device: torch.device
    dtype: torch.dtype

    @property
    def short_name(self) -> str: ...  # for error messages: "tiny", "gpt2", a path
    @property
    def identity(self) -> str: ...  # cache key: changes when any weight, buffer, config or vocab entry changes
    @property
    def family(self) -> Family: ...
    @property
    def n_layers(self) -> int: ...
    @property
    def n_neurons(self) -> int: ...  # neurons per layer
    @property
    def n_ctx(self) -> int: ...  # positions the model takes, BOS included
    @property
    def max_text_tokens(self) -> int: ...  # n_ctx minus the BOS prefix
    @property
    def prefix_ids(self) -> list[int]: ...  # what the tokenizer puts before text: [] or [bos]
    @property
    def bos_token_id(self) -> int | None: ...  # prefix_ids[0], or None when nothing is prepended
    @property
    def eos_token_id(self) -> int: ...  # document separator and padding
    @property
    def neuron_site(self) -> str: ...  # where the neuron is, in words
    @property
    def signed(self) -> bool: ...  # whether its neurons have a negative side worth explaining

    def encode(self, text: str) -> list[int]: ...  # text tokens only, never BOS
    def token_strings(self) -> list[str]: ...  # per vocabulary id, " Paris"; partial characters hold U+FFFD
    def token_bytes(self) -> list[bytes]: ...  # per vocabulary id, the token's raw bytes
    def pieces(self, ids: Any, text: str | None = None) -> tuple[list[str], list[bytes]]: ...


FAMILIES: list[type[Family]] = []  # every defined family, in definition order (filled by Family subclasses)


@dataclass
class MlpWeights:
    """A model's MLP weights as the weight-based connections read them (every per-neuron matrix
    with one row per neuron, ``[n_neurons, d_model]``; lists are per layer).

    ``kind`` says how a neuron's activation depends on the normed residual ``x``:
    "linear" — ``act(w_in[n] · x)`` (GPT-2: OpenAI's published connection definitions apply);
    "gated" — ``act(gate[n] · x) * (up[n] · x)`` (the direct-path activation is used).
    ``gain`` is the effective weight of the norm in front of each MLP (Gemma's ``1 + w``
    already applied), ``final_gain`` that of the final norm; ``act`` the activation function.
    """

    kind: str
    gain: list[Any]
    w_out: list[Any]
    embed: Any
    final_gain: Any
    unembed: Any
    w_in: list[Any] | None = None
    gate: list[Any] | None = None
    up: list[Any] | None = None
    act: Any = None


class Family:
    """One architecture: where its blocks and neurons are. Subclasses fill the class variables
    and the few methods below; :func:`family_for` picks one from ``config.model_type``."""

    name: ClassVar[str]  # short, e.g. "gpt2"
    title: ClassVar[str]  # for messages, e.g. "GPT-2"
    model_types: ClassVar[tuple[str, ...]]  # transformers config.model_type values
    neuron_site: ClassVar[str]
    # Whether the neurons have a negative side worth recording and explaining: a gated
    # neuron act(gate x) * (up x) swings both ways; GELU's negative side is a sliver
    # (never below -0.17) that carries no behaviour of its own.
    signed: ClassVar[bool]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "model_types" in cls.__dict__:  # a concrete family: register it
            FAMILIES.append(cls)

    @classmethod
    def matches(cls, config: Any) -> bool:
        return getattr(config, "model_type", None) in cls.model_types

    def base(self, model: Any) -> Any:
        """The decoder stack without the LM head (what the capture runs)."""
        raise NotImplementedError

    def blocks(self, base: Any) -> Any:
        raise NotImplementedError

    def n_neurons(self, config: Any) -> int:
        raise NotImplementedError

    def n_ctx(self, config: Any) -> int:
        raise NotImplementedError

    def hook(self, block: Any, fn: Callable[[torch.Tensor], torch.Tensor | None], *, fast: bool = True) -> Any:
        """Register on ``block`` a hook that calls ``fn(acts [batch, seq, n_neurons])`` while the
        forward pass runs; return the handle (``.remove()``). When ``fn`` returns a tensor, it
        replaces the activations for the rest of the pass (an intervention).

        ``fast``: the family may swap in an equivalent, faster module while the hook lives
        (GPT-2: fused GELU, equal to 5e-7). ``fast=False`` keeps the model's own modules, so a
        pass whose hooks change nothing is bit-identical to a plain forward (interventions
        compare against one)."""
        raise NotImplementedError

    def mlp_weights(self, model: Any) -> MlpWeights:
        """The MLP weights the weight-based connections read (``explore.connections``)."""
        raise NotImplementedError(f"the {self.title} family does not say where its MLP weights are "
                                  f"(Family.mlp_weights), so weight-based connections are not available")

    def __repr__(self) -> str:
        return f"<family {self.name}>"


class GPT2(Family):
    name = "gpt2"
    title = "GPT-2 (gpt2, gpt2-medium, gpt2-large, gpt2-xl)"
    model_types = ("gpt2",)
    neuron_site = "output of transformer.h[L].mlp.act = gelu(c_fc x), the input of mlp.c_proj"
    signed = False

    def base(self, model: Any) -> Any:
        inner = getattr(model, "transformer", model)
        if not (hasattr(inner, "h") and hasattr(inner, "wte")):
            raise ValueError(f"{type(model).__name__} has no GPT-2 blocks (transformer.h)")
        return inner

    def blocks(self, base: Any) -> Any:
        return base.h

    def n_neurons(self, config: Any) -> int:
        return int(config.n_inner or 4 * config.n_embd)

    def n_ctx(self, config: Any) -> int:
        return int(config.n_positions)

    def hook(self, block: Any, fn: Callable[[torch.Tensor], torch.Tensor | None], *, fast: bool = True) -> Any:
        mlp, act = block.mlp, block.mlp.act
        if not fast or type(act).__name__ != "NewGELUActivation":
            return act.register_forward_hook(lambda _m, _args, output: fn(output))
        # transformers' gelu_new is seven elementwise PyTorch ops; PyTorch's tanh-approximate
        # GELU is the same function in one kernel (results agree to 5e-7; on CPU a GPT-2 forward
        # is ~25% faster). Swapped in while the hook lives, the user's module back on remove().
        fused = torch.nn.GELU(approximate="tanh")
        mlp.act = fused
        handle = fused.register_forward_hook(lambda _m, _args, output: fn(output))
        return _Restore(handle, mlp, act)


    def mlp_weights(self, model: Any) -> MlpWeights:
        # HF Conv1D weights are [in, out]: c_fc [d, m] (rows per neuron: its transpose), c_proj [m, d]
        base = self.base(model)
        head = getattr(model, "lm_head", None)
        return MlpWeights(kind="linear", gain=[b.ln_2.weight for b in base.h], w_in=[b.mlp.c_fc.weight.T for b in base.h],
                          w_out=[b.mlp.c_proj.weight for b in base.h], embed=base.wte.weight,
                          final_gain=base.ln_f.weight, unembed=head.weight if head is not None else base.wte.weight)


class _Restore:
    """A hook handle whose remove() also puts the original activation module back."""

    def __init__(self, handle: Any, mlp: Any, act: Any):
        self._handle, self._mlp, self._act = handle, mlp, act

    def remove(self) -> None:
        self._handle.remove()
        self._mlp.act = self._act


class GatedMLP(Family):
    name = "gated-mlp"
    title = "gated-MLP decoders (Llama, SmolLM, Qwen2, Qwen3, Mistral)"
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    neuron_site = "input of model.layers[L].mlp.down_proj = act(gate_proj x) * up_proj x"
    signed = True

    def base(self, model: Any) -> Any:
        # CausalLM -> .model; Gemma 3 multimodal -> .model.language_model; or the bare stack
        for cand in (model, getattr(model, "model", None), getattr(getattr(model, "model", None), "language_model", None),
                     getattr(model, "language_model", None)):
            if cand is not None and hasattr(cand, "layers") and hasattr(cand, "embed_tokens"):
                for block in cand.layers:
                    if not hasattr(getattr(block, "mlp", None), "down_proj"):
                        raise ValueError(f"{type(model).__name__}: layer MLPs have no down_proj (mixture-of-experts "
                                         f"models are not supported)")
                return cand
        raise ValueError(f"{type(model).__name__} has no decoder layers with an MLP down_proj")

    def blocks(self, base: Any) -> Any:
        return base.layers

    def n_neurons(self, config: Any) -> int:
        return int(_text_config(config).intermediate_size)

    def n_ctx(self, config: Any) -> int:
        return int(_text_config(config).max_position_embeddings)

    def hook(self, block: Any, fn: Callable[[torch.Tensor], torch.Tensor | None], *, fast: bool = True) -> Any:
        # a tensor returned by a forward pre-hook becomes down_proj's input (PyTorch wraps it in a tuple)
        return block.mlp.down_proj.register_forward_pre_hook(lambda _m, args: fn(args[0]))

    norm_offset: ClassVar[float] = 0.0  # RMSNorm scales by (norm_offset + w): Gemma's norms use 1 + w

    def mlp_norm(self, block: Any) -> Any:
        """The norm in front of a block's MLP (``pre_feedforward_layernorm`` where the model has
        one, e.g. Gemma 2/3; else ``post_attention_layernorm``)."""
        pre = getattr(block, "pre_feedforward_layernorm", None)
        return pre if pre is not None else block.post_attention_layernorm

    def mlp_weights(self, model: Any) -> MlpWeights:
        base = self.base(model)
        layers = base.layers

        def gain(norm: Any) -> torch.Tensor:
            return norm.weight + self.norm_offset if self.norm_offset else norm.weight

        head = getattr(model, "lm_head", None)
        return MlpWeights(kind="gated", gain=[gain(self.mlp_norm(b)) for b in layers],
                          gate=[b.mlp.gate_proj.weight for b in layers], up=[b.mlp.up_proj.weight for b in layers],
                          w_out=[b.mlp.down_proj.weight.T for b in layers], act=layers[0].mlp.act_fn,
                          embed=base.embed_tokens.weight, final_gain=gain(base.norm),
                          unembed=head.weight if head is not None else base.embed_tokens.weight)


class Gemma(GatedMLP):
    """Gemma 1-3: gated MLPs whose RMSNorms scale by ``1 + w``. The same family name as the other
    gated decoders (a model's identity, and so its index, does not change)."""

    title = "Gemma 1-3 (gated MLP; norms scale by 1 + w)"
    model_types = ("gemma", "gemma2", "gemma3_text", "gemma3")
    norm_offset = 1.0


def _text_config(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config




def supported() -> str:
    return "; ".join(f"{f.title} [model_type {', '.join(f.model_types)}]" for f in FAMILIES)


def family_for(config: Any) -> Family:
    """The family of a transformers config, or a ValueError naming the supported ones."""
    for fam in FAMILIES:
        if fam.matches(config):
            return fam()
    kind = getattr(config, "model_type", None) or type(config).__name__
    raise ValueError(f"model architecture {kind!r} is not supported; supported: {supported()}")


__all__ = ["SubjectModel", "Family", "GPT2", "GatedMLP", "Gemma", "MlpWeights", "FAMILIES", "family_for", "supported"]
