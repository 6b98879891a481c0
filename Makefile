# Two commands on a fresh machine: `make run` (the quick-start training run) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels on a CPU machine.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	# fastMRI is a test oracle only; --no-deps because its metadata pulls torchvision.
	$(BIN)/pip install --quiet --no-deps fastmri==0.3.0
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python run.py experiment=quickstart

smoke: $(STAMP)
	$(BIN)/python run.py experiment=smoke

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

# ruff's lint rules and formatting (pyproject.toml: [tool.ruff]); CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The tests not marked slow (no training runs or subprocesses); CI runs the full suite.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

clean:
	rm -rf $(VENV) outputs multirun .cache
