"""A fingerprint of exactly the weights an index was built from.

SHA-1 over the raw bytes of every parameter and buffer (with its name, dtype and shape), the
config (minus fields that only say where or how it was loaded) and the vocabulary's token
bytes: any change to any tensor changes it. SHA-1 runs on the CPU's SHA instructions at
about 1.8 GB/s here (0.27 s for GPT-2 small's 124M float32 parameters); see
``benchmarks/subject.py``. It is a cache key, not a security boundary.

Recomputing is skipped while no tensor was replaced or modified in place since the last
time (PyTorch's per-tensor version counters). Edits made through ``param.data`` bypass those
counters: call :meth:`LoadedModel.refresh_identity` after such an edit.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

# config fields that say where/how the weights were loaded, not what they compute
_VOLATILE = {"_name_or_path", "name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures",
             "quantization_config", "_commit_hash", "_attn_implementation_autoset", "use_cache"}


def tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer once (tied weights once), sorted by name."""
    seen: dict[str, torch.Tensor] = {}
    for name, t in module.named_parameters():
        seen[name] = t
    for name, t in module.named_buffers():
        seen["buffer:" + name] = t
    return sorted(seen.items())


def snapshot(module: torch.nn.Module) -> tuple:
    """Cheap state of every tensor (storage address, in-place version, shape, dtype)."""
    return tuple((name, t.data_ptr(), t._version, tuple(t.shape), t.dtype) for name, t in tensors(module))


def config_blob(config: Any) -> bytes:
    d = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE}
    return json.dumps(d, sort_keys=True, default=str).encode("utf-8")


def _tensor_digest(item: tuple[str, torch.Tensor]) -> bytes:
    name, t = item
    t = t.detach()
    h = hashlib.sha1(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
    if t.numel():
        if t.device.type != "cpu":
            t = t.cpu()
        h.update(memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()))  # hashlib releases the GIL
    return h.digest()


def weights_fingerprint(module: torch.nn.Module, config: Any = None, token_bytes: list[bytes] | None = None,
                        length: int = 20) -> str:
    """Hex digest over all parameters and buffers of ``module`` (+ config and vocabulary).

    Each tensor is hashed on its own (in a few threads: hashing runs outside the GIL), then
    the per-tensor digests, in name order, are hashed together."""
    h = hashlib.sha1()
    if config is not None:
        h.update(config_blob(config))
    if token_bytes is not None:
        for b in token_bytes:
            h.update(len(b).to_bytes(4, "little"))
            h.update(b)
    items = tensors(module)
    workers = min(4, os.cpu_count() or 1, len(items))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            digests = list(pool.map(_tensor_digest, items))
    else:
        digests = [_tensor_digest(it) for it in items]
    for d in digests:
        h.update(d)
    return h.hexdigest()[:length]


__all__ = ["weights_fingerprint", "snapshot", "tensors", "config_blob"]
