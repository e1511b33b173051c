"""A real JupyterLab 4 server on 127.0.0.1 in throwaway config/data dirs, for browser tests.

Kernelspecs and labextensions still come from the venv (sys.prefix/share/jupyter), which
Jupyter always searches; news and update checks are off so nothing touches the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.root = workdir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        settings = workdir / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.env = dict(os.environ)
        self.env.update({
            "JUPYTER_CONFIG_DIR": str(workdir / "config"),
            "JUPYTER_DATA_DIR": str(workdir / "data"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
            "IPYTHONDIR": str(workdir / "ipython"),
            "JUPYTERLAB_SETTINGS_DIR": str(workdir / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(workdir / "workspaces"),
            "PYTHONUNBUFFERED": "1",
        })
        self.env.update(env or {})
        self.log = open(workdir / "lab.log", "wb")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
               f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--ServerApp.port_retries=0", "--allow-root", "--LabApp.extension_manager=readonly", "--LabApp.news_url=", "--LabApp.expose_app_in_browser=True",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"jupyter lab did not answer within {timeout}s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def run_notebook(self, page, name: str, kernel_timeout_ms: int = 60_000) -> None:
        """Open notebook ``name`` in ``page``, wait for its kernel to be idle, run all cells."""
        # ?reset: a fresh workspace, so notebooks an earlier test opened are not restored beside this one
        page.goto(f"{self.url}/lab/tree/{name}?reset&token={self.token}")
        page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')",
                               timeout=kernel_timeout_ms)
        page.wait_for_function(
            "(name) => { const w = window.jupyterapp.shell.currentWidget;"
            " return w && w.context && w.context.path === name && w.sessionContext && w.sessionContext.session"
            " && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle'; }",
            arg=name, timeout=kernel_timeout_ms)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


@contextlib.contextmanager
def running_lab(workdir: Path, cache_dir: str | os.PathLike):
    """A started JupyterLab whose kernels use neuronwidget's cache ``cache_dir``; always stopped."""
    server = Lab(workdir, env={"NEURONWIDGET_CACHE": str(cache_dir)})
    server.start()
    try:
        yield server
    finally:
        server.stop()
