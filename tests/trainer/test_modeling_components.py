"""Pieces of FC-CLIP checked against hand computations: ensemble, matcher, classifier logits,
deformable attention sampling, text classifier and its cache, registry, config presets."""

import math

import pytest
import torch
import torch.nn.functional as F

from dreammask.trainer.modeling import build_model
from dreammask.trainer.modeling.ensemble import geometric_ensemble, mask_pooling
from dreammask.trainer.modeling.matcher import HungarianMatcher
from dreammask.trainer.modeling.pixel_decoder.msdeform import ms_deform_attn_core_pytorch
from dreammask.trainer.modeling.registry import Registry
from dreammask.trainer.modeling.text_classifier import VILD_TEMPLATES, TextClassifier
from dreammask.trainer.modeling.transformer_decoder.mask2former import get_classification_logits
from dreammask.trainer.testing import TINY_VOCABULARY


def test_geometric_ensemble_uses_alpha_for_seen_and_beta_for_unseen_classes():
    # in-vocab: p(person)=0.6, p(awning)=0.3, p(void)=0.1 ; out-of-vocab CLIP: 0.2 / 0.8
    in_logits = torch.log(torch.tensor([[[0.6, 0.3, 0.1]]]))
    out_logits = torch.log(torch.tensor([[[0.2, 0.8]]]))
    seen = torch.tensor([True, False])
    log_p = geometric_ensemble(in_logits, out_logits, seen, alpha=0.4, beta=0.8)
    p_in = [0.6 / 0.9, 0.3 / 0.9]  # in-vocab class probabilities without void
    seen_score = p_in[0] ** (1 - 0.4) * 0.2**0.4
    unseen_score = p_in[1] ** (1 - 0.8) * 0.8**0.8
    total = seen_score + unseen_score
    expected = [0.9 * seen_score / total, 0.9 * unseen_score / total, 0.1]
    assert torch.allclose(log_p.exp()[0, 0], torch.tensor(expected), atol=1e-6)

    # both classes seen: alpha applies to both
    log_p = geometric_ensemble(in_logits, out_logits, torch.tensor([True, True]), 0.4, 0.8)
    a = p_in[0] ** 0.6 * 0.2**0.4
    b = p_in[1] ** 0.6 * 0.8**0.4
    assert torch.allclose(
        log_p.exp()[0, 0, :2], torch.tensor([0.9 * a / (a + b), 0.9 * b / (a + b)]), atol=1e-6
    )

    # an empty pooled mask (valid=False) falls back to the in-vocabulary classifier alone
    log_p = geometric_ensemble(in_logits, out_logits, seen, 0.4, 0.8, valid=torch.tensor([[False]]))
    assert torch.allclose(log_p.exp()[0, 0], torch.tensor([0.6, 0.3, 0.1]), atol=1e-6)


def test_mask_pooling_averages_positive_region():
    feats = torch.arange(8.0).view(1, 2, 2, 2)  # channel 0: 0..3, channel 1: 4..7
    masks = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])
    pooled = mask_pooling(feats, masks)
    assert torch.allclose(pooled[0, 0], torch.tensor([(0 + 2) / 2, (4 + 6) / 2]))
    assert torch.equal(pooled[0, 1], torch.zeros(2))  # empty mask: zeros, not NaN


def test_matcher_cost_matrix_by_hand():
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=0)
    logits = torch.zeros(1, 3)  # uniform over 2 classes + void: p = 1/3
    pred = torch.zeros(1, 2, 2)  # sigmoid 0.5 everywhere
    tgt = torch.tensor([[[1, 1], [0, 0]]], dtype=torch.bool)
    cost = matcher.cost_matrix(logits, pred, torch.tensor([1]), tgt)
    bce = math.log(2)  # every pixel: -log(0.5)
    dice = 1 - (2 * (0.5 * 2) + 1) / (0.5 * 4 + 2 + 1)
    assert math.isclose(cost.item(), 5 * bce + 2 * (-1 / 3) + 5 * dice, rel_tol=1e-6)


@pytest.mark.parametrize("num_points", [0, 64])
def test_matcher_assigns_each_prediction_to_its_object(num_points):
    torch.manual_seed(0)
    big = 8.0
    tgt = torch.zeros(2, 8, 8, dtype=torch.bool)
    tgt[0, :, :4] = True  # class 1, left half
    tgt[1, :, 4:] = True  # class 0, right half
    pred_masks = torch.full((3, 8, 8), -big)
    pred_masks[0, :, 4:] = big  # query 0 predicts the right half
    pred_masks[2, :, :4] = big  # query 2 the left half; query 1 nothing
    logits = torch.tensor([[big, 0.0, 0.0], [0.0, 0.0, big], [0.0, big, 0.0]])
    outputs = {"pred_logits": logits[None], "pred_masks": pred_masks[None]}
    targets = [{"labels": torch.tensor([1, 0]), "masks": tgt}]
    ((rows, cols),) = HungarianMatcher(2.0, 5.0, 5.0, num_points=num_points)(outputs, targets)
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 1, 2: 0}
    empty = HungarianMatcher(num_points=num_points)(
        outputs,
        [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 8, 8, dtype=torch.bool)}],
    )
    assert empty[0][0].numel() == 0


