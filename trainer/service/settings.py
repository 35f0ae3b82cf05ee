"""The training service's settings: `TrainerSettings`, defined in dreammask.trainer.settings (the module the
platform's settings checks list)."""

from dreammask.trainer.settings import TrainerSettings

__all__ = ["TrainerSettings"]
