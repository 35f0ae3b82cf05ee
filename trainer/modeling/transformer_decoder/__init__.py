from .mask2former import MultiScaleMaskedTransformerDecoder, get_classification_logits

__all__ = ["MultiScaleMaskedTransformerDecoder", "get_classification_logits"]
