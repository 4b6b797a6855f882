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
	$(BIN)/geoseg predict tests/data/RGB.byte.tif --model $(DEMO_MODEL) --out results/demo --tile 256
	@echo "outputs in results/demo/"

DEMO_MODEL := results/demo-untrained-unet
$(DEMO_MODEL): $(STAMP)
	$(BIN)/geoseg model init unet --bands 3 --classes 4 --seed 0 --tile 256 \
		--stats-from tests/data/RGB.byte.tif -o $(DEMO_MODEL)
demo: $(DEMO_MODEL)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check geoseg tests benchmarks

.PHONY: install demo test lint
