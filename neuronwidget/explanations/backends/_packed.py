"""CPU speed-ups for ``LocalBackend``'s batched simulation (same predictions, to float rounding).

* ``shared_prefix_attention``: the records of one pass packed end to end into one row after
  one cached prefix; each layer reads the prefix's keys and values once for all records.
* ``prepacked``: the model's Linear weights in oneDNN's blocked layout for faster float32
  matmuls during those passes.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any


_PACKED = "neuronwidget_shared_prefix"  # the attention implementation's registered name
_packing = threading.local()  # this thread's packed pass: .state = (prefix cache, record segments)


class NotPackable(Exception):
    """The model's attention uses something the shared-prefix attention does not do."""


def shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' ``sdpa`` attention for one row holding several records packed end to end,
    all of them after one cached prefix: every query attends to the whole prefix (its keys and
    values once for all records, no copies) and causally to the tokens of its own record, never
    to another record. The two softmax parts are joined through their log-sum-exps, which is
    the softmax over prefix + own tokens exactly. Called by the model in place of ``sdpa``
    while ``LocalBackend._packed_pass`` (``local.py``) runs in this thread; elsewhere it is ``sdpa``."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    state = getattr(_packing, "state", None)
    if state is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if dropout or any(kwargs.get(k) is not None for k in ("softcap", "sliding_window", "position_bias", "s_aux",
                                                          "sinks")):
        raise NotPackable("this model's attention has a window, soft cap, bias or sinks")
    cache, segments = state
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    layer = cache.layers[module.layer_idx]
    _, heads, n, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    # all queries against the prefix: the query heads sharing a KV head are one long sequence
    out_p, lse_p = flash(query.reshape(1, kv_heads, groups * n, dim), layer.keys, layer.values, scale=scaling)
    out_p, lse_p = out_p.reshape(1, heads, n, dim), lse_p.reshape(1, heads, n)
    outs, lses = [], []
    for a, b in segments:  # each record against its own tokens, causally
        k, v = key[:, :, a:b], value[:, :, a:b]
        if groups > 1:
            k = k[:, :, None].expand(1, kv_heads, groups, b - a, dim).reshape(1, heads, b - a, dim)
            v = v[:, :, None].expand(1, kv_heads, groups, b - a, dim).reshape(1, heads, b - a, dim)
        o, lse = flash(query[:, :, a:b], k, v, is_causal=True, scale=scaling)
        outs.append(o)
        lses.append(lse)
    out_r, lse_r = torch.cat(outs, 2), torch.cat(lses, 2)
    weight = torch.sigmoid(lse_p - lse_r).unsqueeze(-1).to(out_r.dtype)  # the prefix's share of the softmax
    out = out_r.add_(out_p.sub_(out_r).mul_(weight))
    return out.transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def packed_attention(config, cache, segments):
    """The model runs ``shared_prefix_attention`` (in this thread, over these segments) inside."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(_PACKED, shared_prefix_attention)
    AttentionMaskInterface.register(_PACKED, sdpa_mask)  # other threads on this model get sdpa's masks
    old = config._attn_implementation
    _packing.state = (cache, segments)
    config._attn_implementation = _PACKED
    try:
        yield
    finally:
        config._attn_implementation = old
        _packing.state = None


# Linear weights up to this size (bytes, all layers together) are also kept in oneDNN's blocked
# layout for the packed pass: ~8-15% faster float32 matmuls on a CPU for that much more memory.
PREPACK_LIMIT = 1 << 30


def prepacked(base, rows: int) -> dict[Any, Any]:
    """{each float32 ``nn.Linear`` of ``base``: its weight prepacked by oneDNN for ``rows``-row
    inputs}, or {} where oneDNN cannot or the weights are over ``PREPACK_LIMIT``."""
    import torch

    linears = [m for m in base.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32]
    ops = torch.ops.mkldnn
    if (not linears or sum(m.weight.nbytes for m in linears) > PREPACK_LIMIT or not torch.backends.mkldnn.is_available()
            or not hasattr(ops, "_reorder_linear_weight") or not hasattr(ops, "_linear_pointwise")):
        return {}
    try:
        return {m: ops._reorder_linear_weight(m.weight.detach(), rows) for m in linears}
    except RuntimeError:  # a build of torch whose oneDNN cannot
        return {}


@contextlib.contextmanager
def prepacked_linears(packed: dict[Any, Any]):
    """Inside, each Linear of ``packed`` multiplies with its prepacked weight (the same values)."""
    import torch

    def forward(weight, bias):
        return lambda x: torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    for module, weight in packed.items():
        module.forward = forward(weight, module.bias)
    try:
        yield
    finally:
        for module in packed:
            del module.forward  # the class's forward again
