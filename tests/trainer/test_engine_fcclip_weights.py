"""Released FC-CLIP weights (detectron2 names and file formats) map onto this model; what does not map is
reported by name."""

import pickle

import numpy as np
import pytest
import torch

from dreammask.trainer.engine.fcclip_weights import fcclip_name, load_fcclip_weights, map_name, read_weights

_to_fcclip_name = fcclip_name


def test_names_map_back():
    assert map_name("sem_seg_head.pixel_decoder.adapter_1.weight") == "pixel_decoder.lateral_convs.0.0.weight"
    assert map_name("sem_seg_head.pixel_decoder.layer_1.norm.bias") == "pixel_decoder.output_convs.0.1.bias"
    assert map_name("sem_seg_head.pixel_decoder.transformer.encoder.layers.3.norm1.weight") == \
        "pixel_decoder.transformer.layers.3.norm1.weight"
    assert map_name("sem_seg_head.predictor.query_feat.weight") == "predictor.query_feat.weight"
    assert map_name("backbone.clip_model.visual.trunk.stem.0.weight") == "backbone.clip_model.visual.trunk.stem.0.weight"
    # several FPN levels: FC-CLIP registers adapter_k in feature order (res2 first) and walks them reversed
    assert map_name("sem_seg_head.pixel_decoder.adapter_1.weight", 2) == "pixel_decoder.lateral_convs.1.0.weight"
    assert map_name("sem_seg_head.pixel_decoder.layer_2.norm.weight", 2) == "pixel_decoder.output_convs.0.1.weight"
    for ours in ("pixel_decoder.lateral_convs.1.1.bias", "pixel_decoder.transformer.layers.0.linear1.weight",
                 "predictor.class_embed.layers.2.weight", "void_embedding.weight"):
        assert map_name(fcclip_name(ours, 2), 2) == ours


def test_fcclip_checkpoint_loads_and_reports(tmp_path, tiny_model_cfg):
    from dreammask.trainer.testing import build_tiny_model

    source_model = build_tiny_model(tiny_model_cfg, seed=1)
    target = build_tiny_model(tiny_model_cfg, seed=2)
    src = {_to_fcclip_name(k): v.clone() for k, v in source_model.state_dict().items()}
    assert any(k.startswith("sem_seg_head.pixel_decoder.adapter_1") for k in src)
    dropped = "sem_seg_head.predictor.query_embed.weight"
    del src[dropped]
    assert "sem_seg_head.predictor._mask_pooling_proj.1.weight" in src  # FC-CLIP's class-head projection
    src["sem_seg_head.predictor.extra_head.weight"] = torch.zeros(4, 4)  # not in this model
    src["void_embedding.weight"] = torch.zeros(1, 7)  # wrong shape
    path = tmp_path / "fcclip_cocopan.pth"
    torch.save({"model": src, "iteration": 368750}, path)

    report = load_fcclip_weights(target, path)
    assert report["missing"] == ["predictor.query_embed.weight", "void_embedding.weight"]
    assert report["unused"] == ["sem_seg_head.predictor.extra_head.weight"]
    assert report["shape_mismatch"][0]["target"] == "void_embedding.weight"
    assert report["loaded"] == report["target_tensors"] - 2
    got, want = target.state_dict(), source_model.state_dict()
    for k in want:
        if k in ("predictor.query_embed.weight", "void_embedding.weight"):
            assert not torch.equal(got[k], want[k])
        else:
            assert torch.equal(got[k], want[k]), k


def test_pkl_weights_load_numpy_and_refuse_code(tmp_path):
    import numpy as np

    good = tmp_path / "w.pkl"
    good.write_bytes(pickle.dumps({"model": {"sem_seg_head.predictor.query_feat.weight": np.ones((2, 3), np.float32)},
                                   "__author__": "x"}))
    assert read_weights(good)["sem_seg_head.predictor.query_feat.weight"].shape == (2, 3)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"model": {"x": Evil()}}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_weights(bad)
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
        read_weights(tmp_path / "none.pth")


