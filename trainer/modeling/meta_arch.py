"""FC-CLIP: a frozen CLIP ConvNeXt, a deformable-attention pixel decoder and a masked-attention
transformer decoder whose queries are classified against CLIP text embeddings of an open vocabulary;
at inference the mask-pooled frozen CLIP features give a second, out-of-vocabulary opinion that is
geometrically ensembled with the first. With MODEL.DREAMMASK.ENABLED, training adds DreamMask's IAT.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from .backbone.clip_convnext import load_clip_backbone
from .criterion import SetCriterion
from .ensemble import geometric_ensemble, mask_pooling
from .iat import ImaginationAidedTraining, pool_under_masks
from .losses import build_weight_dict, enabled_losses
from .matcher import HungarianMatcher
from .registry import META_ARCH_REGISTRY, PIXEL_DECODER_REGISTRY, TRANSFORMER_DECODER_REGISTRY
from .text_classifier import TextClassifier, templates_by_name
from .transformer_decoder.mask2former import get_classification_logits


def pad_to_divisible(images: list[torch.Tensor], divisibility: int) -> torch.Tensor:
    """Stack (C,H_i,W_i) tensors into (B,C,H,W), zero-padded bottom/right to a multiple of divisibility."""
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    if divisibility > 1:
        h = (h + divisibility - 1) // divisibility * divisibility
        w = (w + divisibility - 1) // divisibility * divisibility
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    return out


@META_ARCH_REGISTRY.register()
class FCCLIP(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        mf, fc, dm = cfg.MODEL.MASK_FORMER, cfg.MODEL.FC_CLIP, cfg.MODEL.DREAMMASK
        self.backbone = load_clip_backbone(cfg)
        embed_dim = self.backbone.dim_latent
        self.pixel_decoder = PIXEL_DECODER_REGISTRY.get(
            cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
        ).from_config(cfg, self.backbone.output_shape())
        self.predictor = TRANSFORMER_DECODER_REGISTRY.get(mf.TRANSFORMER_DECODER_NAME).from_config(
            cfg, in_channels=cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, embed_dim=embed_dim
        )
        self.void_embedding = nn.Embedding(1, embed_dim)

        matcher = HungarianMatcher(
            mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT, num_points=mf.TRAIN_NUM_POINTS
        )
        self.deep_supervision = bool(mf.DEEP_SUPERVISION)
        self.iat = (
            # "clip" banks CLIP image embeddings, which have the size of the query embeddings (embed_dim).
            ImaginationAidedTraining(1, embed_dim, dm.MEMORY_BANK_SIZE, str(dm.FEATURE_SOURCE))
            if dm.ENABLED else None
        )
        # The losses and their weights, as LOSSES declares them (SRA's weight is λ, MODEL.DREAMMASK.LAMBDA_SRA).
        losses = enabled_losses(cfg)
        aux_layers = mf.DEC_LAYERS - 1 if self.deep_supervision else 0  # loss_ce_0, loss_mask_0, ...
        self.criterion = SetCriterion(
            matcher,
            build_weight_dict(cfg, losses, aux_layers),
            mf.NO_OBJECT_WEIGHT,
            mf.TRAIN_NUM_POINTS,
            mf.OVERSAMPLE_RATIO,
            mf.IMPORTANCE_SAMPLE_RATIO,
            losses=losses,
            iat=self.iat,
        )

        self.size_divisibility = mf.SIZE_DIVISIBILITY
        self.alpha, self.beta = float(fc.GEOMETRIC_ENSEMBLE_ALPHA), float(fc.GEOMETRIC_ENSEMBLE_BETA)
        self.ensemble_on_valid_mask = bool(fc.ENSEMBLE_ON_VALID_MASK)
        self.semantic_on, self.panoptic_on = bool(mf.TEST.SEMANTIC_ON), bool(mf.TEST.PANOPTIC_ON)
        self.object_mask_threshold = float(mf.TEST.OBJECT_MASK_THRESHOLD)
        self.overlap_threshold = float(mf.TEST.OVERLAP_THRESHOLD)
        self.register_buffer(
            "pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1), persistent=False
        )
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1), persistent=False)

        self.text_classifier = TextClassifier(
            self.backbone, templates_by_name(fc.PROMPT_TEMPLATES), fc.TEXT_CACHE_DIR or None
        )
        self.register_buffer("text_embeddings", torch.zeros(0, embed_dim), persistent=False)
        self.register_buffer("seen_mask", torch.zeros(0, dtype=torch.bool), persistent=False)
        self.class_names: list[str] = []
        self.num_templates: list[int] = []
        self.metadata_isthing: list[bool] = []

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of everything but the frozen CLIP backbone, e.g. for weight-decay groups."""
        return [
            (n, p) for n, p in self.named_parameters() if not n.startswith("backbone.") and p.requires_grad
        ]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Everything but the frozen CLIP backbone (what the optimizer gets)."""
        return [p for _, p in self.trainable_named_parameters()]

    def set_vocabulary(
        self,
        class_names: list[str],
        seen: list[bool] | None = None,
        synonyms: dict[str, list[str]] | list[list[str]] | None = None,
        thing_flags: list[bool] | None = None,
    ) -> None:
        """Set the classes that target ids index and predictions name.

        seen: per class, whether it was in the training vocabulary (picks alpha vs beta of the ensemble;
        default all True). synonyms: extra names per class as {class name: [names]}, or, as a list with one
        list per class, exactly the names to embed (FC-CLIP's prompt-engineered lists); a class's logit is
        the max over its names. thing_flags: per class, countable thing (True) or amorphous stuff (False)
        for panoptic inference (default all True)."""
        n = len(class_names)
        if n == 0:
            raise ValueError("the vocabulary needs at least one class name")
        seen = [True] * n if seen is None else [bool(s) for s in seen]
        thing_flags = [True] * n if thing_flags is None else [bool(t) for t in thing_flags]
        if len(seen) != n or len(thing_flags) != n:
            raise ValueError(
                f"seen ({len(seen)}) and thing_flags ({len(thing_flags)}) need one entry per class ({n})"
            )
        emb, counts = self.text_classifier(list(class_names), synonyms)
        self.text_embeddings = emb.to(self.device)
        self.num_templates = counts
        self.seen_mask = torch.tensor(seen, dtype=torch.bool, device=self.device)
        self.metadata_isthing = thing_flags
        self.class_names = list(class_names)
        if self.iat is not None:
            key = hashlib.sha1("\n".join(class_names).encode()).hexdigest()[:16]
            self.iat.use_vocabulary(key, n)

    def _classifier_with_void(self) -> torch.Tensor:
        if self.text_embeddings.shape[0] == 0:
            raise RuntimeError("call model.set_vocabulary(class_names, ...) before running the model")
        void = F.normalize(self.void_embedding.weight, dim=-1)
        return torch.cat([self.text_embeddings.to(void.dtype), void], dim=0)

    def _images(self, batched_inputs) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        images, sizes = [], []
        for i, x in enumerate(batched_inputs):
            im = x["image"]
            if not torch.is_tensor(im) or im.dim() != 3 or im.shape[0] != 3:
                raise ValueError(
                    f"input {i}: 'image' must be a (3,H,W) RGB tensor, got {getattr(im, 'shape', type(im))}"
                )
            im = im.to(self.device, non_blocking=True).float()
            images.append((im - self.pixel_mean) / self.pixel_std)
            sizes.append((im.shape[-2], im.shape[-1]))
        return pad_to_divisible(images, self.size_divisibility), sizes

    def _targets(self, batched_inputs, padded_hw) -> list[dict]:
        targets = []
        for i, x in enumerate(batched_inputs):
            inst = x.get("instances")
            if inst is None:
                raise ValueError(f"input {i}: training needs 'instances' with 'gt_classes' and 'gt_masks'")
            classes = torch.as_tensor(inst["gt_classes"], dtype=torch.long)
            masks = torch.as_tensor(inst["gt_masks"])
            h, w = x["image"].shape[-2:]
            if masks.dim() != 3 or masks.shape[0] != classes.shape[0] or tuple(masks.shape[-2:]) != (h, w):
                raise ValueError(
                    f"input {i}: gt_masks {tuple(masks.shape)} must be (N,{h},{w}) with N = len(gt_classes) = {classes.shape[0]}"
                )
            # Checked where the loader left them (the CPU), before the copy: no device-to-host sync.
            if classes.numel() and classes.device.type == "cpu" and (
                int(classes.min()) < 0 or int(classes.max()) >= self.num_classes
            ):
                raise ValueError(
                    f"input {i}: gt_classes must index the vocabulary (0..{self.num_classes - 1})"
                )
            classes = classes.to(self.device, non_blocking=True)
            masks = masks.to(self.device, non_blocking=True).bool()
            padded = masks.new_zeros((masks.shape[0], *padded_hw))
            padded[:, :h, :w] = masks
            targets.append({"labels": classes, "masks": padded})
        return targets

    def forward(self, batched_inputs: list[dict]):
        images, sizes = self._images(batched_inputs)
        features = self.backbone(images)
        mask_features, _, multi_scale = self.pixel_decoder(features)
        outputs = self.predictor(multi_scale, mask_features, self._classifier_with_void(), self.num_templates)
        if self.training:
            return self._losses(outputs, batched_inputs, images.shape[-2:], features)
        return self._inference(outputs, features, batched_inputs, images.shape[-2:], sizes)

    def _losses(self, outputs, batched_inputs, padded_hw, features) -> dict[str, torch.Tensor]:
        targets = self._targets(batched_inputs, padded_hw)
        if not self.deep_supervision:
            outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        for t, x in zip(targets, batched_inputs, strict=True):
            t["is_synthetic"] = bool(x.get("is_synthetic", False))
        if self.iat is not None and self.iat.needs_real_features:
            self._clip_features_of_real_objects(features["clip_vis_dense"], targets)
        raw, _indices = self.criterion(outputs, targets)
        return {k: v * self.criterion.weight_dict[k] for k, v in raw.items() if k in self.criterion.weight_dict}

    @torch.no_grad()
    def _clip_features_of_real_objects(self, clip_dense: torch.Tensor, targets: list[dict]) -> None:
        """IAT's "clip" feature source: each real object's frozen CLIP embedding, the dense CLIP features
        pooled under its ground-truth mask and passed through CLIP's head (what the out-of-vocabulary branch
        computes for a predicted mask), as targets' `iat_features`; one head call for the batch."""
        pooled, owners = [], []
        for b, t in enumerate(targets):
            if not t["is_synthetic"]:
                pooled.append(pool_under_masks(clip_dense[b], t["masks"]))
                owners.append(b)
        counts = [p.shape[0] for p in pooled]
        if sum(counts) == 0:
            for b in owners:
                targets[b]["iat_features"] = clip_dense.new_zeros((0, self.iat.bank_dim))
            return
        embeds = self.backbone.visual_prediction_forward(torch.cat(pooled)[None])[0].float()
        for b, part in zip(owners, embeds.split(counts), strict=True):
            targets[b]["iat_features"] = part

    @torch.no_grad()
    def _inference(self, outputs, features, batched_inputs, padded_hw, sizes) -> list[dict]:
        mask_cls, mask_pred = outputs["pred_logits"], outputs["pred_masks"]
        clip_feature = features["clip_vis_dense"]
        mask_for_pooling = F.interpolate(
            mask_pred, size=clip_feature.shape[-2:], mode="bilinear", align_corners=False
        )
        pooled = self.backbone.visual_prediction_forward(mask_pooling(clip_feature, mask_for_pooling))
        out_vocab = get_classification_logits(
            pooled, self.text_embeddings.to(pooled.dtype), self.backbone.logit_scale, self.num_templates
        )
        valid = None
        if self.ensemble_on_valid_mask:
            valid = (mask_for_pooling > 0).flatten(2).sum(-1) > 0
        mask_cls = geometric_ensemble(mask_cls, out_vocab, self.seen_mask, self.alpha, self.beta, valid)
        mask_pred = F.interpolate(mask_pred.float(), size=padded_hw, mode="bilinear", align_corners=False)

        with torch.autocast(device_type=mask_pred.device.type, enabled=False):  # float32 outputs under AMP
            return self._postprocess(mask_cls, mask_pred, batched_inputs, sizes)

    def _postprocess(self, mask_cls, mask_pred, batched_inputs, sizes) -> list[dict]:
        results = []
        for b, x in enumerate(batched_inputs):
            h, w = sizes[b]
            out_h, out_w = int(x.get("height", h)), int(x.get("width", w))
            masks = mask_pred[b, :, :h, :w]
            if (out_h, out_w) != (h, w):
                masks = F.interpolate(masks[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[
                    0
                ]
            res = {}
            if self.semantic_on:
                res["sem_seg"] = self.semantic_inference(mask_cls[b], masks)
            if self.panoptic_on:
                res["panoptic_seg"] = self.panoptic_inference(mask_cls[b], masks)
            results.append(res)
        return results

    @staticmethod
    def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
        """(K,H,W) per-class scores: sum over queries of p(class) * p(pixel in mask) (Mask2Former)."""
        return torch.einsum("qc,qhw->chw", mask_cls.softmax(-1)[..., :-1], mask_pred.sigmoid())

    def panoptic_inference(self, mask_cls: torch.Tensor, mask_pred: torch.Tensor):
        scores, labels = mask_cls.softmax(-1).max(-1)
        mask_pred = mask_pred.sigmoid()
        keep = labels.ne(self.num_classes) & (scores > self.object_mask_threshold)
        cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep]
        panoptic_seg = torch.zeros(mask_pred.shape[-2:], dtype=torch.long, device=mask_pred.device)
        segments: list[dict] = []
        if cur_masks.shape[0] == 0:
            return panoptic_seg, segments
        # Each pixel goes to the query with the highest score * mask probability.
        cur_mask_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
        stuff_segment: dict[int, int] = {}
        for k in range(cur_classes.shape[0]):
            pred_class = int(cur_classes[k])
            isthing = self.metadata_isthing[pred_class]
            mask_area = int((cur_mask_ids == k).sum())
            original_area = int((cur_masks[k] >= 0.5).sum())
            mask = (cur_mask_ids == k) & (cur_masks[k] >= 0.5)
            if mask_area == 0 or original_area == 0 or int(mask.sum()) == 0:
                continue
            if mask_area / original_area < self.overlap_threshold:
                continue  # mostly hidden behind other segments
            if not isthing and pred_class in stuff_segment:
                panoptic_seg[mask] = stuff_segment[pred_class]  # one segment per stuff class
                continue
            seg_id = len(segments) + 1
            if not isthing:
                stuff_segment[pred_class] = seg_id
            panoptic_seg[mask] = seg_id
            segments.append(
                {
                    "id": seg_id,
                    "category_id": pred_class,
                    "isthing": bool(isthing),
                    "score": float(cur_scores[k]),
                }
            )
        return panoptic_seg, segments
