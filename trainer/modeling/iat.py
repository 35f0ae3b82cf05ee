"""Imagination-Aided Training (DreamMask): pull the features of synthetic objects towards prototypes of
real objects of the same class.

The parts are independent of FC-CLIP so any mask-classification model (one query embedding per matched
object) can use them:

- `MemoryBank`: per-class ring buffer of real-object features on the model's device;
  prototype of a class = normalised mean of its filled slots.
- `SRALoss`: semantic-representation alignment, 1 - cos(feature, prototype), averaged over the synthetic
  objects whose class has a non-empty bank; the prototype is detached, the feature is trainable. It is
  unweighted: λ (MODEL.DREAMMASK.LAMBDA_SRA) enters once, through the criterion's weight_dict.
- `ImaginationAidedTraining`: wires both to a batch given the matcher's assignment: real objects feed the
  bank (detached), synthetic objects are aligned.

What the bank holds (MODEL.DREAMMASK.FEATURE_SOURCE):
- "query": the class embeddings of the queries matched to real objects. The aligned feature must be
  trainable, and FC-CLIP's CLIP backbone is frozen and runs without gradients, so aligning its pooled
  features would move nothing. The matched query's class embedding (the decoder's projection into CLIP
  space, the vector the classifier scores) is trainable and is what decides the class; bank and aligned
  feature are the same kind of vector, so the prototype is "how the model sees real objects of the class".
- "clip": frozen CLIP features of real objects, mask-pooled under their ground-truth masks (what the seed
  description calls real CLIP features of objects; the model computes them, see `pool_under_masks`). The
  aligned feature is still the synthetic object's matched query embedding, the trainable side. In FC-CLIP
  both live in CLIP's joint image-text space (the classifier scores query embeddings against CLIP's text
  embeddings, as CLIP scores its own pooled features in the out-of-vocabulary branch) and have the same
  size, so they are aligned directly. A trainable projection is made only when the sizes differ (another
  model): trained by L_sra alone it could absorb the alignment (map the synthetic cluster of a class onto
  its prototype) without moving the embeddings the classifier scores, so it is not used where not needed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class MemoryBank(nn.Module):
    """`size` slots per class, overwritten oldest first. Registered non-persistent (not in state_dict(), so
    exported weights carry no bank); the trainer's checkpoints save it with the other non-persistent
    buffers, so a resumed run keeps its bank."""

    def __init__(self, num_classes: int, size: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1 or size < 1 or dim < 1:
            raise ValueError(
                f"memory bank needs num_classes, size (MODEL.DREAMMASK.MEMORY_BANK_SIZE) and dim >= 1, "
                f"got {num_classes}, {size}, {dim}"
            )
        self.num_classes, self.size, self.dim = num_classes, size, dim
        self.register_buffer("bank", torch.zeros(num_classes, size, dim), persistent=False)
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long), persistent=False)
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long), persistent=False)

    @torch.no_grad()
    def push(self, features: torch.Tensor, classes: torch.Tensor) -> None:
        """Store features (N,D) of objects of classes (N,), in order; no host sync (stays on device)."""
        if features.numel() == 0:
            return
        if features.dim() != 2 or features.shape[1] != self.dim or classes.shape != features.shape[:1]:
            raise ValueError(
                f"push expects features (N,{self.dim}) and classes (N,), got "
                f"{tuple(features.shape)} and {tuple(classes.shape)}"
            )
        classes = classes.to(self.ptr.device, torch.long)
        feats = F.normalize(features.detach().to(self.bank), dim=-1)
        n = classes.shape[0]
        onehot = F.one_hot(classes, self.num_classes)
        rank = (onehot.cumsum(0) - 1).gather(1, classes[:, None]).squeeze(1)  # order within its class
        n_per_class = onehot.sum(0)
        # If a batch brings more than `size` objects of a class, several land on one slot and only the last
        # of them may survive. Boolean-mask indexing would drop the others but syncs with the host (its
        # result size is data-dependent); instead every row writes the feature of the last row that lands
        # on its slot, so duplicate indices carry identical values and the scatter is deterministic.
        n_c = n_per_class[classes]
        last_rank = rank + self.size * torch.div(n_c - 1 - rank, self.size, rounding_mode="floor")
        row_of = torch.empty(self.num_classes * n, dtype=torch.long, device=classes.device)
        row_of.scatter_(0, classes * n + rank, torch.arange(n, device=classes.device))  # unique keys
        winner = row_of[classes * n + last_rank]
        slots = (self.ptr[classes] + rank) % self.size
        self.bank.view(-1, self.dim).index_put_((classes * self.size + slots,), feats[winner])
        self.ptr.copy_((self.ptr + n_per_class) % self.size)
        self.count.copy_(torch.clamp(self.count + n_per_class, max=self.size))

    def filled(self) -> torch.Tensor:
        """(K,) True where the class has at least one real feature."""
        return self.count > 0

    def prototypes(self) -> torch.Tensor:
        """(K,D) normalised mean of each class's filled slots (zero vector for empty classes)."""
        slot_used = torch.arange(self.size, device=self.count.device)[None, :] < self.count[:, None]
        summed = (self.bank * slot_used[..., None].to(self.bank)).sum(1)
        mean = summed / self.count.clamp(min=1)[:, None].to(self.bank)
        return F.normalize(mean, dim=-1)

    @torch.no_grad()
    def reset(self) -> None:
        self.bank.zero_()
        self.ptr.zero_()
        self.count.zero_()


