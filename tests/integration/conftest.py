from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.agent import CollectingSink
from tests.support.bpf import require_bpf
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig


@pytest.fixture(scope="module")
def running_agent() -> Iterator[tuple[Agent, CollectingSink]]:
    """The real agent with the process probe, loaded once per test module."""
    require_bpf()
    sink = CollectingSink()
    agent = Agent(AgentConfig(), sinks=[sink], probes=["process"])
    agent.start()
    try:
        yield agent, sink
    finally:
        agent.stop()


@pytest.fixture
def sink(running_agent: tuple[Agent, CollectingSink]) -> CollectingSink:
    return running_agent[1]


@pytest.fixture
def agent(running_agent: tuple[Agent, CollectingSink]) -> Agent:
    return running_agent[0]
