# The README's two commands. Both set up first (idempotent, fast when done).
VENV ?= .venv
ARGS ?=

.PHONY: setup run test lint bench doctor

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/vigil-agent run $(ARGS)

test: setup lint
	$(VENV)/bin/python -m pytest $(ARGS)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

doctor: setup
	$(VENV)/bin/vigil-agent doctor

bench: setup
	$(VENV)/bin/python bench/exec_storm.py
