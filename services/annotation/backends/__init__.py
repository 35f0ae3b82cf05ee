"""Mask and score backends, registered lazily by import path."""

from dreammask.shared.registry import register_backend

_P = "dreammask.services.annotation.backends"

register_backend("masks", "grabcut", f"{_P}.grabcut:GrabCutMasks")
register_backend("scores", "geometric", f"{_P}.geometric:GeometricScores")
register_backend("masks", "sam", f"{_P}.sam:SamMasks")
register_backend("scores", "clip", f"{_P}.clip:ClipScores")
