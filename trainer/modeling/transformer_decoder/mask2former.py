"""Mask2Former's multi-scale transformer decoder with masked attention, with FC-CLIP's open-vocabulary
class head: the pixel decoder's mask features, pooled under each query's predicted mask and projected
(`_mask_pooling_proj`: LayerNorm + Linear), are added to the query's decoder output; `class_embed` maps that
sum into CLIP's joint space, scored by cosine against the vocabulary's text embeddings (plus a learned void
embedding) instead of a fixed linear classifier.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..position_encoding import PositionEmbeddingSine
from ..registry import TRANSFORMER_DECODER_REGISTRY


def get_classification_logits(
    x: torch.Tensor, text_classifier: torch.Tensor, logit_scale: torch.Tensor, num_templates: list[int]
) -> torch.Tensor:
    """Cosine logits of embeddings x (B,Q,D) against the classifier rows.

    `text_classifier` holds sum(num_templates) synonym embeddings, grouped per class, optionally followed
    by one void row; a class's logit is the max over its synonyms (OpenSeg/ODISE max-ensemble). Returns
    (B,Q,K) or (B,Q,K+1) when the void row is present."""
    x = F.normalize(x, dim=-1)
    scale = torch.clamp(logit_scale.exp(), max=100)
    logits = scale * x @ text_classifier.t()
    per_class = []
    start = 0
    for n in num_templates:
        per_class.append(logits[..., start : start + n].max(-1).values)
        start += n
    if text_classifier.shape[0] == start + 1:
        per_class.append(logits[..., -1])
    elif text_classifier.shape[0] != start:
        raise ValueError(
            f"text classifier has {text_classifier.shape[0]} rows, expected {start} (+1 void) from num_templates"
        )
    return torch.stack(per_class, dim=-1)


def mask_pool(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Average of features (B,C,H,W) over each query's foreground (mask logit > 0) -> (B,Q,C).

    The mask is binarised and detached, as in FC-CLIP (after ODISE): gradients reach the features, not
    the mask that selects them. An empty mask pools to zeros instead of dividing by zero."""
    if features.shape[-2:] != mask_logits.shape[-2:]:
        mask_logits = F.interpolate(mask_logits, size=features.shape[-2:], mode="bilinear", align_corners=False)
    with torch.no_grad():
        mask = (mask_logits.detach() > 0).to(features.dtype)
        mask = mask / (mask.sum(dim=(-1, -2), keepdim=True) + 1e-8)
    return torch.einsum("bchw,bqhw->bqc", features, mask)


class SelfAttentionLayer(nn.Module):
    def __init__(self, d_model, nhead, dropout=0.0, normalize_before=False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier(self)

    def forward(self, tgt, query_pos):
        if self.normalize_before:
            t = self.norm(tgt)
            q = k = t + query_pos
            return tgt + self.dropout(self.self_attn(q, k, value=t)[0])
        q = k = tgt + query_pos
        return self.norm(tgt + self.dropout(self.self_attn(q, k, value=tgt)[0]))


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model, nhead, dropout=0.0, normalize_before=False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier(self)

    def forward(self, tgt, memory, memory_mask, pos, query_pos):
        t = self.norm(tgt) if self.normalize_before else tgt
        tgt2 = self.multihead_attn(
            query=t + query_pos, key=memory + pos, value=memory, attn_mask=memory_mask
        )[0]
        out = tgt + self.dropout(tgt2)
        return out if self.normalize_before else self.norm(out)


class FFNLayer(nn.Module):
    def __init__(self, d_model, dim_feedforward, dropout=0.0, normalize_before=False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier(self)

    def forward(self, tgt):
        t = self.norm(tgt) if self.normalize_before else tgt
        out = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(t)))))
        return out if self.normalize_before else self.norm(out)


