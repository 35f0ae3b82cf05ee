"""The tiny model learns: a few dozen AdamW steps on two images (one real, one synthetic, IAT on)
bring the segmentation loss down and the alignment loss with it."""

import torch

from dreammask.trainer.testing import tiny_batch

SEG_LOSSES = ("loss_ce", "loss_mask", "loss_dice")


def test_overfitting_two_images_lowers_the_loss(tiny_model):
    torch.manual_seed(0)
    batch = tiny_batch(synthetic=(False, True), classes=((0, 1), (1, 0)), seed=5)
    model = tiny_model.train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, weight_decay=0.0)
    seg, sra = [], []
    for _ in range(40):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
        optimizer.step()
        seg.append(sum(losses[k].item() for k in SEG_LOSSES))
        sra.append(losses["loss_sra"].item())
    first, last = sum(seg[:3]) / 3, sum(seg[-3:]) / 3
    assert last < 0.5 * first, (first, last)
    assert all(torch.isfinite(torch.tensor(seg + sra)))
    # synthetic objects end up close to the real prototypes of their classes
    assert max(sra) > 0 and sum(sra[-3:]) / 3 < 0.05, sra

    model.eval()
    out = model(batch)
    # after overfitting, the argmax of the semantic scores recovers the objects on the real image
    sem = out[0]["sem_seg"].argmax(0)
    masks, classes = batch[0]["instances"]["gt_masks"], batch[0]["instances"]["gt_classes"]
    for m, c in zip(masks, classes, strict=True):
        assert (sem[m] == c).float().mean() > 0.5
