"""A small TopK sparse autoencoder trained here, on the subject model's own activations over a
corpus: real features offline (no SAE for SmolLM2 is on PyPI).

:func:`train_sae` reads the values at one site of one block over the corpus's 64-token windows
(the forward stops at that block), holds out every 10th window, and trains a TopK SAE
(Gao et al. 2024: ``relu(topk((x - b_dec) W_enc + b_enc))``, decoder rows kept at unit norm,
an auxiliary loss that lets dead latents predict the residual error) with Adam on the CPU. It
is written as a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``, each atomically)
under ``<cache>/sae/<key>/`` with ``training.json`` (the settings, seconds, fraction of
variance explained and next-token loss clean / spliced / zero-ablated on the held-out
windows); the key hashes the model's weights, the corpus and the settings, so the same call
loads it instead of training again. ``neuronwidget sae-train`` / ``make sae`` make the default.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write_json, cache_root, stable_hash
from ..subject.sae import SAE, load_sae, save_saelens
from ..subject.sites import check_site, site_width
from ..subject.units import site_values, spliced_loss
from .corpus import WINDOW, as_corpus, bundled_corpus

DEFAULTS = {"layer": 8, "site": "mlp_out", "d_sae": 1536, "k": 32, "max_tokens": 65_536, "steps": 600,
            "batch_tokens": 1024, "lr": 1e-3, "seed": 0}


def _settings(**kw: Any) -> dict[str, Any]:
    out = dict(DEFAULTS)
    for key, value in kw.items():
        if key not in DEFAULTS:
            raise ValueError(f"unknown SAE training setting {key!r}; settings: {', '.join(DEFAULTS)}")
        if value is not None:
            out[key] = value
    for key in ("layer", "d_sae", "k", "max_tokens", "steps", "batch_tokens", "seed"):
        v = out[key]
        lo = 0 if key in ("layer", "seed") else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{key} must be an integer >= {lo}, got {v!r}")
    if out["k"] > out["d_sae"]:
        raise ValueError(f"k ({out['k']}) must not exceed d_sae ({out['d_sae']})")
    if not isinstance(out["lr"], (int, float)) or not 0 < out["lr"] < 1:
        raise ValueError(f"lr must be a number in (0, 1), got {out['lr']!r}")
    check_site(out["site"])
    if out["site"] == "mlp_in":
        raise ValueError("train_sae trains SAEs (reading and reconstructing one site), not transcoders; pick another site")
    return out


def _collect(lm: Any, windows: np.ndarray, layer: int, site: str, batch: int = 32) -> torch.Tensor:
    parts = []
    for s in range(0, len(windows), batch):
        ids = torch.from_numpy(windows[s:s + batch].astype(np.int64))
        parts.append(site_values(lm, ids, layer, site).reshape(-1, site_width(lm, site)))
    return torch.cat(parts)


def _fve(sae: SAE, x: torch.Tensor) -> float:
    """Fraction of variance explained: 1 - sum |x - x̂|² / sum |x - mean(x)|²."""
    err = tot = 0.0
    mean = x.mean(0)
    for s in range(0, len(x), 4096):
        c = x[s:s + 4096]
        with torch.no_grad():
            err += float(((c - sae.decode(sae.encode(c), c)) ** 2).sum())
        tot += float(((c - mean) ** 2).sum())
    return 1 - err / tot


def _train(x: torch.Tensor, cfg: dict[str, Any], progress: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    gen = torch.Generator().manual_seed(cfg["seed"])
    n, d = x.shape
    m, k = cfg["d_sae"], cfg["k"]
    k_aux = min(256, m // 2)
    W_dec = torch.randn(m, d, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    params = {"W_enc": W_dec.T.clone().contiguous(), "b_enc": torch.zeros(m), "W_dec": W_dec,
              "b_dec": x[torch.randperm(n, generator=gen)[:4096]].median(0).values.clone()}
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam(params.values(), lr=cfg["lr"], betas=(0.9, 0.999))
    since_fired = torch.zeros(m, dtype=torch.long)
    dead_after = max(1, 200_000 // cfg["batch_tokens"])  # steps without firing -> dead (about 200k tokens)
    report = None
    if progress:
        from tqdm.auto import tqdm

        report = tqdm(total=cfg["steps"], desc=f"training TopK SAE ({m} latents, k={k})", unit="step")
    var = float(x.var(0).sum())
    try:
        for step in range(cfg["steps"]):
            lr = cfg["lr"] * min(1.0, (cfg["steps"] - step) / (0.2 * cfg["steps"]))  # linear decay over the last fifth
            for g in opt.param_groups:
                g["lr"] = lr
            idx = torch.randint(0, n, (cfg["batch_tokens"],), generator=gen)
            xb = x[idx]
            pre = (xb - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
            top = torch.topk(pre, k, dim=-1)
            vals = torch.relu(top.values)
            # dense decode: on a CPU one matmul beats gathering k decoder rows per token (and its backward)
            recon = torch.zeros_like(pre).scatter(-1, top.indices, vals) @ params["W_dec"] + params["b_dec"]
            err = xb - recon
            loss = (err ** 2).sum(-1).mean() / var
            fired = torch.zeros(m, dtype=torch.bool)
            fired[top.indices[vals > 0].unique()] = True
            since_fired = torch.where(fired, 0, since_fired + 1)
            dead = since_fired > dead_after
            if int(dead.sum()) > 0:  # AuxK: the dead latents' top k_aux try to predict the error
                pre_dead = pre.masked_fill(~dead, -math.inf)
                ka = min(k_aux, int(dead.sum()))
                aux = torch.topk(pre_dead, ka, dim=-1)
                aux_recon = torch.zeros_like(pre).scatter(-1, aux.indices, torch.relu(aux.values)) @ params["W_dec"]
                loss = loss + ((err.detach() - aux_recon) ** 2).sum(-1).mean() / var / 32
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # keep decoder rows unit-norm: remove the gradient along them, renormalise after
                W = params["W_dec"]
                W.grad -= (W.grad * W).sum(1, keepdim=True) * W
            opt.step()
            with torch.no_grad():
                params["W_dec"] /= params["W_dec"].norm(dim=1, keepdim=True)
            if report is not None:
                report.update(1)
                if step % 50 == 0:
                    report.set_postfix(nmse=f"{float((err ** 2).sum(-1).mean()) / var:.3f}", dead=int(dead.sum()))
    finally:
        if report is not None:
            report.close()
    out = {key: p.detach().clone() for key, p in params.items()}
    return out, {"dead_latents_at_end": int((since_fired > dead_after).sum())}


def sae_folder(lm: Any, corpus: Any = None, cache_dir: Any = None, **settings: Any) -> tuple[Path, dict[str, Any], Any]:
    cfg = _settings(**settings)
    corpus = bundled_corpus() if corpus is None else as_corpus(corpus)
    key = stable_hash({"model": lm.identity, "corpus": corpus.fingerprint, "settings": cfg, "trainer": 1})
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    return root / "sae" / key, cfg, corpus


def train_sae(lm: Any, corpus: Any = None, *, progress: bool = True, retrain: bool = False, cache_dir: Any = None,
              name: str | None = None, **settings: Any) -> tuple[SAE, dict[str, Any]]:
    """(the SAE, its training report): from the cache when this (model, corpus, settings) was
    trained before, else trained now (see the module doc). ``lm``: a LoadedModel; ``corpus``:
    default the bundled corpus (its first ``max_tokens`` tokens); settings: {DEFAULTS}."""
    folder, cfg, corpus = sae_folder(lm, corpus, cache_dir, **settings)
    name = name or f"topk-L{cfg['layer']}-{cfg['site']}-{cfg['d_sae']}"
    if cfg["layer"] >= lm.n_layers:
        raise ValueError(f"layer {cfg['layer']} is out of range for {lm.short_name} (0..{lm.n_layers - 1})")
    report_path = folder / "training.json"
    if not retrain and report_path.exists() and (folder / "cfg.json").exists():
        report = json.loads(report_path.read_text())
        return load_sae(folder, name=name, lm=lm), report
    t0 = time.perf_counter()
    windows = corpus.windows(lm.tokenizer, lm.eos_token_id, WINDOW)
    windows = windows[: max(1, cfg["max_tokens"] // WINDOW)]
    held = np.arange(len(windows)) % 10 == 9
    train_w, test_w = windows[~held], windows[held]
    x = _collect(lm, train_w, cfg["layer"], cfg["site"])
    x_test = _collect(lm, test_w, cfg["layer"], cfg["site"])
    t1 = time.perf_counter()
    weights, extra = _train(x, cfg, progress)
    t2 = time.perf_counter()
    sae = SAE(name=name, layer=cfg["layer"], site=cfg["site"], activation="topk", k=cfg["k"], b_in=weights["b_dec"].clone(),
              model_name=lm.short_name, source=str(folder), format="saelens", **weights)
    fve = _fve(sae, x_test)
    losses = [spliced_loss(lm, sae, torch.from_numpy(test_w[s:s + 16].astype(np.int64))) for s in range(0, len(test_w), 16)]
    weight = [len(test_w[s:s + 16]) for s in range(0, len(test_w), 16)]
    clean, spliced, zeroed = (float(np.average([loss[i] for loss in losses], weights=weight)) for i in range(3))
    with torch.no_grad():
        l0 = float((sae.encode(x_test[:4096]) > 0).sum(-1).float().mean())
    report = {"settings": cfg, "model": lm.short_name, "corpus": corpus.name, "train_tokens": int(x.shape[0]),
              "heldout_tokens": int(x_test.shape[0]), "collect_s": round(t1 - t0, 1), "train_s": round(t2 - t1, 1),
              "fraction_variance_explained": round(fve, 4), "loss_clean": round(clean, 4),
              "loss_spliced": round(spliced, 4), "loss_zero_ablated": round(zeroed, 4),
              "loss_increase": round(spliced - clean, 4), "l0": l0, **extra}
    save_saelens(sae, folder, {"neuronwidget_training": "training.json"})
    atomic_write_json(report_path, report)
    return load_sae(folder, name=name, lm=lm), report


train_sae.__doc__ = (train_sae.__doc__ or "").replace("{DEFAULTS}", ", ".join(f"{k}={v!r}" for k, v in DEFAULTS.items()))

__all__ = ["DEFAULTS", "sae_folder", "train_sae"]
