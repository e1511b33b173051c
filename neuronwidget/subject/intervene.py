"""Interventions on MLP neurons, through the same seam as capture: a hook at the neuron's site
(GPT-2: output of ``mlp.act``; gated MLPs: forward pre-hook on ``mlp.down_proj``) that returns
the activations with some neurons' values replaced.

* :func:`edited_logits`: one text, logits with and without the edits, as ONE batch: the clean
  rows and the edited rows side by side (a 64-token forward reads every weight once either
  way, so the second row is nearly free on a CPU and free on a GPU). Blocks below the first
  edited layer cannot differ between the two: they run once, on the clean rows alone, and in
  the batched pass they replay that output instead of computing.
* :func:`ablate_at`: the logits at one position with each of several neurons zeroed there,
  one batch row per neuron, reading the clean prefix from the KV cache (positions before the
  edit cannot change).
* :func:`greedy`: greedy continuation with the edits applied at every text position, prompt
  and generated tokens alike, with the KV cache.
* :func:`attribution`: activation × gradient of one next-token log-probability for every
  neuron of every layer, one forward and one backward pass.

Positions are TEXT positions (the BOS a model's tokenizer prepends is never edited and never
reported). Everything added to the model (hooks, replayed forwards) is removed in ``finally``:
after an error the model computes exactly what it did before.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .capture import exclusive
from .loading import LoadedModel

MODES = ("zero", "constant", "scale")


@dataclass(frozen=True)
class Edit:
    """Replace neuron ``(layer, neuron)``'s value: ``"zero"``; ``"constant"`` (= ``value``);
    ``"scale"`` (= ``value`` × its own value). ``positions``: None = every text position, a
    sequence of text positions, or a bool tensor [batch or 1, text length] (per-row edits)."""

    layer: int
    neuron: int
    mode: str = "zero"
    value: float = 0.0
    positions: Any = None


def check_edits(lm: LoadedModel, edits: Iterable[Edit], n_text: int | None) -> list[Edit]:
    """Validated edits (ValueError naming what is allowed); position lists become bool masks."""
    from ..records import check_layer_neuron

    out = []
    for e in edits:
        if not isinstance(e, Edit):
            raise ValueError(f"edits must be Edit objects, got {type(e).__name__}")
        layer, neuron = check_layer_neuron(e.layer, e.neuron, lm.n_layers, lm.n_neurons, lm.short_name)
        if e.mode not in MODES:
            raise ValueError(f"edit mode must be one of {', '.join(MODES)}; got {e.mode!r}")
        value = _finite(e.value, "value")
        mask = e.positions
        if mask is not None and not isinstance(mask, torch.Tensor):
            mask = positions_mask(mask, n_text)
        out.append(Edit(layer, neuron, e.mode, value, mask))
    if not out:
        raise ValueError("give at least one neuron to change")
    return out


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return v


def positions_mask(positions: Any, n_text: int | None) -> torch.Tensor:
    """A bool mask [1, n_text] from a sequence of text positions (negative ones count from the end)."""
    if n_text is None:
        raise ValueError("positions can only be chosen for a text of known length")
    if isinstance(positions, (str, bytes)) or not hasattr(positions, "__iter__"):
        raise ValueError(f"positions must be None (every token) or a list of token positions in 0..{n_text - 1}, "
                         f"got {positions!r}")
    positions = list(positions)
    if not positions:
        raise ValueError(f"positions is empty; give None (every token) or token positions in 0..{n_text - 1}")
    mask = torch.zeros(1, n_text, dtype=torch.bool)
    for p in positions:
        if isinstance(p, bool) or not hasattr(p, "__index__") or isinstance(p, float):
            raise ValueError(f"positions must be integers in 0..{n_text - 1}, got {p!r}")
        p = int(p.__index__())
        if not -n_text <= p < n_text:
            raise ValueError(f"position {p} is out of range: the text has {n_text} tokens, so positions must be "
                             f"in 0..{n_text - 1} (or -{n_text}..-1 from the end)")
        mask[0, p % n_text] = True
    return mask


class _Editor:
    """The hooks of one set of edits. ``offset``: absolute sequence position (BOS included) of
    the first position the next forward call feeds (0, or the cache length when generating)."""

    def __init__(self, lm: LoadedModel, edits: list[Edit]):
        self.lm, self.skip, self.offset = lm, len(lm.prefix_ids), 0
        self.by_layer: dict[int, list[Edit]] = {}
        for e in edits:
            self.by_layer.setdefault(e.layer, []).append(e)
        self.seen: dict[tuple[int, int], torch.Tensor] = {}  # (layer, neuron) -> value after the edit, [B, T]
        self.before: dict[tuple[int, int], torch.Tensor] = {}  # (layer, neuron) -> value before, rows < split
        self.keep = False
        self.split = 0  # with keep: rows < split are the clean rows, rows >= split the edited ones

    def hook(self, layer: int):
        edits = self.by_layer[layer]

        def edit(acts: torch.Tensor) -> torch.Tensor:
            if self.keep:
                for e in edits:
                    self.before[(layer, e.neuron)] = acts[: self.split, self.skip:, e.neuron].float().cpu()
            out = acts.clone()
            b, s = out.shape[0], out.shape[1]
            text_pos = torch.arange(s, device=out.device) + (self.offset - self.skip)
            in_text = text_pos >= 0
            for e in edits:
                col = out[..., e.neuron]
                if e.mode == "zero":
                    new = torch.zeros_like(col)
                elif e.mode == "constant":
                    new = torch.full_like(col, e.value)
                else:
                    new = col * e.value
                where = in_text.expand(b, s)
                if e.positions is not None:
                    m = e.positions.to(out.device)
                    idx = text_pos.clamp(min=0)
                    inside = idx < m.shape[1]
                    picked = m[:, idx.clamp(max=m.shape[1] - 1)] & inside
                    where = where & picked.expand(b, s)
                out[..., e.neuron] = torch.where(where, new, col)
            if self.keep:
                for e in edits:
                    self.seen[(layer, e.neuron)] = out[self.split:, self.skip:, e.neuron].float().cpu()
            return out

        return edit

    def install(self) -> list[Any]:
        handles = []
        try:
            for layer in sorted(self.by_layer):
                handles.append(self.lm.family.hook(self.lm.blocks[layer], self.hook(layer), fast=False))
        except BaseException:
            _remove(handles)
            raise
        return handles


def _remove(handles: list[Any]) -> None:
    for h in reversed(handles):
        h.remove()


def _with_prefix(lm: LoadedModel, input_ids: torch.Tensor) -> torch.Tensor:
    ids = input_ids.to(lm.device)
    if ids.dim() == 1:
        ids = ids[None]
    if lm.prefix_ids:
        prefix = torch.tensor(lm.prefix_ids, dtype=ids.dtype, device=ids.device)
        ids = torch.cat([prefix.expand(ids.shape[0], -1), ids], dim=1)
    return ids


def _lm_head_model(lm: LoadedModel) -> Any:
    if lm.model is lm.base:
        raise ValueError(f"{lm.short_name} has no LM head (it is a bare decoder stack); interventions need "
                         f"next-token logits: load the ...ForCausalLM / ...LMHeadModel")
    return lm.model


class _Stop(Exception):
    """Raised after the last block a pass needs, to end it early."""


def _doubled(output: Any, times: int) -> Any:
    """A block's output with its hidden states repeated ``times`` along the batch (a tensor, or a
    tuple whose first item is the hidden states, as older transformers return)."""
    if isinstance(output, torch.Tensor):
        return output.repeat(times, *([1] * (output.dim() - 1)))
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (_doubled(output[0], times), *output[1:])
    raise TypeError(f"cannot replay a block output of type {type(output).__name__}")


class _Replay:
    """Blocks ``0..first-1`` return ``output`` (what block ``first-1`` gave on the clean rows,
    repeated for the batch) instead of computing: their input cannot differ between clean and
    edited rows. Restores any instance-level ``forward`` (e.g. accelerate's) it replaced."""

    def __init__(self, blocks: Any, first: int, output: Any):
        self.blocks, self.first, self.output = blocks, first, output
        self.saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> _Replay:
        output = self.output
        try:
            for i in range(self.first):
                block = self.blocks[i]
                self.saved.append((block, block.__dict__.get("forward")))
                block.forward = lambda *_a, **_k: output
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: Any) -> None:
        for block, own in reversed(self.saved):
            if "forward" in block.__dict__:
                del block.__dict__["forward"]
            if own is not None:
                block.__dict__["forward"] = own
        self.saved = []


