"""Run the kopf operator with vigil's handlers: from the CLI, or in a test's thread."""

from __future__ import annotations

import asyncio
import threading

import kopf

from vigil.operator.handlers import build_registry, kopf_settings
from vigil.operator.kube import Cluster, client_configuration
from vigil.operator.publisher import ConfigPublisher
from vigil.operator.settings import OperatorSettings


async def serve(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Watch policies cluster-wide until `stop_flag` is set (or the task is cancelled)."""
    configuration = client_configuration(settings.kubeconfig)
    cluster = Cluster(configuration)
    publisher = ConfigPublisher(cluster, settings)
    try:
        await kopf.operator(
            registry=build_registry(settings, publisher, configuration),
            settings=kopf_settings(settings),
            clusterwide=True,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            priority=settings.priority,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            liveness_endpoint=settings.liveness,
            memo=kopf.Memo(),
        )
    finally:
        cluster.close()
