"""Layout-to-image backends, registered lazily by import path."""

from dreammask.shared.registry import register_backend

_P = "dreammask.services.synthesis.backends"

register_backend("synthesis", "preview", f"{_P}.preview:PreviewRenderer")
register_backend("synthesis", "gligen", f"{_P}.gligen:GligenRenderer")
