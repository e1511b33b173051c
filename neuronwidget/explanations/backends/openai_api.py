"""An OpenAI-compatible HTTP backend on the openai SDK (OpenAI, vLLM, llama.cpp, Ollama,
``transformers serve``...).

Retries are the SDK's own: 429, 408/409 and 5xx (waiting as the server's ``Retry-After`` /
``retry-after-ms`` says, up to a minute; else exponential backoff with jitter), timeouts and
dropped connections, ``max_retries`` times. Two things the SDK does not do are added: a
refused connection fails at once (nothing listens there; a transport wrapper raises it as an
error the SDK does not retry), and a 200 whose body is malformed (not JSON, no choices) is
retried within the same budget. When retries run out: ``RetriesExhausted`` saying how many
attempts were made; what no retry fixes (401, 403, 404, 400, connection refused) fails at
once with a clear ``BackendError``. A concurrency limit; a response cache (one SQLite file,
see ``_common.ResponseCache``) keyed by the whole request (model, server, messages or prompt,
parameters — never the key). The API key is kept out of repr(), error messages, caches and
logs.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from ...records import NeuronRecord, SequenceSimulation
from .._common import BackendError, ResponseCache, RetriesExhausted, Usage, check_cancel
from ..prompts import MAX_LABEL, PLACEHOLDER, json_simulator_messages, parse_json_values, simulation_prefix, token_text
from .base import ChatExplainer, ProgressFn


class LogprobsUnsupported(BackendError):
    """The server cannot return prompt logprobs (``/v1/completions`` with echo + logprobs)."""


class _Malformed(Exception):
    pass


def _refused(exc: BaseException) -> bool:
    """Whether a connection error was a refused connection (nothing listens there)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionRefusedError) or "connection refused" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class OpenAIBackend(ChatExplainer):
    """Explain and simulate with a model behind an OpenAI-compatible API (both roles:
    ``Explainer``, ``Simulator``).

    ``model`` may be None with a ``base_url``: the server's first listed model is used.
    ``api_key`` defaults to ``$OPENAI_API_KEY``; servers on a ``base_url`` often need none.
    ``simulation`` picks the simulator: "logprobs" (``/v1/completions`` prompt logprobs, the
    paper's all-at-once method; an error if the server cannot), "json" (chat, asks for JSON),
    or "auto" (logprobs where the server supports it, else json; always json on api.openai.com).
    """

    cheap = False

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        retry_base_s: float = 0.5,
        max_concurrency: int = 4,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        temperature: float = 1.0,
        max_tokens: int = 60,
        simulation: str = "auto",
    ):
        if model is None and base_url is None:
            raise ValueError("OpenAIBackend needs a model name (e.g. 'gpt-4.1-mini') or a base_url to ask for one")
        if simulation not in ("auto", "logprobs", "json"):
            raise ValueError(f"simulation must be 'auto', 'logprobs' or 'json', got {simulation!r}")
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("max_concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        self._model = model
        self.base_url = base_url
        self.__key = api_key  # name-mangled; never printed
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_base_s = retry_base_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.simulation = simulation
        self._cache = ResponseCache(cache_dir) if cache else None
        self.max_concurrency = max_concurrency
        self._sem = threading.BoundedSemaphore(max_concurrency)
        self._client = None
        self._lock = threading.Lock()
        self._sent = threading.local()  # HTTP attempts of this thread's current request
        self._logprobs_ok: bool | None = None
        self.usage = Usage(model)

    # ---- identity (no secrets) ----
    @property
    def model(self) -> str:
        if self._model is None:
            self._model = self._first_model()
            self.usage.model = self._model
        return self._model

    @property
    def name(self) -> str:
        where = f" @ {self.base_url}" if self.base_url else ""
        return f"openai: {self._model or '(server default)'}{where}"

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self._model!r}, base_url={self.base_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. for a Ray worker) WITHOUT the API key, client, locks or probe result:
        where it is unpickled it reads ``OPENAI_API_KEY`` from that process's environment."""
        state = dict(self.__dict__)
        state["_OpenAIBackend__key"] = None
        state["_client"] = state["_lock"] = state["_sem"] = state["_sent"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._sent = threading.local()
        self._sem = threading.BoundedSemaphore(self.max_concurrency)

    # ---- plumbing ----
    def _key(self) -> str | None:
        return self.__key or os.environ.get("OPENAI_API_KEY")

    def _scrub(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "***") if key else text

    def _get_client(self):
        with self._lock:
            if self._client is None:
                import openai

                key = self._key()
                if not key:
                    if self.base_url is None:
                        raise BackendError(
                            "no OpenAI API key: set OPENAI_API_KEY, pass OpenAIBackend(..., api_key=...), "
                            "or use base_url= for a local OpenAI-compatible server"
                        )
                    key = "none"  # local servers ignore it, the SDK insists on one
                self._client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout,
                                             max_retries=self.max_retries, http_client=self._http_client())
            return self._client

    def _http_client(self):
        """The SDK's own HTTP client, its transport wrapped to count attempts (per thread, for
        the messages) and to fail a refused connection at once: the SDK retries connection
        errors, but re-raises its own errors untouched."""
        import openai

        http = openai.DefaultHttpxClient()
        hx = importlib.import_module(type(http).__mro__[1].__module__.partition(".")[0])  # httpx or httpx2
        inner, sent = http._transport, self._sent

        class Transport(hx.BaseTransport):
            def handle_request(self, request):
                sent.n = getattr(sent, "n", 0) + 1
                try:
                    return inner.handle_request(request)
                except hx.ConnectError as e:
                    if _refused(e):
                        raise openai.APIConnectionError(message=f"connection refused: {e}", request=request) from None
                    raise

            def close(self) -> None:
                inner.close()

        http._transport = Transport()
        return http

    def _first_model(self) -> str:
        try:
            models = list(self._get_client().models.list())
        except Exception as e:  # noqa: BLE001 - any failure here means "say which model"
            raise BackendError(
                f"could not list the models of {self.base_url} ({self._scrub(type(e).__name__ + ': ' + str(e))}); "
                "pass the model name: OpenAIBackend('name', base_url=...)"
            ) from None
        if not models:
            raise BackendError(f"{self.base_url} lists no models; pass the model name explicitly")
        return models[0].id

    def _request(self, kind: str, params: dict[str, Any], sample: int = 0) -> dict[str, Any]:
        """One API call (chat or completion) with cache, retries and the concurrency limit."""
        key = {"kind": kind, "model": self.model, "base_url": self.base_url, "params": params, "sample": sample}
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                self.usage.add(0, 0, cached=True)
                return hit
        out = self._attempts(kind, params)
        usage = out.pop("usage", None) or {}
        self.usage.add(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
        if self._cache is not None:
            self._cache.put(key, out)
        return out

    def _attempts(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """The SDK's retries on the wire; here, only a malformed 200 body is tried again (within
        ``max_retries`` attempts in all) and every failure becomes one clear error."""
        import openai

        self._sent.n = 0
        last = ""
        while True:
            failure = None
            try:
                with self._sem:
                    return self._call(kind, params)
            except (_Malformed, openai.APIResponseValidationError, json.JSONDecodeError) as e:
                last = f"malformed response: {self._scrub(str(e))[:200]}"
            except openai.OpenAIError as e:
                failure = self._error(kind, e)
            if failure is not None:  # raised outside the handler: the SDK's error (it may quote the key) is not kept
                raise failure
            if self._sent.n > self.max_retries:
                raise self._exhausted(kind, last)
            time.sleep(min(8.0, self.retry_base_s * 2 ** (self._sent.n - 1)) * (0.5 + random.random()))

    def _exhausted(self, kind: str, last: str) -> RetriesExhausted:
        n = max(1, self._sent.n)
        return RetriesExhausted(f"{kind} request to {self.base_url or 'api.openai.com'} failed after "
                                f"{n} attempt{'s' if n > 1 else ''}; last error: {last}")

    def _error(self, kind: str, e: Exception) -> BackendError:
        """What the SDK raised, after its own retries, as the error a user can act on (never the key)."""
        import openai

        where = self.base_url or "api.openai.com"
        detail = self._scrub(str(e))
        if isinstance(e, openai.AuthenticationError):
            return BackendError(f"authentication failed (401) at {where}: check the API key (OPENAI_API_KEY or api_key=)")
        if isinstance(e, openai.NotFoundError):
            return BackendError(f"not found (404) at {where}: model {self.model!r} or the endpoint does not exist "
                                f"there ({detail[:200]})")
        if isinstance(e, openai.PermissionDeniedError):
            return BackendError(f"permission denied (403): {detail[:200]}")
        if isinstance(e, openai.BadRequestError):
            return BackendError(f"the server rejected the request (400): {detail[:300]}")
        if isinstance(e, openai.APIConnectionError) and _refused(e):
            return BackendError(f"connection refused at {where}: is the server running there, on that port?")
        if isinstance(e, openai.APIConnectionError):  # timeouts too: the SDK retried them
            return self._exhausted(kind, f"{type(e).__name__}: {detail[:200]}")
        if isinstance(e, openai.APIStatusError):
            if e.status_code in (408, 409, 429) or e.status_code >= 500:
                return self._exhausted(kind, f"HTTP {e.status_code} ({type(e).__name__}): {detail[:200]}")
            return BackendError(f"HTTP {e.status_code} from the server: {detail[:200]}")
        return BackendError(f"{kind} request to {where} failed: {type(e).__name__}: {detail[:200]}")

    def _call(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        client = self._get_client()
        if kind == "chat":
            resp = client.chat.completions.create(model=self.model, **params)
            choices = getattr(resp, "choices", None)
            if not choices or getattr(choices[0], "message", None) is None:
                raise _Malformed(f"no choices in the chat response ({str(resp)[:100]!r})")
            out = {"texts": [c.message.content or "" for c in choices]}
        else:
            resp = client.completions.create(model=self.model, **params)
            choices = getattr(resp, "choices", None)
            if not choices:
                raise _Malformed(f"no choices in the completion response ({str(resp)[:100]!r})")
            lp = choices[0].logprobs
            out = {"text": choices[0].text, "logprobs": None}
            if lp is not None and lp.tokens:
                out["logprobs"] = {"tokens": list(lp.tokens), "top_logprobs": [dict(t or {}) for t in (lp.top_logprobs or [])]}
        u = getattr(resp, "usage", None)
        out["usage"] = {"prompt_tokens": getattr(u, "prompt_tokens", 0), "completion_tokens": getattr(u, "completion_tokens", 0)}
        return out

    # ---- what the explainer and simulators use ----
    def chat(self, messages: list[dict[str, str]], *, n: int = 1, max_tokens: int | None = None,
             temperature: float | None = None) -> list[str]:
        """``n`` answers to one chat (one request each, so servers without ``n`` work too)."""
        params = {
            "messages": messages,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
        }
        return [self._request("chat", params, sample=i)["texts"][0] for i in range(n)]

    def prompt_logprobs(self, prompt: str, top: int = 15) -> dict[str, Any]:
        """Prompt tokens and their top logprobs via ``/v1/completions`` (echo=True; one extra token
        is generated because some servers reject max_tokens=0)."""
        params = {"prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": top, "temperature": 0}
        out = self._request("completion", params)
        lp = out.get("logprobs")
        ok = bool(lp and lp.get("tokens") and len(lp.get("top_logprobs") or []) == len(lp["tokens"]))
        if not ok:
            self._logprobs_ok = False
            raise LogprobsUnsupported(
                f"{self.base_url or 'api.openai.com'} did not return prompt logprobs for model {self.model!r} "
                "(/v1/completions with echo=True and logprobs); use OpenAIBackend(..., simulation='json') or "
                "a server that supports them (e.g. vLLM)"
            )
        self._logprobs_ok = True
        return lp

    def supports_logprobs(self) -> bool:
        """Whether the server returns prompt logprobs (probed once with a tiny prompt)."""
        if self._logprobs_ok is None:
            try:
                self.prompt_logprobs("a\t1\n", top=2)
            except LogprobsUnsupported:
                pass
            except RetriesExhausted:
                self._logprobs_ok = False  # the endpoint keeps failing: not usable for this
            except BackendError as e:
                if not str(e).startswith(("not found (404)", "the server rejected", "HTTP 4")):
                    raise  # wrong key, no permission, nothing listening: say so now
                self._logprobs_ok = False  # endpoint missing or the request rejected
        return bool(self._logprobs_ok)

    # ---- the Simulator role ----
    def uses_logprobs(self) -> bool:
        """Whether simulation reads prompt logprobs (else it asks for JSON over chat)."""
        if self.simulation == "logprobs":
            return True
        if self.simulation == "json" or self.base_url is None:
            return False
        return self.supports_logprobs()

    @property
    def simulator_name(self) -> str:
        return f"{self.name} ({'prompt logprobs' if self.uses_logprobs() else 'JSON'})"

    def simulate(self, explanation: str, token_lists: Sequence[Sequence[str]], *, max_activation: float,
                 lookup: NeuronRecord | dict[str, float] | None = None, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> list[SequenceSimulation]:
        """Prompt-logprob simulation (the paper's all-at-once method over HTTP) where the server
        supports it, else JSON answers over chat. A request whose retries ran out fails its
        record (retryable); an error no retry fixes is raised at once."""
        use_logprobs = self.uses_logprobs()

        def one(tokens: Sequence[str]) -> SequenceSimulation:
            check_cancel(cancel)
            try:
                if use_logprobs:
                    return self._simulate_logprobs(explanation, tokens)
                return self._simulate_json(explanation, tokens)
            except BackendError as e:
                if not e.retryable:
                    raise  # a wrong key, unknown model, nothing listening: no record can succeed
                return SequenceSimulation(list(tokens), [], error=str(e), retryable=True)

        # The first record goes alone: a wrong key or model fails there, after one request. The
        # rest go out in parallel (the semaphore caps requests in flight).
        if not token_lists:
            return []
        results: list[SequenceSimulation | None] = [one(token_lists[0])] + [None] * (len(token_lists) - 1)
        if progress:
            progress(1, len(token_lists), "simulating")
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(token_lists) - 1))) as pool:
            futures = {pool.submit(one, t): i for i, t in enumerate(token_lists) if i}
            try:
                for done, fut in enumerate(as_completed(futures), 2):
                    results[futures[fut]] = fut.result()  # a fatal error is raised here
                    if progress:
                        progress(done, len(token_lists), "simulating")
            except BaseException:
                for fut in futures:  # requests not yet sent are not sent
                    fut.cancel()
                raise
        return results  # type: ignore[return-value]

    def _simulate_logprobs(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
        prefix = simulation_prefix(explanation)
        parts, slot_chars = [prefix], []
        pos = len(prefix)
        for t in tokens:
            line = token_text(t) + "\t"
            pos += len(line)
            slot_chars.append(pos)  # where the placeholder (the label's place) starts
            parts.append(line + PLACEHOLDER + "\n")
            pos += len(PLACEHOLDER) + 1
        lp = self.prompt_logprobs("".join(parts))
        starts, at = {}, 0
        for j, t in enumerate(lp["tokens"]):
            starts[at] = j
            at += len(t)
        dv, dp, ev = [], [], []
        for c in slot_chars:
            j = starts.get(c)
            if j is None:
                return SequenceSimulation(list(tokens), [], error="the server's tokens do not line up with the label slots")
            top = lp["top_logprobs"][j] or {}
            found = {}
            for text, logprob in top.items():  # exactly the label's text, as in the prompt (no space)
                if text.isdigit() and text == str(int(text)) and int(text) <= MAX_LABEL:
                    found[int(text)] = math.exp(logprob)
            total = sum(found.values())
            values = sorted(found)
            probs = [found[v] / total for v in values] if total else []
            dv.append([float(v) for v in values])
            dp.append(probs)
            ev.append(float(sum(v * p for v, p in zip(values, probs))))  # no label in the top -> 0
        return SequenceSimulation(list(tokens), ev, distribution_values=dv, distribution_probabilities=dp)

    def _simulate_json(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
        messages = json_simulator_messages(explanation, tokens)
        answer = self.chat(messages, n=1, max_tokens=12 * len(tokens) + 20, temperature=0)[0]
        try:
            values = parse_json_values(answer, len(tokens))
        except ValueError as e:
            return SequenceSimulation(list(tokens), [], error=f"unparseable simulator answer: {e}")
        return SequenceSimulation(list(tokens), values)
