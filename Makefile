# The newcomer's path: `make run` and `make test`, each setting up everything it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Build caches live outside the repository so reruns are fast and clones stay clean.
CACHE ?= $(HOME)/.cache/spanmeter

.PHONY: run test venv collector bench clean

# ingest/_otlp.c: the compiled decoder is built by the install (in place, for the editable one).
$(STAMP): pyproject.toml constraints.txt ingest/_otlp.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[server,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/spanmeter serve

collector:
	@bash collector/build.sh "$(CACHE)/collector"

test: $(STAMP)
	@if command -v go >/dev/null 2>&1; then bash collector/build.sh "$(CACHE)/collector"; fi
	SPANMETER_COLLECTOR_CACHE="$(CACHE)/collector" $(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .spanmeter ingest/*.so build
