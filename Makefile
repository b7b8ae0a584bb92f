# Flame monorepo. One venv (.venv) holds every package editable plus the dev tools.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := proto spec services/common services/controller services/apiserver services/notifier services/flamelet sdk
STAMP := $(VENV)/.installed
MANIFESTS := $(foreach p,$(PACKAGES),$(p)/pyproject.toml) requirements.lock
LOCKVENV := .venv-lock

.PHONY: install system bytecode test lint lock proto proto-check demo bench clean

install: system $(STAMP) bytecode

# The repo's own packages compiled to bytecode, as pip does for a wheel (an editable install is
# not): every task and service process would otherwise compile the SDK again (0.2 s of CPU
# each) wherever PYTHONDONTWRITEBYTECODE is set, as on CI. Up to date, this takes 0.2 s.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 $(PACKAGES) >/dev/null

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
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps $(foreach p,$(PACKAGES),-e ./$(p))
	touch $(STAMP)

# requirements.lock: every third-party package of requirements.in (the dev tools and the repo's
# packages with all their extras) pinned with its hashes. The repo's own packages are left out
# (installed editable with --no-deps above). Run after changing a pyproject.toml or
# requirements-dev.txt; pip-tools lives in its own venv. It resolves from pip's configured
# indexes and find-links: torch 2.13.0 must resolve to the CPU wheel (2.13.0+cpu).
lock:
	test -x $(LOCKVENV)/bin/pip-compile || { $(PY) -m venv $(LOCKVENV) && $(LOCKVENV)/bin/pip install -q pip-tools; }
	$(LOCKVENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links -o requirements.lock requirements.in
	awk '/^# WARNING: pip install will require|^# Consider using a hashable URL/ {next} \
	  /^[A-Za-z0-9_.-]+ @ file:/ {skip=1; next} skip && /^ +#/ {next} {skip=0; print}' \
	  requirements.lock > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

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
	rm -rf $(VENV) $(LOCKVENV) .pytest_cache .mypy_cache .ruff_cache
