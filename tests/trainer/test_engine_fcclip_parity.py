"""Weight parity with the released FC-CLIP ConvNeXt-L checkpoint: every tensor its manifest lists (derived
from FC-CLIP's module definitions and open_clip's convnext_large_d_320, tests/trainer/data/
make_fcclip_convnext_large_manifest.py) maps by name and shape onto the full-size model built on the meta
device, and the model has nothing the checkpoint lacks."""

import json
from pathlib import Path

import torch

from dreammask.trainer.config import get_cfg
from dreammask.trainer.engine.fcclip_weights import DERIVED_BUFFERS, map_state_dict
from dreammask.trainer.modeling import build_model_on_meta

MANIFEST = Path(__file__).parent / "data" / "fcclip_convnext_large_manifest.json"


def _manifest():
    return json.loads(MANIFEST.read_text())


def test_manifest_is_fcclip_not_ours():
    """The manifest speaks FC-CLIP's names (detectron2 head names), not this model's."""
    names = _manifest()["parameters"]
    assert "sem_seg_head.pixel_decoder.adapter_1.weight" in names
    assert "sem_seg_head.pixel_decoder.transformer.encoder.layers.5.linear2.weight" in names
    assert "sem_seg_head.predictor._mask_pooling_proj.1.weight" in names
    assert not any(n.startswith(("pixel_decoder.", "predictor.")) for n in names)


def test_full_size_model_maps_every_checkpoint_tensor():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model_on_meta(cfg)
    target = model.state_dict()
    assert all(t.device.type == "meta" for t in target.values())
    manifest = _manifest()
    source = {k: torch.empty(v, device="meta") for k, v in manifest["parameters"].items()}
    source.update({k: torch.empty(v, device="meta") for k, v in manifest["buffers"].items()})

    _, report = map_state_dict(source, target)
    assert report["shape_mismatch"] == []
    assert report["unused"] == []
    assert report["missing"] == []
    n = len(manifest["parameters"])
    mapped_pct = 100.0 * report["loaded"] / n
    print(f"FC-CLIP ConvNeXt-L manifest: {report['loaded']}/{n} parameters mapped ({mapped_pct:.1f} %)")
    assert report["loaded"] == n == len(target)
    # Buffers: the only saved one is recomputed by this model; this model saves none of its own.
    assert report["derived_buffers"] == sorted(manifest["buffers"]) == sorted(DERIVED_BUFFERS)
    params = dict(model.named_parameters())
    assert set(target) == set(params), sorted(set(target) - set(params))
    buffers = {n for n, _ in model.named_buffers()}
    # every buffer of the model is non-persistent (not in the state dict), named here so a new one is seen
    assert not buffers & set(target)
    assert {"pixel_mean", "pixel_std", "backbone.clip_model.attn_mask"} <= buffers


def test_manifest_shapes_catch_a_wrong_architecture():
    """The check can fail: a model with another decoder width does not map."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 1024
    target = build_model_on_meta(cfg).state_dict()
    source = {k: torch.empty(v, device="meta") for k, v in _manifest()["parameters"].items()}
    _, report = map_state_dict(source, target)
    # linear1.weight, linear1.bias, linear2.weight of each of the 9 decoder layers
    assert len(report["shape_mismatch"]) == 3 * 9
