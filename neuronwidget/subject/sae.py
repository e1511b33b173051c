"""Sparse autoencoders and transcoders: unit spaces other than the MLP neurons.

An :class:`SAE` reads one hook site of one block (see :mod:`.sites`) and encodes each token's
vector there into ``d_sae`` latents; a transcoder reads the MLP input and its decoder predicts
the MLP output. Encoders, all on float32:

* ``relu`` (SAELens "standard"): ``relu((x - b_dec) W_enc + b_enc)``;
* ``topk``: the ``k`` largest pre-activations per token (ReLU'd), the rest 0;
* ``jumprelu`` (Gemma Scope, SAELens "jumprelu"): ``pre * (pre > threshold)``;
* ``gated`` (SAELens "gated"): ``[(x - b_dec) W_enc + b_gate > 0] * relu(((x - b_dec) W_enc) * exp(r_mag) + b_mag)``.

Input normalisation (SAELens ``normalize_activations``), applied before all of the above and
undone on the reconstruction (not on a transcoder's, whose output lives elsewhere):

* ``layer_norm`` (also OpenAI's TopK SAEs): ``(x - mean) / (std + 1e-5)``; undone as ``* std + mean``;
* ``constant_norm_rescale``: ``x * sqrt(d_in) / |x|``; undone by dividing by that factor.

A skip transcoder adds ``x W_skip^T`` (the raw MLP input) to its reconstruction.

Formats are read here, without ``sae-lens`` (README "Beyond neurons" says why):

* a SAELens folder: ``cfg.json`` + ``sae_weights.safetensors`` (W_enc [d_in, d_sae], b_enc,
  W_dec [d_sae, d_in], b_dec; ``threshold`` for JumpReLU; ``b_gate``, ``r_mag``, ``b_mag`` for
  gated; transcoders: ``d_out`` / ``hook_name_out``);
* OpenAI's GPT-2-small sparse autoencoders: a ``torch.save``d state dict (``encoder.weight``
  [d_sae, d_in], ``decoder.weight`` [d_in, d_sae], ``pre_bias``, ``latent_bias``,
  ``activation`` "TopK" with ``activation_state_dict`` {"k": ...}; a TopK one normalises its
  input by layer norm without affine and undoes it when decoding);
* Gemma Scope ``params.npz`` (JumpReLU: W_enc, W_dec, b_enc, b_dec, threshold).

A local path is read as it is; ``hf:OWNER/REPO[/SUBFOLDER]`` is fetched with ``huggingface_hub``
(the Hugging Face cache first; offline with an empty cache: :class:`SAEUnavailableError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .sites import SITE_WORDS, SITES, check_site, site_width

ACTIVATIONS = ("relu", "topk", "jumprelu", "gated")
NORMALIZATIONS = ("none", "layer_norm", "constant_norm_rescale")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SAEFormatError(ValueError):
    """An SAE file that cannot be read: a missing key, a wrong shape, a non-finite weight."""


class SAEUnavailableError(ValueError):
    """An SAE named by a hub id that cannot be fetched here (offline with an empty cache)."""


@dataclass(eq=False)
class SAE:
    """One sparse autoencoder (or transcoder) at ``layer`` / ``site``: float32 CPU tensors.

    ``writes`` is the site its decoder reconstructs: ``site`` for an SAE, ``mlp_out`` for a
    transcoder (which reads ``mlp_in``)."""

    name: str
    layer: int
    site: str
    activation: str
    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_out]
    b_dec: torch.Tensor  # [d_out]
    k: int | None = None
    threshold: torch.Tensor | None = None
    b_gate: torch.Tensor | None = None
    r_mag: torch.Tensor | None = None
    b_mag: torch.Tensor | None = None
    b_in: torch.Tensor | None = None  # subtracted from the input before encoding (SAELens apply_b_dec_to_input, OpenAI pre_bias)
    normalize: str = "none"  # one of NORMALIZATIONS (see the module doc); OpenAI TopK: "layer_norm"
    transcoder: bool = False
    W_skip: torch.Tensor | None = None  # [d_out, d_in]: a skip transcoder's linear path from input to output
    source: str = ""
    format: str = ""
    model_name: str | None = None  # the model the file says it was trained on, if it says
    training: dict[str, Any] | None = None  # the training report of an SAE trained here (train_sae)
    _identity: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_site(self.site)
        if self.normalize not in NORMALIZATIONS:
            raise SAEFormatError(f"{self.name}: normalize must be one of {', '.join(NORMALIZATIONS)}; got {self.normalize!r}")
        if self.W_skip is not None and not self.transcoder:
            raise SAEFormatError(f"{self.name}: only a transcoder has a skip path (W_skip)")
        if self.activation not in ACTIVATIONS:
            raise SAEFormatError(f"{self.name}: activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}")
        if not isinstance(self.layer, int) or isinstance(self.layer, bool) or self.layer < 0:
            raise ValueError(f"{self.name}: layer must be an integer >= 0, got {self.layer!r}")
        if self.transcoder and self.site != "mlp_in":
            raise SAEFormatError(f"{self.name}: a transcoder reads the MLP input (site 'mlp_in'), not {self.site!r}")
        d_in, d_sae = self.W_enc.shape if self.W_enc.dim() == 2 else (None, None)
        if d_in is None:
            raise SAEFormatError(f"{self.name}: W_enc must be 2-D [d_in, d_sae], got shape {tuple(self.W_enc.shape)}")
        d_out = self.W_dec.shape[1] if self.W_dec.dim() == 2 else None
        expect = {"b_enc": (d_sae,), "W_dec": (d_sae, d_out if d_out is not None else -1), "b_dec": (d_out,),
                  "threshold": (d_sae,), "b_gate": (d_sae,), "r_mag": (d_sae,), "b_mag": (d_sae,), "b_in": (d_in,),
                  "W_skip": (d_out, d_in)}
        for key, shape in expect.items():
            t = getattr(self, key)
            if t is None:
                continue
            if tuple(t.shape) != shape:
                raise SAEFormatError(f"{self.name}: {key} has shape {tuple(t.shape)}, expected {shape} "
                                     f"(W_enc is [d_in={d_in}, d_sae={d_sae}])")
            if not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).sum())
                raise SAEFormatError(f"{self.name}: {key} holds {bad} non-finite value(s) (NaN or inf)")
        if not torch.isfinite(self.W_enc).all():
            raise SAEFormatError(f"{self.name}: W_enc holds {int((~torch.isfinite(self.W_enc)).sum())} non-finite value(s) (NaN or inf)")
        if not self.transcoder and d_out != d_in:
            raise SAEFormatError(f"{self.name}: the decoder writes {d_out} numbers but the encoder reads {d_in}; only a "
                                 "transcoder maps one width to another")
        if self.activation == "topk" and (not isinstance(self.k, int) or not 1 <= self.k <= d_sae):
            raise SAEFormatError(f"{self.name}: a TopK SAE needs k in 1..{d_sae}, got {self.k!r}")
        if self.activation == "jumprelu" and self.threshold is None:
            raise SAEFormatError(f"{self.name}: a JumpReLU SAE needs 'threshold' [{d_sae}]")
        if self.activation == "gated" and any(getattr(self, k) is None for k in ("b_gate", "r_mag", "b_mag")):
            raise SAEFormatError(f"{self.name}: a gated SAE needs b_gate, r_mag and b_mag [{d_sae}]")
        if not NAME_RE.match(self.name):
            raise ValueError(f"SAE name must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit); "
                             f"got {self.name!r}")

    # -- facts ---------------------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[1])

    @property
    def writes(self) -> str:
        return "mlp_out" if self.transcoder else self.site

    @property
    def kind(self) -> str:
        return "transcoder" if self.transcoder else "SAE"

    @property
    def units(self) -> str:
        """The unit-space name used across the API: ``"sae:NAME"``."""
        return f"sae:{self.name}"

    def describe(self) -> str:
        act = f"TopK k={self.k}" if self.activation == "topk" else {"relu": "ReLU", "jumprelu": "JumpReLU",
                                                                    "gated": "gated"}[self.activation]
        reads = SITE_WORDS[self.site].format(L=self.layer)
        what = f"{self.kind} {self.name!r}: {self.d_sae:,} {act} latents reading {reads}"
        if self.normalize != "none":
            what += f" ({self.normalize.replace('_', ' ')})"
        if self.transcoder:
            what += f", predicting {SITE_WORDS['mlp_out'].format(L=self.layer)}"
            if self.W_skip is not None:
                what += " with a skip path"
        return what

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    @property
    def identity(self) -> str:
        """SHA-1 over every weight and setting: an index of these latents is keyed by it."""
        if self._identity is None:
            h = hashlib.sha1()
            h.update(json.dumps([self.layer, self.site, self.activation, self.k, self.normalize, self.transcoder]).encode())
            for key in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_gate", "r_mag", "b_mag", "b_in", "W_skip"):
                t = getattr(self, key)
                h.update(key.encode())
                if t is not None:
                    h.update(t.detach().contiguous().numpy().tobytes())
            self._identity = h.hexdigest()[:16]
        return self._identity

    # -- the maths -----------------------------------------------------------------------------
    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.normalize == "layer_norm":
            x = x - x.mean(-1, keepdim=True)
            x = x / (x.std(-1, keepdim=True) + 1e-5)
        elif self.normalize == "constant_norm_rescale":
            x = x / self._norm_scale(x)
        if self.b_in is not None:
            x = x - self.b_in.to(x.device)
        return x

    def _norm_scale(self, x: torch.Tensor) -> torch.Tensor | float:
        """The input normalisation's scale for input ``x`` [..., d_in] (1 when there is none)."""
        x = x.float()
        if self.normalize == "layer_norm":
            return (x - x.mean(-1, keepdim=True)).std(-1, keepdim=True)
        if self.normalize == "constant_norm_rescale":
            return x.norm(dim=-1, keepdim=True) / self.d_in ** 0.5
        return 1.0

    def output_scale(self, x: torch.Tensor) -> torch.Tensor | float:
        """What multiplies a decoder-space vector to bring it to the scale of the site's values,
        given the input ``x`` [..., d_in]: the undoing of the input normalisation (1 when there is
        none, and for a transcoder, whose output is not normalised)."""
        return 1.0 if self.transcoder else self._norm_scale(x)

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prep(x)
        return x @ self.W_enc.to(x.device) + self.b_enc.to(x.device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """float32 latents [..., d_sae] of site values ``x`` [..., d_in]."""
        if x.shape[-1] != self.d_in:
            raise ValueError(f"{self.name} reads {self.d_in} numbers per token, got {x.shape[-1]}")
        xp = self._prep(x)
        dev = xp.device
        if self.activation == "gated":
            pre = xp @ self.W_enc.to(dev)
            gate = (pre + self.b_gate.to(dev)) > 0
            mag = torch.relu(pre * torch.exp(self.r_mag.to(dev)) + self.b_mag.to(dev))
            return mag * gate
        pre = xp @ self.W_enc.to(dev) + self.b_enc.to(dev)
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold.to(dev))
        top = torch.topk(pre, self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The reconstruction [..., d_out] from latents ``f``; an SAE that normalises its input,
        and a skip transcoder, need the input ``x`` too."""
        out = f.float() @ self.W_dec.to(f.device) + self.b_dec.to(f.device)
        needs_x = self.W_skip is not None if self.transcoder else self.normalize != "none"
        if not needs_x:
            return out
        if x is None:
            why = "has a skip path" if self.transcoder else f"normalises its input ({self.normalize})"
            raise ValueError(f"{self.name} {why}: decode needs the input x too")
        x = x.float()
        if self.transcoder:
            return out + x @ self.W_skip.to(x.device).T
        out = out * self.output_scale(x)
        return out + x.mean(-1, keepdim=True) if self.normalize == "layer_norm" else out

    def direction(self, latent: int) -> torch.Tensor:
        """Latent ``latent``'s decoder direction [d_out] (what one unit of it adds at ``writes``;
        for a normalising SAE, in the normalised space)."""
        return self.W_dec[self.check_latent(latent)]

    def check_latent(self, latent: Any) -> int:
        if isinstance(latent, bool) or not isinstance(latent, (int, np.integer)) or not 0 <= int(latent) < self.d_sae:
            raise ValueError(f"latent must be an integer in 0..{self.d_sae - 1} for {self.units}, got {latent!r}")
        return int(latent)

    # -- fit to a model ------------------------------------------------------------------------
    def check_model(self, lm: Any) -> SAE:
        """A ValueError naming both sides when this SAE does not fit ``lm`` (a LoadedModel)."""
        n_layers = int(lm.n_layers)
        if self.layer >= n_layers:
            raise ValueError(f"{self.units} reads block {self.layer} ({self.site}), but {lm.short_name} has blocks "
                             f"0..{n_layers - 1}")
        width = site_width(lm, self.site)
        if width != self.d_in:
            raise ValueError(f"{self.units} has d_in={self.d_in} at {self.site} of block {self.layer}, but "
                             f"{lm.short_name} has {width} numbers per token there")
        if self.transcoder:
            out = site_width(lm, "mlp_out")
            if out != self.d_out:
                raise ValueError(f"transcoder {self.units} writes d_out={self.d_out}, but the MLP output of "
                                 f"{lm.short_name} is {out} wide")
        return self


# -- reading the formats -------------------------------------------------------------------------

_TL_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_mlp_out|hook_attn_out|"
                      r"hook_mlp_in|ln2\.hook_normalized|mlp\.hook_post|mlp\.hook_in)$")
_TL_SITE = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
            "hook_mlp_out": "mlp_out", "hook_attn_out": "attn_out", "hook_mlp_in": "mlp_in", "ln2.hook_normalized": "mlp_in",
            "mlp.hook_in": "mlp_in", "mlp.hook_post": "mlp_post"}
_HF_HOOK = re.compile(r"^(?:model\.layers|transformer\.h|model\.model\.layers)\.(\d+)(?:\.(mlp|self_attn|attn))?$")


def parse_hook(hook: Any) -> tuple[int, str]:
    """(layer, site) of a TransformerLens hook name (``blocks.8.hook_resid_pre``) or a
    transformers module path (``model.layers.8`` = its output, ``.mlp`` / ``.self_attn``)."""
    if isinstance(hook, str):
        m = _TL_HOOK.match(hook)
        if m:
            return int(m.group(1)), _TL_SITE[m.group(2)]
        m = _HF_HOOK.match(hook)
        if m:
            sub = m.group(2)
            return int(m.group(1)), {None: "resid_post", "mlp": "mlp_out", "self_attn": "attn_out", "attn": "attn_out"}[sub]
    raise ValueError(f"hook site {hook!r} is not one neuronwidget can hook; supported: blocks.L.hook_resid_pre, "
                     "hook_resid_mid, hook_resid_post, hook_attn_out, hook_mlp_out, ln2.hook_normalized / hook_mlp_in "
                     "(transcoders), mlp.hook_post (TransformerLens names), or model.layers.L[.mlp|.self_attn]")


def _t(arrays: dict[str, Any], key: str, name: str, required: bool = True) -> torch.Tensor | None:
    if key not in arrays:
        if required:
            raise SAEFormatError(f"{name}: the weights have no {key!r} (found: {', '.join(sorted(arrays)) or 'nothing'})")
        return None
    v = arrays[key]
    t = v.detach() if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))
    if not t.is_floating_point():
        raise SAEFormatError(f"{name}: {key} must hold floating-point numbers, got {t.dtype}")
    return t.to(torch.float32).contiguous()


def _default_name(path: Path) -> str:
    parts = [p for p in path.parts[-3:] if p not in ("/",)]
    raw = "-".join(parts).replace(".safetensors", "").replace(".npz", "").replace(".pt", "")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.")[-64:].lstrip("-._")
    return name or "sae"


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"SAE name must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit); "
                         f"got {name!r}")
    return name


def _read_saelens(folder: Path, name: str, layer: int | None, site: str | None) -> SAE:
    cfg_path = folder / "cfg.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SAEFormatError(f"{name}: cannot read {cfg_path}: {e}") from e
    if not isinstance(cfg, dict):
        raise SAEFormatError(f"{name}: {cfg_path} must hold a JSON object")
    weights = folder / "sae_weights.safetensors"
    if not weights.exists():
        raise SAEFormatError(f"{name}: {folder} has cfg.json but no sae_weights.safetensors")
    from safetensors.torch import load_file

    try:
        arrays = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types
        raise SAEFormatError(f"{name}: cannot read {weights}: {e}") from e
    for key in ("d_in", "d_sae"):
        if key not in cfg:
            raise SAEFormatError(f"{name}: cfg.json has no {key!r}")
    arch = str(cfg.get("architecture", "standard")).lower()
    act_fn = str(cfg.get("activation_fn_str", cfg.get("activation_fn", "relu")) or "relu").lower()
    transcoder = "transcoder" in arch or "hook_name_out" in cfg or "d_out" in cfg
    hook = cfg.get("hook_name", cfg.get("hook_point"))
    if layer is None or site is None:
        if hook is None:
            raise SAEFormatError(f"{name}: cfg.json names no hook_name; pass layer= and site=")
        h_layer, h_site = parse_hook(hook)
        layer = h_layer if layer is None else layer
        site = h_site if site is None else site
    if "topk" in arch or act_fn == "topk":
        activation = "topk"
    elif "jumprelu" in arch or act_fn == "jumprelu":
        activation = "jumprelu"
    elif "gated" in arch:
        activation = "gated"
    elif arch in ("standard", "relu", "transcoder", "skip_transcoder") and act_fn == "relu":
        activation = "relu"
    else:
        raise SAEFormatError(f"{name}: architecture {arch!r} with activation {act_fn!r} is not supported; supported: "
                             "standard (relu), topk, jumprelu, gated, and transcoders with those")
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm == "expected_average_only_in":
        raise SAEFormatError(f"{name}: normalize_activations='expected_average_only_in' scales the input by a factor "
                             "measured on the training data, which SAELens keeps outside this folder; fold it into the "
                             "weights first (SAELens: sae.fold_activation_norm_scaling_factor(factor); sae.save_model(...))")
    if norm not in NORMALIZATIONS:
        raise SAEFormatError(f"{name}: normalize_activations={norm!r} is not one neuronwidget reads; supported: "
                             f"{', '.join(NORMALIZATIONS)}")
    W_enc = _t(arrays, "W_enc", name)
    threshold = _t(arrays, "threshold", name, required=False)
    if activation == "jumprelu" and threshold is None and "log_threshold" in arrays:
        threshold = torch.exp(_t(arrays, "log_threshold", name))
    b_enc = _t(arrays, "b_enc", name, required=activation != "gated")
    if b_enc is None:
        b_enc = torch.zeros(W_enc.shape[1])
    W_dec, b_dec = _t(arrays, "W_dec", name), _t(arrays, "b_dec", name)
    if int(cfg["d_in"]) != W_enc.shape[0] or int(cfg["d_sae"]) != W_enc.shape[1]:
        raise SAEFormatError(f"{name}: cfg.json says d_in={cfg['d_in']}, d_sae={cfg['d_sae']} but W_enc has shape "
                             f"{tuple(W_enc.shape)}")
    apply = bool(cfg.get("apply_b_dec_to_input", False)) and not transcoder
    W_skip = _t(arrays, "W_skip", name, required="skip" in arch)
    if W_skip is not None and not transcoder:
        raise SAEFormatError(f"{name}: the weights hold W_skip (a skip transcoder's) but cfg.json describes an SAE")
    return SAE(name=name, layer=int(layer), site=site, activation=activation, W_enc=W_enc, b_enc=b_enc, W_dec=W_dec,
               b_dec=b_dec, k=None if k is None else int(k), threshold=threshold,
               b_gate=_t(arrays, "b_gate", name, required=activation == "gated"),
               r_mag=_t(arrays, "r_mag", name, required=activation == "gated"),
               b_mag=_t(arrays, "b_mag", name, required=activation == "gated"),
               b_in=b_dec.clone() if apply else None, normalize=norm, transcoder=transcoder, W_skip=W_skip,
               source=str(folder), format="saelens",
               model_name=cfg.get("model_name"))


_OPENAI_PATH = re.compile(r"(resid_post_mlp|resid_post_attn|resid_delta_attn|resid_delta_mlp|mlp_post_act)[^/]*/"
                          r"autoencoders/(\d+)\.pt$")
_OPENAI_SITE = {"resid_post_mlp": "resid_post", "resid_post_attn": "resid_mid", "resid_delta_attn": "attn_out",
                "resid_delta_mlp": "mlp_out", "mlp_post_act": "mlp_post"}


def _read_openai(path: Path, name: str, layer: int | None, site: str | None) -> SAE:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise SAEFormatError(f"{name}: cannot read {path} as a torch state dict: {e}") from e
    if not isinstance(state, dict):
        raise SAEFormatError(f"{name}: {path} holds a {type(state).__name__}, not a state dict")
    m = _OPENAI_PATH.search(path.as_posix())
    if layer is None or site is None:
        if m is None:
            raise ValueError(f"{name}: OpenAI's files do not say where they read; pass layer= and site= (the path "
                             "did not match <location>/autoencoders/<layer>.pt)")
        layer = int(m.group(2)) if layer is None else layer
        site = _OPENAI_SITE[m.group(1)] if site is None else site
    enc, dec = _t(state, "encoder.weight", name), _t(state, "decoder.weight", name)
    pre_bias, latent_bias = _t(state, "pre_bias", name), _t(state, "latent_bias", name)
    act = state.get("activation", "ReLU")
    if act == "TopK":
        k = (state.get("activation_state_dict") or {}).get("k")
        k = int(k.item()) if isinstance(k, torch.Tensor) else k
        activation, normalize = "topk", "layer_norm"
    elif act == "ReLU":
        k, activation, normalize = None, "relu", "none"
    else:
        raise SAEFormatError(f"{name}: activation {act!r} is not supported; supported: TopK, ReLU")
    if enc.dim() != 2 or dec.dim() != 2 or dec.shape != enc.shape[::-1]:
        raise SAEFormatError(f"{name}: encoder.weight {tuple(enc.shape)} and decoder.weight {tuple(dec.shape)} must be "
                             "[d_sae, d_in] and [d_in, d_sae]")
    return SAE(name=name, layer=int(layer), site=site, activation=activation, W_enc=enc.T.contiguous(), b_enc=latent_bias,
               W_dec=dec.T.contiguous(), b_dec=pre_bias, k=k, b_in=pre_bias.clone(), normalize=normalize,
               source=str(path), format="openai")


_SCOPE_PATH = re.compile(r"gemma-scope-[^/]*?-(res|mlp|att|transcoders)[^/]*/layer_(\d+)/")
_SCOPE_SITE = {"res": "resid_post", "mlp": "mlp_out", "transcoders": "mlp_in"}


def _read_gemma_scope(path: Path, name: str, layer: int | None, site: str | None) -> SAE:
    try:
        with np.load(str(path)) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise SAEFormatError(f"{name}: cannot read {path} as an .npz file: {e}") from e
    m = _SCOPE_PATH.search(path.as_posix())
    if m and m.group(1) == "att" and site is None:
        raise ValueError(f"{name}: Gemma Scope attention SAEs read the heads' outputs before W_O (hook_z), a site "
                         f"neuronwidget does not hook; supported: {', '.join(SITES)}")
    if layer is None or site is None:
        if m is None:
            raise ValueError(f"{name}: pass layer= and site= (the path did not match "
                             "gemma-scope-…-res|mlp|transcoders…/layer_N/…/params.npz)")
        layer = int(m.group(2)) if layer is None else layer
        site = _SCOPE_SITE[m.group(1)] if site is None else site
    transcoder = site == "mlp_in"
    return SAE(name=name, layer=int(layer), site=site, activation="jumprelu", W_enc=_t(arrays, "W_enc", name),
               b_enc=_t(arrays, "b_enc", name), W_dec=_t(arrays, "W_dec", name), b_dec=_t(arrays, "b_dec", name),
               threshold=_t(arrays, "threshold", name), transcoder=transcoder, source=str(path), format="gemma-scope")


def _fetch_hub(spec: str) -> Path:
    rest = spec[3:].strip("/")
    parts = rest.split("/")
    if len(parts) < 2:
        raise ValueError(f"a hub SAE is hf:OWNER/REPO[/SUBFOLDER or /FILE], got {spec!r}")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        import huggingface_hub as hub
    except ImportError as e:  # pragma: no cover - transformers depends on it
        raise SAEUnavailableError("fetching an SAE from the hub needs huggingface_hub (pip install huggingface_hub)") from e
    patterns = None if not sub else ([sub] if sub.endswith((".npz", ".pt", ".safetensors", ".json")) else [f"{sub}/*"])
    last: Exception | None = None
    for local_only in (True, False):
        try:
            root = Path(hub.snapshot_download(repo, allow_patterns=patterns, local_files_only=local_only))
            return root / sub if sub else root
        except Exception as e:  # offline, not in the cache, no such repo
            last = e
    raise SAEUnavailableError(f"cannot fetch {spec!r} from the Hugging Face hub ({type(last).__name__}: {last}); offline, "
                              "an SAE must already be in the Hugging Face cache or given as a local path")


def load_sae(source: Any, *, name: str | None = None, layer: int | None = None, site: str | None = None,
             lm: Any = None) -> SAE:
    """Read an SAE or transcoder (see the module doc for the formats). ``source``: a SAELens
    folder, a ``params.npz`` (Gemma Scope), a ``.pt`` state dict (OpenAI), an :class:`SAE`
    (returned as is), or ``hf:OWNER/REPO[/SUBFOLDER]``. ``layer`` / ``site`` override (or
    supply) where it reads. ``lm``: the model it will run on; a mismatch of width or layer is a
    ValueError naming both."""
    if site is not None:
        check_site(site)
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
        raise ValueError(f"layer must be an integer >= 0 or None, got {layer!r}")
    if name is not None:
        _check_name(name)
    if isinstance(source, SAE):
        sae = source
    else:
        if not isinstance(source, (str, Path)):
            raise ValueError(f"an SAE source is a path, 'hf:OWNER/REPO[/SUBFOLDER]' or an SAE, got {type(source).__name__}")
        path = _fetch_hub(str(source)) if str(source).startswith("hf:") else Path(source).expanduser()
        if not path.exists():
            raise ValueError(f"no SAE at {str(path)!r}: give a SAELens folder (cfg.json + sae_weights.safetensors), a "
                             "Gemma Scope params.npz, or an OpenAI .pt state dict")
        nm = name or _default_name(path)
        if path.is_dir():
            if (path / "cfg.json").exists():
                sae = _read_saelens(path, nm, layer, site)
            elif (path / "params.npz").exists():
                sae = _read_gemma_scope(path / "params.npz", nm, layer, site)
            else:
                raise SAEFormatError(f"{path} is a folder without cfg.json (SAELens) or params.npz (Gemma Scope)")
        elif path.suffix == ".npz":
            sae = _read_gemma_scope(path, nm, layer, site)
        elif path.suffix in (".pt", ".pth"):
            sae = _read_openai(path, nm, layer, site)
        elif path.name == "sae_weights.safetensors" or path.name == "cfg.json":
            sae = _read_saelens(path.parent, nm, layer, site)
        else:
            raise SAEFormatError(f"{path}: not a format neuronwidget reads (a SAELens folder, params.npz, or a .pt "
                                 "state dict)")
    if lm is not None:
        sae.check_model(lm)
    return sae


def save_saelens(sae: SAE, folder: Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``sae`` as a SAELens folder (cfg.json + sae_weights.safetensors), each file atomically."""
    from safetensors.torch import save as st_save

    from .._io import atomic_write_bytes

    hook = {"resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
            "attn_out": "hook_attn_out", "mlp_in": "ln2.hook_normalized", "mlp_out": "hook_mlp_out",
            "mlp_post": "mlp.hook_post"}[sae.site]
    arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}[sae.activation]
    tc_arch = ("skip_transcoder" if sae.W_skip is not None else "transcoder") if arch == "standard" else f"{arch}_transcoder"
    cfg: dict[str, Any] = {"architecture": tc_arch if sae.transcoder else arch, "d_in": sae.d_in, "d_sae": sae.d_sae, "hook_name": f"blocks.{sae.layer}.{hook}",
                           "apply_b_dec_to_input": sae.b_in is not None, "normalize_activations": sae.normalize,
                           "dtype": "float32", "model_name": sae.model_name}
    if sae.transcoder:
        cfg.update({"d_out": sae.d_out, "hook_name_out": f"blocks.{sae.layer}.hook_mlp_out"})
    if sae.k is not None:
        cfg["k"] = sae.k
        cfg["activation_fn_kwargs"] = {"k": sae.k}
    cfg.update(extra or {})
    tensors = {k: getattr(sae, k).contiguous() for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_gate",
                                                          "r_mag", "b_mag", "W_skip") if getattr(sae, k) is not None}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "sae_weights.safetensors", st_save(tensors))
    atomic_write_bytes(folder / "cfg.json", json.dumps(cfg, indent=1).encode())


__all__ = ["ACTIVATIONS", "SAE", "SAEFormatError", "SAEUnavailableError", "load_sae", "parse_hook", "save_saelens"]