@dataclass
class EditedPass:
    """Logits (float32 [batch, text length, vocab]) with and without the edits, and each edited
    neuron's value (float32 [batch, text length]) before and after."""

    clean_logits: torch.Tensor
    edited_logits: torch.Tensor
    clean_values: dict[tuple[int, int], torch.Tensor]
    edited_values: dict[tuple[int, int], torch.Tensor]


def _below(lm: LoadedModel, ids: torch.Tensor, first: int) -> Any:
    """The output of block ``first - 1`` on ``ids``; blocks from ``first`` up never run."""
    got: dict[str, Any] = {}

    def stop(_m: Any, _a: Any, out: Any) -> None:
        got["out"] = out
        raise _Stop

    handle = lm.blocks[first - 1].register_forward_hook(stop)
    try:
        with torch.inference_mode():
            lm.base(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return got["out"]


@exclusive
def edited_logits(lm: LoadedModel, input_ids: torch.Tensor, edits: Sequence[Edit], *, share: bool = True) -> EditedPass:
    """One forward pass of ``input_ids`` [batch, seq] (text tokens; BOS added as the model's
    tokenizer does) without and with ``edits``, as one batch of 2 × batch rows. ``share=False``
    computes the blocks below the first edited layer for every row too (for checking the replay)."""
    model = _lm_head_model(lm)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    b, n_text = int(input_ids.shape[0]), int(input_ids.shape[-1])
    edits = check_edits(lm, edits, n_text)
    doubled = []
    for e in edits:  # the edits touch the second half of the batch only
        mask = torch.zeros(2 * b, n_text, dtype=torch.bool)
        mask[b:] = True if e.positions is None else e.positions
        doubled.append(Edit(e.layer, e.neuron, e.mode, e.value, mask))
    ids = _with_prefix(lm, input_ids)
    skip = len(lm.prefix_ids)
    first = min(e.layer for e in edits) if share else 0
    below = _below(lm, ids, first) if first > 0 else None
    editor = _Editor(lm, doubled)
    editor.keep, editor.split = True, b
    handles = editor.install()
    try:
        with torch.inference_mode():
            both = ids.repeat(2, 1)
            if below is not None:
                with _Replay(lm.blocks, first, _doubled(below, 2)):
                    logits = model(input_ids=both, use_cache=False).logits
            else:
                logits = model(input_ids=both, use_cache=False).logits
    finally:
        _remove(handles)
    logits = logits[:, skip:].float()
    clean, edited = logits[:b], logits[b:].clone()
    # causal attention: positions before the first edited one cannot change; rows of one batch can
    # still differ in the last bits (batched attention kernels), so they get the clean rows' values
    start = min(0 if e.positions is None else int(e.positions.any(0).nonzero()[0, 0]) for e in edits)
    edited[:, :start] = clean[:, :start]
    return EditedPass(clean, edited, editor.before, editor.seen)


def _forward_kwargs(model: Any) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _cache_io(model: Any) -> tuple[str, Any]:
    """(name of the forward argument that takes a KV cache, function reading it from an output):
    transformers 5 calls it ``cache``, earlier versions ``past_key_values``."""
    name = "cache" if "cache" in _forward_kwargs(model) else "past_key_values"

    def read(out: Any) -> Any:
        got = getattr(out, "cache", None)
        return got if got is not None else getattr(out, "past_key_values", None)

    return name, read


@exclusive
def ablate_at(lm: LoadedModel, input_ids: Sequence[int], position: int, neurons: Sequence[tuple[int, int]],
              mode: str = "zero", value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at text ``position`` (float32 [vocab]) clean, and with each neuron of ``neurons``
    edited at that position alone (float32 [len(neurons), vocab]): one batch row per neuron,
    the text before ``position`` read once into the KV cache and shared by every row."""
    model = _lm_head_model(lm)
    ids = list(input_ids)[: position + 1]
    k = len(neurons)
    edits = []
    for r, (lay, n) in enumerate(neurons):
        mask = torch.zeros(k + 1, len(ids), dtype=torch.bool)  # row 0 stays clean
        mask[r + 1, position] = True
        edits.append(Edit(lay, n, mode, value, mask))
    edits = check_edits(lm, edits, len(ids))
    full = _with_prefix(lm, torch.tensor([ids]))
    start = full.shape[1] - 1  # absolute position of the edited token
    editor = _Editor(lm, edits)
    cache_arg, read_cache = _cache_io(model)
    past = None
    with torch.inference_mode():
        if start > 0:
            past = read_cache(model(input_ids=full[:, :start], use_cache=True))
            if not hasattr(past, "batch_repeat_interleave"):
                past = None
        handles = editor.install()
        try:
            if past is not None:
                past.batch_repeat_interleave(k + 1)
                editor.offset = start
                logits = model(input_ids=full[:, start:].expand(k + 1, -1), use_cache=True, **{cache_arg: past}).logits
            else:  # no cache to share: every row runs the whole prefix
                logits = model(input_ids=full.expand(k + 1, -1), use_cache=False).logits
        finally:
            _remove(handles)
    last = logits[:, -1].float()
    return last[0], last[1:]


@exclusive
def greedy(lm: LoadedModel, prompt_ids: Sequence[int], edits: Sequence[Edit], max_new_tokens: int,
           *, stop_at_eos: bool = True) -> list[int]:
    """Greedy continuation of ``prompt_ids`` (text tokens) with ``edits`` applied at every text
    position (their ``positions`` must be None), using the KV cache; stops after
    ``max_new_tokens``, at the end-of-text token (kept) or at the model's context length."""
    model = _lm_head_model(lm)
    edits = check_edits(lm, edits, None) if edits else []
    if any(e.positions is not None for e in edits):
        raise ValueError("steering edits apply at every position; positions must be None")
    ids = _with_prefix(lm, torch.tensor([list(prompt_ids)]))
    eos = lm.eos_token_id if stop_at_eos else None
    room = lm.n_ctx - ids.shape[1]
    keep_one = {"logits_to_keep": 1} if "logits_to_keep" in _forward_kwargs(model) else {}
    editor = _Editor(lm, edits)
    cache_arg, read_cache = _cache_io(model)
    new: list[int] = []
    handles = editor.install() if edits else []
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=True, **keep_one)
            length = ids.shape[1]
            for step in range(min(max_new_tokens, room)):
                nxt = int(out.logits[0, -1].argmax())
                new.append(nxt)
                if nxt == eos or step == min(max_new_tokens, room) - 1:
                    break
                editor.offset = length
                out = model(input_ids=torch.tensor([[nxt]], device=ids.device), use_cache=True,
                            **{cache_arg: read_cache(out)}, **keep_one)
                length += 1
    finally:
        _remove(handles)
    return new


@exclusive
def attribution(lm: LoadedModel, input_ids: Sequence[int], position: int, target: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """(activations, gradients) float32 [n_layers, n_neurons] at text ``position``, the target
    token and its clean log-probability. The gradient is of log p(target) at ``position``
    (target: the next token of ``input_ids`` when there is one, else the model's top
    prediction) with respect to each neuron's value at that position. The model runs on
    tokens 0..position only; parameters get no gradients."""
    model = _lm_head_model(lm)
    ids = list(input_ids)
    if target is None and position + 1 < len(ids):
        target = int(ids[position + 1])
    full = _with_prefix(lm, torch.tensor([ids[: position + 1]]))
    at = full.shape[1] - 1
    acts: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def fn(a: torch.Tensor) -> None:
            acts[layer] = a
        return fn

    embed = lm.base.get_input_embeddings()
    keep_one = {"logits_to_keep": 1} if "logits_to_keep" in _forward_kwargs(model) else {}
    handles = [embed.register_forward_hook(lambda _m, _a, out: out.detach().requires_grad_())]
    try:
        for layer in range(lm.n_layers):
            handles.append(lm.family.hook(lm.blocks[layer], keep(layer)))
        with torch.enable_grad():
            logits = model(input_ids=full, use_cache=False, **keep_one).logits[0, -1].float()
            logp = torch.log_softmax(logits, -1)
            if target is None:
                target = int(logp.argmax())
            layers = list(range(lm.n_layers))
            grads = torch.autograd.grad(logp[target], [acts[i] for i in layers])
    finally:
        _remove(handles)
    a = torch.stack([acts[i][0, at].detach().float() for i in layers]).cpu()
    g = torch.stack([grads[i][0, at].float() for i in layers]).cpu()
    return a, g, int(target), float(logp[target].detach())


__all__ = ["Edit", "MODES", "EditedPass", "check_edits", "positions_mask", "edited_logits", "ablate_at", "greedy",
           "attribution"]
