"""DreamMask IAT: the per-class memory bank, the SRA loss and their wiring into FC-CLIP training."""

import math

import pytest
import torch
import torch.nn.functional as F

from dreammask.trainer.modeling import ImaginationAidedTraining, MemoryBank, SRALoss, build_model
from dreammask.trainer.modeling.iat import pool_under_masks
from dreammask.trainer.testing import TINY_VOCABULARY, tiny_batch

SOURCES = ("query", "clip")


def _model(cfg, source="query", lambda_sra=None, seed=0):
    cfg = cfg.clone()
    cfg.MODEL.DREAMMASK.FEATURE_SOURCE = source
    if lambda_sra is not None:
        cfg.MODEL.DREAMMASK.LAMBDA_SRA = lambda_sra
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.set_vocabulary(**TINY_VOCABULARY)
    return model.train()


def _unit(x, y):
    n = math.hypot(x, y)
    return [x / n, y / n]


def test_memory_bank_ring_buffer_wraps_around_and_prototypes_are_normalised_means():
    bank = MemoryBank(num_classes=3, size=3, dim=2)
    feats = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [0.0, -5.0]])
    bank.push(feats[:2], torch.tensor([0, 0]))
    bank.push(feats[2:], torch.tensor([0, 0]))  # 4 pushes into 3 slots: the oldest ([2, 0]) goes
    assert bank.count.tolist() == [3, 0, 0] and bank.ptr.tolist() == [1, 0, 0]
    expected_slots = [[0.0, -1.0], [0.0, 1.0], _unit(1, 1)]  # slot 0 overwritten, stored normalised
    assert torch.allclose(bank.bank[0], torch.tensor(expected_slots))
    # mean = (0 + 0 + 1/sqrt2, -1 + 1 + 1/sqrt2) / 3 -> direction (1, 1)
    assert torch.allclose(bank.prototypes()[0], torch.tensor(_unit(1, 1)), atol=1e-6)
    assert bank.filled().tolist() == [True, False, False]
    assert torch.equal(bank.prototypes()[1], torch.zeros(2))  # empty class: zero vector, no NaN


def test_memory_bank_partial_fill_and_mixed_classes_in_one_push():
    bank = MemoryBank(num_classes=3, size=4, dim=2)
    bank.push(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]), torch.tensor([2, 1, 2]))
    assert bank.count.tolist() == [0, 1, 2] and bank.ptr.tolist() == [0, 1, 2]
    # class 2 holds (1,0) and (1,1)/sqrt2 -> mean (1 + 1/sqrt2, 1/sqrt2); empty slots do not count
    mean = [1 + 1 / math.sqrt(2), 1 / math.sqrt(2)]
    assert torch.allclose(bank.prototypes()[2], torch.tensor(_unit(*mean)), atol=1e-6)
    assert torch.allclose(bank.prototypes()[1], torch.tensor([0.0, 1.0]))


def test_memory_bank_keeps_the_last_size_items_when_one_push_overflows():
    bank = MemoryBank(num_classes=1, size=2, dim=2)
    bank.push(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))  # ptr -> 1
    bank.push(torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]), torch.tensor([0, 0, 0]))
    # sequential writes: slot1=(0,1), slot0=(-1,0), slot1=(0,-1); ptr = (1 + 3) % 2 = 0
    assert torch.allclose(bank.bank[0], torch.tensor([[-1.0, 0.0], [0.0, -1.0]]))
    assert bank.ptr.tolist() == [0] and bank.count.tolist() == [2]


def test_memory_bank_rejects_bad_shapes():
    with pytest.raises(ValueError, match="MEMORY_BANK_SIZE"):
        MemoryBank(2, 0, 4)
    bank = MemoryBank(2, 2, 4)
    with pytest.raises(ValueError, match="push expects"):
        bank.push(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))


