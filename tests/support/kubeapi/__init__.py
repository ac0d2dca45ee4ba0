"""A stateful Kubernetes API test server speaking the real HTTP API (see ``server``)."""

from .admission import resource_from_crd
from .errors import ApiError
from .resources import CustomResource, ResourceType
from .server import FakeKubeAPI

__all__ = ["ApiError", "CustomResource", "FakeKubeAPI", "ResourceType", "resource_from_crd"]
