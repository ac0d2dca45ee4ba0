"""Namespace labels listed from a (fake, stateful) API server, refreshed when one is missing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.kubeapi import FakeKubeAPI
from vigil.agent.enrich.namespaces import NamespaceCache
from vigil.agent.enrich.pods import api_client_from_environment


def _namespace(name: str, **labels: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_replace_all_moves_generation_only_on_change() -> None:
    cache = NamespaceCache()
    assert cache.labels("a") is None
    assert cache.replace_all([{"metadata": {"name": "a", "labels": {"env": "prod"}}}])
    first = cache.labels("a")
    assert first == {"env": "prod"}
    assert cache.generation == 1
    assert not cache.replace_all([{"metadata": {"name": "a", "labels": {"env": "prod"}}}])
    assert cache.generation == 1
    assert cache.replace_all(
        [
            {"metadata": {"name": "a", "labels": {"env": "prod"}}},
            {"metadata": {"name": "b"}},
        ]
    )
    assert cache.labels("a") is first  # unchanged entries keep their identity
    assert cache.labels("b") == {}
    assert cache.generation == 2


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, str]]:
    with FakeKubeAPI(namespaces=()) as server:
        yield server, str(server.kubeconfig(tmp_path))


def test_lists_labels_and_refreshes_for_an_unknown_namespace(
    api: tuple[FakeKubeAPI, str],
) -> None:
    server, kubeconfig = api
    server.create(_namespace("shop", env="prod"))
    cache = NamespaceCache(
        api_client=api_client_from_environment(kubeconfig),
        refresh_seconds=60.0,  # only a request can explain a second list
        min_interval=0.1,
    )
    cache.start()
    try:
        assert cache.synced.wait(5)
        assert cache.labels("shop") == {"env": "prod"}
        server.create(_namespace("late", team="a"))
        server.update(_namespace("shop", env="dev"))
        assert cache.labels("late") is None  # asks for a refresh
        assert _eventually(lambda: cache.labels("late") == {"team": "a"})
        assert cache.labels("shop") == {"env": "dev"}
        assert cache.counters["api_errors"] == 0
        assert cache.counters["lists"] in (2, 3)  # a lookup racing the list may ask once more
    finally:
        cache.stop()
