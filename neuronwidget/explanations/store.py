"""Every explanation in one searchable SQLite database (FTS5 full-text index, BM25 ranking).

One row per (model, layer, neuron, side, explainer, simulator, explanation text), with its
simulation scores and when they were scored; beside it, the latest detection and fuzzing score
of each explanation text (table ``judged``: balanced accuracy, interval, judge), shown in every
row of that text (``detection`` and ``fuzzing`` in :meth:`ExplanationStore.search`'s rows) and
read by :meth:`ExplanationStore.classifications`. An explanation scored only by detection or
fuzzing gets a row of its own (no simulator, no score) so that a search finds it; it gives way
when the same text is recorded with a simulation score. Written automatically by ``nw.score``
(any scorer) and ``explain_neurons`` (both take ``store=False`` to opt out), by NeuronView's "Explain" and
"Simulate & score" (through :func:`record`), by :meth:`ExplanationStore.add_results` (an
``explain_neurons`` JSONL file, OpenAI's published files) and by the bulk importer
(:mod:`neuronwidget.explore.bulk`). Read by :meth:`ExplanationStore.search` (``nw.search``),
:meth:`ExplanationStore.best` (``top_neurons``) and :meth:`ExplanationStore.explanations`
(what a NeuronView opened in a later session shows).

It lives with the method (``explanations/``) because the method's own entry points write it;
``neuronwidget.explore.store`` re-exports it for the explore layer and older imports.

Why SQLite FTS5 and not DuckDB: it is in Python's standard library (no new dependency,
FTS5 is compiled into the sqlite3 of every CPython build we support; checked at open), it
is one file that several processes may read while one writes (WAL), and FTS5 ranks by
BM25 with a stemming tokenizer, which is what "search by words" needs. DuckDB's full-text
extension must be downloaded at first use, which this offline tool cannot do.

Queries never reach SQL as text: words are extracted from the user's query and passed to
FTS5 as quoted phrase terms through bound parameters, and searches open the file read-only,
so no query can raise an SQL error or change the database.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._io import cache_root
from ..records import SIDES, NeuronId, NeuronSimulationResults, ScoredExplanation, ScoredSimulation
from .classify import ClassificationScore

DB_NAME = "explanations.sqlite"
MAX_LIMIT = 1000
MAX_QUERY_CHARS = 1000
COLUMNS = ["model", "layer", "neuron", "side", "explanation", "score", "explainer", "simulator", "source", "relevance",
           "detection", "fuzzing"]
JUDGED_SCORERS = ("detection", "fuzzing")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS explanations (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    layer INTEGER NOT NULL,
    neuron INTEGER NOT NULL,
    side TEXT NOT NULL,
    explainer TEXT NOT NULL,
    simulator TEXT NOT NULL,
    explanation TEXT NOT NULL,
    score REAL,
    random_only_score REAL,
    source TEXT NOT NULL,
    added REAL NOT NULL,
    UNIQUE (model, layer, neuron, side, explainer, simulator, explanation)
);
CREATE INDEX IF NOT EXISTS by_neuron ON explanations (model, layer, neuron, side);
CREATE VIRTUAL TABLE IF NOT EXISTS explanations_fts USING fts5(
    explanation, content='explanations', content_rowid='id', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS explanations_ai AFTER INSERT ON explanations BEGIN
    INSERT INTO explanations_fts(rowid, explanation) VALUES (new.id, new.explanation);
END;
CREATE TRIGGER IF NOT EXISTS explanations_ad AFTER DELETE ON explanations BEGIN
    INSERT INTO explanations_fts(explanations_fts, rowid, explanation) VALUES ('delete', old.id, old.explanation);
END;
-- a row that holds nothing but its text (recorded for a detection or fuzzing score) gives way to
-- a row of the same text with a simulation score
CREATE TRIGGER IF NOT EXISTS explanations_scored AFTER INSERT ON explanations
WHEN new.score IS NOT NULL OR new.simulator != '' BEGIN
    DELETE FROM explanations WHERE model = new.model AND layer = new.layer AND neuron = new.neuron
        AND side = new.side AND explanation = new.explanation AND simulator = '' AND score IS NULL;
END;
CREATE TABLE IF NOT EXISTS judged (  -- the latest detection / fuzzing score of each explanation text
    model TEXT NOT NULL,
    layer INTEGER NOT NULL,
    neuron INTEGER NOT NULL,
    side TEXT NOT NULL,
    explanation TEXT NOT NULL,
    scorer TEXT NOT NULL,          -- 'detection' or 'fuzzing'
    score REAL,                    -- balanced accuracy; NULL: undefined
    score_low REAL,                -- its 90% interval
    score_high REAL,
    judge TEXT NOT NULL,           -- who answered (a chat model, or the simulator standing in)
    via TEXT NOT NULL,             -- 'chat' or 'simulator'
    explainer TEXT NOT NULL,
    n_examples INTEGER NOT NULL,
    n_answered INTEGER NOT NULL,
    source TEXT NOT NULL,
    added REAL NOT NULL,
    PRIMARY KEY (model, layer, neuron, side, explanation, scorer)
);
CREATE TABLE IF NOT EXISTS imported (
    model TEXT NOT NULL,
    layer INTEGER NOT NULL,
    neuron INTEGER NOT NULL,
    status TEXT NOT NULL,          -- 'done' or 'missing' (the published file does not exist)
    n INTEGER NOT NULL,            -- explanations imported from it
    PRIMARY KEY (model, layer, neuron)
);
"""

