"""README's code works as written.

* Every call of the public API that README shows (``nw.something(...)`` in its Python blocks
  and in its inline code) resolves in a fresh interpreter after ``import neuronwidget as nw``
  alone, and its arguments bind to the function's signature: a renamed function or keyword, or
  a subpackage reachable only after another import (``nw.widgets.export_html``), fails here.
* Every Python block runs as written (after ``import neuronwidget as nw``, offline, in a fresh
  interpreter with an empty cache folder), except blocks README marks on the line before them:
  ``<!-- readme-test: skip: why -->`` (they need the network, e.g. GPT-2's weights, or a
  GPU or cluster), ``<!-- readme-test: slow -->`` (run, marked slow), or
  ``<!-- readme-test: with: LINE | "A" -> "B" | why: ... -->``: run (marked slow) on what the
  marker says instead, in the open in README's source: each LINE runs first (e.g. an offline
  model configured), each ``A -> B`` replaces text of the block (A must be in it, so a stale
  marker fails), ``why`` says what is substituted and why (GPT-2's weights need the network).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*(skip|slow|with)\s*:?\s*(.*?)\s*-->")


def substituted(block: dict) -> str:
    """A ``with`` block's code as the test runs it: the marker's lines first, its replacements made."""
    before, code = [], block["code"]
    for item in (x.strip() for x in block["why"].split(" | ")):
        if item.startswith("why:"):
            continue
        if " -> " in item:
            old, new = item.split(" -> ", 1)
            assert old in code, f"README.md:{block['line']}: the marker replaces {old!r}, which the block does not have"
            code = code.replace(old, new)
        else:
            before.append(item)
    return "".join(line + "\n" for line in before) + code


def blocks() -> list[dict]:
    """README's Python blocks: {line, code, mark, why}."""
    lines = README.read_text("utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            prev = lines[i - 1] if i else ""
            m = MARKER.search(prev)
            out.append({"line": i + 1, "code": "\n".join(lines[i + 1:j]) + "\n",
                        "mark": m.group(1) if m else None, "why": m.group(2) if m else ""})
            i = j
        i += 1
    return out


def _chain(node: ast.AST) -> list[str] | None:
    """["nw", "widgets", "export_html"] for nw.widgets.export_html; None if not rooted at nw."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id == "nw":
        return ["nw", *reversed(names)]
    return None


def documented_calls() -> list[dict]:
    """{where, name, nargs, star, keywords} for each nw.* call in README's blocks and inline code."""
    sources = [(f"README.md:{b['line']}", b["code"]) for b in blocks()]
    text = README.read_text("utf-8")
    for m in re.finditer(r"`(nw\.[^`]+)`", text):
        sources.append((f"README.md:{text[:m.start()].count(chr(10)) + 1} (inline)", m.group(1)))
    calls = []
    for where, code in sources:
        try:
            tree = ast.parse(code)
        except SyntaxError:
            if "(inline)" in where:
                continue  # prose like `nw.explain` … without a complete call
            raise AssertionError(f"{where}: the block is not valid Python") from None
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (chain := _chain(node.func)):
                calls.append({"where": where, "name": chain, "nargs": len(node.args),  # `...`: "something here"
                              "star": any(isinstance(a, ast.Starred) or (isinstance(a, ast.Constant) and a.value is ...)
                                          for a in node.args),
                              "keywords": [k.arg for k in node.keywords if k.arg is not None]})
            elif isinstance(node, ast.Attribute) and (chain := _chain(node)) and len(chain) > 1:
                calls.append({"where": where, "name": chain, "nargs": None, "star": False, "keywords": []})
    return calls


CHECK = r"""
import inspect, json, sys
import neuronwidget as nw
bad = []
for c in json.loads(sys.stdin.read()):
    obj, label = nw, "nw"
    try:
        for part in c["name"][1:]:
            obj = getattr(obj, part)
            label += "." + part
    except AttributeError as e:
        bad.append(f"{c['where']}: {label}.{part} does not resolve in a fresh kernel ({e})")
        continue
    if c["nargs"] is None or c["star"]:
        continue
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        continue
    try:
        sig.bind(*[None] * c["nargs"], **{k: None for k in c["keywords"]})
    except TypeError as e:
        bad.append(f"{c['where']}: {'.'.join(c['name'])}({c['nargs']} args, {c['keywords']}) does not fit {sig}: {e}")
print(json.dumps(bad))
"""


def test_readme_has_python_blocks_and_calls():
    assert len(blocks()) >= 5 and len(documented_calls()) >= 30


def test_every_documented_call_resolves_and_fits_its_signature():
    out = subprocess.run([sys.executable, "-c", CHECK], input=json.dumps(documented_calls()), capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    bad = json.loads(out.stdout.strip().splitlines()[-1])
    assert not bad, "\n".join(bad)


def test_a_missing_name_would_be_caught():
    """The check above can fail: a name README might show wrongly is reported."""
    calls = [{"where": "x", "name": ["nw", "widgets", "no_such_function"], "nargs": 0, "star": False, "keywords": []},
             {"where": "y", "name": ["nw", "search"], "nargs": 1, "star": False, "keywords": ["no_such_keyword"]}]
    out = subprocess.run([sys.executable, "-c", CHECK], input=json.dumps(calls), capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    bad = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(bad) == 2 and "no_such_function" in bad[0] and "no_such_keyword" in bad[1]


def test_a_with_marker_runs_what_it_says():
    """The substitution is what the marker says, and a marker that no longer fits its block fails."""
    block = {"line": 1, "code": 'nw.NeuronView(5, 131, model="gpt2")\n', "mark": "with",
             "why": 'nw.configure(model="tiny") | (5, 131 -> (1, 131 | "gpt2" -> "tiny" | why: offline'}
    assert substituted(block) == 'nw.configure(model="tiny")\nnw.NeuronView(1, 131, model="tiny")\n'
    with pytest.raises(AssertionError, match="does not have"):
        substituted({**block, "code": "nw.NeuronView(7, 9)\n"})


def _params():
    for b in blocks():
        marks = [pytest.mark.slow] if b["mark"] in ("slow", "with") else []
        if b["mark"] == "skip":
            marks = [pytest.mark.skip(reason=f"README.md:{b['line']}: {b['why']}")]
        yield pytest.param(b, id=f"line{b['line']}", marks=marks)


@pytest.mark.parametrize("block", list(_params()))
def test_readme_block_runs_as_written(block, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    home = Path(os.environ.get("NEURONWIDGET_CACHE") or Path.home() / ".cache" / "neuronwidget")
    if (home / "models").is_dir():  # converted weights (SmolLM2) are reused, nothing else
        (cache / "models").symlink_to(home / "models", target_is_directory=True)
    code = "import neuronwidget as nw\n" + (substituted(block) if block["mark"] == "with" else block["code"])
    env = {**os.environ, "NEURONWIDGET_CACHE": str(cache), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "NEURONWIDGET_ONLINE_CORPUS": "0"}
    env.pop("OPENAI_API_KEY", None)
    env.pop("NEURONWIDGET_BASE_URL", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0, f"README.md:{block['line']}:\n{out.stderr[-4000:]}"
