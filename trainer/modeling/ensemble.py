"""FC-CLIP's geometric ensemble of the in-vocabulary (trained query) and out-of-vocabulary (frozen CLIP,
mask-pooled) classifiers at inference:

    p(c) ∝ p_in(c)^(1-alpha) * p_out(c)^alpha   for classes seen in training   (alpha = 0.4)
    p(c) ∝ p_in(c)^(1-beta)  * p_out(c)^beta    for classes not seen           (beta  = 0.8)

then renormalised over classes and scaled by (1 - p_void) from the in-vocabulary head, void appended.
Computed in log space (same values, no 0 ** x underflow).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def geometric_ensemble(
    in_vocab_logits: torch.Tensor,
    out_vocab_logits: torch.Tensor,
    seen: torch.Tensor,
    alpha: float,
    beta: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """in_vocab_logits (...,K+1) with void last, out_vocab_logits (...,K), seen (K,) bool; valid (...)
    bool: where False (empty pooled mask) the out-of-vocabulary branch is ignored.
    Returns log-probabilities (...,K+1), void last."""
    k = out_vocab_logits.shape[-1]
    if in_vocab_logits.shape[-1] != k + 1 or seen.shape != (k,):
        raise ValueError(
            f"shape mismatch: in-vocab {tuple(in_vocab_logits.shape)}, out-vocab {tuple(out_vocab_logits.shape)}, "
            f"seen {tuple(seen.shape)}"
        )
    log_in = F.log_softmax(in_vocab_logits[..., :-1].float(), dim=-1)
    log_out = F.log_softmax(out_vocab_logits.float(), dim=-1)
    weight = torch.where(seen.to(log_in.device), float(alpha), float(beta)).to(log_in)
    weight = weight.expand_as(log_in)
    if valid is not None:
        weight = weight * valid[..., None].to(weight)
    log_ens = (1 - weight) * log_in + weight * log_out
    void = F.softmax(in_vocab_logits.float(), dim=-1)[..., -1:]
    probs = torch.cat([log_ens.softmax(-1) * (1.0 - void), void], dim=-1)
    return torch.log(probs + 1e-8)


def mask_pooling(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average of features (B,C,h,w) over each mask's positive-logit region (B,Q,h,w) -> (B,Q,C)."""
    binary = (masks > 0).to(features.dtype)
    denom = binary.sum(dim=(-1, -2), keepdim=True) + 1e-8
    return torch.einsum("bchw,bqhw->bqc", features, binary / denom)
