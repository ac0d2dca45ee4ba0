from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.agent import CollectingSink, fail_on_attribute_problems, running
from vigil.agent.kernel import limits
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig

# Modules whose probe an older kernel may lack (agent/kernel/limits.py): their tests
# skip there with the probe's own "not supported on <release>: <reason>".
_PROBE_OF_MODULE = {
    "test_runqlat_probe": ("runqlat", True),
    "test_process_state_probe": ("process_state", True),
    "test_syscalls_probe": ("syscalls", True),
    "test_syscalls_count": ("syscalls", False),  # count-only: latency off
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
    if module in _PROBE_OF_MODULE:
        probe, latency = _PROBE_OF_MODULE[module]
        unsupported = limits.unsupported_here(probe, latency=latency)
        if unsupported:
            pytest.skip(f"{probe}: {unsupported}")


@pytest.fixture(autouse=True)
def _attributes_are_registered() -> Iterator[None]:
    """Every event a CollectingSink saw during the test used registered attribute keys."""
    yield
    fail_on_attribute_problems()


@pytest.fixture(scope="module")
def running_agent() -> Iterator[tuple[Agent, CollectingSink]]:
    """The real agent with the process probe, loaded once per test module."""
    with running(AgentConfig(), ["process"]) as pair:
        yield pair


@pytest.fixture
def sink(running_agent: tuple[Agent, CollectingSink]) -> CollectingSink:
    return running_agent[1]


@pytest.fixture
def agent(running_agent: tuple[Agent, CollectingSink]) -> Agent:
    return running_agent[0]
