# importd: one entry point for people and CI.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install services browser test-tools test lint demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

services:
	@scripts/services.sh

lint: install
	$(VENV)/bin/ruff check importd api tests
	$(VENV)/bin/mypy importd api
	$(VENV)/bin/lint-imports

browser:
	@scripts/browser.sh

# Tools some tests need (the browser test's Chromium is `browser`); installed, never skipped.
test-tools: browser
	@scripts/ensure-systemd-analyze.sh

# Two phases at once (scripts/test.sh): the tests that share nothing with other runs in 3
# processes (each has its own vhost, database and Redis prefix; a file stays in one process), and
# the ones that stop the broker, change its settings or inject faults in one process against a
# RabbitMQ node of their own (they print the fault summary).
test: install services test-tools
	PY=$(PY) scripts/test.sh

demo: install services
	$(PY) scripts/demo.py

bench: install services
	$(PY) -m tests.bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
