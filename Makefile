# `make demo` and `make test` create .venv on first use and are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo numbers test lint bench clean

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

# Every preset the README and docs quote (`jaxkd docs --runs`), run afresh into results/; then their figures
# into experiments/figures/ and every generated number into the documents (`jaxkd docs --update`).
numbers: $(STAMP)
	runs=$$($(BIN)/jaxkd docs --runs) || exit 1; \
	echo "$$runs" | while read -r experiment preset out; do \
		[ -n "$$experiment" ] || continue; \
		$(BIN)/jaxkd run "$$experiment" --preset "$$preset" --out "$$out" --overwrite --no-progress || exit 1; \
	done
	for figure in experiments/figures/*.png; do \
		run=results/$$(basename "$$figure" .png); \
		if [ -f "$$run/figure.png" ]; then cp "$$run/figure.png" "$$figure"; fi; \
	done
	$(BIN)/jaxkd docs --update

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

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
