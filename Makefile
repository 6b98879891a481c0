# Two commands on a fresh machine: `make run` (the quick-start training run) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The lock: every installed package's exact version (`make lock` writes it). `make install
# LOCK=` installs from pyproject.toml's ranges instead.
LOCK ?= requirements/constraints.txt
LOCK_VENV := .lock-venv

.PHONY: install run test test-fast lint smoke lock clean

# $(call install_into,VENV,PIP OPTIONS): a new virtual environment VENV with cmfnet, its test
# extras and the test oracle. torch goes first and pinned: an unpinned torch pulls several GB
# of CUDA wheels on a CPU machine. fastMRI is a test oracle only, installed with --no-deps
# because its metadata pulls torchvision.
define install_into
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet $(2) torch==2.13.0
	$(1)/bin/pip install --quiet $(2) -e ".[test]"
	$(1)/bin/pip install --quiet $(2) --no-deps fastmri==0.3.0
endef

$(STAMP): pyproject.toml $(LOCK)
	$(call install_into,$(VENV),$(if $(LOCK),-c $(LOCK)))
	touch $(STAMP)

install: $(STAMP)

# Regenerate the lock: the newest versions pyproject.toml's ranges allow today, resolved in a
# new virtual environment, frozen without cmfnet itself and without local version labels
# (torch's +cpu), so the pins also match the other builds of those versions.
lock:
	rm -rf $(LOCK_VENV)
	$(call install_into,$(LOCK_VENV),)
	mkdir -p $(dir $(LOCK))
	{ echo "# Written by \`make lock\` with $$($(LOCK_VENV)/bin/python --version); \`make install\` installs these."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude cmfnet | sed 's/+[^[:space:]]*$$//'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

run: $(STAMP)
	$(BIN)/python run.py experiment=quickstart

smoke: $(STAMP)
	$(BIN)/python run.py experiment=smoke

# --durations: the slowest tests are listed at the end, where the suite's time goes.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

# ruff's lint rules and formatting (pyproject.toml: [tool.ruff]); CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The tests not marked slow (no training runs or subprocesses); CI runs the full suite.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not slow"

clean:
	rm -rf $(VENV) $(LOCK_VENV) outputs multirun .cache
