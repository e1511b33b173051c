"""Where a unit space other than the MLP neurons reads (and writes): hook sites in a block.

A *site* is a place in block L's computation, named as TransformerLens names it:

=============  =============================================================================
``resid_pre``  the residual stream entering block L (the block's input)
``resid_mid``  the residual stream between attention and MLP (the input of the MLP's norm)
``resid_post`` the residual stream leaving block L (the block's output)
``attn_out``   what attention adds to the residual stream (after the output projection;
               Gemma 2/3: after their post-attention norm)
``mlp_in``     the MLP's input (after its norm): what a transcoder reads
``mlp_out``    what the MLP adds to the residual stream (Gemma 2/3: after the post-MLP norm)
``mlp_post``   the MLP neurons themselves (the family's own neuron site)
=============  =============================================================================

Every family's modules are named here and nowhere else (GPT-2: ``attn``, ``ln_2``, ``mlp``;
gated-MLP decoders: ``self_attn``, ``post_attention_layernorm`` or Gemma's
``pre_feedforward_layernorm``, ``mlp``). :func:`hook_site` registers a hook that calls
``fn(x [batch, seq, width])`` while the forward pass runs; a tensor returned replaces the value
for the rest of the pass (steering, ablation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_in", "mlp_out", "mlp_post")
SITE_WORDS = {
    "resid_pre": "the residual stream entering block {L}",
    "resid_mid": "the residual stream between attention and MLP in block {L}",
    "resid_post": "the residual stream leaving block {L}",
    "attn_out": "the attention output of block {L}",
    "mlp_in": "the MLP input of block {L} (after its norm)",
    "mlp_out": "the MLP output of block {L}",
    "mlp_post": "the MLP neurons of block {L}",
}

SiteFn = Callable[[torch.Tensor], "torch.Tensor | None"]


def check_site(site: Any) -> str:
    if site not in SITES:
        raise ValueError(f"site must be one of {', '.join(SITES)}; got {site!r}")
    return site


def site_width(lm: Any, site: str) -> int:
    """How many numbers one token has at ``site`` (d_model, or the neurons for ``mlp_post``)."""
    check_site(site)
    if site == "mlp_post":
        return int(lm.n_neurons)
    cfg = lm.config
    get = getattr(cfg, "get_text_config", None)
    cfg = get() if callable(get) else cfg
    for name in ("hidden_size", "n_embd", "d_model"):
        if getattr(cfg, name, None):
            return int(getattr(cfg, name))
    raise ValueError(f"{lm.short_name}: cannot tell the width of the residual stream from its config")


def _sandwich(block: Any) -> bool:
    """Gemma 2/3 blocks normalise attention and MLP outputs before adding them."""
    return hasattr(block, "pre_feedforward_layernorm") and hasattr(block, "post_feedforward_layernorm")


def _module(block: Any, family: str, site: str) -> tuple[Any, str]:
    """(module, "pre" | "post"): the site is that module's input (pre) or output (post)."""
    if site in ("resid_pre", "resid_post"):
        return block, "pre" if site == "resid_pre" else "post"
    if site == "mlp_in":
        return block.mlp, "pre"
    if family == "gpt2":
        return {"resid_mid": (block.ln_2, "pre"), "attn_out": (block.attn, "post"), "mlp_out": (block.mlp, "post")}[site]
    if family == "gated-mlp":
        if site == "resid_mid":
            return (block.pre_feedforward_layernorm if _sandwich(block) else block.post_attention_layernorm), "pre"
        if site == "attn_out":
            return (block.post_attention_layernorm if _sandwich(block) else block.self_attn), "post"
        return (block.post_feedforward_layernorm if _sandwich(block) else block.mlp), "post"
    raise ValueError(f"no hook sites are known for the {family!r} family")


def hook_site(lm: Any, layer: int, site: str, fn: SiteFn, *, fast: bool = True) -> Any:
    """Hook ``site`` of block ``layer`` of ``lm`` (a LoadedModel): ``fn(x)`` sees the value
    [batch, seq, width] (BOS included when the model has one); a returned tensor replaces it.
    Returns a handle with ``remove()``. ``mlp_post`` goes through the family's own neuron hook
    (``fast`` as in :meth:`Family.hook`)."""
    check_site(site)
    block = lm.blocks[layer]
    if site == "mlp_post":
        return lm.family.hook(block, fn, fast=fast)
    module, where = _module(block, lm.family.name, site)
    if where == "pre":
        def pre(_m: Any, args: tuple, kwargs: dict) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(_m: Any, _args: Any, out: Any) -> Any:
        if isinstance(out, tuple):
            new = fn(out[0])
            return None if new is None else (new, *out[1:])
        if isinstance(out, torch.Tensor):
            return fn(out)
        new = fn(out[0])  # a ModelOutput-like object
        if new is not None:
            out[0] = new
        return None

    return module.register_forward_hook(post)


__all__ = ["SITES", "SITE_WORDS", "check_site", "hook_site", "site_width"]
