"""Backends that fail on purpose, loaded into worker processes with DREAMMASK_PLUGINS for fault tests."""

from dreammask.shared.backends import RenderBackend
from dreammask.shared.registry import register_backend


@register_backend("synthesis", "unreachable")
class UnreachableRenderer(RenderBackend):
    """Behaves like a model server that is down: a transient error on every call."""

    name = "unreachable"

    def render(self, layouts, seeds, params, image_size):
        raise ConnectionError("model server at 10.0.0.1:9999 refused the connection")


@register_backend("synthesis", "slow")
class SlowRenderer(RenderBackend):
    """The preview renderer, after a pause longer than the test's visibility timeout: only a lease that is
    renewed keeps its message from being delivered a second time."""

    name = "slow"
    seconds = 30.0

    def render(self, layouts, seeds, params, image_size):
        import time

        from dreammask.services.synthesis.backends.preview import PreviewRenderer

        time.sleep(self.seconds)
        return PreviewRenderer().render(layouts, seeds, params, image_size)
