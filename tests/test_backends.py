"""OpenAIBackend against real servers on 127.0.0.1: our fault-injecting server, and
`transformers serve` running SmolLM2-135M-Instruct. Plus backend selection."""

import subprocess
import sys
import threading
import time

import pytest

import neuronwidget as nw
from neuronwidget.api import explain, score, simulate
from neuronwidget.explanations import BackendError, BaselineBackend, OpenAIBackend, RulesBackend
from neuronwidget.api import resolve_explainer, resolve_simulator
from neuronwidget.explanations._common import ResponseCache
from neuronwidget.explanations.backends.openai_api import LogprobsUnsupported

from explain_fixtures import capital_neuron
from servers.fault_server import FaultServer

KEY = "sk-test-SECRET-0123456789abcdef"
MSGS = [{"role": "user", "content": "hi"}]


def backend(server, tmp_path, **kw):
    opts = dict(base_url=server.base_url, api_key=KEY, timeout=0.5, max_retries=4, retry_base_s=0.01,
                cache_dir=tmp_path / "cache")
    opts.update(kw)
    return OpenAIBackend("fault-model", **opts)


def test_retries_on_429_500_hang_and_malformed_then_succeed(tmp_path):
    with FaultServer(hang_s=2.0) as server:
        server.script = ["429", "500", "hang", "malformed"]
        b = backend(server, tmp_path, max_retries=5)
        assert b.chat(MSGS) == ["capital cities."]
        assert server.requests == 5  # 4 failures retried, then the answer
        server.script = ["nochoices"]
        assert b.chat(MSGS, temperature=0.5) == ["capital cities."]
        assert server.requests == 7
        assert b.usage.requests == 2 and b.usage.prompt_tokens == 200


def test_retries_run_out_with_a_clear_error_without_the_key(tmp_path):
    with FaultServer() as server:
        server.script = ["500"] * 3
        b = backend(server, tmp_path, max_retries=2)
        with pytest.raises(BackendError) as err:
            b.chat(MSGS)
        assert server.requests == 3
        assert "failed after 3 attempts" in str(err.value) and KEY not in str(err.value)
        assert err.value.__cause__ is None and err.value.__context__ is None or KEY not in repr(err.value.__context__)


def test_key_never_reaches_the_logs(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.DEBUG), FaultServer() as server:
        server.script = ["500", "401"]
        with pytest.raises(BackendError):
            backend(server, tmp_path).chat(MSGS)
    assert caplog.text and KEY not in caplog.text


def test_401_and_404_give_clear_messages_without_the_key(tmp_path):
    with FaultServer() as server:
        server.script = ["401"]
        b = backend(server, tmp_path)
        with pytest.raises(BackendError, match="authentication failed") as err:
            b.chat(MSGS)
        assert KEY not in str(err.value) and server.requests == 1  # no retry on 401
        server.script = ["404"]
        with pytest.raises(BackendError, match="not found") as err:
            b.chat(MSGS, temperature=0.1)
        assert "fault-model" in str(err.value)
    assert KEY not in repr(b) and KEY not in b.name and KEY not in str(b.usage)


@pytest.mark.parametrize("status, message", [("401", "authentication failed (401)"), ("404", "not found (404)"),
                                             ("403", "permission denied (403)")])
def test_score_fails_fast_with_the_same_message_as_explain(tmp_path, status, message):
    record = capital_neuron(length=6)
    with FaultServer() as server:
        server.script = [status]
        with pytest.raises(BackendError) as from_explain:
            explain(record, backend(server, tmp_path, cache=False))
        for simulation in ("auto", "json", "logprobs"):
            server.requests, server.script = 0, [status] * 20
            with pytest.raises(BackendError) as from_score:
                score(record, "capital cities", backend(server, tmp_path, simulation=simulation, cache=False))
            assert message in str(from_score.value) and str(from_score.value) == str(from_explain.value)
            assert not from_score.value.retryable and KEY not in str(from_score.value)
            # no retries, no flood: the first refusal ends it (auto mode first probes for logprobs)
            assert server.requests <= 2, (simulation, server.requests)


def test_connection_refused_fails_fast_in_explain_and_score(tmp_path):
    from servers.smollm2 import free_port

    b = OpenAIBackend("m", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key=KEY, max_retries=6,
                      retry_base_s=1.0, cache=False)
    record = capital_neuron(length=6)
    for call in (lambda: explain(record, b), lambda: score(record, "capital cities", b)):
        with pytest.raises(BackendError, match="connection refused at http://127.0.0.1:") as err:
            call()
        assert not err.value.retryable  # with 6 retries of >= 0.5 s each this would take many seconds


