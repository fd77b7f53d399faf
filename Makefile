# Two commands set up everything on a fresh machine: `make dev` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test lint typecheck pytest browser bench bench-tools lock clean

# The exact versions CI tested (requirements.lock), then the project itself on top of them.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/tapedeck dev

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) browser
	$(BIN)/pytest -q

# The dashboard's tests drive Debian's chromium (Playwright, no browser download): installed here
# when missing.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# wrk, curl and GNU time come from Debian's packages, installed here when missing.
bench-tools:
	@command -v wrk >/dev/null && command -v curl >/dev/null && test -x /usr/bin/time || \
		(apt-get update -qq && apt-get install -y -qq wrk curl time)

# Every bench appends its figures to one file; the README's results table is rendered from it.
RESULTS := .data/bench-results.jsonl

bench: $(STAMP) bench-tools
	mkdir -p .data && rm -f $(RESULTS)
	$(BIN)/python bench/soak.py --tasks 100 --results $(RESULTS)
	$(BIN)/python bench/ingest.py --with-deliveries --results $(RESULTS)
	$(BIN)/python bench/callback_steps.py --results $(RESULTS)
	$(BIN)/python bench/load.py --seconds 20 --results $(RESULTS)
	$(BIN)/python bench/download.py --results $(RESULTS)
	$(BIN)/python bench/webhooks.py --results $(RESULTS)
	$(BIN)/python bench/settle.py --results $(RESULTS)
	$(BIN)/python bench/memory.py --results $(RESULTS)
	$(BIN)/python bench/retention.py --results $(RESULTS)
	$(BIN)/python bench/table.py $(RESULTS) --readme README.md

# After changing a dependency range in pyproject.toml: pin the newest versions it allows.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --extra dev --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