_WORD = re.compile(r"\w+", re.UNICODE)


def check_fts5() -> None:
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
    except sqlite3.OperationalError:
        raise RuntimeError(
            f"this Python's sqlite3 (SQLite {sqlite3.sqlite_version}) has no FTS5 full-text search; "
            "the explanation store needs it (standard CPython builds include it)"
        ) from None
    finally:
        con.close()


# Display labels and aliases that older versions (and OpenAI's bucket) used in place of a model's
# name; the store keys every row by the name (what ``nw.get_engine(name)`` loads).
_ALIASES = {"gpt2-small": "gpt2", "SmolLM2-135M-Instruct — real weights, not GPT-2": "smollm2-135m"}


def model_key(name: Any) -> str:
    """A model's name as the store keys it: the subject model's name (``lm.short_name``: "gpt2",
    "tiny", "smollm2-135m", a hub id or path); older labels and aliases map to it
    ("gpt2-small" -> "gpt2", "tiny (random weights ...)" -> "tiny")."""
    name = str(name)
    if name.startswith("tiny (") or name == "tiny":
        return "tiny"
    return _ALIASES.get(name, name)


ENV_STORE = "NEURONWIDGET_STORE"  # the store's file, when it should not live in the cache folder


def default_path() -> Path:
    """``$NEURONWIDGET_STORE`` (e.g. a team's shared file), else the cache folder's store."""
    env = os.environ.get(ENV_STORE)
    return Path(env).expanduser() if env else cache_root() / DB_NAME


