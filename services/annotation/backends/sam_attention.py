"""SAM's image-encoder attention through `torch.nn.functional.scaled_dot_product_attention`.

segment-anything's `Attention` multiplies q and k, adds the decomposed relative-position terms, runs a
softmax and multiplies by v, materialising the attention matrix and its softmax as separate tensors: in
the global-attention blocks of a 1024 px image that is (heads, 4096, 4096) per image, twice. Here the
relative-position terms become the additive mask of one fused SDPA call (the memory-efficient kernel on
a GPU, the fused kernel on the CPU), which computes the same function: `use_sdpa` swaps the class of each
attention module in place, so weights, state-dict keys and checkpoints are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos


class SdpaAttention(Attention):
    """`segment_anything.modeling.image_encoder.Attention` with a fused attention kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        # (3, B, heads, H*W, head_dim)
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = None
        if self.use_rel_pos:
            bias = relative_position_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


def relative_position_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                           size: tuple[int, int]) -> torch.Tensor:
    """The decomposed relative-position terms SAM adds to q·kᵀ (from the unscaled q), as an additive
    attention mask of shape (B, heads, H*W, H*W)."""
    b, heads, n, dim = q.shape
    h, w = size
    rh = get_rel_pos(h, h, rel_pos_h).to(q.dtype)
    rw = get_rel_pos(w, w, rel_pos_w).to(q.dtype)
    r_q = q.reshape(b * heads, h, w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)  # (B*heads, H, W, H)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)  # (B*heads, H, W, W)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.reshape(b, heads, n, h * w)


def _swap(image_encoder: torch.nn.Module, old: type, new: type) -> int:
    n = 0
    for module in image_encoder.modules():
        if type(module) is old:
            module.__class__ = new
            n += 1
    return n


def use_sdpa(image_encoder: torch.nn.Module) -> int:
    """Switch every attention module of a SAM image encoder to `SdpaAttention`; returns how many."""
    return _swap(image_encoder, Attention, SdpaAttention)


def use_stock(image_encoder: torch.nn.Module) -> int:
    """Undo `use_sdpa` (segment-anything's own attention), e.g. to compare the two."""
    return _swap(image_encoder, SdpaAttention, Attention)
