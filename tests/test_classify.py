"""Detection and fuzzing scorers against a real OpenAI-compatible server on 127.0.0.1 with
scripted answers (exact balanced accuracy by hand, one call per batch, held-out records
only), the offline derivation from simulators, and LocalBackend's cost counting."""

from __future__ import annotations

import random
import re

import pytest

from neuronwidget import api
from neuronwidget.explanations import BackendError, BaselineBackend, LocalBackend, OpenAIBackend
from neuronwidget.explanations.classify import (
    ClassificationScore, balanced_accuracy, balanced_accuracy_interval, parse_answers,
)
from neuronwidget.explanations.scoring import score
from neuronwidget.records import ActivationRecord, NeuronId, NeuronRecord, SequenceSimulation, loads

from servers.scripted_server import ScriptedServer, shown_examples

CAPITALS = [" Paris", " London", " Rome", " Berlin"]
OTHER = [" the", " city", " of", " and", " is", " big", ".", " cat", " walked", " a", " dog", " ran"]
EXPLANATION = "names of capital cities"


def city_neuron(n_top: int = 24, n_random: int = 18, length: int = 12, seed: int = 3) -> NeuronRecord:
    """Fires (5-6) on capital cities, ~0 elsewhere. Top records hold 1-3 capitals; random
    records hold none, except every 4th, which holds one (too active to be a negative)."""
    rng = random.Random(seed)

    def rec(n_capitals: int) -> ActivationRecord:
        toks = [rng.choice(OTHER) for _ in range(length)]
        for i in rng.sample(range(length), n_capitals):
            toks[i] = rng.choice(CAPITALS)
        return ActivationRecord(toks, [5 + rng.random() if t in CAPITALS else rng.random() * 0.1 for t in toks])

    top = sorted((rec(rng.randint(1, 3)) for _ in range(n_top)), key=lambda r: -r.max_activation)
    rand = [rec(1 if i % 4 == 3 else 0) for i in range(n_random)]
    return NeuronRecord(NeuronId(2, 7), random_sample=rand, most_positive_activation_records=top)


def text(r: ActivationRecord) -> str:
    return "".join(r.tokens)


def chat_backend(server, tmp_path, **kw) -> OpenAIBackend:
    return OpenAIBackend("scripted", base_url=server.base_url, api_key="none", max_retries=0,
                         cache_dir=tmp_path / "cache", **kw)


def answer_by_text(planned: dict[str, int]):
    def reply(body):
        return str([planned[t] for t in shown_examples(body)])
    return reply


def assert_held_out_only(record: NeuronRecord, server: ScriptedServer) -> None:
    held_in = [text(r) for r in record.top_split("train") + record.top_split("calibration")
               + record.random_split("calibration")]
    shown = [re.sub(r"<<|>>", "", t) for b in server.bodies for t in shown_examples(b)]
    assert shown and not set(shown) & set(held_in)
    everything = server.user_texts()
    assert not any(h in u for h in held_in for u in everything)


def test_detection_exact_balanced_accuracy_one_call_per_batch(tmp_path):
    record = city_neuron()
    pos = record.top_split("valid")[:5]
    quiet = [r for r in record.random_split("valid") if r.max_activation < 1][:5]
    assert len(pos) == len(quiet) == 5
    # scripted: one activating text answered 0, two quiet ones answered 1
    planned = {text(r): 1 for r in pos} | {text(r): 0 for r in quiet}
    planned[text(pos[0])] = 0
    planned[text(quiet[0])] = planned[text(quiet[1])] = 1
    with ScriptedServer(answer_by_text(planned)) as server:
        result = score(record, EXPLANATION, chat_backend(server, tmp_path), scorer="detection", batch_size=5)
        assert server.requests == 2  # 10 examples, 5 per call
        assert_held_out_only(record, server)
        assert sorted(t for b in server.bodies for t in shown_examples(b)) == sorted(planned)
        assert all(b["temperature"] == 0 for b in server.bodies)
    # TPR 4/5, TNR 3/5 -> (0.8 + 0.6) / 2
    assert isinstance(result, ClassificationScore) and result.scorer == "detection"
    assert result.score == pytest.approx(0.7) and result.n_examples == 10 and result.via == "chat"
    low, high = result.interval
    assert low <= 0.7 <= high and high - low > 0
    assert result.cost == {"calls": 2, "cached": 0, "prompt_tokens": 200, "completion_tokens": 14}
    assert {(e.truth, e.answer) for e in result.examples if e.text == text(pos[0])} == {(1, 0)}
    assert all(e.source.startswith("valid ") for e in result.examples)
    # random records too active to be negatives are left out, and the note says so
    assert "not used as non-activating" in result.note
    assert result.neuron_id == NeuronId(2, 7) and result.side == "positive"


