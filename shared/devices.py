"""Which torch device a backend runs on. Imports torch only when called."""

from __future__ import annotations


def resolve_device(requested: str | None, fallback: str | None = "auto", setting: str = "DREAMMASK_DEVICE") -> str:
    """"auto" (or nothing) falls back to `fallback`, then to "cuda" where a GPU is visible, else "cpu".
    An explicit CUDA device without a visible GPU is an error that names the setting to change."""
    import torch

    device = requested if requested and requested != "auto" else (fallback or "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} is configured but no CUDA GPU is visible to this process; "
            f"set {setting}=cpu (or auto) or run the worker on a GPU node"
        )
    return device
