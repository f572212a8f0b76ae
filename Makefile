# Two commands from a clean clone: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable '.[test]'
	touch $(STAMP)

install: $(STAMP)

## the default simulation: embedded digits, 4 clients, DP-SGD, no network needed
run: $(STAMP)
	$(BIN)/fedshield simulate

## the whole test suite (slow end-to-end tests included)
test: $(STAMP)
	$(BIN)/python -m pytest

## everything except the slow end-to-end tests
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

benchmark: $(STAMP)
	$(BIN)/python -m simulations.benchmark

clean:
	rm -rf $(VENV) runs .pytest_cache
