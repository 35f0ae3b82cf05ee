"""Multi-scale deformable-attention pixel decoder (Mask2Former's MSDeformAttnPixelDecoder).

Deformable attention runs in pure PyTorch (bilinear `grid_sample` per level) instead of the CUDA kernel:
the same maths, no compiled extension to build in the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..position_encoding import PositionEmbeddingSine
from ..registry import PIXEL_DECODER_REGISTRY


def ms_deform_attn_core_pytorch(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """value (N,S,M,D), sampling_locations (N,Lq,M,L,P,2) in [0,1], weights (N,Lq,M,L,P) -> (N,Lq,M*D)."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    value_list = value.split([h * w for h, w in spatial_shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1] convention
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        value_l = value_list[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        grid_l = sampling_grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (N*M, Lq, P, 2)
        sampled.append(
            F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * num_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR): each query attends to a few learned offsets
    around its reference point on every level."""

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Offsets start on a ring of directions, one per head, at growing distances per point.
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(self, query, reference_points, input_flatten, spatial_shapes, padding_mask=None):
        n, lq, _ = query.shape
        _, len_in, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, len_in, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        shapes = torch.as_tensor(spatial_shapes, dtype=query.dtype, device=query.device)
        normalizer = torch.stack(
            [shapes[:, 1], shapes[:, 0]], -1
        )  # (w, h): offsets are in pixels of each level
        locations = (
            reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        )
        out = ms_deform_attn_core_pytorch(value, spatial_shapes, locations, weights)
        return self.output_proj(out)


class MSDeformAttnEncoderLayer(nn.Module):
    def __init__(self, d_model, d_ffn, dropout, n_levels, n_heads, n_points) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, padding_mask=None):
        src2 = self.self_attn(src + pos, reference_points, src, spatial_shapes, padding_mask)
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(src2))


class MSDeformAttnEncoder(nn.Module):
    """The encoder-only deformable transformer over the flattened levels."""

    def __init__(self, d_model, nhead, num_layers, dim_feedforward, dropout, num_levels, n_points) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MSDeformAttnEncoderLayer(d_model, dim_feedforward, dropout, num_levels, nhead, n_points)
            for _ in range(num_layers)
        )
        self.level_embed = nn.Parameter(torch.empty(num_levels, d_model))
        nn.init.normal_(self.level_embed)
        for layer in self.layers:
            for name, p in layer.named_parameters():
                if p.dim() > 1 and "self_attn" not in name:
                    nn.init.xavier_uniform_(p)

    @staticmethod
    def reference_points(spatial_shapes, device) -> torch.Tensor:
        refs = []
        for h, w in spatial_shapes:
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device) / h,
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device) / w,
                indexing="ij",
            )
            refs.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
        return torch.cat(refs, 0)

    def forward(self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]):
        spatial_shapes = [tuple(s.shape[-2:]) for s in srcs]
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos_embeds)
            ],
            1,
        )
        n_levels = len(srcs)
        # No padding masks (as Mask2Former): every level's reference point is the same normalised centre.
        ref = self.reference_points(spatial_shapes, src_flat.device).to(src_flat.dtype)
        ref = ref[None, :, None, :].expand(src_flat.shape[0], -1, n_levels, -1)
        out = src_flat
        for layer in self.layers:
            out = layer(out, pos_flat, ref, spatial_shapes)
        return out, spatial_shapes


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _conv_norm(in_ch: int, out_ch: int, kernel: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        _group_norm(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    seq = nn.Sequential(*layers)
    nn.init.kaiming_uniform_(seq[0].weight, a=1)  # detectron2's c2_xavier_fill
    return seq


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention encoder over res3..res5, then an FPN step onto res2 for the per-pixel mask
    features. Returns (mask_features at stride 4, encoder output at the coarsest level,
    [3 multi-scale features, coarse to fine] for the transformer decoder)."""

    def __init__(
        self,
        input_shape: dict[str, dict[str, int]],
        *,
        in_features: list[str],
        transformer_in_features: list[str],
        conv_dim: int,
        mask_dim: int,
        common_stride: int,
        transformer_enc_layers: int,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_dropout: float,
        transformer_n_points: int,
    ) -> None:
        super().__init__()
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(f"pixel decoder inputs {missing} are not backbone outputs {sorted(input_shape)}")
        by_stride = sorted(in_features, key=lambda f: input_shape[f]["stride"])
        self.in_features = by_stride
        self.transformer_in_features = sorted(transformer_in_features, key=lambda f: input_shape[f]["stride"])
        # Coarsest first, as the decoder's level order.
        self.input_proj = nn.ModuleList()
        for f in reversed(self.transformer_in_features):
            proj = nn.Sequential(nn.Conv2d(input_shape[f]["channels"], conv_dim, 1), _group_norm(conv_dim))
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
            self.input_proj.append(proj)
        self.transformer = MSDeformAttnEncoder(
            conv_dim,
            transformer_nheads,
            transformer_enc_layers,
            transformer_dim_feedforward,
            transformer_dropout,
            len(self.transformer_in_features),
            transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_dim = mask_dim
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.constant_(self.mask_features.bias, 0)
        self.maskformer_num_feature_levels = 3
        min_stride = min(input_shape[f]["stride"] for f in self.transformer_in_features)
        self.num_fpn_levels = int(math.log2(min_stride) - math.log2(common_stride))
        fpn_features = self.in_features[: self.num_fpn_levels]
        # Finest last, applied after the encoder from coarse to fine.
        self.lateral_convs = nn.ModuleList(
            _conv_norm(input_shape[f]["channels"], conv_dim, 1, relu=False) for f in reversed(fpn_features)
        )
        self.output_convs = nn.ModuleList(_conv_norm(conv_dim, conv_dim, 3, relu=True) for _ in fpn_features)
        self._fpn_features = list(reversed(fpn_features))

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        return cls(
            input_shape,
            in_features=list(head.IN_FEATURES),
            transformer_in_features=list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            conv_dim=head.CONVS_DIM,
            mask_dim=head.MASK_DIM,
            common_stride=head.COMMON_STRIDE,
            transformer_enc_layers=head.TRANSFORMER_ENC_LAYERS,
            transformer_nheads=head.DEFORMABLE_NHEADS,
            transformer_dim_feedforward=head.DEFORMABLE_DIM_FEEDFORWARD,
            transformer_dropout=head.DEFORMABLE_DROPOUT,
            transformer_n_points=head.DEFORMABLE_N_POINTS,
        )

    def forward(self, features: dict[str, torch.Tensor]):
        # FC-CLIP runs the pixel decoder in float32 even under AMP (deformable attention is unstable in
        # half precision); the decoder after it runs under the caller's autocast.
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_fp32(features)

    def _forward_fp32(self, features: dict[str, torch.Tensor]):
        srcs, pos = [], []
        for idx, f in enumerate(reversed(self.transformer_in_features)):
            x = features[f].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        y, spatial_shapes = self.transformer(srcs, pos)
        bs = y.shape[0]
        chunks = y.split([h * w for h, w in spatial_shapes], dim=1)
        out = [
            z.transpose(1, 2).reshape(bs, -1, h, w) for z, (h, w) in zip(chunks, spatial_shapes, strict=True)
        ]
        for lateral, output_conv, f in zip(
            self.lateral_convs, self.output_convs, self._fpn_features, strict=True
        ):
            cur = lateral(features[f].float())
            y = cur + F.interpolate(out[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False)
            out.append(output_conv(y))
        multi_scale = out[: self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale
