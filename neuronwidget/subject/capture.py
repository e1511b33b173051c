"""Capture MLP neuron activations, one mechanism for every family: a hook at the neuron's
site (GPT-2: output of ``mlp.act``; gated MLPs: a forward pre-hook on ``mlp.down_proj``, whose
input is ``act(gate x) * up x``).

Only the blocks up to the last layer needed run: that layer's hook raises a private
exception once it has what it needs, so neither later blocks, nor the final norm, nor the
LM head are ever computed. Hooks are removed in a ``finally`` so they never outlive the
call, even when the forward pass raises. Passes that hook one model take turns on the
model's own lock (``pass_lock``), so concurrent captures (two views trying text at once) each
see only their own forward pass.

BOS: callers pass TEXT token ids. When the model's tokenizer prepends a BOS
(``lm.prefix_ids``), the capture prepends it too and hands on the activations of the text
positions only: BOS is in the model's context, as its tokenizer expects, and never in a record.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

from .loading import LoadedModel


class _StopForward(Exception):
    """Raised inside the last needed hook to end the forward pass early."""


LayerFn = Callable[[int, torch.Tensor], None]
F = TypeVar("F", bound=Callable[..., Any])
_LOCKS_GUARD = threading.Lock()


def pass_lock(lm: Any) -> Any:
    """The lock of ``lm``'s passes. A capture or an intervention changes the shared model while
    it runs (hooks on its blocks, GPT-2's fused GELU swapped in, replayed blocks): a hook of one
    call would see, stop or edit another call's forward pass. So every such pass on one model
    takes turns on this lock (reentrant), which the model itself owns and which dies with it;
    passes on different models never wait for each other."""
    lock = getattr(lm, "_pass_lock", None)
    if lock is None:  # a SubjectModel of another kind: give it one, once
        with _LOCKS_GUARD:
            lock = getattr(lm, "_pass_lock", None)
            if lock is None:
                lock = threading.RLock()
                lm._pass_lock = lock
    return lock


def exclusive(fn: F) -> F:
    """Run ``fn(lm, ...)`` holding ``lm``'s pass lock (see :func:`pass_lock`)."""

    @functools.wraps(fn)
    def run(lm: Any, *args: Any, **kwargs: Any) -> Any:
        with pass_lock(lm):
            return fn(lm, *args, **kwargs)

    return run  # type: ignore[return-value]


def _ignore(acts: torch.Tensor) -> None:
    return None


@exclusive
def run_mlp_hooks(lm: LoadedModel, input_ids: torch.Tensor, layers: Iterable[int], fn: LayerFn) -> None:
    """Run ``input_ids`` [batch, seq] (text tokens, no BOS) through the blocks and call
    ``fn(layer, acts)`` for each layer in ``layers`` with its activations [batch, seq,
    n_neurons] (model dtype, on the model's device; BOS excluded), in layer order, while the
    forward pass is running.
    """
    wanted = sorted(set(int(x) for x in layers))
    if not wanted:
        raise ValueError("layers must name at least one layer")
    last = wanted[-1]
    blocks = lm.blocks
    if wanted[0] < 0 or last >= len(blocks):
        raise ValueError(f"layers must be in 0..{len(blocks) - 1} for {lm.short_name}, got {wanted}")
    ids = input_ids.to(lm.device)
    skip = len(lm.prefix_ids)
    if skip:
        prefix = torch.tensor(lm.prefix_ids, dtype=ids.dtype, device=ids.device)
        ids = torch.cat([prefix.expand(ids.shape[0], skip), ids], dim=1)

    def make_hook(layer: int):
        def on_acts(acts: torch.Tensor) -> None:
            fn(layer, acts[:, skip:] if skip else acts)
            if layer == last:
                raise _StopForward

        return on_acts

    handles = []
    try:
        for layer in range(last + 1):
            # every block the pass runs gets the family's fast modules (GPT-2: fused GELU), hooked
            # or not, so a layer's activations do not depend on which other layers are captured
            handles.append(lm.family.hook(blocks[layer], make_hook(layer) if layer in wanted else _ignore))
        with torch.inference_mode():
            lm.base(input_ids=ids, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()


def mlp_activations(lm: LoadedModel, input_ids: torch.Tensor, layers: Iterable[int]) -> dict[int, torch.Tensor]:
    """Activations of ``layers`` for ``input_ids`` [batch, seq] (text tokens, no BOS):
    {layer: float32 [batch, seq, n_neurons]} on CPU."""
    out: dict[int, torch.Tensor] = {}

    def keep(layer: int, acts: torch.Tensor) -> None:
        out[layer] = acts.detach().float().cpu()

    run_mlp_hooks(lm, input_ids, layers, keep)
    return out


__all__ = ["run_mlp_hooks", "mlp_activations", "pass_lock", "exclusive"]