FEATURE_SOURCES = ("query", "clip")


def pool_under_masks(dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average of a dense map (C,h,w) under each mask (N,H,W) -> (N,C).

    The masks (any resolution, e.g. the padded image) are area-resized to the map, so each cell weighs by
    the share of it the object covers: a small object still pools the cells it touches (a thresholded
    resize would leave it empty at stride 32). A mask with no pixels pools to a zero vector."""
    if masks.shape[0] == 0:
        return dense.new_zeros((0, dense.shape[0]))
    weights = F.interpolate(masks[:, None].to(dense.dtype), size=dense.shape[-2:], mode="area")[:, 0]
    weights = weights / weights.sum(dim=(-1, -2), keepdim=True).clamp(min=1e-8)
    return torch.einsum("chw,nhw->nc", dense, weights)


class SRALoss(nn.Module):
    """Mean over aligned objects of (1 - cos(feature, prototype.detach())), unweighted (λ is the
    criterion's weight_dict["loss_sra"]). Objects whose class bank is empty are skipped; with none left
    the loss is an exact 0 (never NaN)."""

    def forward(self, features: torch.Tensor, classes: torch.Tensor, bank: MemoryBank) -> torch.Tensor:
        if features.shape[0] == 0:
            return features.new_zeros(())
        classes = classes.to(bank.count.device, torch.long)
        valid = bank.filled()[classes].to(features.dtype)
        protos = bank.prototypes()[classes].detach().to(features.dtype)
        distance = 1.0 - F.cosine_similarity(features, protos, dim=-1)
        return (distance * valid).sum() / valid.sum().clamp(min=1.0)


class ImaginationAidedTraining(nn.Module):
    """IAT for a batch of a mask-classification model.

    forward(embeds (B,Q,D), indices [(query idx, target idx)] per image, labels [(M_b,)] per image,
    is_synthetic [bool] per image, real_features [(M_b,bank_dim) or None] per image) -> unweighted L_sra
    (scalar). Real images' features enter the bank first (detached), so a synthetic object can align to
    real objects of the same batch: with feature_source "query" the matched queries' embeddings, with
    "clip" `real_features` (one row per target of a real image, e.g. frozen CLIP features pooled under
    its ground-truth masks; synthetic images may pass None).

    One bank per vocabulary (class ids only mean something within their class list): switching to an
    evaluation vocabulary and back finds the training bank as it was. Banks are created on first use,
    so an evaluation vocabulary costs no memory."""

    def __init__(self, num_classes: int, dim: int, bank_size: int, feature_source: str = "query",
                 bank_dim: int | None = None) -> None:
        super().__init__()
        if feature_source not in FEATURE_SOURCES:
            raise ValueError(
                f"MODEL.DREAMMASK.FEATURE_SOURCE must be one of {FEATURE_SOURCES}, got {feature_source!r}"
            )
        bank_dim = dim if bank_dim is None else int(bank_dim)
        if feature_source == "query" and bank_dim != dim:
            raise ValueError(f"feature source 'query' banks the {dim}-d query embeddings; bank_dim {bank_dim}")
        self.feature_source, self.dim, self.bank_dim, self.bank_size = feature_source, dim, bank_dim, bank_size
        # Only where the spaces differ in size (see the module docstring for why not otherwise).
        self.projection = nn.Linear(dim, bank_dim, bias=False) if bank_dim != dim else None
        self.sra = SRALoss()
        self.banks = nn.ModuleDict()
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)
        self._active: tuple[str, int] = ("default", num_classes)

    @property
    def needs_real_features(self) -> bool:
        """Whether forward() needs `real_features` of the real images' targets (the "clip" source)."""
        return self.feature_source == "clip"

    def use_vocabulary(self, key: str, num_classes: int) -> None:
        """Select the bank of a vocabulary (key: any string naming the class list, e.g. its hash)."""
        if key in self.banks and self.banks[key].num_classes != num_classes:
            raise ValueError(
                f"vocabulary {key!r} had {self.banks[key].num_classes} classes, now {num_classes}"
            )
        self._active = (key, num_classes)

    @property
    def bank(self) -> MemoryBank:
        key, num_classes = self._active
        if key not in self.banks:
            self.banks[key] = MemoryBank(num_classes, self.bank_size, self.bank_dim).to(
                self._device_anchor.device
            )
        return self.banks[key]

    @staticmethod
    def _gather(embeds, indices, labels, pick):
        feats, classes = [], []
        for b, (src, tgt) in enumerate(indices):
            if not pick[b] or src.numel() == 0:
                continue
            feats.append(embeds[b, src.to(embeds.device)])
            classes.append(labels[b][tgt.to(labels[b].device)])
        if not feats:
            return embeds.new_zeros((0, embeds.shape[-1])), torch.zeros(
                0, dtype=torch.long, device=embeds.device
            )
        return torch.cat(feats), torch.cat(classes).to(embeds.device)

    def _real_targets(self, real_features, labels, is_synthetic, device):
        """Every target of every real image: (features (N,bank_dim), classes (N,))."""
        if real_features is None or len(real_features) != len(labels):
            raise ValueError("feature source 'clip' needs real_features: one (M_b, bank_dim) tensor per image")
        feats, classes = [], []
        for b, syn in enumerate(is_synthetic):
            if syn:
                continue
            f = real_features[b]
            if f is None or f.dim() != 2 or f.shape != (labels[b].shape[0], self.bank_dim):
                raise ValueError(
                    f"image {b}: real_features must be ({labels[b].shape[0]}, {self.bank_dim}), one row "
                    f"per target, got {None if f is None else tuple(f.shape)}"
                )
            feats.append(f.to(device))
            classes.append(labels[b].to(device))
        if not feats:
            return torch.zeros((0, self.bank_dim), device=device), torch.zeros(0, dtype=torch.long, device=device)
        return torch.cat(feats), torch.cat(classes)

    def forward(self, embeds, indices, labels, is_synthetic, real_features=None) -> torch.Tensor:
        if len(indices) != embeds.shape[0] or len(is_synthetic) != embeds.shape[0]:
            raise ValueError("IAT needs one matching and one is_synthetic flag per image")
        if self.feature_source == "clip":
            real_feats, real_classes = self._real_targets(real_features, labels, is_synthetic, embeds.device)
        else:
            real_feats, real_classes = self._gather(embeds, indices, labels, [not s for s in is_synthetic])
        real_feats, real_classes = _all_gather_objects(real_feats.detach().float(), real_classes)
        self.bank.push(real_feats, real_classes)
        syn_feats, syn_classes = self._gather(embeds, indices, labels, list(is_synthetic))
        if syn_feats.shape[0] == 0:
            return embeds.new_zeros(())
        syn_feats = syn_feats.float()
        if self.projection is not None:
            syn_feats = self.projection(syn_feats)
        return self.sra(syn_feats, syn_classes, self.bank)


def _all_gather_objects(feats: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Under data parallelism every rank pushes every rank's real objects, so all ranks hold the same
    bank (the same prototypes) instead of one built from a 1/world_size share of the data."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return feats, classes
    world = dist.get_world_size()
    n = torch.tensor([feats.shape[0]], device=feats.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    max_n = int(max(s.item() for s in sizes))
    if max_n == 0:
        return feats, classes
    pad_f = feats.new_zeros((max_n, feats.shape[1]))
    pad_f[: feats.shape[0]] = feats
    pad_c = classes.new_zeros((max_n,))
    pad_c[: classes.shape[0]] = classes
    all_f = [torch.zeros_like(pad_f) for _ in range(world)]
    all_c = [torch.zeros_like(pad_c) for _ in range(world)]
    dist.all_gather(all_f, pad_f)
    dist.all_gather(all_c, pad_c)
    keep = [int(s.item()) for s in sizes]
    return (
        torch.cat([f[:k] for f, k in zip(all_f, keep, strict=True)]),
        torch.cat([c[:k] for c, k in zip(all_c, keep, strict=True)]),
    )
