"""A local HTTP server with the layout of OpenAI's public neuron-explainer bucket.

Serves files from a folder (``<root>/gpt2_small_data/explanations/5/131.jsonl`` ...).
Paths listed in ``failures`` answer with a chosen status or a truncated body instead.
Used by the published-data tests; stdlib only.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path


class PublishedServer:
    """``with PublishedServer(root) as srv: srv.url`` -> "http://127.0.0.1:PORT"."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.failures: dict[str, int | bytes] = {}  # path -> HTTP status, or a body to send with 200
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                failure = server.failures.get(self.path)
                if isinstance(failure, int):
                    self.send_error(failure)
                    return
                if isinstance(failure, bytes):
                    body = failure
                else:
                    file = (server.root / self.path.lstrip("/")).resolve()
                    if server.root.resolve() not in file.parents or not file.is_file():
                        self.send_error(404)
                        return
                    body = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> PublishedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; the port then refuses connections. Safe to call twice."""
        if not self._thread.is_alive():
            self._httpd.server_close()
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> PublishedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
