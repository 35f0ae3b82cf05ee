"""DreamMask's SRA loss, computed by the IAT module (trainer/modeling/iat.py) on the last decoder layer."""

from __future__ import annotations

import torch


def sra(criterion, outputs, targets, indices, num_masks) -> torch.Tensor:
    """Real objects feed the memory bank (their matched class embeddings, or with the "clip" feature source
    the targets' `iat_features`), synthetic objects' matched class embeddings are pulled to their class
    prototype. Unweighted like the other losses: LAMBDA_SRA is its weight, weight_dict["loss_sra"]."""
    return criterion.iat(
        outputs["pred_embeds"], indices, [t["labels"] for t in targets],
        [bool(t.get("is_synthetic", False)) for t in targets],
        real_features=[t.get("iat_features") for t in targets],
    )
