# Groundswell: `make up` runs the stack, `make test` runs every test. Both install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make up`'s state: the database (see `clean`), logs, mail, the admin token.
RUN_DIR ?= .run
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
# The packages, as requirements/runtime.txt lists them (one list, read from there).
PACKAGES := $(shell sed -n 's|^-e \./||p' requirements/runtime.txt)
PIP := $(BIN)/pip install --disable-pip-version-check -c requirements/constraints.txt

.PHONY: install install-runtime up test lint browser clean chaos

# Two sets, one constraints file: `make up` installs only what running needs
# (requirements/runtime.txt: the packages, editable, and their dependencies); `make test`,
# `make lint` and `make install` add the test, lint and benchmark tools (requirements/dev.txt).
# pip prints its own progress (a line per package) so a first install is never silent.
$(BIN)/python:
	@echo "==> Creating $(VENV) with $(PYTHON) and upgrading pip"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --disable-pip-version-check --quiet --upgrade 'pip>=24'

$(RUNTIME_STAMP): requirements/constraints.txt requirements/runtime.txt \
                  $(foreach p,$(PACKAGES),$(p)/pyproject.toml) | $(BIN)/python
	@echo "==> Installing what running needs (requirements/runtime.txt, pinned by constraints.txt)"
	@$(PIP) -r requirements/runtime.txt
	@touch $@
	@echo "==> Runtime installed into $(VENV)"

$(DEV_STAMP): $(RUNTIME_STAMP) requirements/dev.txt
	@echo "==> Installing the test, lint and benchmark tools (requirements/dev.txt)"
	@$(PIP) -r requirements/dev.txt
	@touch $@
	@echo "==> Test and lint tools installed into $(VENV)"

install-runtime: $(RUNTIME_STAMP)

install: $(DEV_STAMP)

up: install-runtime
	$(BIN)/groundswell-stack up --run-dir $(RUN_DIR)

# The stack as `make up` runs it, under load, while faults hit it; writes the chaos
# section of docs/reliability.md (about 15 minutes).
chaos: install
	$(BIN)/groundswell-stack chaos

# The browser tests drive Debian's Chromium; installed here when we can (root + apt).
browser:
	@deploy/ci/ensure-debian-package.sh chromium chromium "the browser tests"

test: install browser
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check packages services deploy tests bench
	$(BIN)/mypy packages/contracts/groundswell_contracts packages/runtime/groundswell_runtime \
		services/signing/groundswell_signing services/counter/groundswell_counter \
		services/mailer/groundswell_mailer services/sharing/groundswell_sharing \
		deploy/stack/groundswell_stack packages/ops/groundswell_ops

# When the postgres user cannot enter the checkout, the database lives under the temp dir
# instead of $(RUN_DIR) (groundswell_stack/state.py) and is removed from there too. Standard
# library only, so it works with or without $(VENV).
clean:
	@PYTHONPATH=deploy/stack $(PYTHON) -m groundswell_stack.state clean $(RUN_DIR)
	rm -rf $(VENV)
