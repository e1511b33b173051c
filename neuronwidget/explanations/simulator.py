"""Explanation + tokens -> predicted activations (0-10 scale), and scoring a neuron.

Simulators, chosen by the backend:

* ``LocalBackend``: all-at-once logprob simulation (the paper's method). One prompt holds
  every token followed by a tab and a placeholder; one forward pass reads the model's exact
  probabilities over the labels at every slot; the prediction is their expected value.
  The few-shot prefix (shared by every record of one explanation) is run once and its KV
  cache copied per record. Labels are the numbers 0-10 that are ONE token in the model's
  tokenizer: with digit-by-digit tokenizers (Llama, SmolLM2) "10" is two tokens and is left
  out, the distribution is over 0-9. Correlation scores do not depend on that scale.
* ``OpenAIBackend`` with prompt logprobs (``/v1/completions``, echo=True): the same method
  over HTTP, from the server's top logprobs at each slot.
* ``OpenAIBackend`` on chat-only APIs: asks for JSON ``[[token_index, value], ...]``; a
  record whose answer cannot be parsed is marked failed (``SequenceSimulation.error``).
* ``BaselineBackend``: token lookup, no LLM (see ``baseline``).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from ..records import ActivationRecord, NeuronRecord, SequenceSimulation
from ._common import BackendError, ProgressFn, check_cancel
from .backends import BaselineBackend, LocalBackend, OpenAIBackend, resolve_simulator
from .backends.baseline import baseline_simulate, lookup_table
from .prompts import MAX_LABEL, PLACEHOLDER, json_simulator_messages, simulation_prefix, token_text


# ---------- all-at-once logprob simulation on an in-kernel model ----------

def label_token_ids(tokenizer) -> dict[int, int]:
    """Label value -> token id, for the labels 0..10 that are a single token."""
    out = {}
    for v in range(MAX_LABEL + 1):
        ids = tokenizer.encode(str(v), add_special_tokens=False)
        if len(ids) == 1:
            out[v] = ids[0]
    if not out:
        raise ValueError("the simulator's tokenizer has no single-token labels 0-10; it cannot simulate")
    return out


def record_ids(tokenizer, tokens: Sequence[str]) -> tuple[list[int], list[int]]:
    """Prompt ids for one record (``token<TAB>placeholder`` lines) and the slot positions."""
    tab = tokenizer.encode("\t", add_special_tokens=False)
    filler = tokenizer.encode(PLACEHOLDER + "\n", add_special_tokens=False)
    ids: list[int] = []
    slots: list[int] = []
    for t in tokens:
        ids += tokenizer.encode(token_text(t), add_special_tokens=False) + tab
        slots.append(len(ids) - 1)  # the next token after the tab is the label
        ids += filler
    return ids, slots


def _distribution(logits_row, label_ids: dict[int, int]) -> tuple[list[float], list[float], float]:
    import torch

    values = list(label_ids)
    probs = torch.softmax(logits_row[list(label_ids.values())].double(), dim=-1).tolist()
    return [float(v) for v in values], probs, float(sum(v * p for v, p in zip(values, probs)))


def simulate_all_at_once(
    backend: LocalBackend,
    explanation: str,
    token_lists: Sequence[Sequence[str]],
    *,
    reuse_prefix: bool = True,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[SequenceSimulation]:
    """One forward pass per record (plus one for the shared prefix when ``reuse_prefix``)."""
    import torch

    model, tok = backend.model, backend.tokenizer
    labels = label_token_ids(tok)
    prefix = tok.encode(simulation_prefix(explanation), add_special_tokens=False)
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    device = model.device
    encoded = [record_ids(tok, tokens) for tokens in token_lists]
    longest = max((len(ids) for ids, _ in encoded), default=0)
    if limit and len(prefix) + longest > limit:
        raise ValueError(
            f"the simulation prompt needs {len(prefix) + longest} tokens but {backend.name} "
            f"takes at most {limit}; use shorter records"
        )
    # The LM head is a large share of the work (vocabulary x hidden per position): where the
    # model supports it, compute logits only at the label slots (and not at all for the prefix).
    slots_only = "logits_to_keep" in inspect.signature(model.forward).parameters
    out: list[SequenceSimulation] = []
    with backend._lock, torch.no_grad():
        cache = None
        if reuse_prefix:
            head = {"logits_to_keep": 1} if slots_only else {}
            cache = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, **head).past_key_values
            backend.forward_passes += 1
        for i, tokens in enumerate(token_lists):
            check_cancel(cancel)
            ids, slots = encoded[i]
            offset = 0 if reuse_prefix else len(prefix)
            keep = torch.tensor([offset + s for s in slots], device=device)
            head = {"logits_to_keep": keep} if slots_only else {}
            if reuse_prefix:
                res = model(input_ids=torch.tensor([ids], device=device), past_key_values=copy.deepcopy(cache),
                            use_cache=True, **head)
            else:
                res = model(input_ids=torch.tensor([prefix + ids], device=device), use_cache=False, **head)
            rows = res.logits[0] if slots_only else res.logits[0, keep]  # one row per slot
            backend.forward_passes += 1
            dv, dp, ev = [], [], []
            for row in rows:
                values, probs, expected = _distribution(row, labels)
                dv.append(values)
                dp.append(probs)
                ev.append(expected)
            out.append(SequenceSimulation(list(tokens), ev, distribution_values=dv, distribution_probabilities=dp))
            if progress:
                progress(i + 1, len(token_lists), "simulating")
    return out


# ---------- the same over HTTP: /v1/completions prompt logprobs ----------

def _simulate_completion_logprobs(backend: OpenAIBackend, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
    prefix = simulation_prefix(explanation)
    parts, slot_chars = [prefix], []
    pos = len(prefix)
    for t in tokens:
        line = token_text(t) + "\t"
        pos += len(line)
        slot_chars.append(pos)  # where the placeholder (the label's place) starts
        parts.append(line + PLACEHOLDER + "\n")
        pos += len(PLACEHOLDER) + 1
    lp = backend.prompt_logprobs("".join(parts))
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


# ---------- chat-only APIs: ask for JSON ----------

def parse_json_values(text: str, n_tokens: int) -> list[float]:
    """Values from an answer like ``[[0, 3], [5, 10]]`` (left-out tokens are 0). ValueError if unusable."""
    if not text or not text.strip():
        raise ValueError("empty answer")
    body = re.sub(r"^```(?:json)?|```$", "", text.strip(), flags=re.MULTILINE).strip()
    start, end = body.find("["), body.rfind("]")
    if start < 0 or end <= start:
        raise ValueError(f"no JSON list in the answer: {text[:80]!r}")
    chunk = body[start : end + 1]
    try:
        data = json.loads(chunk)
    except json.JSONDecodeError as e:
        try:  # pairs written without the outer list: "[0, 3], [2, 10]"
            data = json.loads(f"[{chunk}]")
        except json.JSONDecodeError:
            raise ValueError(f"invalid JSON ({e.msg}) in the answer: {text[:80]!r}") from None
    values = [0.0] * n_tokens
    if data and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in data):
        if len(data) != n_tokens:
            raise ValueError(f"got {len(data)} plain values for {n_tokens} tokens")
        pairs = list(enumerate(data))
    else:
        pairs = []
        for item in data:
            if not (isinstance(item, list) and len(item) == 2):
                raise ValueError(f"expected [token_index, value] pairs, got {str(item)[:40]!r}")
            pairs.append((item[0], item[1]))
    for i, v in pairs:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_tokens:
            raise ValueError(f"token index {i!r} is not in 0..{n_tokens - 1}")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"value {v!r} for token {i} is not a number")
        values[i] = float(min(MAX_LABEL, max(0, v)))
    return values


def _simulate_json(backend, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
    messages = json_simulator_messages(explanation, tokens)
    answer = backend.chat(messages, n=1, max_tokens=12 * len(tokens) + 20, temperature=0)[0]
    try:
        values = parse_json_values(answer, len(tokens))
    except ValueError as e:
        return SequenceSimulation(list(tokens), [], error=f"unparseable simulator answer: {e}")
    return SequenceSimulation(list(tokens), values)


# ---------- public ----------

def simulator_name(backend) -> str:
    if isinstance(backend, OpenAIBackend):
        mode = "prompt logprobs" if _use_logprobs(backend) else "JSON"
        return f"{backend.name} ({mode})"
    if isinstance(backend, LocalBackend):
        return f"{backend.name} (all-at-once logprobs)"
    return backend.name


def _use_logprobs(backend: OpenAIBackend) -> bool:
    if backend.simulation == "logprobs":
        return True
    if backend.simulation == "json" or backend.base_url is None:
        return False
    return backend.supports_logprobs()


def simulate(
    explanation: str,
    records: Sequence[ActivationRecord] | Sequence[Sequence[str]],
    simulator=None,
    *,
    max_activation: float,
    lookup: NeuronRecord | dict[str, float] | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[SequenceSimulation]:
    """Predicted 0-10 activations per record from the explanation alone.

    ``records`` are ActivationRecords or token lists. ``lookup`` (a NeuronRecord or a ready
    table) feeds the baseline simulator's token table; ``max_activation`` scales it.
    """
    if not isinstance(explanation, str) or not explanation.strip():
        raise ValueError("the explanation must be a non-empty string")
    backend = resolve_simulator(simulator)
    token_lists = [list(r.tokens) if isinstance(r, ActivationRecord) else list(r) for r in records]
    if isinstance(backend, LocalBackend):
        return simulate_all_at_once(backend, explanation, token_lists, progress=progress, cancel=cancel)
    if isinstance(backend, BaselineBackend):
        table = lookup_table(lookup) if isinstance(lookup, NeuronRecord) else dict(lookup or {})
        out = []
        for i, tokens in enumerate(token_lists):
            check_cancel(cancel)
            out.append(baseline_simulate(explanation, tokens, table, max_activation))
            if progress:
                progress(i + 1, len(token_lists), "simulating")
        return out

    use_logprobs = _use_logprobs(backend)

    def one(tokens: list[str]) -> SequenceSimulation:
        check_cancel(cancel)
        try:
            if use_logprobs:
                return _simulate_completion_logprobs(backend, explanation, tokens)
            return _simulate_json(backend, explanation, tokens)
        except BackendError as e:
            if not e.retryable:
                raise  # a wrong key, unknown model, nothing listening: no record can succeed
            return SequenceSimulation(list(tokens), [], error=str(e), retryable=True)

    # The first record goes alone: a wrong key or model fails there, after one request. The
    # rest go out in parallel (the backend's own semaphore caps requests in flight).
    results: list[SequenceSimulation | None] = [None] * len(token_lists)
    if not token_lists:
        return []
    results[0] = one(token_lists[0])
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
