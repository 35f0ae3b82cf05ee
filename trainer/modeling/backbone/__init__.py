from .clip_convnext import CLIPConvNeXt, load_clip_backbone, resolve_weights_path

__all__ = ["CLIPConvNeXt", "load_clip_backbone", "resolve_weights_path"]
