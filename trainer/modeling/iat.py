"""Imagination-Aided Training (DreamMask): pull the features of synthetic objects towards prototypes of
real objects of the same class.

The parts are independent of FC-CLIP so any mask-classification model (one query embedding per matched
object) can use them:

- `MemoryBank`: per-class ring buffer of real-object features on the model's device;
  prototype of a class = normalised mean of its filled slots.
- `SRALoss`: semantic-representation alignment, 1 - cos(feature, prototype), averaged over the synthetic
  objects whose class has a non-empty bank; the prototype is detached, the feature is trainable.
- `ImaginationAidedTraining`: wires both to a batch given the matcher's assignment: real objects feed the
  bank (detached), synthetic objects are aligned.

Why query embeddings: FC-CLIP's CLIP backbone is frozen and runs without gradients, so aligning its
pooled features would move nothing. The matched query's class embedding (the decoder's projection into
CLIP space, the vector the classifier scores) is trainable and is what decides the class.
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


class SRALoss(nn.Module):
    """lambda * mean over aligned objects of (1 - cos(feature, prototype.detach())). Objects whose class
    bank is empty are skipped; with none left the loss is an exact 0 (never NaN)."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, features: torch.Tensor, classes: torch.Tensor, bank: MemoryBank) -> torch.Tensor:
        if features.shape[0] == 0:
            return features.new_zeros(())
        classes = classes.to(bank.count.device, torch.long)
        valid = bank.filled()[classes].to(features.dtype)
        protos = bank.prototypes()[classes].detach().to(features.dtype)
        distance = 1.0 - F.cosine_similarity(features, protos, dim=-1)
        loss = (distance * valid).sum() / valid.sum().clamp(min=1.0)
        return self.weight * loss


class ImaginationAidedTraining(nn.Module):
    """IAT for a batch of a mask-classification model.

    forward(embeds (B,Q,D), indices [(query idx, target idx)] per image, labels [(M_b,)] per image,
    is_synthetic [bool] per image) -> weighted L_sra (scalar). Real images' matched embeddings enter the
    bank first (detached), so a synthetic object can align to real objects of the same batch.

    One bank per vocabulary (class ids only mean something within their class list): switching to an
    evaluation vocabulary and back finds the training bank as it was. Banks are created on first use,
    so an evaluation vocabulary costs no memory."""

    def __init__(self, num_classes: int, dim: int, bank_size: int, lambda_sra: float) -> None:
        super().__init__()
        self.dim, self.bank_size = dim, bank_size
        self.sra = SRALoss(lambda_sra)
        self.banks = nn.ModuleDict()
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)
        self._active: tuple[str, int] = ("default", num_classes)

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
            self.banks[key] = MemoryBank(num_classes, self.bank_size, self.dim).to(self._device_anchor.device)
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

    def forward(self, embeds, indices, labels, is_synthetic) -> torch.Tensor:
        if len(indices) != embeds.shape[0] or len(is_synthetic) != embeds.shape[0]:
            raise ValueError("IAT needs one matching and one is_synthetic flag per image")
        real_feats, real_classes = self._gather(embeds, indices, labels, [not s for s in is_synthetic])
        real_feats, real_classes = _all_gather_objects(real_feats.detach(), real_classes)
        self.bank.push(real_feats, real_classes)
        syn_feats, syn_classes = self._gather(embeds, indices, labels, list(is_synthetic))
        if syn_feats.shape[0] == 0:
            return embeds.new_zeros(())
        return self.sra(syn_feats.float(), syn_classes, self.bank)


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