def _xavier(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class MLP(nn.Module):
    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim], strict=True)
        )

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Queries attend, layer by layer, to one level of the pixel decoder's pyramid (coarse to fine, round
    robin), each cross-attention restricted to the foreground of the mask the previous layer predicted."""

    def __init__(
        self,
        in_channels: int,
        *,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        embed_dim: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dec_layers < 2:
            raise ValueError("MODEL.MASK_FORMER.DEC_LAYERS must be >= 2 (raw-query prediction + 1 layer)")
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.num_heads = nheads
        self.num_layers = dec_layers - 1  # the first prediction comes from the learned queries alone
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(self.num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(self.num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout, pre_norm) for _ in range(self.num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.num_feature_levels = 3
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                conv = nn.Conv2d(in_channels, hidden_dim, 1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.constant_(conv.bias, 0)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())
        # FC-CLIP: mask-pooled pixel features join the query before the class head, which projects into
        # CLIP's embedding space; the scale is learned (CLIP init).
        self._mask_pooling_proj = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, hidden_dim))
        self.class_embed = MLP(hidden_dim, hidden_dim, embed_dim, 3)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, embed_dim: int):
        mf = cfg.MODEL.MASK_FORMER
        return cls(
            in_channels,
            hidden_dim=mf.HIDDEN_DIM,
            num_queries=mf.NUM_OBJECT_QUERIES,
            nheads=mf.NHEADS,
            dim_feedforward=mf.DIM_FEEDFORWARD,
            dec_layers=mf.DEC_LAYERS,
            pre_norm=mf.PRE_NORM,
            mask_dim=cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            enforce_input_project=mf.ENFORCE_INPUT_PROJ,
            embed_dim=embed_dim,
            dropout=mf.DROPOUT,
        )

    def forward(self, x, mask_features, text_classifier, num_templates):
        """x: 3 feature maps (coarse to fine). Returns the last layer's pred_logits (B,Q,K+1), pred_masks
        (B,Q,h,w) and pred_embeds (B,Q,D: the projected query embeddings the logits come from), and the
        same for the earlier layers in aux_outputs (deep supervision)."""
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(x)}")
        src, pos, size_list = [], [], []
        for i in range(self.num_feature_levels):
            size_list.append(x[i].shape[-2:])
            pos.append(self.pe_layer(x[i]).flatten(2).permute(2, 0, 1))
            s = self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(s.permute(2, 0, 1))  # (HW, B, C)
        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)

        predictions = []
        pred, attn_mask = self._prediction_heads(
            output, mask_features, size_list[0], text_classifier, num_templates
        )
        predictions.append(pred)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            # A query whose mask covers nothing would attend to nothing (NaN): let it see everything.
            attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False
            output = self.transformer_cross_attention_layers[i](
                output, src[level], attn_mask, pos[level], query_embed
            )
            output = self.transformer_self_attention_layers[i](output, query_embed)
            output = self.transformer_ffn_layers[i](output)
            pred, attn_mask = self._prediction_heads(
                output,
                mask_features,
                size_list[(i + 1) % self.num_feature_levels],
                text_classifier,
                num_templates,
            )
            predictions.append(pred)
        out = dict(predictions[-1])
        out["aux_outputs"] = predictions[:-1]
        return out

    def _prediction_heads(self, output, mask_features, attn_mask_target_size, text_classifier, num_templates):
        decoder_output = self.decoder_norm(output).transpose(0, 1)  # (B, Q, C)
        mask_embed = self.mask_embed(decoder_output)
        masks = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        pooled = self._mask_pooling_proj(mask_pool(mask_features, masks))
        class_embed = self.class_embed(decoder_output + pooled)
        logits = get_classification_logits(class_embed, text_classifier, self.logit_scale, num_templates)
        attn_mask = F.interpolate(masks, size=attn_mask_target_size, mode="bilinear", align_corners=False)
        # True = not allowed: attend only where the current mask prediction is foreground.
        attn_mask = (
            attn_mask.sigmoid().flatten(2).unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1) < 0.5
        ).detach()
        return {"pred_logits": logits, "pred_masks": masks, "pred_embeds": class_embed}, attn_mask