def test_when_some_records_fail_the_note_names_the_causes(tmp_path):
    def reply(body):  # a model that answers two records with prose, the rest with JSON
        text = body["messages"][-1]["content"]
        return "they look high to me" if any(w in text for w in PROSE) else "[[0, 3], [2, 10]]"

    record = capital_neuron(length=6)
    records = record.top_split("valid")[:5] + record.random_split("valid")[:5]
    PROSE = {"\n".join(f"{i}\t{t}" for i, t in enumerate(r.tokens)) for r in records[1:3]}
    with FaultServer(reply=reply) as server:
        # both attempts for the first record fail with 500 (it goes alone, before the others)
        b = backend(server, tmp_path, simulation="json", max_retries=1, max_concurrency=1)
        server.script = ["500", "500"]
        scored = score(record, "capital cities", b)
    sims = [s.simulation for s in scored.scored_simulation.scored_sequence_simulations]
    failed = [s for s in sims if s.failed]
    assert len(failed) == 3 and sum(s.retryable for s in failed) == 1
    note = scored.scored_simulation.note
    assert note.startswith(f"3 of {len(records)} records could not be simulated")
    assert "2x unparseable simulator answer" in note and "1x chat request to" in note
    assert "failed after 2 attempts" in note and KEY not in note
    assert scored.score is not None  # the others are scored


def test_cache_keyed_by_whole_request_never_the_key(tmp_path):
    with FaultServer() as server:
        b = backend(server, tmp_path)
        b.chat(MSGS)
        b.chat(MSGS)
        assert server.requests == 1  # same request: from the cache
        b.chat(MSGS, temperature=0.2)
        b.chat([{"role": "user", "content": "other"}])
        assert server.requests == 3
        # another key, same request: still the cache (the key is not part of it)
        other = backend(server, tmp_path, api_key="sk-another-key")
        other.chat(MSGS)
        assert server.requests == 3 and other.usage.cached == 1
    files = [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]
    assert [f.name for f in files if f.suffix == ".sqlite"] == ["responses.sqlite"]  # one file, not one per request
    assert len(ResponseCache(tmp_path / "cache")) == 3
    for f in files:  # the database and its WAL
        data = f.read_bytes()
        assert KEY.encode() not in data and b"sk-another-key" not in data


def test_429_waits_as_retry_after_says(tmp_path):
    with FaultServer() as server:
        server.retry_after = "1.5"
        server.script = ["429", "500"]
        b = backend(server, tmp_path, max_retries=3)
        assert b.chat(MSGS) == ["capital cities."]
        gaps = [b - a for a, b in zip(server.times, server.times[1:])]
        assert server.requests == 3 and all(1.5 <= g < 4.0 for g in gaps), gaps  # without it: < 0.5 s, then < 1 s
        # a server that asks for more than a minute is not waited for: retries end at once, clearly
        server.retry_after, server.script = "3600", ["429"]
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"failed after 1 attempt; last error: HTTP 429") as err:
            b.chat(MSGS, temperature=0.3)
        assert time.monotonic() - t0 < 5 and err.value.retryable and KEY not in str(err.value)


def test_only_malformed_answers_are_retried_by_us_and_within_the_budget(tmp_path):
    with FaultServer() as server:
        server.script = ["malformed", "nochoices", "500", "malformed"]
        b = backend(server, tmp_path, max_retries=3)
        with pytest.raises(BackendError, match=r"failed after 4 attempts; last error: malformed response"):
            b.chat(MSGS)
        assert server.requests == 4  # SDK retries (the 500) and ours (malformed bodies) share max_retries
        server.script = ["400"]
        with pytest.raises(BackendError, match=r"HTTP 400|rejected the request \(400\)"):
            b.chat(MSGS, temperature=0.4)
        assert server.requests == 5  # no retry