# Where each of FC-CLIP's top-level names is defined (bytedance/fc-clip @ a8dc32c8), as its modules name them.
FCCLIP_MODULES = {
    "backbone.clip_model.": "fcclip/modeling/backbone/clip.py: self.clip_model = open_clip.create_model_and_transforms(...)",
    "void_embedding.": "fcclip/fcclip.py: self.void_embedding = nn.Embedding(1, backbone.dim_latent)",
    "sem_seg_head.pixel_decoder.input_proj.": "msdeformattn.py: self.input_proj = nn.ModuleList(...)",
    "sem_seg_head.pixel_decoder.transformer.level_embed": "msdeformattn.py: MSDeformAttnTransformerEncoderOnly.level_embed",
    "sem_seg_head.pixel_decoder.transformer.encoder.layers.": "msdeformattn.py: MSDeformAttnTransformerEncoder.layers",
    "sem_seg_head.pixel_decoder.mask_features.": "msdeformattn.py: self.mask_features = Conv2d(conv_dim, mask_dim, 1)",
    "sem_seg_head.pixel_decoder.adapter_1.": "msdeformattn.py: self.add_module('adapter_{}'.format(idx + 1), lateral_conv)",
    "sem_seg_head.pixel_decoder.layer_1.": "msdeformattn.py: self.add_module('layer_{}'.format(idx + 1), output_conv)",
    "sem_seg_head.predictor.transformer_self_attention_layers.": "fcclip_transformer_decoder.py (SelfAttentionLayer)",
    "sem_seg_head.predictor.transformer_cross_attention_layers.": "fcclip_transformer_decoder.py (CrossAttentionLayer)",
    "sem_seg_head.predictor.transformer_ffn_layers.": "fcclip_transformer_decoder.py (FFNLayer)",
    "sem_seg_head.predictor.decoder_norm.": "fcclip_transformer_decoder.py: nn.LayerNorm(hidden_dim)",
    "sem_seg_head.predictor.query_feat.": "fcclip_transformer_decoder.py: nn.Embedding(num_queries, hidden_dim)",
    "sem_seg_head.predictor.query_embed.": "fcclip_transformer_decoder.py: nn.Embedding(num_queries, hidden_dim)",
    "sem_seg_head.predictor.level_embed.": "fcclip_transformer_decoder.py: nn.Embedding(3, hidden_dim)",
    "sem_seg_head.predictor.mask_embed.layers.": "fcclip_transformer_decoder.py: MLP(hidden, hidden, mask_dim, 3)",
    "sem_seg_head.predictor._mask_pooling_proj.": "fcclip_transformer_decoder.py: nn.Sequential(LayerNorm, Linear)",
    "sem_seg_head.predictor.class_embed.layers.": "fcclip_transformer_decoder.py: MLP(hidden, hidden, clip_embedding_dim, 3)",
    "sem_seg_head.predictor.logit_scale": "fcclip_transformer_decoder.py: nn.Parameter(torch.ones([]) * np.log(1 / 0.07))",
}
# the layers' own attribute names in FC-CLIP's code
FCCLIP_LAYER_NAMES = {
    "transformer_self_attention_layers": {"self_attn", "norm"},
    "transformer_cross_attention_layers": {"multihead_attn", "norm"},
    "transformer_ffn_layers": {"linear1", "linear2", "norm"},
    "encoder": {"self_attn", "norm1", "norm2", "linear1", "linear2"},
}


def test_full_size_names_written_back_are_fcclips_own_module_names():
    """This model's state dict, written back in FC-CLIP's names, is exactly the released checkpoint's name
    list (the manifest), every name sits under a module FC-CLIP's code defines, and maps back unchanged."""
    import json
    from pathlib import Path

    from dreammask.trainer.config import get_cfg
    from dreammask.trainer.modeling import build_model_on_meta

    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    ours = list(build_model_on_meta(cfg).state_dict())
    theirs = [fcclip_name(n) for n in ours]
    manifest = json.loads((Path(__file__).parent / "data" / "fcclip_convnext_large_manifest.json").read_text())
    assert sorted(theirs) == sorted(manifest["parameters"])
    assert [map_name(n) for n in theirs] == ours
    for name in theirs:
        prefix = next((p for p in FCCLIP_MODULES if name.startswith(p)), None)
        assert prefix is not None, name
        parts = name.split(".")
        for holder, allowed in FCCLIP_LAYER_NAMES.items():
            if holder in parts and holder != "encoder":
                assert parts[parts.index(holder) + 2] in allowed, name
            elif holder == "encoder" and "encoder" in parts:
                assert parts[parts.index("layers") + 2] in allowed, name
    assert {p for p in FCCLIP_MODULES if any(n.startswith(p) for n in theirs)} == set(FCCLIP_MODULES)


def _released_file(model, path, fmt: str, protocol: int = pickle.DEFAULT_PROTOCOL) -> dict:
    """A checkpoint as FC-CLIP's release ships it, from a model of this project: FC-CLIP's names, numpy
    arrays, detectron2's keys; plus the criterion buffer FC-CLIP saves. `protocol`: the pickle protocol of a
    `.pkl`."""
    from dreammask.trainer.engine.fcclip_weights import fpn_levels_of

    state = model.state_dict()
    levels = fpn_levels_of(state)
    weights = {fcclip_name(k, levels): v.detach().cpu().numpy() for k, v in state.items()}
    weights["criterion.empty_weight"] = np.ones(len(model.class_names) + 1, np.float32)
    payload = {"model": weights, "__author__": "FC-CLIP", "matching_heuristics": True}
    if fmt == "pkl":
        path.write_bytes(pickle.dumps(payload, protocol=protocol))
    else:
        torch.save(payload, path)
    return weights


