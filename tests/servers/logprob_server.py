"""An OpenAI-compatible ``/v1/completions`` server of ours that returns prompt logprobs
(echo=True + logprobs=k, like vLLM) computed by a real causal LM running in-process."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


class LogprobServer:
    def __init__(self, model, tokenizer, name: str = "served-model"):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.requests = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def completion(self, body: dict) -> dict:
        tok, model = self.tokenizer, self.model
        ids = tok.encode(body["prompt"], add_special_tokens=False)
        k = int(body.get("logprobs") or 0)
        with self._lock, torch.no_grad():
            self.requests += 1
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits.double(), dim=-1)
        tokens = [tok.decode([i]) for i in ids]
        top = [None]
        for j in range(1, len(ids)):
            values, idx = logp[j - 1].topk(k)
            top.append({tok.decode([int(i)]): float(v) for v, i in zip(values, idx)})
        token_lp = [None] + [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))]
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t)
        return {
            "id": "cmpl-1", "object": "text_completion", "created": 0, "model": self.name,
            "choices": [{"index": 0, "text": body["prompt"], "finish_reason": "length",
                         "logprobs": {"tokens": tokens, "token_logprobs": token_lp, "top_logprobs": top,
                                      "text_offset": offsets}}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)},
        }

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

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.endswith("/completions") or self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "only /v1/completions here"}})
                elif not body.get("echo"):
                    self._send(400, {"error": {"message": "this server only echoes prompts"}})
                else:
                    self._send(200, server.completion(body))

        return Handler

    def __enter__(self) -> "LogprobServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
