"""Pods as the kubelet's cgroupfs layout shows them: a real container cgroup plus its API object."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

from tests.support.kubeapi import FakeKubeAPI


def containerd_pod(
    api: FakeKubeAPI,
    scratch: Path,
    *,
    namespace: str,
    node: str,
    labels: dict[str, str] | None = None,
    name: str | None = None,
    prefix: str = "pod",
    known: bool = True,
) -> tuple[Path, str]:
    """(the container's cgroup, its 64-hex id): a real directory under `scratch` in the
    kubelet's systemd layout for containerd, and (when `known`) the running pod object on
    `node` in the test API server. The name defaults to `<prefix>-<uid head>`."""
    uid, cid = str(uuid.uuid4()), secrets.token_hex(32)
    leaf = (
        scratch
        / "kubepods.slice"
        / f"kubepods-pod{uid.replace('-', '_')}.slice"
        / f"cri-containerd-{cid}.scope"
    )
    leaf.mkdir(parents=True)
    if known:
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name or f"{prefix}-{uid[:6]}",
                    "namespace": namespace,
                    "uid": uid,
                    "labels": labels or {},
                },
                "spec": {"nodeName": node, "containers": [{"name": "main", "image": "x"}]},
                "status": {
                    "containerStatuses": [
                        {"name": "main", "image": "x", "containerID": f"containerd://{cid}"}
                    ]
                },
            }
        )
    return leaf, cid
