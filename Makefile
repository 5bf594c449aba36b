# The two commands of the README:
#   make demo   train and evaluate on MovieLens 100K (synthetic fallback offline), print a table
#   make test   run the test suite
# Both create .venv and install the pinned dependencies first.
#
# torch comes first, as the CPU wheel from PyTorch's CPU index (no CUDA packages, ~200 MB
# instead of ~2.8 GB); when that index cannot be reached within TORCH_TIMEOUT seconds, the
# plain pin of constraints.txt is installed instead. On a GPU machine:
#   make TORCH_INDEX= demo                       PyPI's torch (on Linux: built with CUDA)
#   make TORCH_INDEX=<a CUDA index> demo         one of the indexes pytorch.org lists
PY ?= python3
VENV := .venv
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_TIMEOUT ?= 10
# MovieLens archives: AUTOREC_DATA if set, else ../shared/datasets when present (this
# project's CI layout); without either, the library uses its cache or downloads.
AUTOREC_DATA ?= $(abspath $(wildcard ../shared/datasets))
export AUTOREC_DATA
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ]; then \
	  echo "installing torch from $(TORCH_INDEX)"; \
	  $(BIN)/python -m pip install -q --timeout $(TORCH_TIMEOUT) --retries 0 \
	    --index-url $(TORCH_INDEX) -c constraints.txt torch \
	  || { echo "$(TORCH_INDEX) could not be used: installing torch as pinned in constraints.txt"; \
	       $(BIN)/python -m pip install -q -c constraints.txt torch; }; \
	fi
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
