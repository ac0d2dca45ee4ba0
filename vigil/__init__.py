"""vigil: an eBPF node agent for Kubernetes.

The import package. ``vigil.agent`` (top-level ``agent/``) is the node agent,
``vigil.operator`` (top-level ``operator/``) the kopf operator, ``vigil.api``
the pydantic models both of them share, and ``vigil.bpf`` the BPF C sources.
"""

__version__ = "0.1.0"
