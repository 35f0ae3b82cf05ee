from .msdeform import MSDeformAttn, MSDeformAttnPixelDecoder, ms_deform_attn_core_pytorch

__all__ = ["MSDeformAttn", "MSDeformAttnPixelDecoder", "ms_deform_attn_core_pytorch"]
