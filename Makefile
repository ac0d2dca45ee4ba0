# The README's two commands. Both set up first (idempotent, fast when done).
VENV ?= .venv
ARGS ?=

.PHONY: setup run test test-kernels lint bench doctor

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/vigil-agent run $(ARGS)

test: setup lint
	$(VENV)/bin/python -m pytest $(ARGS)

# Boot the newest kernel of each Debian suite (5.10 ... 7.x) under QEMU and run the
# kernel-marked integration tests inside each (e2e/kernels/run.py; KERNELS=sid,6.1 picks some).
test-kernels: setup
	$(VENV)/bin/python e2e/kernels/run.py

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

doctor: setup
	$(VENV)/bin/vigil-agent doctor

bench: setup
	$(VENV)/bin/python bench/exec_storm.py
