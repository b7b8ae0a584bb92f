# Flame monorepo. One venv (.venv) holds every package editable plus the dev tools.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := proto spec services/common services/controller services/apiserver services/notifier services/flamelet sdk
STAMP := $(VENV)/.installed
MANIFESTS := $(foreach p,$(PACKAGES),$(p)/pyproject.toml) requirements-dev.txt

.PHONY: install system test lint proto proto-check demo bench clean

install: system $(STAMP)

# System programs the tests need: bubblewrap sandboxes user code (flame_service.sandbox);
# Debian's Chromium runs the dashboard's browser tests (Playwright never downloads a browser).
system:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo "installing bubblewrap (sandbox for user code)"; \
	  apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null; } || \
	  { echo "cannot install bubblewrap: install it, or set FLAME_SANDBOX=none (development only)" >&2; exit 1; }; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (browser tests of the dashboard)"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null; } || \
	  { echo "cannot install chromium: the browser tests (tests/browser) will be skipped" >&2; }; }

$(STAMP): $(MANIFESTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt $(foreach p,$(PACKAGES),-e ./$(p))
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

proto: install
	$(BIN)/python proto/generate.py

proto-check: install
	$(BIN)/python proto/generate.py --check

# `make demo KEEP=1` keeps the stack and the MLflow UI up until Ctrl-C.
demo: install
	$(BIN)/python -m flame.cli.demo $(if $(KEEP),--keep)

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