def test_fuzzing_marks_and_exact_balanced_accuracy(tmp_path):
    record = city_neuron()

    def judge(body):  # 1 when every marked span is a capital city
        answers = []
        for t in shown_examples(body):
            spans = re.findall(r"<<(.*?)>>", t)
            assert spans, t  # every fuzzing example is marked
            answers.append(int(all(s.strip() and all(w in {c.strip() for c in CAPITALS} for w in s.split())
                                   for s in spans)))
        return str(answers)

    with ScriptedServer(judge) as server:
        result = score(record, EXPLANATION, chat_backend(server, tmp_path), scorer="fuzzing", batch_size=3)
        assert server.requests == 4  # 10 examples, 3 per call
        assert_held_out_only(record, server)
        assert "marked" in server.user_texts()[0]
    assert result.score == 1.0 and result.interval == (1.0, 1.0)
    truths = sorted(e.truth for e in result.examples)
    assert truths == [0] * 5 + [1] * 5
    # correct marks: exactly the capitals; wrong marks: as many tokens, none a capital
    sources = {s: r for r, s in zip(record.top_split("valid") + record.top_split("test"),
                                    [f"valid top {i}" for i in range(6)] + [f"test top {i}" for i in range(6)])}
    for e in result.examples:
        r = sources[e.source]
        capitals = sum(t in CAPITALS for t in r.tokens)
        marked = re.findall(r"<<(.*?)>>", e.text)
        n_marked = sum(len(re.findall(r" ?[^ ]+", m)) for m in marked)
        assert n_marked == capitals
        if e.truth == 0:
            assert not any(c.strip() in m for m in marked for c in CAPITALS)
    # a judge that says 1 to everything: TPR 1, TNR 0 -> 0.5 exactly
    with ScriptedServer(lambda body: str([1] * len(shown_examples(body)))) as server:
        result = score(record, EXPLANATION, chat_backend(server, tmp_path / "2"), scorer="fuzzing", batch_size=10)
        assert server.requests == 1
    assert result.score == 0.5


def test_unreadable_answers_are_retried_then_failed_never_zero(tmp_path):
    record = city_neuron()
    planned = {text(r): 1 for r in record.top_split("valid")[:5]}
    planned |= {text(r): 0 for r in record.random_split("valid") if r.max_activation < 1}
    calls = []

    def reply(body):
        calls.append(len(body["messages"]))
        if len(calls) == 1:
            return "I am not sure about these."
        if len(calls) == 2:  # the retry says what was wrong
            assert len(body["messages"]) == 4 and "no bracketed list" in body["messages"][-1]["content"]
            return "[1, 1]"  # wrong length: the batch fails
        return answer_by_text(planned)(body)

    with ScriptedServer(reply) as server:
        result = score(record, EXPLANATION, chat_backend(server, tmp_path), scorer="detection", batch_size=5)
        assert server.requests == 3  # batch 1 twice (then failed), batch 2 once
    unanswered = [e for e in result.examples if e.answer is None]
    assert len(unanswered) == 5 and result.n_answered == 5
    assert "1 batch(es) failed" in result.note and "2 answers for 5 examples" in result.note
    answered = [e for e in result.examples if e.answer is not None]
    assert result.score == balanced_accuracy([e.truth for e in answered], [e.answer for e in answered])
    assert result.cost["calls"] == 3

    # a retry that reads fine counts, and max_attempts=1 gives up at once
    state = {"n": 0}

    def once_bad(body):
        state["n"] += 1
        return "hmm" if state["n"] == 1 else answer_by_text(planned)(body)

    with ScriptedServer(once_bad) as server:
        result = score(record, EXPLANATION, chat_backend(server, tmp_path / "2"), scorer="detection", batch_size=5)
        assert server.requests == 3 and result.n_answered == 10 and result.score == 1.0
    with ScriptedServer(["no list here"]) as server:
        result = score(record, EXPLANATION, chat_backend(server, tmp_path / "3"), scorer="detection",
                       batch_size=5, max_attempts=1)
        assert server.requests == 2
    assert result.score is None and result.n_answered == 0 and "no balanced accuracy" in result.note