def test_sra_loss_by_hand_and_empty_classes_are_skipped():
    bank = MemoryBank(num_classes=3, size=2, dim=2)
    bank.push(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    loss_fn = SRALoss()
    feats = torch.tensor([[1.0, 0.0], [1.0, 1.0], [5.0, -2.0]], requires_grad=True)
    classes = torch.tensor([0, 1, 2])  # class 2 has no real feature yet: skipped
    loss = loss_fn(feats, classes, bank)
    # object 0 vs prototype (0,1): 1 - 0; object 1 vs (1,0): 1 - 1/sqrt2; mean over the 2 aligned
    assert math.isclose(loss.item(), (1.0 + (1 - 1 / math.sqrt(2))) / 2, rel_tol=1e-6)
    loss.backward()
    assert feats.grad[:2].abs().sum() > 0
    assert torch.equal(feats.grad[2], torch.zeros(2))  # nothing flows from a skipped object
    assert not bank.bank.requires_grad  # the prototype side is detached


def test_sra_loss_is_exactly_zero_without_filled_classes():
    bank = MemoryBank(num_classes=2, size=2, dim=3)
    feats = torch.randn(4, 3, requires_grad=True)
    loss = SRALoss()(feats, torch.tensor([0, 1, 0, 1]), bank)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() == 0


def test_iat_module_is_model_agnostic_real_objects_feed_the_bank_synthetic_ones_align():
    iat = ImaginationAidedTraining(num_classes=3, dim=2, bank_size=4)
    embeds = torch.tensor(
        [[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], [[0.0, 2.0], [3.0, 0.0], [7.0, 7.0]]], requires_grad=True
    )
    # image 0 (real): query 0 <- target 1 (class 2), query 1 <- target 0 (class 0)
    # image 1 (synthetic): query 1 <- class 2, query 0 <- class 1 (no real class 1 yet: skipped)
    indices = [(torch.tensor([0, 1]), torch.tensor([1, 0])), (torch.tensor([1, 0]), torch.tensor([0, 1]))]
    labels = [torch.tensor([0, 2]), torch.tensor([2, 1])]
    loss = iat(embeds, indices, labels, [False, True])
    assert iat.bank.count.tolist() == [1, 0, 1]
    assert torch.allclose(iat.bank.prototypes()[2], torch.tensor([1.0, 0.0]))
    assert math.isclose(loss.item(), 0.0, abs_tol=1e-6)  # synthetic (3,0) is aligned with real (1,0)
    loss2 = iat(embeds.detach().flip(-1).requires_grad_(), indices, labels, [False, True])
    # now real class 2 stored (0,1) too -> prototype (1,1)/sqrt2; synthetic (0,3): 1 - 1/sqrt2
    assert math.isclose(loss2.item(), 1 - 1 / math.sqrt(2), rel_tol=1e-5)


@pytest.mark.parametrize("source", SOURCES)
def test_model_sra_is_nonzero_on_synthetic_and_its_gradient_reaches_the_decoder(tiny_model_cfg, source):
    model = _model(tiny_model_cfg, source)
    # A real and a synthetic image with the same classes: the real objects fill the bank first.
    losses = model(tiny_batch(synthetic=(False, True), classes=((0, 1), (0, 1))))
    assert model.iat.bank.count.tolist() == [1, 1, 0, 0]  # only the real image's objects
    assert losses["loss_sra"].item() > 0
    losses["loss_sra"].backward()  # L_sra alone
    p = model.predictor
    for name, param in [
        ("class_embed", p.class_embed.layers[-1].weight),
        ("query_feat", p.query_feat.weight),
        ("decoder_norm", p.decoder_norm.weight),
        ("pixel_decoder", next(model.pixel_decoder.parameters())),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(q.grad is None for q in model.backbone.parameters())
    assert model.void_embedding.weight.grad is None  # the classifier is not what SRA moves
    assert model.iat.projection is None  # FC-CLIP: query and CLIP embeddings have one size


def test_model_sra_present_and_zero_when_no_synthetic_class_has_real_features(tiny_model):
    tiny_model.train()
    only_synthetic = tiny_model(tiny_batch(synthetic=(True, True)))
    assert only_synthetic["loss_sra"].item() == 0.0
    assert tiny_model.iat.bank.count.sum().item() == 0
    # Real image has person/dog, the synthetic one only the novel class (index 3): skipped.
    mixed = tiny_model(tiny_batch(synthetic=(False, True), classes=((0, 1), (3,))))
    assert mixed["loss_sra"].item() == 0.0 and torch.isfinite(sum(mixed.values()))
    assert tiny_model.iat.bank.count.tolist() == [1, 1, 0, 0]
    real_only = tiny_model(tiny_batch(synthetic=(False, False)))
    assert real_only["loss_sra"].item() == 0.0


def test_iat_switch_off_removes_the_loss(tiny_model_cfg):
    cfg = tiny_model_cfg.clone()
    cfg.MODEL.DREAMMASK.ENABLED = False
    model = build_model(cfg)
    model.set_vocabulary(**TINY_VOCABULARY)
    model.train()
    losses = model(tiny_batch(synthetic=(False, True)))
    assert model.iat is None and "loss_sra" not in losses
    assert {"loss_ce", "loss_mask", "loss_dice"} <= set(losses)


def test_lambda_enters_once_through_weight_dict_and_the_criterion_loss_is_unweighted(tiny_model_cfg):
    raw, weighted = {}, {}
    for lam in (1.0, 3.0):
        model = _model(tiny_model_cfg, lambda_sra=lam)
        raw[lam] = {}
        model.criterion.register_forward_hook(lambda m, i, o, into=raw[lam]: into.update(o[0]))
        torch.manual_seed(1)
        weighted[lam] = model(tiny_batch(synthetic=(False, True)))
        assert model.criterion.weight_dict["loss_sra"] == lam
    # the criterion's (unweighted) L_sra does not depend on lambda, like its other losses
    assert raw[1.0]["loss_sra"].item() > 0
    assert math.isclose(raw[3.0]["loss_sra"].item(), raw[1.0]["loss_sra"].item(), rel_tol=1e-5)
    # the model weights every loss by weight_dict once: loss_sra by lambda, loss_ce by CLASS_WEIGHT
    class_weight = tiny_model_cfg.MODEL.MASK_FORMER.CLASS_WEIGHT
    for lam in (1.0, 3.0):
        assert math.isclose(weighted[lam]["loss_sra"].item(), lam * raw[lam]["loss_sra"].item(), rel_tol=1e-5)
        assert math.isclose(weighted[lam]["loss_ce"].item(), class_weight * raw[lam]["loss_ce"].item(), rel_tol=1e-5)


def test_lambda_scales_the_loss_and_each_vocabulary_keeps_its_own_bank(tiny_model_cfg):
    values = {}
    for lam in (1.0, 3.0):
        cfg = tiny_model_cfg.clone()
        cfg.MODEL.DREAMMASK.LAMBDA_SRA = lam
        torch.manual_seed(0)
        model = build_model(cfg)
        model.set_vocabulary(**TINY_VOCABULARY)
        model.train()
        torch.manual_seed(1)
        values[lam] = model(tiny_batch(synthetic=(False, True)))["loss_sra"].item()
    assert values[1.0] > 0 and math.isclose(values[3.0], 3 * values[1.0], rel_tol=1e-4)
    filled = model.iat.bank.bank.clone()
    assert model.iat.bank.count.sum() > 0
    # an evaluation vocabulary gets its own (empty) bank; the training bank survives the round trip
    model.set_vocabulary(["cat", "awning"], seen=[True, False])
    assert model.iat.bank.num_classes == 2 and model.iat.bank.count.sum() == 0
    model.set_vocabulary(**TINY_VOCABULARY)
    assert torch.equal(model.iat.bank.bank, filled)


def test_bank_stores_the_matched_real_query_embeddings(tiny_model):
    tiny_model.train()
    captured = {}
    hook = tiny_model.predictor.class_embed.register_forward_hook(
        lambda m, i, o: captured.__setitem__("e", o)
    )
    torch.manual_seed(3)
    batch = tiny_batch(synthetic=(False,), classes=((2,),))
    tiny_model(batch)
    hook.remove()
    stored = tiny_model.iat.bank.bank[2, 0]
    last_layer = captured["e"][0]  # (Q, D) class embeddings of the last decoder layer
    cos = F.cosine_similarity(last_layer, stored[None], dim=-1)
    assert math.isclose(cos.max().item(), 1.0, rel_tol=1e-5)  # one of the queries, normalised


def _ddp_worker(rank, world, init_file, out_dir, source):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        iat = ImaginationAidedTraining(num_classes=3, dim=2, bank_size=4, feature_source=source)
        # rank 0 sees a real class-0 object, rank 1 two real objects of class 2 (different counts)
        if rank == 0:
            embeds, labels = torch.tensor([[[1.0, 0.0]]]), [torch.tensor([0])]
            indices = [(torch.tensor([0]), torch.tensor([0]))]
        else:
            embeds, labels = torch.tensor([[[0.0, 1.0], [0.0, 2.0]]]), [torch.tensor([2, 2])]
            indices = [(torch.tensor([0, 1]), torch.tensor([0, 1]))]
        # the "clip" source banks the given per-target features (here the embeddings mirrored)
        iat(embeds, indices, labels, [False], real_features=[embeds[0].flip(-1)])
        torch.save({"count": iat.bank.count, "bank": iat.bank.bank}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_data_parallel_ranks_share_one_bank(tmp_path, source):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), source), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["count"].tolist() == r1["count"].tolist() == [1, 0, 2]
    assert torch.equal(r0["bank"], r1["bank"])
    first = [1.0, 0.0] if source == "query" else [0.0, 1.0]  # rank 0's object, as that source banks it
    assert torch.allclose(r0["bank"][0, 0], torch.tensor(first))


def test_memory_bank_overflow_scatter_is_deterministic_and_keeps_the_last_items():
    """The sync-free push (no boolean indexing) writes, for each slot, the last object that lands on it."""
    bank = MemoryBank(num_classes=3, size=2, dim=2)
    feats = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 0], [0, -1.0]])
    classes = torch.tensor([1, 1, 1, 1, 2, 1])  # five objects of class 1 into two slots
    bank.push(feats, classes)
    norm = torch.nn.functional.normalize
    # class 1 ranks 0..4 -> slots 0,1,0,1,0: slot 0 keeps rank 4 (row 5), slot 1 keeps rank 3 (row 3)
    assert torch.allclose(bank.bank[1, 0], norm(feats[5], dim=0))
    assert torch.allclose(bank.bank[1, 1], norm(feats[3], dim=0))
    assert bank.count.tolist() == [0, 2, 1] and bank.ptr.tolist() == [0, 1, 1]


