"""A small OpenAI-compatible server of ours that misbehaves on cue (stdlib http.server).

``server.script`` is a list of behaviours consumed one per request: "ok", "429", "500",
"hang" (sleeps past the client's timeout, then answers), "malformed" (a 200 whose body is
not JSON), "nochoices" (a JSON 200 without choices), "400", "403", "404", "401" (echoes the bearer key back, as
some servers do, so tests can check the client never repeats it). After the script runs
out every request is "ok". Requests are counted server-side (``times``: when each arrived).
``retry_after``: when set, 429 and 500 answers carry it as their ``Retry-After`` header. ``reply`` is the answer's text,
or a function of the request body returning it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer:
    def __init__(self, reply="capital cities.", hang_s: float = 2.0, delay_s: float = 0.0):
        self.script: list[str] = []
        self.reply = reply
        self.hang_s = hang_s
        self.delay_s = delay_s
        self.requests = 0
        self.times: list[float] = []
        self.retry_after: str | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _next(self) -> str:
        with self._lock:
            self.requests += 1
            self.times.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.script.pop(0) if self.script else "ok"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                if code in (429, 500) and server.retry_after is not None:
                    self.send_header("Retry-After", server.retry_after)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": "fault-model", "object": "model", "created": 0, "owned_by": "us"}]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "no such path"}}')

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                action = server._next()
                try:
                    server.bodies.append(body)
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    auth = self.headers.get("Authorization", "")
                    if action == "429":
                        self._send(429, b'{"error": {"message": "slow down", "type": "rate_limit"}}')
                    elif action == "500":
                        msg = f"internal error while serving {auth}"  # a careless server echoing the key
                        self._send(500, json.dumps({"error": {"message": msg}}).encode())
                    elif action == "401":
                        msg = f"Incorrect API key provided: {auth.removeprefix('Bearer ')}"
                        self._send(401, json.dumps({"error": {"message": msg, "type": "invalid_request_error"}}).encode())
                    elif action == "400":
                        self._send(400, json.dumps({"error": {"message": "max_tokens is too large"}}).encode())
                    elif action == "403":
                        self._send(403, json.dumps({"error": {"message": "this key may not use that model"}}).encode())
                    elif action == "404":
                        self._send(404, json.dumps({"error": {"message": "model not found"}}).encode())
                    elif action == "malformed":
                        self._send(200, b"<html>this is not json")
                    elif action == "nochoices":
                        self._send(200, b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}')
                    else:
                        if action == "hang":
                            time.sleep(server.hang_s)
                        self._send(200, json.dumps(self._ok(body)).encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): fine
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _ok(self, body: dict) -> dict:
                usage = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}
                text = server.reply(body) if callable(server.reply) else server.reply
                if self.path.endswith("/chat/completions"):
                    return {
                        "id": "c1", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": usage,
                    }
                return {
                    "id": "c2", "object": "text_completion", "created": 0, "model": body.get("model", "m"),
                    "choices": [{"index": 0, "finish_reason": "length", "text": text, "logprobs": None}],
                    "usage": usage,
                }

        return Handler

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=5)
