"""Checkpoints in object storage: `{prefix}checkpoints/model_{iter:07d}.pth` and `{prefix}last_checkpoint`.

A checkpoint holds what the next step depends on: model (incl. the SRA memory bank buffers), optimizer,
LR schedule, AMP grad scaler, the next iteration and the RNG states (torch, CUDA, numpy, Python). The data
order needs nothing: the sampler's batches are a function of the iteration. Only the main process writes.
Files are read back with `torch.load(weights_only=True)`: a checkpoint cannot run code.
"""

from __future__ import annotations

import io
import random
import re

import numpy as np
import torch

from dreammask.shared.storage import ObjectNotFound, ObjectStore

_NAME_RE = re.compile(r"^model_(\d{7})\.pth$")


def checkpoint_name(iteration: int) -> str:
    return f"model_{iteration:07d}.pth"


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": _py_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_py_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_plain(s):
    version, internal, gauss = s
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _py_state_from_plain(d):
    return (d["version"], tuple(d["internal"]), d["gauss"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


class Checkpointer:
    def __init__(self, store: ObjectStore, prefix: str, max_to_keep: int = 3, save_frozen: bool = True):
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.store, self.prefix = store, prefix
        self.max_to_keep = max_to_keep
        self.save_frozen = save_frozen

    @property
    def last_key(self) -> str:
        return self.prefix + "last_checkpoint"

    def key(self, name: str) -> str:
        return self.prefix + "checkpoints/" + name

    def model_state(self, model: torch.nn.Module) -> dict:
        model = unwrap(model)
        state = model.state_dict()
        if not self.save_frozen:
            # Frozen weights (the CLIP backbone) come from the model's own weights at build time.
            frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
            state = {k: v for k, v in state.items() if k not in frozen}
        return state

    def save(self, iteration: int, model, optimizer=None, scheduler=None, scaler=None, extra: dict | None = None) -> str:
        """Write the checkpoint taken before `iteration` runs (so resuming starts at `iteration`)."""
        state = self.model_state(model)
        payload = {
            "model": state,
            # Non-persistent buffers (the SRA memory bank, vocabulary embeddings): the next step depends on
            # them, so an exact resume needs them although the model leaves them out of its state_dict.
            "buffers": {n: b.detach().cpu().clone() for n, b in unwrap(model).named_buffers() if n not in state},
            "iteration": int(iteration),
            "rng": rng_state(),
            "extra": extra or {},
        }
        if optimizer is not None:
            payload["optimizer"] = optimizer.state_dict()
        if scheduler is not None:
            payload["scheduler"] = scheduler.state_dict()
        if scaler is not None:
            payload["scaler"] = scaler.state_dict()
        buf = io.BytesIO()
        torch.save(payload, buf)
        name = checkpoint_name(iteration)
        self.store.put_bytes(self.key(name), buf.getvalue())
        self.store.put_bytes(self.last_key, name.encode(), "text/plain")
        self._prune()
        return self.key(name)

    def _prune(self) -> None:
        if self.max_to_keep <= 0:
            return
        names = sorted(k.rsplit("/", 1)[-1] for k in self.store.list(self.prefix + "checkpoints/"))
        names = [n for n in names if _NAME_RE.match(n)]
        for n in names[: -self.max_to_keep]:
            self.store.delete(self.key(n))

    def last_checkpoint(self) -> str | None:
        try:
            name = self.store.get_bytes(self.last_key).decode().strip()
        except ObjectNotFound:
            return None
        return self.key(name) if name and self.store.exists(self.key(name)) else None

    def load(self, key: str) -> dict:
        return torch.load(io.BytesIO(self.store.get_bytes(key)), map_location="cpu", weights_only=True)

    def restore(self, payload: dict, model, optimizer=None, scheduler=None, scaler=None) -> int:
        """Load states from a checkpoint payload (RNG states are left to the caller); returns the iteration."""
        target = unwrap(model)
        missing, unexpected = target.load_state_dict(payload["model"], strict=False)
        if not self.save_frozen:
            frozen = {n for n, p in target.named_parameters() if not p.requires_grad}
            missing = [m for m in missing if m not in frozen]
        if missing or unexpected:
            raise RuntimeError(
                f"checkpoint does not fit the model: missing {list(missing)[:10]}, unexpected {list(unexpected)[:10]}"
                " (was it written by another config?)"
            )
        with torch.no_grad():
            for n, b in target.named_buffers():
                saved = payload.get("buffers", {}).get(n)
                if saved is not None and saved.shape == b.shape:
                    b.copy_(saved)
        if optimizer is not None and "optimizer" in payload:
            optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and "scheduler" in payload:
            scheduler.load_state_dict(payload["scheduler"])
        if scaler is not None and "scaler" in payload:
            scaler.load_state_dict(payload["scaler"])
        return int(payload["iteration"])
