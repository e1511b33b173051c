"""Load a subject model: GPT-2 from the hub, a local path, a model object, or "tiny".

``load_model`` returns a :class:`LoadedModel` shared per (model, device, dtype) for the
whole kernel. "tiny" is an offline GPT-2-architecture model with random weights from a
fixed seed and a real byte-level BPE tokenizer shipped in ``neuronwidget/data/``; it is for
tests and demos and is labelled as not being a real GPT-2 wherever its name shows.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch

TINY = "tiny"
TINY_NAME = "tiny (random weights — not a real GPT-2)"
HUB_IDS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
EOS_TOKEN = "<|endoftext|>"
_TINY_SEED = 1234

_cache: dict[tuple, LoadedModel] = {}
_lock = threading.Lock()


class ModelUnavailableError(ValueError):
    """The requested model's weights cannot be loaded here (e.g. offline with an empty cache)."""


@dataclass(eq=False)
class LoadedModel:
    """A subject model ready for activation capture. ``transformer`` is the GPT2Model part."""

    name: str  # what users see
    identity: str  # stable key for on-disk caches (same weights -> same identity)
    model: Any  # the object given or loaded (GPT2LMHeadModel or GPT2Model)
    transformer: Any  # GPT2Model: embeddings + blocks + ln_f, never the LM head
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    is_tiny: bool = False
    _token_strings: list[str] | None = field(default=None, repr=False)

    @property
    def n_layers(self) -> int:
        return int(self.transformer.config.n_layer)

    @property
    def n_neurons(self) -> int:
        cfg = self.transformer.config
        return int(cfg.n_inner or 4 * cfg.n_embd)

    @property
    def n_ctx(self) -> int:
        return int(self.transformer.config.n_positions)

    @property
    def eos_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return int(eos if eos is not None else self.transformer.config.eos_token_id)

    @property
    def short_name(self) -> str:
        """Name for error messages: "tiny" or the hub id / path."""
        return TINY if self.is_tiny else self.name

    def token_strings(self) -> list[str]:
        """Every vocabulary id as the text it stands for (" Paris"), as in OpenAI's records."""
        if self._token_strings is None:
            self._token_strings = _decode_vocab(self.tokenizer)
        return self._token_strings


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte <-> printable-character table (the standard construction).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _decode_vocab(tokenizer: Any) -> list[str]:
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    out = []
    for i, piece in enumerate(pieces):
        if piece is None:
            out.append("")
        elif all(c in byte_of for c in piece):
            out.append(bytes(byte_of[c] for c in piece).decode("utf-8", errors="replace"))
        else:  # special tokens and non-byte-level vocabularies
            out.append(tokenizer.decode([i]))
    return out