def test_classification_logits_take_the_max_over_synonyms_and_keep_void_last():
    classifier = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]]), dim=-1)
    x = torch.tensor([[[0.0, 2.0]]])
    scale = torch.tensor(math.log(10.0))
    logits = get_classification_logits(x, classifier, scale, num_templates=[2, 1])  # class0: rows 0,1
    assert torch.allclose(logits[0, 0], torch.tensor([10 * 1.0, 10 * 0.0, 10 / math.sqrt(2)]))
    no_void = get_classification_logits(x, classifier[:3], scale, [2, 1])
    assert no_void.shape[-1] == 2
    with pytest.raises(ValueError, match="rows"):
        get_classification_logits(x, classifier, scale, [1, 1])
    big = get_classification_logits(x, classifier, torch.tensor(10.0), [2, 1])
    assert math.isclose(big[0, 0, 0].item(), 100.0)  # logit scale clamped at 100 as CLIP


def test_deformable_attention_samples_the_value_at_its_location():
    value_map = torch.arange(12.0).view(3, 4)  # one level, H=3, W=4, one head, D=1
    value = value_map.flatten().view(1, 12, 1, 1)
    # a query sampling exactly the centre of pixel (row 2, col 1), and halfway between (0,0) and (0,1)
    locs = torch.tensor([[(1 + 0.5) / 4, (2 + 0.5) / 3], [1.0 / 4, 0.5 / 3]]).view(1, 2, 1, 1, 1, 2)
    weights = torch.ones(1, 2, 1, 1, 1)
    out = ms_deform_attn_core_pytorch(value, [(3, 4)], locs, weights)
    assert torch.allclose(
        out.view(-1), torch.tensor([value_map[2, 1], (value_map[0, 0] + value_map[0, 1]) / 2])
    )


def test_text_classifier_embeddings_by_hand_and_cache_hits(tiny_model, tmp_path):
    backbone = tiny_model.backbone
    tc = TextClassifier(backbone, VILD_TEMPLATES, cache_dir=tmp_path / "text")
    emb, counts = tc(TINY_VOCABULARY["class_names"], TINY_VOCABULARY["synonyms"])
    assert counts == [2, 1, 1, 2] and emb.shape == (6, backbone.dim_latent)
    assert tc.misses == 1 and tc.encoded_prompts == 6 * len(VILD_TEMPLATES)
    # row 1 is the synonym "people": normalised mean of the normalised template encodings
    tokens = backbone.tokenize([t.format("people") for t in VILD_TEMPLATES])
    by_hand = F.normalize(F.normalize(backbone.encode_text(tokens), dim=-1).mean(0), dim=-1)
    assert torch.allclose(emb[1], by_hand, atol=1e-5)

    again, _ = tc(TINY_VOCABULARY["class_names"], TINY_VOCABULARY["synonyms"])
    assert tc.hits == 1 and tc.encoded_prompts == 6 * len(VILD_TEMPLATES) and torch.equal(again, emb)
    fresh = TextClassifier(backbone, VILD_TEMPLATES, cache_dir=tmp_path / "text")
    from_disk, _ = fresh(TINY_VOCABULARY["class_names"], TINY_VOCABULARY["synonyms"])
    assert fresh.hits == 1 and fresh.encoded_prompts == 0 and torch.equal(from_disk, emb)
    fresh(["person", "dog"])  # another vocabulary: a miss
    assert fresh.misses == 1


def test_model_set_vocabulary_uses_the_cache(tiny_model):
    tc = tiny_model.text_classifier
    encoded = tc.encoded_prompts
    tiny_model.set_vocabulary(**TINY_VOCABULARY)
    assert tc.hits == 1 and tc.encoded_prompts == encoded
    assert tiny_model.num_templates == [2, 1, 1, 2]
    assert tiny_model.seen_mask.tolist() == [True, True, True, False]
    assert tiny_model.metadata_isthing == [True, True, False, True]


def test_registry_names_what_is_registered():
    reg = Registry("THING")

    @reg.register()
    class Alpha:
        pass

    assert reg.get("Alpha") is Alpha and "Alpha" in reg
    with pytest.raises(KeyError, match="already registered"):
        reg.register(type("Alpha", (), {}))
    with pytest.raises(KeyError, match=r"registered: \['Alpha'\]"):
        reg.get("Beta")


def test_build_model_refuses_cuda_without_a_gpu(tiny_model_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = tiny_model_cfg.clone()
    cfg.MODEL.DEVICE = "cuda"
    with pytest.raises(RuntimeError, match="MODEL.DEVICE cpu"):
        build_model(cfg)
