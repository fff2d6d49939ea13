# The two commands of the README quick start. Everything runs inside .venv.
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup repro test
setup:
	@bash scripts/setup.sh

## make repro: set up, then run the whole pipeline on the embedded default corpus
repro: setup
	dvc repro

## make test: set up, then run the test suite (what .ci/run runs)
test: setup
	python -m pytest -q --durations=15 tests