def test_pool_under_masks_weighs_cells_by_covered_area():
    dense = torch.arange(2 * 2 * 2, dtype=torch.float32).view(2, 2, 2)  # C=2, 2x2 map
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # exactly the top-left cell
    masks[1, :4, :] = True  # top row: both cells equally
    masks[2, 3, 3] = True  # one pixel, a 16th of a cell: still pools that cell, never empty
    pooled = pool_under_masks(dense, masks)
    assert torch.allclose(pooled[0], dense[:, 0, 0])
    assert torch.allclose(pooled[1], dense[:, 0, :].mean(-1))
    assert torch.allclose(pooled[2], dense[:, 0, 0])
    assert pool_under_masks(dense, masks[:0]).shape == (0, 2)


def test_clip_source_banks_frozen_clip_features_pooled_under_real_ground_truth_only(tiny_model_cfg):
    model = _model(tiny_model_cfg, "clip")
    batch = tiny_batch(synthetic=(True, False, True), classes=((0, 1), (2, 1), (0, 2)), seed=4)
    model(batch)
    # only the real image's targets (classes 2 and 1), whatever the synthetic images hold
    assert model.iat.bank.count.tolist() == [0, 1, 1, 0]
    with torch.no_grad():  # what the out-of-vocabulary branch computes, here under the ground-truth masks
        images, _ = model._images(batch[1:2])
        dense = model.backbone(images)["clip_vis_dense"][0]
        masks = model._targets(batch[1:2], images.shape[-2:])[0]["masks"]
        expected = model.backbone.visual_prediction_forward(pool_under_masks(dense, masks)[None])[0]
    for j, c in enumerate((2, 1)):
        assert torch.allclose(model.iat.bank.bank[c, 0], F.normalize(expected[j], dim=-1), atol=1e-5)


