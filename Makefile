# The README's two commands. Both set up first (idempotent, fast when done).
VENV ?= .venv
ARGS ?=

.PHONY: setup run test test-otel-floor test-kernels lint bench doctor

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/vigil-agent run $(ARGS)

# ARGS go to the main pytest run; the floor run is the `telemetry` tests, always.
test: setup lint
	$(VENV)/bin/python -m pytest $(ARGS)
	@bash scripts/test-otel-floor.sh

# The `telemetry` tests against the lowest OpenTelemetry releases pyproject.toml
# allows, in their own .venv-otel-floor (vigil uses private SDK names).
test-otel-floor: setup
	@bash scripts/test-otel-floor.sh

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