def test_response_cache_is_one_sqlite_file_safe_for_concurrent_processes(tmp_path):
    folder = tmp_path / "responses"
    code = (
        "import sys; from neuronwidget.explanations._common import ResponseCache\n"
        "c = ResponseCache(sys.argv[1]); w = int(sys.argv[2])\n"
        "for i in range(150):\n"
        "    c.put({'w': w, 'i': i}, {'texts': [f'{w}-{i}']})\n"
        "    assert c.get({'w': (w + 1) % 4, 'i': 0}) in (None, {'texts': [f'{(w + 1) % 4}-0']})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(folder), str(w)], stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    cache = ResponseCache(folder)
    threads = [threading.Thread(target=lambda t=t: [cache.put({"t": t, "i": i}, i) for i in range(100)])
               for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    fresh = ResponseCache(folder)
    assert len(fresh) == 4 * 150 + 3 * 100
    assert all(fresh.get({"w": w, "i": i}) == {"texts": [f"{w}-{i}"]} for w in range(4) for i in range(150))
    assert fresh.get({"t": 2, "i": 99}) == 99 and fresh.get({"w": 9, "i": 0}) is None
    assert [p.name for p in folder.iterdir() if p.suffix == ".sqlite"] == ["responses.sqlite"]


def test_older_one_file_per_request_caches_are_still_read(tmp_path):
    from neuronwidget._io import atomic_write_json, stable_hash

    folder = tmp_path / "cache"
    with FaultServer() as server:
        b = backend(server, tmp_path)
        request = {"kind": "chat", "model": "fault-model", "base_url": server.base_url,
                   "params": {"messages": MSGS, "max_tokens": b.max_tokens, "temperature": b.temperature}, "sample": 0}
        h = stable_hash(request, length=32)
        atomic_write_json(folder / h[:2] / f"{h}.json", {"request": request, "response": {"texts": ["from 2025"]}})
        assert b.chat(MSGS) == ["from 2025"] and server.requests == 0
    assert ResponseCache(folder).get(request) == {"texts": ["from 2025"]}  # now in the database too
    (folder / h[:2] / f"{h}.json").unlink()
    assert ResponseCache(folder).get(request) == {"texts": ["from 2025"]}


def test_concurrency_limit(tmp_path):
    with FaultServer(delay_s=0.2) as server:
        b = backend(server, tmp_path, max_concurrency=2, timeout=5, cache=False)
        threads = [threading.Thread(target=b.chat, args=([{"role": "user", "content": str(i)}],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert server.requests == 6 and server.max_in_flight == 2


def test_json_simulation_failure_is_reported_not_zeros(tmp_path):
    with FaultServer(reply="I think the values are high") as server:
        b = backend(server, tmp_path, simulation="json")
        record = capital_neuron(length=6)
        sims = simulate("capital cities", record.top_split("valid")[:2], b, max_activation=record.max_activation)
        assert all(s.failed and "unparseable" in s.error for s in sims)
        server.reply = "[[0, 3], [2, 10]]"
        b = backend(server, tmp_path, simulation="json", cache=False)  # the bad answers are cached
        scored = score(record, "capital cities", b)
        ok = [s.simulation for s in scored.scored_simulation.scored_sequence_simulations]
        assert not any(s.failed for s in ok) and ok[0].expected_activations[:3] == [3.0, 0.0, 10.0]
        assert scored.simulator.endswith("(JSON)")


def test_logprobs_requested_from_a_server_without_them_is_a_clear_error(tmp_path):
    with FaultServer() as server:
        b = backend(server, tmp_path, simulation="logprobs")
        with pytest.raises(LogprobsUnsupported, match="did not return prompt logprobs"):
            simulate("x", [["a", "b"]], b, max_activation=1.0)
        auto = backend(server, tmp_path, simulation="auto")
        assert auto.supports_logprobs() is False


def test_import_without_key_and_no_key_message(monkeypatch, tmp_path):
    env = {"PATH": "", "HOME": str(tmp_path)}
    code = "import neuronwidget as nw; from neuronwidget.explanations import OpenAIBackend; print(nw.explain, OpenAIBackend('gpt-4.1-mini'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4.1-mini", cache=False).chat(MSGS)


def test_backend_selection_order(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("NEURONWIDGET_BASE_URL", raising=False)
    monkeypatch.delenv("NEURONWIDGET_MODEL", raising=False)
    assert isinstance(resolve_explainer(), RulesBackend)  # the offline default
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    chosen = resolve_explainer()
    assert isinstance(chosen, OpenAIBackend) and chosen.model == "gpt-4.1-mini" and KEY not in repr(chosen)
    monkeypatch.setenv("NEURONWIDGET_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("NEURONWIDGET_MODEL", "served")
    chosen = resolve_simulator()
    assert chosen.base_url == "http://127.0.0.1:9/v1" and chosen.model == "served"
    mine = BaselineBackend()
    nw.configure(explainer=mine, simulator=mine)
    try:
        assert resolve_explainer() is mine and resolve_simulator() is mine
        explicit = OpenAIBackend("x", base_url="http://127.0.0.1:9/v1")
        assert resolve_explainer(explicit) is explicit
    finally:
        nw.configure(explainer=None, simulator=None)
    with pytest.raises(ValueError, match="needs a model name"):
        OpenAIBackend()


# ---------- a real model behind a real server ----------

@pytest.fixture(scope="module")
def smollm2_server():
    from servers.smollm2 import serve, smollm2_folder

    folder = smollm2_folder()
    with serve(folder) as base_url:
        yield base_url, str(folder)


@pytest.mark.slow
def test_transformers_serve_explainer_and_chat_simulator(smollm2_server, tmp_path):
    base_url, model = smollm2_server
    b = OpenAIBackend(model, base_url=base_url, cache_dir=tmp_path, temperature=0, timeout=120)
    record = capital_neuron(length=6)
    try:
        explanations = explain(record, b)
        assert explanations and all(isinstance(e, str) and e.strip() for e in explanations)
        assert not explanations[0].endswith(".")
    except nw.explain.ExplanationError as e:  # the small model may refuse; then it must be reported
        assert "no usable explanation" in str(e)
    assert b.supports_logprobs() is False  # transformers serve ignores echo/logprobs: detected
    scored = score(record, "names of capital cities", b, n_top=1, n_random=0)
    sims = scored.scored_simulation.scored_sequence_simulations
    assert scored.simulator.endswith("(JSON)") and len(sims) == 1
    for s in sims:  # parsed into values, or reported as failed — never silent zeros
        assert s.simulation.failed or len(s.simulation.expected_activations) == 6
    if any(s.simulation.failed for s in sims):
        assert "could not be simulated" in scored.scored_simulation.note
    assert b.usage.requests >= 3 and b.usage.as_dict()["estimated_cost_usd"] == "unknown"


@pytest.mark.slow
def test_prompt_logprob_simulation_over_http_matches_the_in_kernel_one(tmp_path):
    from servers.logprob_server import LogprobServer
    from servers.smollm2 import smollm2_local

    local = smollm2_local()
    record = capital_neuron(length=6)
    tokens = [record.top_split("valid")[0].tokens]
    with LogprobServer(local.model, local.tokenizer) as server:
        b = OpenAIBackend("served-model", base_url=server.base_url, cache_dir=tmp_path, timeout=120)
        assert b.supports_logprobs() is True
        http = simulate("names of capital cities", tokens, b, max_activation=1.0)[0]
        assert b.name in score(record, "x", b, n_top=1, n_random=0).simulator
    assert not http.failed and len(http.expected_activations) == 6
    assert all(sum(p) == pytest.approx(1.0) for p in http.distribution_probabilities)
    kernel = local.simulate_all_at_once("names of capital cities", tokens)[0]
    # the server sends only its top 15 tokens: on the labels it did send, the renormalised
    # distribution must be the in-kernel one restricted to those labels (slots line up)
    for values, probs, kv, kp in zip(http.distribution_values, http.distribution_probabilities,
                                     kernel.distribution_values, kernel.distribution_probabilities):
        assert values, "no label among the top tokens at a slot"
        full = dict(zip(kv, kp))
        total = sum(full[v] for v in values)
        assert probs == pytest.approx([full[v] / total for v in values], abs=1e-3)


def test_a_backend_sent_to_another_process_leaves_its_key_behind(tmp_path, monkeypatch):
    import pickle

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FaultServer() as server:
        b = backend(server, tmp_path, max_concurrency=3)
        b.chat(MSGS)
        data = pickle.dumps(b)  # what Ray ships to a worker
        assert KEY.encode() not in data
        copy = pickle.loads(data)
        assert copy.max_concurrency == 3 and copy.name == b.name
        assert copy.chat(MSGS, temperature=0.3) == ["capital cities."]  # works there, with that process's key
        assert server.bodies and server.requests == 2


def test_resolving_a_simulator_sends_no_request():
    # isinstance() on a runtime Protocol would read OpenAIBackend.simulator_name, which asks the
    # server whether it has prompt logprobs; choosing a backend must not touch the network
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/v1"
        backend = OpenAIBackend("m", base_url=url, api_key="sk-test")
        assert resolve_simulator(backend) is backend and resolve_explainer(backend) is backend
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
