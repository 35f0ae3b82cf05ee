"""Writes fcclip_convnext_large_manifest.json: parameter names and shapes of the released FC-CLIP
ConvNeXt-L COCO-panoptic checkpoint, as its `model` state dict spells them.

How it is derived (no FC-CLIP checkpoint can be downloaded here, and nothing comes from this project's
model):

- `backbone.clip_model.*`: FC-CLIP's backbone (fcclip/modeling/backbone/clip.py, class CLIP) holds
  `self.clip_model = open_clip.create_model_and_transforms("convnext_large_d_320", ...)`, so its names and
  shapes are open_clip's model of that config: built here with open_clip on the meta device (no weights,
  no memory). Its only buffer, `attn_mask`, is registered non-persistent and is not saved.
- `sem_seg_head.pixel_decoder.*`: written out below from FC-CLIP's
  fcclip/modeling/pixel_decoder/msdeformattn.py (MSDeformAttnPixelDecoder, MSDeformAttnTransformerEncoderOnly,
  MSDeformAttnTransformerEncoderLayer; MSDeformAttn's four Linear layers), with the values of FC-CLIP's
  ConvNeXt-L config: backbone channels res2..res5 = 192, 384, 768, 1536 (clip.py, '_large'), CONVS_DIM =
  MASK_DIM = 256, 6 encoder layers, 8 heads, 4 points, 3 levels (res3..res5), feed-forward 1024 (hard-coded
  in from_config), NORM "GN" (detectron2 Conv2d with a `.norm` and no bias), one FPN level (adapter_1,
  layer_1: stride 8 -> common stride 4).
- `sem_seg_head.predictor.*`: from fcclip/modeling/transformer_decoder/fcclip_transformer_decoder.py
  (MultiScaleMaskedTransformerDecoder): DEC_LAYERS 10 -> 9 layers, hidden 256, 250 queries, feed-forward
  2048, 3 levels; no input_proj convs (in_channels == hidden_dim and ENFORCE_INPUT_PROJ False give empty
  nn.Sequential()s); mask_embed and class_embed MLPs of 3 layers (class_embed ends at EMBED_DIM 768);
  `_mask_pooling_proj` = LayerNorm(256) + Linear(256, 256); `logit_scale` a scalar Parameter.
- `void_embedding.weight`: nn.Embedding(1, dim_latent = 768) in fcclip/fcclip.py.
- Buffers: `criterion.empty_weight` (NUM_CLASSES + 1 = 134 for COCO panoptic), registered persistent by
  Mask2Former's SetCriterion; `pixel_mean` / `pixel_std` are registered non-persistent (not saved).

Run: python tests/trainer/data/make_fcclip_convnext_large_manifest.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("fcclip_convnext_large_manifest.json")

CHANNELS = {"res2": 192, "res3": 384, "res4": 768, "res5": 1536}
CONV_DIM = MASK_DIM = HIDDEN = 256
ENC_LAYERS, ENC_HEADS, ENC_POINTS, ENC_LEVELS, ENC_FFN = 6, 8, 4, 3, 1024
DEC_LAYERS, QUERIES, DEC_FFN, EMBED_DIM, NUM_CLASSES = 10 - 1, 250, 2048, 768, 133


def _linear(p, name, out_f, in_f, bias=True):
    p[f"{name}.weight"] = [out_f, in_f]
    if bias:
        p[f"{name}.bias"] = [out_f]


def _norm(p, name, dim):
    p[f"{name}.weight"] = [dim]
    p[f"{name}.bias"] = [dim]


def pixel_decoder(prefix: str) -> dict[str, list[int]]:
    p: dict[str, list[int]] = {}
    # input_proj: from low to high resolution (res5, res4, res3), Conv2d 1x1 + GroupNorm(32, 256)
    for i, f in enumerate(["res5", "res4", "res3"]):
        p[f"{prefix}input_proj.{i}.0.weight"] = [CONV_DIM, CHANNELS[f], 1, 1]
        p[f"{prefix}input_proj.{i}.0.bias"] = [CONV_DIM]
        _norm(p, f"{prefix}input_proj.{i}.1", CONV_DIM)
    p[f"{prefix}transformer.level_embed"] = [ENC_LEVELS, CONV_DIM]
    for i in range(ENC_LAYERS):
        lp = f"{prefix}transformer.encoder.layers.{i}."
        _linear(p, lp + "self_attn.sampling_offsets", ENC_HEADS * ENC_LEVELS * ENC_POINTS * 2, CONV_DIM)
        _linear(p, lp + "self_attn.attention_weights", ENC_HEADS * ENC_LEVELS * ENC_POINTS, CONV_DIM)
        _linear(p, lp + "self_attn.value_proj", CONV_DIM, CONV_DIM)
        _linear(p, lp + "self_attn.output_proj", CONV_DIM, CONV_DIM)
        _norm(p, lp + "norm1", CONV_DIM)
        _linear(p, lp + "linear1", ENC_FFN, CONV_DIM)
        _linear(p, lp + "linear2", CONV_DIM, ENC_FFN)
        _norm(p, lp + "norm2", CONV_DIM)
    p[f"{prefix}mask_features.weight"] = [MASK_DIM, CONV_DIM, 1, 1]
    p[f"{prefix}mask_features.bias"] = [MASK_DIM]
    # one extra FPN level on res2; detectron2 Conv2d(bias = norm == "") with norm GN
    p[f"{prefix}adapter_1.weight"] = [CONV_DIM, CHANNELS["res2"], 1, 1]
    _norm(p, f"{prefix}adapter_1.norm", CONV_DIM)
    p[f"{prefix}layer_1.weight"] = [CONV_DIM, CONV_DIM, 3, 3]
    _norm(p, f"{prefix}layer_1.norm", CONV_DIM)
    return p


def _mha(p, name, dim):
    p[f"{name}.in_proj_weight"] = [3 * dim, dim]
    p[f"{name}.in_proj_bias"] = [3 * dim]
    _linear(p, f"{name}.out_proj", dim, dim)


def predictor(prefix: str) -> dict[str, list[int]]:
    p: dict[str, list[int]] = {}
    for i in range(DEC_LAYERS):
        _mha(p, f"{prefix}transformer_self_attention_layers.{i}.self_attn", HIDDEN)
        _norm(p, f"{prefix}transformer_self_attention_layers.{i}.norm", HIDDEN)
        _mha(p, f"{prefix}transformer_cross_attention_layers.{i}.multihead_attn", HIDDEN)
        _norm(p, f"{prefix}transformer_cross_attention_layers.{i}.norm", HIDDEN)
        _linear(p, f"{prefix}transformer_ffn_layers.{i}.linear1", DEC_FFN, HIDDEN)
        _linear(p, f"{prefix}transformer_ffn_layers.{i}.linear2", HIDDEN, DEC_FFN)
        _norm(p, f"{prefix}transformer_ffn_layers.{i}.norm", HIDDEN)
    _norm(p, f"{prefix}decoder_norm", HIDDEN)
    p[f"{prefix}query_feat.weight"] = [QUERIES, HIDDEN]
    p[f"{prefix}query_embed.weight"] = [QUERIES, HIDDEN]
    p[f"{prefix}level_embed.weight"] = [3, HIDDEN]
    for j in range(3):
        _linear(p, f"{prefix}mask_embed.layers.{j}", MASK_DIM if j == 2 else HIDDEN, HIDDEN)
    _norm(p, f"{prefix}_mask_pooling_proj.0", HIDDEN)
    _linear(p, f"{prefix}_mask_pooling_proj.1", HIDDEN, HIDDEN)
    for j in range(3):
        _linear(p, f"{prefix}class_embed.layers.{j}", EMBED_DIM if j == 2 else HIDDEN, HIDDEN)
    p[f"{prefix}logit_scale"] = []
    return p


def backbone(prefix: str) -> dict[str, list[int]]:
    import open_clip
    import torch

    with torch.device("meta"):
        model = open_clip.create_model(
            "convnext_large_d_320", pretrained=None, device="meta", pretrained_image=False, pretrained_text=False
        )
    persistent = model.state_dict()
    return {f"{prefix}{k}": list(v.shape) for k, v in persistent.items()}


def main() -> None:
    params = {}
    params.update(backbone("backbone.clip_model."))
    params.update(pixel_decoder("sem_seg_head.pixel_decoder."))
    params.update(predictor("sem_seg_head.predictor."))
    params["void_embedding.weight"] = [1, EMBED_DIM]
    manifest = {
        "checkpoint": "FC-CLIP ConvNeXt-L, COCO panoptic (fcclip_cocopan.pth, bytedance/fc-clip README)",
        "derived_by": "tests/trainer/data/make_fcclip_convnext_large_manifest.py (see its docstring)",
        "parameters": dict(sorted(params.items())),
        "buffers": {"criterion.empty_weight": [NUM_CLASSES + 1]},
        "non_persistent_buffers": ["pixel_mean", "pixel_std", "backbone.clip_model.attn_mask"],
    }
    OUT.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{OUT}: {len(params)} parameters, {len(manifest['buffers'])} buffers")


if __name__ == "__main__":
    main()
