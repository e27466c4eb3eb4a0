# Groundswell: `make up` runs the stack, `make test` runs every test. Both install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := packages/contracts packages/runtime services/signing services/counter \
            services/mailer services/sharing deploy/stack packages/ops
PROJECT_FILES := requirements/constraints.txt requirements/dev.txt \
                 $(foreach p,$(PACKAGES),$(p)/pyproject.toml)

.PHONY: install up test lint browser clean chaos

# Build-backend chatter goes to .venv/install.log; it is shown only when the install fails.
$(STAMP): $(PROJECT_FILES)
	@echo "Installing into $(VENV) (pinned by requirements/constraints.txt)..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --disable-pip-version-check --upgrade 'pip>=24' > $(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }
	@$(BIN)/pip install --disable-pip-version-check -c requirements/constraints.txt \
		-r requirements/dev.txt $(foreach p,$(PACKAGES),-e $(p)) >> $(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/groundswell-stack up

# The stack as `make up` runs it, under load, while faults hit it; writes the chaos
# section of docs/reliability.md (about 15 minutes).
chaos: install
	$(BIN)/groundswell-stack chaos

# The browser tests drive Debian's Chromium; installed here when we can (root + apt).
browser:
	@deploy/ci/ensure-chromium.sh

test: install browser
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check packages services deploy tests bench
	$(BIN)/mypy packages/contracts/groundswell_contracts packages/runtime/groundswell_runtime \
		services/signing/groundswell_signing services/counter/groundswell_counter \
		services/mailer/groundswell_mailer services/sharing/groundswell_sharing \
		deploy/stack/groundswell_stack packages/ops/groundswell_ops

clean:
	rm -rf $(VENV) .run
