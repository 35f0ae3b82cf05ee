"""Released FC-CLIP weights (detectron2 names) map onto this model; what does not map is reported."""

import pickle
import re

import pytest
import torch

from dreammask.trainer.engine.fcclip_weights import load_fcclip_weights, map_name, read_weights


def _to_fcclip_name(name: str) -> str:
    """This model's names written the way FC-CLIP's released checkpoints spell them."""
    name = re.sub(r"^(pixel_decoder|predictor)\.", r"sem_seg_head.\1.", name)
    name = name.replace("pixel_decoder.transformer.layers.", "pixel_decoder.transformer.encoder.layers.")
    name = re.sub(r"lateral_convs\.(\d+)\.0\.", lambda m: f"adapter_{int(m.group(1)) + 1}.", name)
    name = re.sub(r"lateral_convs\.(\d+)\.1\.", lambda m: f"adapter_{int(m.group(1)) + 1}.norm.", name)
    name = re.sub(r"output_convs\.(\d+)\.0\.", lambda m: f"layer_{int(m.group(1)) + 1}.", name)
    return re.sub(r"output_convs\.(\d+)\.1\.", lambda m: f"layer_{int(m.group(1)) + 1}.norm.", name)


def test_names_map_back():
    assert map_name("sem_seg_head.pixel_decoder.adapter_1.weight") == "pixel_decoder.lateral_convs.0.0.weight"
    assert map_name("sem_seg_head.pixel_decoder.layer_1.norm.bias") == "pixel_decoder.output_convs.0.1.bias"
    assert map_name("sem_seg_head.pixel_decoder.transformer.encoder.layers.3.norm1.weight") == \
        "pixel_decoder.transformer.layers.3.norm1.weight"
    assert map_name("sem_seg_head.predictor.query_feat.weight") == "predictor.query_feat.weight"
    assert map_name("backbone.clip_model.visual.trunk.stem.0.weight") == "backbone.clip_model.visual.trunk.stem.0.weight"


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