def test_clip_source_needs_real_features_and_projects_only_when_sizes_differ():
    indices = [(torch.tensor([0]), torch.tensor([0])), (torch.tensor([1]), torch.tensor([0]))]
    labels = [torch.tensor([1]), torch.tensor([1])]
    same = ImaginationAidedTraining(num_classes=2, dim=3, bank_size=2, feature_source="clip")
    with pytest.raises(ValueError, match="needs real_features"):
        same(torch.randn(2, 2, 3), indices, labels, [False, True])
    with pytest.raises(ValueError, match=r"image 0: real_features must be \(1, 3\)"):
        same(torch.randn(2, 2, 3), indices, labels, [False, True], real_features=[torch.zeros(2, 3), None])
    assert same.projection is None
    # another model whose query embeddings (4-d) are not the size of its banked features (3-d)
    iat = ImaginationAidedTraining(num_classes=2, dim=4, bank_size=2, feature_source="clip", bank_dim=3)
    embeds = torch.randn(2, 2, 4, requires_grad=True)
    loss = iat(embeds, indices, labels, [False, True], real_features=[torch.tensor([[1.0, 0.0, 0.0]]), None])
    assert iat.bank.count.tolist() == [0, 1] and loss.item() > 0
    loss.backward()
    assert iat.projection.weight.grad.abs().sum() > 0 and embeds.grad[1, 1].abs().sum() > 0
    assert embeds.grad[0].abs().sum() == 0  # the real image's queries feed nothing with this source


def test_feature_source_setting_is_checked(tiny_model_cfg):
    cfg = tiny_model_cfg.clone()
    cfg.MODEL.DREAMMASK.FEATURE_SOURCE = "pixels"
    with pytest.raises(ValueError, match="MODEL.DREAMMASK.FEATURE_SOURCE must be one of"):
        build_model(cfg)
    with pytest.raises(ValueError, match="'query' banks the 4-d query embeddings"):
        ImaginationAidedTraining(2, 4, 2, "query", bank_dim=3)
