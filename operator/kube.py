"""The few Kubernetes API calls the operator makes itself (kopf makes the rest).

Synchronous (the `kubernetes` client); the publisher runs them in a worker thread.
Objects stay raw dicts: the policy models validate them, and a ConfigMap is written
back with every field it had, only `data[key]` changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from vigil.api.policy import GROUP, VERSION

JSON = dict[str, Any]
PLURALS = ("probepolicies", "clusterprobepolicies")
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class Conflict(Exception):
    """The ConfigMap changed since it was read (or appeared since it was found absent)."""


def client_configuration(kubeconfig: Path | None) -> client.Configuration:
    """Credentials: the given kubeconfig, else in-cluster, else the default kubeconfig."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
    elif IN_CLUSTER_TOKEN.exists():
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


def connection_info(configuration: client.Configuration, namespace: str) -> kopf.ConnectionInfo:
    """The same credentials for kopf; `namespace` receives events of cluster-scoped objects.

    kopf calls this again when the API answers 401: in-cluster tokens rotate, so the
    client's refresh hook re-reads the mounted token first.
    """
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook(configuration)
    token = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
    scheme = None
    if token and " " in token:
        scheme, token = token.split(" ", 1)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        default_namespace=namespace,
    )


@dataclass(frozen=True)
class ConfigMapState:
    text: str | None
    body: client.V1ConfigMap | None


class Cluster:
    def __init__(self, configuration: client.Configuration) -> None:
        self._api = client.ApiClient(configuration)
        self._core = client.CoreV1Api(self._api)
        self._custom = client.CustomObjectsApi(self._api)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def list_policies(self) -> list[JSON]:
        """Every ProbePolicy (all namespaces) and ClusterProbePolicy, raw."""
        items: list[JSON] = []
        for plural in PLURALS:
            listed = cast(JSON, self._custom.list_cluster_custom_object(GROUP, VERSION, plural))
            items.extend(listed["items"])
        return items

    def read_config_map(self, namespace: str, name: str, key: str) -> ConfigMapState:
        try:
            body = self._core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return ConfigMapState(None, None)
            raise
        return ConfigMapState((body.data or {}).get(key), body)

    def write_config_map(
        self, namespace: str, name: str, key: str, text: str, previous: ConfigMapState
    ) -> None:
        """Replace `data[key]` if the ConfigMap is still as read (else Conflict)."""
        try:
            if previous.body is not None:
                body = previous.body
                body.data = {**(body.data or {}), key: text}
                # Its metadata.resourceVersion makes the replace conditional.
                self._core.replace_namespaced_config_map(name, namespace, body)
            else:
                body = client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(
                        name=name,
                        namespace=namespace,
                        labels={"app.kubernetes.io/managed-by": "vigil-operator"},
                    ),
                    data={key: text},
                )
                self._core.create_namespaced_config_map(namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"ConfigMap {namespace}/{name} changed meanwhile") from None
            raise
