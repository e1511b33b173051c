"""An OpenAI-compatible chat server of ours with scripted answers (stdlib http.server).

``reply`` decides each answer: a list of texts consumed one per request (the last one is
repeated when it runs out), or a function of the request's JSON body returning the text.
Every request's body is kept in ``bodies`` (in arrival order), so tests can check how many
calls were made and what the model was shown. Usage is a fixed ``prompt_tokens`` /
``completion_tokens`` per answer, so cost figures are exact.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedServer:
    def __init__(self, reply, prompt_tokens: int = 100, completion_tokens: int = 7):
        self.reply = reply
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def requests(self) -> int:
        return len(self.bodies)

    def user_texts(self) -> list[str]:
        """The first user message of every request (the one holding the examples)."""
        return [next(m["content"] for m in b["messages"] if m["role"] == "user") for b in self.bodies]

    def _answer(self, body: dict) -> str:
        with self._lock:
            self.bodies.append(body)
            if callable(self.reply):
                return self.reply(body)
            return self.reply.pop(0) if len(self.reply) > 1 else self.reply[0]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model", "created": 0,
                                                             "owned_by": "us"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "only chat here"}})
                    return
                text = server._answer(body)
                self._send(200, {
                    "id": "s1", "object": "chat.completion", "created": 0, "model": body.get("model", "scripted"),
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": server.prompt_tokens, "completion_tokens": server.completion_tokens,
                              "total_tokens": server.prompt_tokens + server.completion_tokens},
                })

        return Handler

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=5)


EXAMPLE = re.compile(r"^Example (\d+): (.*)$", re.MULTILINE)


def shown_examples(body: dict) -> list[str]:
    """The example texts of a classification request, in the order shown."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return [text for _, text in EXAMPLE.findall(user)]