def test_a_backend_error_no_retry_fixes_is_raised(tmp_path):
    b = OpenAIBackend("scripted", base_url="http://127.0.0.1:9/v1", api_key="none", max_retries=0,
                      cache_dir=tmp_path)
    with pytest.raises(BackendError, match="connection refused"):
        score(city_neuron(), EXPLANATION, b, scorer="detection")


def test_more_examples_come_from_the_test_split_and_the_note_says_when_short(tmp_path):
    record = city_neuron()
    with ScriptedServer(lambda body: str([1] * len(shown_examples(body)))) as server:
        result = score(record, EXPLANATION, chat_backend(server, tmp_path), scorer="detection", n_top=8,
                       n_random=0, batch_size=10)
        assert_held_out_only(record, server)
    assert sorted(e.source for e in result.examples) == sorted(
        [f"valid top {i}" for i in range(6)] + ["test top 0", "test top 1"])
    assert result.score is None and "no balanced accuracy" in result.note  # one class only
    result = score(record, EXPLANATION, "baseline", scorer="detection", n_top=20, n_random=20)
    quiet = [r for r in record.random_split("valid") + record.random_split("test") if r.max_activation < 1]
    assert len(quiet) == 10 and result.n_examples == 12 + 10
    assert "20 activating (top) examples were asked for, 12 exist" in result.note
    assert "20 non-activating (random) examples were asked for, 10 exist" in result.note


class TableSimulator:
    """A simulator-only backend with known predictions: 3.0 on " Paris", 2.9 elsewhere."""

    name = "table"
    cheap = True
    simulator_name = "table (test)"

    def simulate(self, explanation, token_lists, *, max_activation, lookup=None, progress=None, cancel=None):
        return [SequenceSimulation(list(t), [3.0 if x == " Paris" else 2.9 for x in t]) for t in token_lists]

    def explain(self, record, *, n=1, cancel=None):
        return ["x"]


def test_simulator_only_backends_derive_answers_from_predictions():
    record = city_neuron()
    result = score(record, 'the tokens "Paris", "London", "Rome", "Berlin"', BaselineBackend(), scorer="detection")
    assert result.via == "simulator" and "simulated activations" in result.note and result.judge.startswith("token lookup")
    assert result.score == 1.0 and result.cost == {"calls": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0}
    # the threshold rule, exactly: an example applies when its highest simulated value reaches 3
    result = score(record, EXPLANATION, TableSimulator(), scorer="detection")
    for e in result.examples:
        assert e.answer == int(" Paris" in e.text)
    # fuzzing: the mean over the marked tokens must reach 3
    result = score(record, EXPLANATION, TableSimulator(), scorer="fuzzing")
    for e in result.examples:
        marked = re.findall(r"<<(.*?)>>", e.text)
        words = [w for m in marked for w in re.findall(r" ?[^ ]+", m)]
        assert e.answer == int(all(w == " Paris" for w in words))
    assert result.cost["calls"] == 0


def test_bad_input_says_what_is_allowed(tmp_path):
    record = city_neuron()
    with pytest.raises(ValueError, match="'simulation', 'detection', 'fuzzing'"):
        score(record, EXPLANATION, "baseline", scorer="intruder")
    for bad in (-1, True, 1.0, "2"):
        with pytest.raises(ValueError, match="n_top must be an integer >= 0"):
            score(record, EXPLANATION, "baseline", scorer="detection", n_top=bad)
    with pytest.raises(ValueError, match="n_top \\+ n_random must be >= 1"):
        score(record, EXPLANATION, "baseline", scorer="fuzzing", n_top=0, n_random=0)
    for bad in ("", "   ", None):
        with pytest.raises(ValueError, match="non-empty string of at most 1000 characters"):
            score(record, bad, "baseline", scorer="detection")
    with pytest.raises(ValueError, match="at most 1000"):
        score(record, "x" * 1001, "baseline", scorer="fuzzing")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        score(record, EXPLANATION, "baseline", scorer="detection", batch_size=0)
    with pytest.raises(ValueError, match="via must be one of"):
        score(record, EXPLANATION, "baseline", scorer="detection", via="telepathy")
    with pytest.raises(ValueError, match="needs a backend with a chat"):
        score(record, EXPLANATION, "baseline", scorer="detection", via="chat")
    with pytest.raises(ValueError, match="simulation scorer takes no batch_size"):
        score(record, EXPLANATION, "baseline", batch_size=5)


