# Two commands for a fresh clone: `make run` and `make test`. Both install what they need.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
STAMP := .venv/.synced

.PHONY: run test lint format install browser servers

run: $(STAMP)
	$(UV) run --frozen moodbot run

test: $(STAMP) browser servers
	$(UV) run --frozen pytest

# The headless Chromium the web page's browser test drives (skipped without it).
browser:
	@bash scripts/install-browser.sh

# PostgreSQL 15 and Redis: the tests start private servers of their own (skipped without them).
servers:
	@bash scripts/install-servers.sh

lint: $(STAMP)
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: $(STAMP)
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

install: $(STAMP)

# Bytecode is compiled once here: with PYTHONDONTWRITEBYTECODE set (as on our machines) every
# start would otherwise recompile TensorFlow's Python from source (import 4 s -> 13 s).
$(STAMP): pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode
	@touch $@
