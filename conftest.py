"""Shared by tests/ and e2e/: the `bpf` marker's skip-or-fail rule."""

from __future__ import annotations

import pytest

from tests.support.bpf import require_bpf


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("bpf") is not None:
        require_bpf()
