"""Vocabulary -> CLIP text classifier: one embedding per (class, synonym), each the normalised mean over a
prompt-template ensemble, computed once with the frozen text tower and cached (memory, optionally disk).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# ViLD's prompt ensemble, as FC-CLIP uses it.
VILD_TEMPLATES = [
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
]
TEMPLATE_SETS: dict[str, list[str]] = {"vild": VILD_TEMPLATES, "single": ["a photo of a {}."]}


def templates_by_name(name: str) -> list[str]:
    try:
        return TEMPLATE_SETS[name]
    except KeyError:
        raise ValueError(
            f"MODEL.FC_CLIP.PROMPT_TEMPLATES={name!r}; choose one of {sorted(TEMPLATE_SETS)}"
        ) from None


def expand_synonyms(class_names: list[str], synonyms: dict[str, list[str]] | list[list[str]] | None) -> list[list[str]]:
    """Per class, the names to embed: with a dict, the class's own name first then its synonyms; with a list
    (one list per class), exactly those names, e.g. FC-CLIP's prompt-engineered list. Duplicates and blanks
    dropped."""
    if isinstance(synonyms, (list, tuple)):
        if len(synonyms) != len(class_names):
            raise ValueError(f"{len(synonyms)} name lists for {len(class_names)} classes")
        out = []
        for name, names in zip(class_names, synonyms):
            kept = []
            for s in names:
                s = str(s).strip()
                if s and s not in kept:
                    kept.append(s)
            if not kept:
                raise ValueError(f"class {name!r} has no name to embed")
            out.append(kept)
        return out
    synonyms = synonyms or {}
    unknown = sorted(set(synonyms) - set(class_names))
    if unknown:
        raise ValueError(f"synonyms given for classes not in the vocabulary: {unknown}")
    out = []
    for name in class_names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"class names must be non-empty strings, got {name!r}")
        names = [name.strip()]
        for s in synonyms.get(name, []):
            s = s.strip()
            if s and s not in names:
                names.append(s)
        out.append(names)
    return out


class TextClassifier:
    """Computes and caches the classifier rows of a vocabulary for one CLIP text tower.

    `__call__(class_names, synonyms)` -> (embeddings (sum of synonyms, D) float32 normalised on the
    tower's device, synonyms per class). `hits` / `misses` count cache use; `encoded_prompts` counts the
    prompts that actually went through the text tower."""

    def __init__(
        self, backbone, templates: list[str], cache_dir: str | Path | None = None, batch_size: int = 256
    ):
        self.backbone = backbone
        self.templates = list(templates)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.batch_size = batch_size
        self._memory: dict[str, tuple[torch.Tensor, list[int]]] = {}
        self.hits = 0
        self.misses = 0
        self.encoded_prompts = 0
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """Identifies the text tower's weights, so a cache never serves another checkpoint's embeddings."""
        if self._fingerprint is None:
            clip = self.backbone.clip_model
            h = hashlib.sha256(self.backbone.model_name.encode())
            for t in (clip.text_projection, clip.token_embedding.weight[:8], clip.ln_final.weight):
                h.update(t.detach().float().cpu().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def cache_key(self, per_class: list[list[str]]) -> str:
        payload = json.dumps({"tower": self.fingerprint(), "templates": self.templates, "classes": per_class})
        return hashlib.sha256(payload.encode()).hexdigest()

    def __call__(self, class_names: list[str], synonyms: dict[str, list[str]] | list[list[str]] | None = None):
        per_class = expand_synonyms(class_names, synonyms)
        key = self.cache_key(per_class)
        device = next(self.backbone.parameters()).device
        if key in self._memory:
            self.hits += 1
            emb, counts = self._memory[key]
            return emb.to(device), list(counts)
        path = self.cache_dir / f"text_{key}.pt" if self.cache_dir else None
        if path is not None and path.is_file():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            self.hits += 1
            emb, counts = blob["embeddings"], [int(c) for c in blob["counts"]]
        else:
            self.misses += 1
            emb = self._encode([name for names in per_class for name in names]).cpu()
            counts = [len(names) for names in per_class]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                torch.save({"embeddings": emb, "counts": counts}, tmp)
                tmp.replace(path)  # atomic: concurrent trainers never read half a file
        self._memory[key] = (emb, counts)
        return emb.to(device), list(counts)

    @torch.no_grad()
    def _encode(self, names: list[str]) -> torch.Tensor:
        device = next(self.backbone.parameters()).device
        prompts = [t.format(n) for n in names for t in self.templates]
        chunks = []
        for i in range(0, len(prompts), self.batch_size):
            tokens = self.backbone.tokenize(prompts[i : i + self.batch_size]).to(device)
            chunks.append(F.normalize(self.backbone.encode_text(tokens).float(), dim=-1))
        self.encoded_prompts += len(prompts)
        emb = torch.cat(chunks).view(len(names), len(self.templates), -1).mean(1)
        return F.normalize(emb, dim=-1)