@pytest.mark.parametrize("fmt", ["pkl", "pth"])
def test_released_detectron2_file_with_numpy_arrays_loads_every_tensor(tmp_path, tiny_model_cfg, fmt):
    from dreammask.trainer.testing import build_tiny_model

    source, target = build_tiny_model(tiny_model_cfg, seed=1), build_tiny_model(tiny_model_cfg, seed=2)
    path = tmp_path / f"fcclip_cocopan.{fmt}"
    weights = _released_file(source, path, fmt)
    assert "sem_seg_head.pixel_decoder.adapter_1.norm.weight" in weights
    report = load_fcclip_weights(target, path)
    assert report["missing"] == [] and report["unused"] == [] and report["shape_mismatch"] == []
    assert report["derived_buffers"] == ["criterion.empty_weight"]
    assert report["loaded"] == report["target_tensors"] == len(source.state_dict())
    got = target.state_dict()
    for k, v in source.state_dict().items():
        assert torch.equal(got[k], v), k


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pkl_weights_load_whatever_the_pickle_protocol(tmp_path, tiny_model_cfg, protocol):
    """A `.pkl` in the released format loads under every protocol Python 3 writes: protocol 2 rebuilds bytes
    through `_codecs.encode`, protocol 5 rebuilds arrays with `numeric._frombuffer` (both were refused)."""
    from dreammask.trainer.testing import build_tiny_model

    source, target = build_tiny_model(tiny_model_cfg, seed=1), build_tiny_model(tiny_model_cfg, seed=2)
    path = tmp_path / f"fcclip_cocopan_p{protocol}.pkl"
    _released_file(source, path, "pkl", protocol)
    assert path.read_bytes()[:2] == bytes([0x80, protocol])  # the PROTO opcode: the file is what it claims
    report = load_fcclip_weights(target, path)
    assert report["missing"] == [] and report["unused"] == [] and report["shape_mismatch"] == []
    assert report["loaded"] == report["target_tensors"] == len(source.state_dict())
    got = target.state_dict()
    for k, v in source.state_dict().items():
        assert torch.equal(got[k], v), k


def test_protocol_2_bytes_rebuild_only_through_latin1(tmp_path):
    """The one codec call a protocol-2 pickle needs is allowed, no other codec."""
    bad = tmp_path / "codec.pkl"
    # {"model": {"x": _codecs.encode("eJwDAAAAAAE=", "base64")}} written by hand: a codec other than latin1
    bad.write_bytes(b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01}q\x02X\x01\x00\x00\x00xq\x03c_codecs\nencode\n"
                    b"q\x04X\x0c\x00\x00\x00eJwDAAAAAAE=q\x05X\x06\x00\x00\x00base64q\x06\x86q\x07Rq\x08ss.")
    with pytest.raises(pickle.UnpicklingError, match="base64"):
        read_weights(bad)


def test_several_fpn_levels_map_in_fcclips_order(tmp_path, tiny_model_cfg):
    """With two FPN levels (encoder on res4..res5), adapter_1 is res2's conv in FC-CLIP's numbering; a
    mapping in the wrong order would show as shape mismatches (res2 and res3 widths differ)."""
    from dreammask.trainer.testing import build_tiny_model

    cfg = tiny_model_cfg.clone()
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res4", "res5"]
    source, target = build_tiny_model(cfg, seed=1), build_tiny_model(cfg, seed=2)
    assert source.pixel_decoder.num_fpn_levels == 2
    path = tmp_path / "two_levels.pkl"
    weights = _released_file(source, path, "pkl")
    res2 = source.backbone.output_shape()["res2"]["channels"]
    assert weights["sem_seg_head.pixel_decoder.adapter_1.weight"].shape[1] == res2
    report = load_fcclip_weights(target, path)
    assert report["missing"] == [] and report["shape_mismatch"] == [] and report["unused"] == []
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k


def test_unmapped_and_unused_tensors_are_reported_by_name(tmp_path, tiny_model_cfg, caplog):
    from dreammask.trainer.testing import build_tiny_model

    source, target = build_tiny_model(tiny_model_cfg, seed=1), build_tiny_model(tiny_model_cfg, seed=2)
    path = tmp_path / "partial.pkl"
    weights = _released_file(source, path, "pkl")
    del weights["sem_seg_head.predictor.logit_scale"]
    weights["sem_seg_head.predictor.class_embed_v2.weight"] = np.zeros((2, 2), np.float32)
    path.write_bytes(pickle.dumps({"model": weights, "__author__": "FC-CLIP"}))
    with caplog.at_level("WARNING", logger="dreammask.trainer"):
        report = load_fcclip_weights(target, path)
    assert report["missing"] == ["predictor.logit_scale"]
    assert report["unused"] == ["sem_seg_head.predictor.class_embed_v2.weight"]
    assert "predictor.logit_scale" in caplog.text and "class_embed_v2" in caplog.text
