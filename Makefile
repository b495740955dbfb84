# Two set-up commands: `make demo` and `make test`. Both create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
# bytecode caches under .venv, not beside the sources (a grep over gradprune/ would match .pyc files)
export PYTHONPYCACHEPREFIX := $(CURDIR)/.venv/pycache

.PHONY: install demo test test-fast lint assets clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: a bare torch requirement would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,tracking]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gradprune run recipes/tiny.yaml output.dir=results/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check gradprune tests benchmarks

assets: $(STAMP)
	$(BIN)/python -m gradprune.assets.train

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
