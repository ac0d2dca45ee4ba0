"""Shared by tests/ and e2e/: the `bpf` marker's skip-or-fail rule."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.support.bpf import require_bpf


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("bpf") is not None:
        require_bpf()


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_after_module() -> Iterator[None]:
    """Free a module's OpenTelemetry objects before the next module forks children.

    The SDK's batch processors and metric readers register fork hooks (held
    by weak references) that restart their threads in a forked child; tests
    spawn children with a preexec_fn, which runs those hooks between fork and
    exec. An agent and its telemetry form reference cycles, so without a
    collection a finished module's reader would still wake up in the next
    module's children.
    """
    yield
    gc.collect()