class ExplanationStore:
    """The explanation database at ``path`` (default: ``<cache root>/explanations.sqlite``)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_path()
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"ExplanationStore({str(self.path)!r})"

    # -- writing ---------------------------------------------------------------------------
    def _writer(self) -> sqlite3.Connection:
        if self._con is None:
            check_fts5()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(_SCHEMA)
            with con:  # rows keyed by an older label move to the model's name (a row already under the name wins)
                for old, new in [*_ALIASES.items(), ("tiny (random weights — not a real GPT-2)", "tiny")]:
                    con.execute("UPDATE OR IGNORE explanations SET model = ? WHERE model = ?", (new, old))
                    con.execute("DELETE FROM explanations WHERE model = ?", (old,))
            self._con = con
        return self._con

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    @staticmethod
    def _row(model: str, layer: int, neuron: int, side: str | None, s: ScoredExplanation, source: str) -> tuple:
        sim = s.scored_simulation
        side = side or getattr(s, "side", None) or "positive"  # the explanation's own side by default
        _check_side(side)
        return (model_key(model), int(layer), int(neuron), side, s.explainer or "", s.simulator or "",
                str(s.explanation).strip(), sim.ev_correlation_score if sim else None,
                getattr(sim, "random_only_score", None) if sim else None, source,
                float(getattr(s, "scored_at", None) or time.time()))

    _INSERT = """INSERT INTO explanations (model, layer, neuron, side, explainer, simulator, explanation, score,
                 random_only_score, source, added) VALUES (?,?,?,?,?,?,?,?,?,?,?)
                 ON CONFLICT (model, layer, neuron, side, explainer, simulator, explanation)
                 DO UPDATE SET score = excluded.score, random_only_score = excluded.random_only_score,
                 added = excluded.added"""

    def add(self, scored: ScoredExplanation | ClassificationScore, model: str, layer: int | None = None,
            neuron: int | None = None, side: str | None = None, source: str = "neuronwidget") -> None:
        """Record one scored explanation (again: its scores are updated, never duplicated).
        ``side``: None = the explanation's own ``side`` ("positive" when it has none). A
        detection or fuzzing score (``ClassificationScore``) replaces the one of that scorer
        recorded for the same text before."""
        layer, neuron = _where(scored, layer, neuron)
        if not str(scored.explanation).strip():
            return
        if isinstance(scored, ClassificationScore):
            self._add_judged(scored, model, layer, neuron, side, source)
            return
        with self._lock:
            con = self._writer()
            with con:
                con.execute(self._INSERT, self._row(model, layer, neuron, side, scored, source))

    def _add_judged(self, c: ClassificationScore, model: str, layer: int, neuron: int, side: str | None,
                    source: str) -> None:
        if c.scorer not in JUDGED_SCORERS:
            raise ValueError(f"scorer must be one of {JUDGED_SCORERS}, got {c.scorer!r}")
        side = side or c.side
        _check_side(side)
        key = (model_key(model), int(layer), int(neuron), side, str(c.explanation).strip())
        low, high = c.interval or (None, None)
        now = time.time()
        with self._lock:
            con = self._writer()
            with con:
                con.execute("INSERT OR REPLACE INTO judged VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            (*key, c.scorer, c.score, low, high, c.judge or "", c.via, c.explainer or "",
                             c.n_examples, c.n_answered, source, now))
                con.execute("""INSERT INTO explanations (model, layer, neuron, side, explainer, simulator, explanation,
                               score, random_only_score, source, added) SELECT ?,?,?,?,?,'',?,NULL,NULL,?,?
                               WHERE NOT EXISTS (SELECT 1 FROM explanations WHERE model = ? AND layer = ? AND
                               neuron = ? AND side = ? AND explanation = ?)""",
                            (*key[:4], c.explainer or "", key[4], source, now, *key))

    def add_results(self, results: Iterable[NeuronSimulationResults], model: str, side: str | None = None,
                    source: str = "neuronwidget", mark_imported: bool = False) -> int:
        """Record many neurons' explanations in one transaction; returns how many rows were written."""
        rows, marks = [], []
        for res in results:
            layer, neuron = res.neuron_id.layer_index, res.neuron_id.neuron_index
            items = [s for s in res.scored_explanations if str(s.explanation).strip()]
            rows += [self._row(model, layer, neuron, side, s, source) for s in items]
            marks.append((model_key(model), layer, neuron, "done", len(items)))
        with self._lock:
            con = self._writer()
            with con:
                con.executemany(self._INSERT, rows)
                if mark_imported:
                    con.executemany("INSERT OR REPLACE INTO imported VALUES (?,?,?,?,?)", marks)
        return len(rows)

    def mark_missing(self, model: str, neurons: Iterable[tuple[int, int]]) -> None:
        with self._lock:
            con = self._writer()
            with con:
                con.executemany("INSERT OR REPLACE INTO imported VALUES (?,?,?,'missing',0)",
                                [(model_key(model), int(a), int(b)) for a, b in neurons])

    def import_jsonl(self, path: str | os.PathLike, model: str, source: str = "explain_neurons") -> int:
        """Record every line of an ``explain_neurons`` output file (neuronwidget's JSONL, both sides,
        or OpenAI's format); a last line cut short by an interruption is skipped."""
        from .files import parse_line

        results = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    try:
                        result, side = parse_line(line)
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by an interruption
                    for s in result.scored_explanations:
                        s.side = getattr(s, "side", None) or side
                    results.append(result)
        return self.add_results(results, model, source=source)

    # -- reading ---------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection | None:
        """A read-only connection, or None when the database does not exist yet."""
        if not self.path.exists():
            return None
        return sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)

    def _read(self, sql: str, params: tuple) -> list[tuple]:
        """The rows of one read-only query; none when the database or its table does not exist yet
        (an empty file, or one written by an older version)."""
        con = self._reader()
        if con is None:
            return []
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    def imported(self, model: str) -> dict[tuple[int, int], str]:
        """{(layer, neuron): 'done' | 'missing'} for the bulk import of ``model``."""
        rows = self._read("SELECT layer, neuron, status FROM imported WHERE model = ?", (model_key(model),))
        return {(a, b): s for a, b, s in rows}

    def count(self, model: str | None = None) -> int:
        if model is None:
            rows = self._read("SELECT count(*) FROM explanations", ())
        else:
            rows = self._read("SELECT count(*) FROM explanations WHERE model = ?", (model_key(model),))
        return rows[0][0] if rows else 0

    def best(self, model: str, neurons: Iterable[tuple[int, int, str]]) -> dict[tuple[int, int, str], tuple[str, float | None]]:
        """The best-scored explanation of each (layer, neuron, side) that has one."""
        wanted = list(neurons)
        con = self._reader()
        if con is None or not wanted:
            return {}
        try:
            con.execute("CREATE TEMP TABLE want (layer INTEGER, neuron INTEGER, side TEXT)")
            con.executemany("INSERT INTO want VALUES (?,?,?)", wanted)
            rows = con.execute(
                """SELECT e.layer, e.neuron, e.side, e.explanation, e.score FROM explanations e
                   JOIN want w ON e.layer = w.layer AND e.neuron = w.neuron AND e.side = w.side
                   WHERE e.model = ? ORDER BY e.score IS NULL, e.score ASC""", (model_key(model),)).fetchall()
        except sqlite3.OperationalError:
            return {}
        finally:
            con.close()
        return {(a, b, s): (text, score) for a, b, s, text, score in rows}  # last (best) wins

    def explanations(self, model: str, layer: int, neuron: int, side: str = "positive") -> list[ScoredExplanation]:
        """Every explanation recorded for one neuron's side, newest first, as ScoredExplanations
        with the score, explainer, simulator and ``scored_at`` (seconds since the epoch) kept;
        the records they were scored on are not stored, so a card shows the score alone, with a
        note saying when and by which entry (``source``) it was recorded."""
        _check_side(side)
        rows = self._read(
            """SELECT explanation, score, random_only_score, explainer, simulator, source, added FROM explanations
               WHERE model = ? AND layer = ? AND neuron = ? AND side = ? ORDER BY added DESC, id DESC""",
            (model_key(model), int(layer), int(neuron), side))
        out = []
        for text, score, random_only, explainer, simulator, source, added in rows:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(added))
            sim = ScoredSimulation([], ev_correlation_score=score, random_only_score=random_only,
                                   note=f"recorded {when} ({source}); the records it was scored on are not kept")
            out.append(ScoredExplanation(text, sim, neuron_id=NeuronId(int(layer), int(neuron)), explainer=explainer or None,
                                         simulator=simulator or None, side=side, scored_at=added))
        return out

    def classifications(self, model: str, layer: int, neuron: int, side: str = "positive") -> list[ClassificationScore]:
        """The detection and fuzzing scores recorded for one neuron's side (the latest of each
        scorer per explanation text), newest first, as ClassificationScores: ``scorer``,
        ``explanation``, ``balanced_accuracy`` (``.score``), ``balanced_accuracy_interval``
        (``.interval``), ``judge``, ``via``, ``explainer``, ``side``, ``neuron_id``; the examples
        are not stored (``examples`` is empty), and ``note`` says when and by which entry it was
        recorded and on how many examples."""
        _check_side(side)
        rows = self._read(
            """SELECT explanation, scorer, score, score_low, score_high, judge, via, explainer, n_examples,
               n_answered, source, added FROM judged WHERE model = ? AND layer = ? AND neuron = ? AND side = ?
               ORDER BY added DESC, scorer""", (model_key(model), int(layer), int(neuron), side))
        out = []
        for text, scorer, score, low, high, judge, via, explainer, n, answered, source, added in rows:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(added))
            out.append(ClassificationScore(
                scorer=scorer, explanation=text, balanced_accuracy=score,
                balanced_accuracy_interval=None if low is None else [low, high], neuron_id=NeuronId(int(layer), int(neuron)),
                side=side, judge=judge or None, via=via, explainer=explainer or None,
                note=f"recorded {when} ({source}); {answered} of {n} examples answered; the examples are not kept"))
        return out

    def search(self, query: str, model: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Rows matching the words of ``query``, best BM25 relevance first, then higher score;
        ``detection`` and ``fuzzing``: the latest balanced accuracy recorded for that text."""
        terms = query_terms(query)
        limit = _check_limit(limit)
        con = self._reader()
        if con is None:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        has_judged = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'judged'").fetchone() is not None
        judged = ", ".join(
            (f"(SELECT j.score FROM judged j WHERE j.model = e.model AND j.layer = e.layer AND j.neuron = e.neuron "
             f"AND j.side = e.side AND j.explanation = e.explanation AND j.scorer = '{scorer}')") if has_judged
            else "NULL" for scorer in JUDGED_SCORERS)  # a file written before scores were judged has no table
        sql = ("SELECT e.model, e.layer, e.neuron, e.side, e.explanation, e.score, e.explainer, e.simulator, "
               f"e.source, -bm25(explanations_fts) AS relevance, {judged} FROM explanations_fts "
               "JOIN explanations e ON e.id = explanations_fts.rowid WHERE explanations_fts MATCH ?")
        params: list[Any] = [match]
        if model is not None:
            sql += " AND e.model = ?"
            params.append(model_key(model))
        sql += " ORDER BY round(bm25(explanations_fts), 6), e.score IS NULL, e.score DESC LIMIT ?"
        params.append(limit)
        try:
            rows = con.execute(sql, params).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # an empty database file
                return []
            raise
        finally:
            con.close()
        return [dict(zip(COLUMNS, r)) for r in rows]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())


def query_terms(query: Any) -> list[str]:
    """The words of a search query (letters, digits, underscores); everything else is a separator."""
    if not isinstance(query, str):
        raise ValueError(f"query must be a string of words, got {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"query has {len(query)} characters; at most {MAX_QUERY_CHARS} are allowed")
    terms = _WORD.findall(query)
    if not terms:
        raise ValueError(
            f"query {query!r} has no words to search for; give one or more words, e.g. 'capital cities' "
            "(punctuation and search operators are ignored)"
        )
    return terms[:64]


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an int in 1..{MAX_LIMIT}, got {limit!r}")
    return limit


def _check_side(side: Any) -> None:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")


def _where(scored: ScoredExplanation, layer: Any, neuron: Any) -> tuple[int, int]:
    nid = scored.neuron_id
    layer = nid.layer_index if layer is None and nid is not None else layer
    neuron = nid.neuron_index if neuron is None and nid is not None else neuron
    for what, v in (("layer", layer), ("neuron", neuron)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{what} must be a non-negative int (or set scored.neuron_id), got {v!r}")
    return layer, neuron


_stores: dict[Path, ExplanationStore] = {}
_stores_lock = threading.Lock()


def get_store(path: str | os.PathLike | None = None) -> ExplanationStore:
    """The shared store for ``path`` (default: the one in the cache folder in force)."""
    p = Path(path) if path is not None else default_path()
    with _stores_lock:
        if p not in _stores:
            _stores[p] = ExplanationStore(p)
        return _stores[p]


def record(scored: ScoredExplanation, model: str, layer: int | None = None, neuron: int | None = None,
           side: str | None = None, source: str = "neuronwidget", store: ExplanationStore | None = None) -> None:
    """Record one scored explanation in the store (the entry NeuronView and the CLI call)."""
    (store or get_store()).add(scored, model, layer, neuron, side=side, source=source)


__all__ = ["ExplanationStore", "get_store", "record", "query_terms", "model_key", "check_fts5", "COLUMNS", "DB_NAME",
           "JUDGED_SCORERS"]
