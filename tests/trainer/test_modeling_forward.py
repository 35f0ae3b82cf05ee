"""The tiny FC-CLIP end to end: training losses, gradients, frozen backbone, inference outputs."""

import math

import pytest
import torch

from dreammask.trainer.modeling import build_model, load_clip_backbone
from dreammask.trainer.modeling.backbone.clip_convnext import CLIP_VOCAB_SIZE, resolve_weights_path
from dreammask.trainer.testing import TINY_VOCABULARY, tiny_batch

SEG_LOSSES = ("loss_ce", "loss_mask", "loss_dice")


def test_forward_backward_gives_finite_losses_and_grads_only_on_trainable(tiny_model):
    tiny_model.train()
    losses = tiny_model(tiny_batch(synthetic=(False, True)))
    aux_layers = tiny_model.predictor.num_layers  # DEC_LAYERS - 1 earlier predictions
    expected = set(SEG_LOSSES) | {f"{k}_{i}" for k in SEG_LOSSES for i in range(aux_layers)} | {"loss_sra"}
    assert set(losses) == expected
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    assert all(losses[k] > 0 for k in SEG_LOSSES)
    sum(losses.values()).backward()

    assert all(p.grad is None for p in tiny_model.backbone.parameters())
    trainable = tiny_model.trainable_parameters()
    with_grad = [p for p in trainable if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(with_grad) > 0.8 * len(trainable)
    assert all(torch.isfinite(p.grad).all() for p in with_grad)


def test_backbone_is_frozen_and_stays_in_eval_mode(tiny_model):
    tiny_model.train()
    assert tiny_model.training and not tiny_model.backbone.training
    assert not any(m.training for m in tiny_model.backbone.modules())
    backbone_ids = {id(p) for p in tiny_model.backbone.parameters()}
    assert all(not p.requires_grad for p in tiny_model.backbone.parameters())
    trainable = tiny_model.trainable_parameters()
    assert trainable and not any(id(p) in backbone_ids for p in trainable)
    # Everything outside the backbone is trained, including the void embedding and the logit scale.
    names = {n for n, p in tiny_model.named_parameters() if id(p) in {id(q) for q in trainable}}
    assert "void_embedding.weight" in names and "predictor.logit_scale" in names


def test_backbone_weights_come_from_the_saved_checkpoint(tiny_model_cfg):
    saved = torch.load(tiny_model_cfg.MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS, weights_only=True)
    backbone = load_clip_backbone(tiny_model_cfg)
    loaded = backbone.clip_model.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert backbone.tokenizer.vocab_size == CLIP_VOCAB_SIZE == 49408
    assert backbone.vocab_size == 49408
    feats = backbone(torch.zeros(1, 3, 64, 64))
    assert [feats[f"res{i}"].shape[-1] for i in range(2, 6)] == [16, 8, 4, 2]
    assert feats["clip_vis_dense"].shape[1] == backbone.output_shape()["res5"]["channels"]


def test_weights_path_resolution_and_errors(tmp_path, tiny_model_cfg):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "w.bin").write_bytes(b"x")
    assert resolve_weights_path("clip/w.bin", models_dir=tmp_path) == tmp_path / "clip" / "w.bin"
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        resolve_weights_path("clip/missing.bin", models_dir=tmp_path)
    with pytest.raises(ValueError, match="CLIP_PRETRAINED_WEIGHTS is empty"):
        resolve_weights_path("")
    cfg = tiny_model_cfg.clone()
    cfg.MODEL.FC_CLIP.CLIP_MODEL_NAME = "no-such-clip"
    with pytest.raises(ValueError, match="unknown open_clip model config"):
        build_model(cfg)


