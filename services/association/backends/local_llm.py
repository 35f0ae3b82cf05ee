"""Backends `transformers`: CNA and layout planning with a local instruct model loaded in-process.

For a CPU box or a single GPU without vLLM. The prompts, the parsing of replies and the CNA/layout logic
are the `llm` backends' own (dreammask.services.association.llm); only the engine differs: replies are
generated with `transformers` in batches (left padding), and the schema goes into the prompt since there
is no guided decoding here. The model is read from the models directory only (`local_files_only`), once
per process, and shared by both backends.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from dreammask.services.association.llm.cna import associate
from dreammask.services.association.llm.engine import Engine, LLMTask, TaskFailure, summarise_failures
from dreammask.services.association.llm.layout import plan_layouts
from dreammask.services.association.llm.parsing import LLMOutputError
from dreammask.services.association.settings import AssociationSettings
from dreammask.shared.backends import AssociationBackend, Failure, LayoutBackend, LayoutRequest
from dreammask.shared.devices import resolve_device
from dreammask.shared.schemas import NovelCategory, SceneLayout

_models: dict[tuple, Any] = {}
_models_lock = threading.Lock()


class LocalModelMissing(FileNotFoundError):
    pass


def _resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def load_local_llm(path: Path, device: str = "auto", dtype: str = "auto"):
    """(tokenizer, model) of a causal LM directory, loaded once per process; nothing from a hub."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise LocalModelMissing(
            f"no local LLM at {path} (config.json missing): put an instruct model directory there "
            "(e.g. Qwen2.5-1.5B-Instruct saved with save_pretrained) or set DREAMMASK_LOCAL_LLM_MODEL"
        )
    dev = resolve_device(device, setting="DREAMMASK_LOCAL_LLM_DEVICE")
    key = (str(path.resolve()), dev, dtype)
    with _models_lock:
        if key not in _models:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            tok.padding_side = "left"  # batched generation continues every prompt at the same position
            if tok.pad_token is None:
                if tok.eos_token is None:
                    raise RuntimeError(f"the tokenizer at {path} has neither a pad nor an eos token")
                tok.pad_token = tok.eos_token
            model = AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, dtype=_resolve_dtype(dtype, dev)
            ).to(dev).eval()
            _models[key] = (tok, model, threading.Lock())
        return _models[key]


def render_prompt(tok, messages: list[dict]) -> str:
    """The model's own chat template when it has one; a plain transcript otherwise."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant: "


# A reply is JSON: starting it with the brace saves small models from chatting first.
REPLY_PREFIX = "{"


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, path: Path, settings: AssociationSettings):
        self.path = Path(path)
        self.settings = settings
        self.tokenizer, self.model, self._lock = load_local_llm(path, settings.local_llm_device, settings.local_llm_dtype)

    def generate(self, tasks: list[LLMTask], attempt: int) -> list[str]:
        import torch

        reqs = [t.request(attempt) for t in tasks]
        prompts = [render_prompt(self.tokenizer, r.messages(True)) + REPLY_PREFIX for r in reqs]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        first = reqs[0]
        max_new = max(8, min(max(r.max_tokens for r in reqs), self.settings.local_llm_max_new_tokens))
        sample = first.temperature > 0
        kwargs = dict(max_new_tokens=max_new, do_sample=sample, pad_token_id=self.tokenizer.pad_token_id)
        if sample:
            kwargs.update(temperature=first.temperature, top_p=first.top_p)
        with self._lock, torch.inference_mode():
            torch.manual_seed(first.seed or 0)  # the batch is reproducible for a given first seed
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        return [REPLY_PREFIX + t for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def run(self, tasks: list[LLMTask], attempts: int) -> list[Any | TaskFailure]:
        results: list[Any] = [None] * len(tasks)
        reasons: dict[int, list[str]] = defaultdict(list)
        pending = list(range(len(tasks)))
        bs = self.settings.local_llm_batch_size
        for attempt in range(attempts):
            if not pending:
                break
            for start in range(0, len(pending), bs):
                chunk = pending[start : start + bs]
                texts = self.generate([tasks[i] for i in chunk], attempt)
                for i, text in zip(chunk, texts, strict=True):
                    try:
                        results[i] = tasks[i].accept(text)
                    except LLMOutputError as e:
                        reasons[i].append(str(e))
            pending = [i for i in pending if results[i] is None]
        for i in pending:
            results[i] = TaskFailure(summarise_failures(reasons[i], attempts), "output")
        return results

    def describe(self) -> dict:
        cfg = self.model.config
        return {
            "engine": "transformers",
            "model_path": str(self.path),
            "architecture": (getattr(cfg, "architectures", None) or [type(self.model).__name__])[0],
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "device": str(self.model.device),
        }


def _engine_from(settings) -> tuple[AssociationSettings, TransformersEngine]:
    s = AssociationSettings.of(settings)
    return s, TransformersEngine(s.local_model_path(s.models_dir), s)


class LocalLLMAssociation(AssociationBackend):
    name = "transformers"
    requires_weights = True

    def __init__(self, core, settings: AssociationSettings, engine: TransformersEngine):
        self.core, self.settings, self.engine = core, settings, engine
        self._embedder = None

    @classmethod
    def from_settings(cls, settings) -> LocalLLMAssociation:
        s, engine = _engine_from(settings)
        return cls(s, s, engine)

    @property
    def embedder(self):
        if self._embedder is None:
            from dreammask.services.association.embedding_model import get_text_embedder

            self._embedder = get_text_embedder(self.core)
        return self._embedder

    def warmup(self) -> None:
        _ = self.embedder
        if self.core.cna_lexical_screen:  # the lexical screen's WordNet, parsed once per process
            from dreammask.services.association.wordnet import get_wordnet

            get_wordnet(self.core.cna_wordnet_dir)

    def associate(self, train: list[str], num_novel: int, *, seed: int) -> tuple[list[NovelCategory], list[dict]]:
        return associate(self.engine, self.settings, self.core, self.embedder, train, num_novel, seed, self.name)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.engine.describe(), "rounds": self.settings.cna_rounds,
                "min_support": self.settings.cna_min_support}


class LocalLLMLayoutPlanner(LayoutBackend):
    name = "transformers"
    requires_weights = True

    def __init__(self, core, settings: AssociationSettings, engine: TransformersEngine):
        self.core, self.settings, self.engine = core, settings, engine
        self._prompts: dict = {}  # per-category prompts, reused by every batch of the category's scenes

    @classmethod
    def from_settings(cls, settings) -> LocalLLMLayoutPlanner:
        s, engine = _engine_from(settings)
        return cls(s, s, engine)

    def plan(self, requests: list[LayoutRequest]) -> list[SceneLayout | Failure]:
        return plan_layouts(self.engine, self.settings, self.core, requests, self.name, self._prompts)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.engine.describe(), "exemplars": self.settings.layout_exemplars}
