"""Backends that fail on purpose, loaded into worker processes with DREAMMASK_PLUGINS for fault tests."""

from dreammask.shared.backends import RenderBackend
from dreammask.shared.registry import register_backend


@register_backend("synthesis", "unreachable")
class UnreachableRenderer(RenderBackend):
    """Behaves like a model server that is down: a transient error on every call."""

    name = "unreachable"

    def render(self, layouts, seeds, params, image_size):
        raise ConnectionError("model server at 10.0.0.1:9999 refused the connection")