def test_bad_inputs_give_clear_errors(tiny_model_cfg):
    model = build_model(tiny_model_cfg)
    model.train()
    with pytest.raises(RuntimeError, match="set_vocabulary"):
        model(tiny_batch())
    model.set_vocabulary(**TINY_VOCABULARY)
    batch = tiny_batch(classes=((0, 9), (1,)), synthetic=(False, False))
    with pytest.raises(ValueError, match="gt_classes must index the vocabulary"):
        model(batch)
    batch = tiny_batch(synthetic=(False,))
    batch[0]["instances"]["gt_masks"] = batch[0]["instances"]["gt_masks"][:, :10]
    with pytest.raises(ValueError, match="gt_masks"):
        model(batch)
    with pytest.raises(ValueError, match="one entry per class"):
        model.set_vocabulary(["a", "b"], seen=[True])
    with pytest.raises(ValueError, match="synonyms given for classes not in the vocabulary"):
        model.set_vocabulary(["a", "b"], synonyms={"c": ["d"]})


def test_images_of_different_sizes_are_padded_and_outputs_match_input_sizes(tiny_model):
    small = tiny_batch(synthetic=(False,), size=(48, 80), seed=1)
    square = tiny_batch(synthetic=(True,), size=64, seed=2)
    batch = small + square
    tiny_model.train()
    losses = tiny_model(batch)
    assert all(torch.isfinite(v) for v in losses.values())

    tiny_model.eval()
    batch[1]["height"], batch[1]["width"] = 96, 128  # ask for the original (pre-resize) resolution
    outs = tiny_model(batch)
    k = len(TINY_VOCABULARY["class_names"])
    assert outs[0]["sem_seg"].shape == (k, 48, 80)
    assert outs[1]["sem_seg"].shape == (k, 96, 128)
    for out in outs:
        sem = out["sem_seg"]
        assert torch.isfinite(sem).all() and (sem >= 0).all()
        pan, segments = out["panoptic_seg"]
        assert pan.dtype == torch.long and pan.shape == sem.shape[-2:]
        ids = {s["id"] for s in segments}
        assert set(pan.unique().tolist()) - {0} <= ids
        for s in segments:
            assert 0 <= s["category_id"] < k and 0.0 <= s["score"] <= 1.0
            assert s["isthing"] == TINY_VOCABULARY["thing_flags"][s["category_id"]]


def test_panoptic_inference_merges_stuff_and_drops_hidden_segments(tiny_model):
    k = len(TINY_VOCABULARY["class_names"])  # person, dog, sky(stuff), awning
    big = 10.0
    logits = torch.full((4, k + 1), -big)
    logits[0, 2] = big  # sky, top half
    logits[1, 2] = big  # sky again, bottom-left (cols 0-2): must join the first sky segment
    logits[2, 0] = big  # person, bottom-right (cols 4-7)
    logits[3, 0] = big  # a person mostly covered by query 2: dropped by the overlap rule
    masks = torch.full((4, 8, 8), -big)
    masks[0, :4] = big
    masks[1, 4:, :3] = big
    masks[2, 4:, 4:] = big
    masks[3, 4:, 3:] = 0.99 * big  # loses columns 4..7 to query 2, keeps column 3: 4 of its 20 pixels
    pan, segments = tiny_model.panoptic_inference(torch.log_softmax(logits, -1), masks)
    assert [(s["category_id"], s["isthing"]) for s in segments] == [(2, False), (0, True)]
    sky_id, person_id = segments[0]["id"], segments[1]["id"]
    assert (pan[:4] == sky_id).all() and (pan[4:, :3] == sky_id).all()
    assert (pan[4:, 4:] == person_id).all()
    # Query 3 keeps 4/20 of its mask (< OVERLAP_THRESHOLD 0.8): dropped, its pixels stay unlabelled.
    assert (pan[4:, 3] == 0).all() and math.isclose(segments[1]["score"], 1.0, abs_tol=1e-3)


@pytest.mark.parametrize("synthetic", [(False, False), (False, True), (True, True)])
def test_every_trainable_parameter_gets_a_gradient_in_every_step(tiny_model, synthetic):
    """What lets DDP run with find_unused_parameters off (ENGINE.FIND_UNUSED_PARAMETERS False): no
    parameter waits for a gradient that a batch without synthetic (or without real) images never sends."""
    tiny_model.train()
    tiny_model.zero_grad(set_to_none=True)
    sum(tiny_model(tiny_batch(synthetic=synthetic)).values()).backward()
    names = [n for n, p in tiny_model.trainable_named_parameters() if p.grad is None]
    assert names == []
