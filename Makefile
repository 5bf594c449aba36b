# The two commands of the README:
#   make demo   train and evaluate on MovieLens 100K (synthetic fallback offline), print a table
#   make test   run the test suite
# Both create .venv and install the pinned dependencies first.
PY ?= python3
VENV := .venv
# MovieLens archives: AUTOREC_DATA if set, else ../shared/datasets when present (this
# project's CI layout); without either, the library uses its cache or downloads.
AUTOREC_DATA ?= $(abspath $(wildcard ../shared/datasets))
export AUTOREC_DATA
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

.PHONY: setup demo test bench-quick
setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/autorec demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/paper_tables.py --quick
