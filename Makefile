# The two commands of the README quick start. Everything runs inside .venv.
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup repro test test-fast lint format smoke exp-table
setup:
	@bash scripts/setup.sh

## make repro: set up, then run the whole pipeline on the embedded default corpus
repro: setup
	dvc repro

## make test: set up, then run the test suite (what .ci/run runs)
test: setup
	python -m pytest -q --durations=15 tests

## make test-fast: the unit tests only (no end-to-end pipeline, DVC, SLURM or browser run): the inner loop
test-fast: setup
	python -m pytest -q -m "not e2e" tests

## make lint: formatting, lint and type checks (what .ci/run runs before the tests); make format fixes the first two
lint: setup
	ruff format --check .
	ruff check .
	mypy

format: setup
	ruff format .
	ruff check --fix .

## make smoke: the whole pipeline on the tiny corpus with 4 training steps, in a copy under .tavse/smoke (a minute or two)
smoke: setup
	python -m tavse.smoke $(ARGS)

## make exp-table: every variant's headline metrics in every experiment, one row each (ARGS go to dvc exp show, e.g. ARGS=-A)
exp-table: setup
	@python -m tavse.evaluation.exp_table $(ARGS)