def test_api_score_passes_the_scorer_through():
    result = api.score(city_neuron(), 'the tokens "Paris", "Rome"', "baseline", scorer="fuzzing", seed=1)
    assert isinstance(result, ClassificationScore) and result.scorer == "fuzzing" and result.score is not None


def test_parse_answers():
    assert parse_answers("[1, 0, 1]", 3) == [1, 0, 1]
    assert parse_answers("Here you go:\n```json\n[true, false]\n```", 2) == [1, 0]
    assert parse_answers("[True, False]", 2) == [1, 0]
    assert parse_answers("Example 1 fits. Answer: [1, 0] ... final: [1, 0]", 2) == [1, 0]
    for bad, why in [("", "empty answer"), ("yes, yes", "no bracketed list"), ("[1, 2]", "other than 0/1"),
                     ("[1, 0, 1]", "3 answers for 2 examples"), ("[1, 0] or [0, 1]", "different lists"),
                     ("[1.0, 0.0]", "other than 0/1"), ("[1, 0", "no bracketed list")]:
        with pytest.raises(ValueError, match=re.escape(why)):
            parse_answers(bad, 2)


def test_balanced_accuracy_and_interval_by_hand():
    assert balanced_accuracy([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.75)
    assert balanced_accuracy([1, 1, 0, 0], [1, None, 0, None]) == 1.0  # unanswered are left out
    assert balanced_accuracy([1, 1], [1, 1]) is None
    iv = balanced_accuracy_interval([1] * 10 + [0] * 10, [1] * 7 + [0] * 3 + [0] * 8 + [1] * 2)
    assert iv[0] <= 0.75 <= iv[1] and iv == balanced_accuracy_interval([1] * 10 + [0] * 10,
                                                                       [1] * 7 + [0] * 3 + [0] * 8 + [1] * 2)
    assert balanced_accuracy_interval([1, 0], [1, 0]) is None  # nothing to resample


def test_classification_score_round_trips():
    result = score(city_neuron(), 'the tokens "Paris"', "baseline", scorer="fuzzing", explainer="me")
    again = ClassificationScore.from_json(result.to_json())
    assert again == result and loads(result.to_json()) == result
    assert again.interval == result.interval and again.formatted() == result.formatted()


@pytest.fixture(scope="module")
def tiny():
    import torch
    from importlib import resources

    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(resources.files("neuronwidget") / "data" / "tiny_tokenizer.json"))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=2048, n_embd=32, n_layer=1, n_head=2)
    return LocalBackend(model=GPT2LMHeadModel(config).eval(), tokenizer=tok, name="tiny random GPT-2")


def test_local_backend_counts_tokens_and_scores_report_them(tiny):
    tok = tiny.tokenizer
    before = tiny.usage.snapshot()
    out = tiny.chat([{"role": "user", "content": "hello there"}], n=2, max_tokens=4, temperature=1.0)
    n_prompt = len(tok("user: hello there\nassistant:", add_special_tokens=False)["input_ids"])
    requests, _, prompt, completion = (a - b for a, b in zip(tiny.usage.snapshot(), before))
    assert len(out) == 2 and requests == 1 and prompt == 2 * n_prompt and 2 <= completion <= 8
    record = city_neuron(length=6)
    scored = score(record, EXPLANATION, tiny, n_top=2, n_random=1)
    assert scored.cost["calls"] == 1 and scored.cost["completion_tokens"] == 0
    assert scored.cost["prompt_tokens"] > 3 * 6 * 2  # the prefix and every record's lines
    # a random tiny model writes no list: every batch fails, and is reported, not read as 0
    result = score(record, EXPLANATION, tiny, scorer="detection", n_top=2, n_random=2, batch_size=2, max_attempts=1)
    assert result.via == "chat" and result.score is None and result.n_answered == 0
    assert "2 batch(es) failed" in result.note
    assert result.cost["calls"] == 2 and result.cost["prompt_tokens"] > 0 and result.cost["completion_tokens"] > 0
