# `make demo` and `make test` create .venv on first use and are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxkd run digits_kd --preset default --out results/digits_kd --overwrite
	$(BIN)/jaxkd run digits_methods --preset default --out results/digits_methods --overwrite
	$(BIN)/jaxkd run spectral_kd --preset default --out results/spectral_kd --overwrite
	$(BIN)/jaxkd run spectral_w2s --preset default --out results/spectral_w2s --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/sweep.py --out benchmarks/results/sweep.json
	$(BIN)/python benchmarks/engine.py --out benchmarks/results/engine.json
	$(BIN)/python benchmarks/theory.py --out benchmarks/results/theory.json
	$(BIN)/python benchmarks/interaction.py --out benchmarks/results/interaction.json

clean:
	rm -rf $(VENV) results
