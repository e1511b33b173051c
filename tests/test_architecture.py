"""The package's shape: imports point down the layers, never up, never in a circle.

Read from the source (AST), function-level imports included, so a lazy import cannot hide
an upward dependency. The layers, top to bottom, are the ones README's "Architecture"
section draws.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "neuronwidget"

# top -> bottom; a module may import its own layer's package and anything below it
LAYERS = [
    ("neuronwidget.cli",),
    ("neuronwidget.widgets",),
    ("neuronwidget.explore",),
    ("neuronwidget.api",),
    ("neuronwidget.explanations",),
    ("neuronwidget.activations",),
    ("neuronwidget.subject",),
    ("neuronwidget.records", "neuronwidget._io"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ["neuronwidget", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The neuronwidget module ``name`` refers to (a module, or the package holding a name)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            names = [f"{root}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "neuronwidget":
                target = _resolve(name)
                if target and target != module:
                    found.add(target)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str) -> int | None:
    for i, roots in enumerate(LAYERS):
        if any(module == r or module.startswith(r + ".") for r in roots):
            return i
    return None


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in MODULES if m != "neuronwidget" and _layer(m) is None)
    assert not unplaced, f"modules outside every layer (add them to LAYERS and README): {unplaced}"


def test_imports_point_down():
    upward = []
    for module, targets in GRAPH.items():
        if module == "neuronwidget":  # the lazy public facade may name anything
            continue
        for target in targets:
            if target == "neuronwidget" or _layer(target) < _layer(module):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_check_sees_lazy_and_relative_upward_imports(tmp_path):
    # the checker itself: a lazy, relative import from a lower layer up must be found
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from ..api import configure\n    from ..records import NeuronId\n")
    targets = _imports("neuronwidget.activations.fake", fake)
    assert targets == {"neuronwidget.api", "neuronwidget.records"}
    assert _layer("neuronwidget.api") < _layer("neuronwidget.activations.fake")


@pytest.mark.parametrize("heavy", ["torch", "numpy", "transformers", "pandas"])
def test_import_neuronwidget_is_light(heavy):
    code = f"import sys, neuronwidget as nw; nw.__all__; print({heavy!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", f"`import neuronwidget` imported {heavy}"


def test_readme_names_real_homes_for_each_layer():
    """README's "Where to change what": every file it names in a layer's paragraph exists in that
    layer's folder (or js/), so the map cannot silently go stale; the four homes a newcomer looks
    for first are among them."""
    import re

    readme = (ROOT.parent / "README.md").read_text("utf-8")
    section = readme.split("### Where to change what", 1)[1].split("\n### ", 1)[0]
    paragraphs = re.findall(r"^- \*\*(.+?)\*\*:(.*?)(?=^- \*\*|\Z)", section, flags=re.S | re.M)
    assert len(paragraphs) == 8
    named = 0
    for head, body in paragraphs:
        folder = re.search(r"`(\w+)/`", head)
        base = ROOT / folder.group(1) if folder else ROOT
        for name in re.findall(r"`([\w/<>.-]+\.(?:py|ts|json|css))`", body):
            if "<" in name:
                continue  # a pattern like js/<view>.ts
            where = [ROOT.parent / name, base / name, ROOT / name]
            assert any(p.exists() for p in where), f"README's map names {name!r} under {head!r}, which does not exist"
            named += 1
    assert named >= 30
    for home in ("**The simulator prompt**", "**the colour ramp**", "**A new model family**",
                 "**How the index stores records**"):
        assert home in section
