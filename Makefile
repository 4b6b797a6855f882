# Two entry points: `make demo` (predict the bundled sample) and `make test` (the test suite).
# Both create .venv on first use and install geoseg with everything it needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,notebooks]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/geoseg predict tests/data/alexandria/hag.tif --modality dsm=tests/data/alexandria/dsm.tif \
		--model models/demo --out results/demo
	@echo "outputs in results/demo/"

test: lint
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check geoseg tests benchmarks

.PHONY: install demo test lint
