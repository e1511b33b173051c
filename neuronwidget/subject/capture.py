"""Capture GPT-2 MLP neuron activations: the output of ``transformer.h[L].mlp.act``
(post-GELU, the input of ``c_proj``).

Only the blocks up to the last layer needed run: a forward hook on that layer's
activation function raises a private exception once it has what it needs, so neither the
later blocks, nor ``ln_f``, nor the LM head are ever computed. Hooks are removed in a
``finally`` so they never outlive the call, even when the forward pass raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .loading import LoadedModel


class _StopForward(Exception):
    """Raised inside the last needed hook to end the forward pass early."""


LayerFn = Callable[[int, torch.Tensor], None]


def run_mlp_hooks(lm: LoadedModel, input_ids: torch.Tensor, layers: Iterable[int], fn: LayerFn) -> None:
    """Run ``input_ids`` [batch, seq] through the blocks and call ``fn(layer, acts)`` for each
    layer in ``layers`` with its activations [batch, seq, n_neurons] (model dtype, on the
    model's device), in layer order, while the forward pass is running.
    """
    wanted = sorted(set(int(x) for x in layers))
    if not wanted:
        raise ValueError("layers must name at least one layer")
    last = wanted[-1]
    handles = []

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            fn(layer, output)
            if layer == last:
                raise _StopForward

        return hook

    blocks = lm.transformer.h
    try:
        for layer in wanted:
            handles.append(blocks[layer].mlp.act.register_forward_hook(make_hook(layer)))
        with torch.inference_mode():
            lm.transformer(input_ids=input_ids.to(lm.device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()


def mlp_activations(lm: LoadedModel, input_ids: torch.Tensor, layers: Iterable[int]) -> dict[int, torch.Tensor]:
    """Activations of ``layers`` for ``input_ids`` [batch, seq]: {layer: float32 [batch, seq, n_neurons]} on CPU."""
    out: dict[int, torch.Tensor] = {}

    def keep(layer: int, acts: torch.Tensor) -> None:
        out[layer] = acts.detach().float().cpu()

    run_mlp_hooks(lm, input_ids, layers, keep)
    return out


__all__ = ["run_mlp_hooks", "mlp_activations"]