def default_device() -> torch.device:
    """cuda > mps > cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"dtype must be a torch dtype or one of 'float32', 'float16', 'bfloat16', got {dtype!r}")
        return resolved
    if isinstance(dtype, torch.dtype):
        return dtype
    raise ValueError(f"dtype must be a torch dtype or one of 'float32', 'float16', 'bfloat16', got {dtype!r}")


def _offline_help(name: str, err: Exception) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"cannot load the weights of {name!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n"
        f"They are not in the local Hugging Face cache and could not be downloaded. Fix it by one of:\n"
        f"  - pass a local folder holding the model: load_model('/path/to/{name}') or Engine('/path/to/{name}');\n"
        f"  - populate the cache on a machine with internet: `huggingface-cli download {name}` "
        f"(copy ~/.cache/huggingface over, or point HF_HOME at it), then set HF_HUB_OFFLINE=1 to stay offline;\n"
        f"  - or use the offline demo model: Engine('tiny') (random weights, not a real GPT-2)."
    )


def _load_tiny() -> tuple[Any, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = resources.files("neuronwidget") / "data" / "tiny_tokenizer.json"
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, unk_token=EOS_TOKEN)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=96, n_layer=4, n_head=4, n_inner=384,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(_TINY_SEED)
        model = GPT2LMHeadModel(config)
    finally:
        torch.random.set_rng_state(gen_state)
    return model, tok


def _load_pretrained(spec: str) -> tuple[Any, Any]:
    from transformers import AutoTokenizer, GPT2LMHeadModel

    try:
        tok = AutoTokenizer.from_pretrained(spec)
        model = GPT2LMHeadModel.from_pretrained(spec)
    except Exception as e:  # hub/network/missing-file errors all mean "not available here"
        raise _offline_help(spec, e) from None
    return model, tok


def _split(model: Any) -> Any:
    """The GPT2Model inside ``model`` (or ``model`` itself)."""
    inner = getattr(model, "transformer", model)
    if not (hasattr(inner, "h") and hasattr(inner, "wte") and hasattr(inner, "config")):
        raise ValueError(
            f"model must be a GPT-2 model (GPT2LMHeadModel or GPT2Model from transformers), "
            f"a hub id {HUB_IDS}, a local path, or {TINY!r}; got {type(model).__name__}"
        )
    return inner


def _weights_fingerprint(transformer: Any) -> str:
    h = hashlib.sha256(transformer.config.to_json_string(use_diff=False).encode())
    for p in (transformer.wte.weight, transformer.h[0].mlp.c_fc.weight, transformer.h[-1].mlp.c_fc.weight):
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes()[:1 << 20])
    return h.hexdigest()[:16]


def load_model(spec: Any = "gpt2", device: Any = None, dtype: Any = None, *, tokenizer: Any = None) -> LoadedModel:
    """Load (once per kernel) a GPT-2 model for activation capture.

    ``spec``: "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", a local folder, "tiny", or a
    GPT2LMHeadModel / GPT2Model object (then pass ``tokenizer=`` unless its tokenizer can be
    loaded from ``model.config.name_or_path``).
    ``device``: None = cuda > mps > cpu. ``dtype``: None = float32 on CPU, bfloat16/float16
    on accelerators. A model object is moved to that device/dtype in place and put in eval
    mode. Raises :class:`ModelUnavailableError` when weights cannot be loaded.
    """
    dev = torch.device(device) if device is not None else default_device()
    dt = _resolve_dtype(dtype, dev)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, str):
        if not spec.strip():
            raise ValueError(f"model must be one of {HUB_IDS}, a local path, or {TINY!r}; got an empty string")
        key: tuple = ("str", spec, str(dev), str(dt))
    elif isinstance(spec, LoadedModel):
        return spec
    else:
        _split(spec)
        key = ("obj", id(spec), str(dev), str(dt))

    with _lock:
        cached = _cache.get(key)
        if cached is not None and (key[0] == "str" or cached.model is spec):
            return cached
        lm = _build(spec, dev, dt, tokenizer)
        _cache[key] = lm
        return lm


def _build(spec: Any, dev: torch.device, dt: torch.dtype, tokenizer: Any) -> LoadedModel:
    is_tiny = spec == TINY
    if is_tiny:
        model, tok = _load_tiny()
        name = TINY_NAME
    elif isinstance(spec, str):
        if spec not in HUB_IDS and not os.path.isdir(os.path.expanduser(spec)) and not spec.count("/") == 1:
            raise ValueError(
                f"model must be one of {', '.join(HUB_IDS)}, a local folder, a hub id 'owner/name', "
                f"{TINY!r}, or a GPT-2 model object; got {spec!r}"
            )
        model, tok = _load_pretrained(os.path.expanduser(spec) if os.path.isdir(os.path.expanduser(spec)) else spec)
        name = spec
    else:
        model = spec
        tok = tokenizer if tokenizer is not None else _tokenizer_for(spec)
        name = getattr(spec.config, "name_or_path", "") or f"custom GPT-2 ({type(spec).__name__})"
    if tokenizer is not None:
        tok = tokenizer
    transformer = _split(model)
    model.to(device=dev, dtype=dt)
    model.eval()
    identity = f"{TINY}-{_TINY_SEED}" if is_tiny else f"{name}-{_weights_fingerprint(transformer)}"
    return LoadedModel(name=name, identity=identity, model=model, transformer=transformer, tokenizer=tok,
                       device=dev, dtype=dt, is_tiny=is_tiny)


def _tokenizer_for(model: Any) -> Any:
    from transformers import AutoTokenizer

    source = getattr(model.config, "name_or_path", "") or "gpt2"
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as e:
        raise ModelUnavailableError(
            f"cannot load a tokenizer for this model object (tried {source!r}: {type(e).__name__}). "
            f"Pass one: load_model(model, tokenizer=tok) or Engine(model, tokenizer=tok)."
        ) from None


def gpt2_available(name: str = "gpt2") -> bool:
    """True if ``name``'s weights load here without a download (local cache or folder)."""
    if name == TINY:
        return True
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return os.path.exists(os.path.join(path, "config.json"))
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    cfg = try_to_load_from_cache(name, "config.json")
    if not isinstance(cfg, str):
        return False
    return any(isinstance(try_to_load_from_cache(name, f), str) for f in ("model.safetensors", "pytorch_model.bin"))


TINY_NOTE = (
    "GPT-2's weights are not in the local Hugging Face cache (nothing is downloaded behind "
    "your back; this machine may be offline), so this uses the offline 'tiny' model: GPT-2's "
    "architecture with RANDOM weights (fixed seed) and a small bundled tokenizer. Its neurons "
    "are not GPT-2's neurons: this shows how the method and the widget work, not what GPT-2 has "
    "learned. With GPT-2 downloaded once (e.g. transformers.GPT2LMHeadModel.from_pretrained('gpt2')), "
    "GPT-2 is used."
)


def demo_model() -> tuple[str, str]:
    """The model for demos and notebooks, and a sentence saying which and why: GPT-2 small
    when its weights are already on disk, else the offline tiny model."""
    if gpt2_available("gpt2"):
        return "gpt2", "Model: GPT-2 small ('gpt2'): its weights are in the local Hugging Face cache."
    return TINY, "Model: 'tiny'. " + TINY_NOTE


__all__ = ["TINY", "TINY_NAME", "TINY_NOTE", "demo_model", "HUB_IDS", "LoadedModel", "ModelUnavailableError", "load_model",
           "gpt2_available", "default_device"]
