# Two entry points: `make demo` (predict the bundled Alexandria sample) and `make test` (the test suite).
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
	@echo "Open next:"
	@echo "  the quicklook:  results/demo/hag_quicklook.png"
	@echo "  in QGIS:        qgis results/demo/*.tif results/demo/hag_polygons.gpkg   (styled classes, polygons)"
	@echo "  the notebook:   notebooks/01_quickstart.ipynb   (any Jupyter front end, kernel .venv/bin/python)"

test: lint browser compiler
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

test-fast: lint  # the suite without the tests marked slow (notebooks, clusters, kills)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check geoseg tests benchmarks

# Debian's chromium + chromium-driver for the web page's browser test, installed only where
# missing and possible (apt-get, root); never fails: without a browser that test skips
browser:
	@if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } \
		&& command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium + chromium-driver (browser test)"; \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
			|| echo "could not install chromium: the browser test will skip"; \
	fi; true

# a C++ compiler for torch.compile's CPU code (the --compile test), installed only where missing
# and possible; never fails: without one that test skips
compiler:
	@if ! command -v g++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ]; then \
		echo "installing g++ (torch.compile test)"; \
		{ apt-get update -qq && apt-get install -y -qq g++; } >/dev/null 2>&1 \
			|| echo "could not install g++: the torch.compile test will skip"; \
	fi; true

# the segmentation service on the demo model, the bundled sample registered for user demo
# (http://127.0.0.1:8000/, sign in with the printed token, Submit)
SERVE_DATA ?= results/serve
serve: $(STAMP)
	@echo "sign in with this token (a new one at each make serve):"
	@$(BIN)/geoseg serve token create demo --data $(SERVE_DATA)
	@test -f $(SERVE_DATA)/.demo-scene || { $(BIN)/geoseg serve scene add tests/data/alexandria/hag.tif \
		--modality dsm=tests/data/alexandria/dsm.tif --user demo --data $(SERVE_DATA) >/dev/null \
		&& touch $(SERVE_DATA)/.demo-scene; }
	$(BIN)/geoseg serve --data $(SERVE_DATA) --models models --allow-root tests/data $(SERVE_ARGS)

.PHONY: install demo test test-fast lint browser compiler serve
