"""Frozen open_clip ConvNeXt: multi-scale features for the mask decoder, dense CLIP features and the CLIP
head for out-of-vocabulary classification, and the text tower for the vocabulary embeddings.

The CLIP weights never train (FC-CLIP keeps the backbone frozen so its open-vocabulary alignment survives);
the module stays in eval mode and runs under `torch.no_grad()` whatever mode its parent is put in.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import open_clip
import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from ...config.defaults import RANDOM_WEIGHTS_PREFIX
from ..registry import BACKBONE_REGISTRY

CLIP_VOCAB_SIZE = 49408  # open_clip's shipped BPE vocabulary (bpe_simple_vocab_16e6) incl. the 2 specials
BUNDLED_CLIP_CONFIGS = Path(__file__).resolve().parent / "clip_configs"
_registered_config_paths: set[str] = set()


def _register_clip_configs(extra: list[str] | tuple[str, ...] = ()) -> None:
    """Make our own open_clip model configs (tiny test model, custom ones from the config) known by name."""
    for path in [BUNDLED_CLIP_CONFIGS, *extra]:
        key = str(Path(path).resolve())
        if key in _registered_config_paths:
            continue
        if not Path(key).exists():
            raise FileNotFoundError(
                f"open_clip model config {path!r} (MODEL.FC_CLIP.CLIP_MODEL_CONFIG_PATHS) does not exist"
            )
        open_clip.add_model_config(key)
        _registered_config_paths.add(key)


def resolve_weights_path(weights: str, models_dir: str | os.PathLike | None = None, model_name: str = "",
                         config_paths=()) -> Path:
    """A local checkpoint path: absolute as given, relative ones under the models directory; "random:<seed>"
    is a file of random weights for `model_name`, written once per machine (RANDOM_WEIGHTS_PREFIX)."""
    if str(weights).startswith(RANDOM_WEIGHTS_PREFIX):
        return random_weights_file(model_name, _seed(weights), config_paths)
    if not weights:
        raise ValueError(
            "MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS is empty: set it to the open_clip checkpoint file "
            "(absolute, or relative to the models directory DREAMMASK_MODELS_DIR)"
        )
    path = Path(weights).expanduser()
    if not path.is_absolute():
        if models_dir is None:
            from dreammask.shared.settings import Settings

            models_dir = Settings().models_dir
        path = Path(models_dir) / path
    if not path.is_file():
        raise FileNotFoundError(
            f"CLIP weights not found at {path}; put the open_clip checkpoint there or point "
            "MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS at it (weights are never downloaded)"
        )
    return path


@BACKBONE_REGISTRY.register()
class CLIPConvNeXt(nn.Module):
    """Wraps an open_clip CLIP model whose vision tower is a timm ConvNeXt (`visual.trunk`)."""

    def __init__(self, clip_model: nn.Module, model_name: str) -> None:
        super().__init__()
        visual = getattr(clip_model, "visual", None)
        trunk = getattr(visual, "trunk", None)
        if trunk is None or not hasattr(trunk, "stages") or not hasattr(trunk, "stem"):
            raise ValueError(
                f"open_clip model {model_name!r} has no timm ConvNeXt vision trunk; FC-CLIP needs a "
                "ConvNeXt CLIP model such as convnext_large_d_320"
            )
        self.model_name = model_name
        self.clip_model = clip_model
        for p in self.clip_model.parameters():
            p.requires_grad_(False)
        self.clip_model.eval()

        stage_channels = [info["num_chs"] for info in trunk.feature_info]
        self._out_feature_channels = {"stem": stage_channels[0]}
        self._out_feature_strides = {"stem": 4}
        for i, (ch, info) in enumerate(zip(stage_channels, trunk.feature_info, strict=True)):
            self._out_feature_channels[f"res{i + 2}"] = ch
            self._out_feature_strides[f"res{i + 2}"] = info["reduction"]
        self._out_feature_channels["clip_vis_dense"] = stage_channels[-1]
        self._out_feature_strides["clip_vis_dense"] = trunk.feature_info[-1]["reduction"]

        self.context_length = int(clip_model.context_length)
        self.vocab_size = int(clip_model.vocab_size)
        self.tokenizer = SimpleTokenizer(context_length=self.context_length)
        if self.tokenizer.vocab_size != CLIP_VOCAB_SIZE or self.vocab_size != CLIP_VOCAB_SIZE:
            raise ValueError(
                f"tokenizer vocabulary {self.tokenizer.vocab_size} / text tower vocabulary {self.vocab_size} "
                f"differ from the CLIP BPE vocabulary size {CLIP_VOCAB_SIZE}"
            )

    # The backbone never leaves eval mode (drop-path, dropout off), whatever mode the parent is in.
    def train(self, mode: bool = True) -> CLIPConvNeXt:
        super().train(False)
        return self

    @property
    def dim_latent(self) -> int:
        return int(self.clip_model.text_projection.shape[-1])

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip_model.logit_scale

    def output_shape(self) -> dict[str, dict[str, int]]:
        return {
            name: {"channels": self._out_feature_channels[name], "stride": self._out_feature_strides[name]}
            for name in self._out_feature_channels
        }

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised images (B,3,H,W) -> stem, res2..res5 and the dense CLIP features."""
        trunk = self.clip_model.visual.trunk
        out = {}
        x = trunk.stem(x)
        out["stem"] = x
        for i, stage in enumerate(trunk.stages):
            x = stage(x)
            out[f"res{i + 2}"] = x
        out["clip_vis_dense"] = trunk.norm_pre(x)
        return out

    @torch.no_grad()
    def visual_prediction_forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mask-pooled dense features (B,Q,C) -> CLIP image embeddings (B,Q,D) through the CLIP head."""
        b, q, c = pooled.shape
        x = pooled.reshape(b * q, c, 1, 1)  # the timm head pools/norms a 2D map: feed a 1x1 one
        x = self.clip_model.visual.trunk.head(x)
        x = self.clip_model.visual.head(x)
        return x.view(b, q, x.shape[-1])

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip_model.encode_text(tokens, normalize=False)


def _seed(weights: str) -> int:
    try:
        return int(str(weights)[len(RANDOM_WEIGHTS_PREFIX):])
    except ValueError:
        raise ValueError(f"MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS {weights!r}: write random:<integer seed>") from None


def write_random_clip_weights(model_name: str, path: str | os.PathLike, seed: int = 0, config_paths=()) -> Path:
    """Save a randomly initialised open_clip model's state_dict (the same file for the same seed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_clip_model(model_name, None, config_paths)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent writers never share a temp file
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return path


def random_weights_file(model_name: str, seed: int, config_paths=()) -> Path:
    """The machine's shared file of random weights for (model config, seed); written on first use. Its name
    carries a hash of the open_clip config and the library versions, so another architecture under the same
    name never reads a stale file."""
    import hashlib
    import json

    _register_clip_configs(list(config_paths))
    spec = json.dumps([open_clip.get_model_config(model_name), open_clip.__version__, torch.__version__],
                      sort_keys=True, default=str)
    digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
    path = Path(tempfile.gettempdir()) / "dreammask-random-clip" / f"{model_name}.seed{seed}.{digest}.pt"
    if not path.is_file():
        write_random_clip_weights(model_name, path, seed, config_paths)
    return path


def build_clip_model(model_name: str, weights_path: str | os.PathLike | None, config_paths=()) -> nn.Module:
    """An open_clip CLIP model by config name, with weights from a local file (or random when None)."""
    _register_clip_configs(list(config_paths))
    if model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model config {model_name!r}; add its json to "
            "MODEL.FC_CLIP.CLIP_MODEL_CONFIG_PATHS or use e.g. 'convnext_large_d_320'"
        )
    # Under `with torch.device("meta")` (shape-only models, e.g. the weight-parity check) build there.
    device = "meta" if torch.get_default_device().type == "meta" else "cpu"
    return open_clip.create_model(
        model_name,
        pretrained=str(weights_path) if weights_path is not None else None,
        device=device,
        pretrained_image=False,
        pretrained_text=False,
        require_pretrained=weights_path is not None,
    )


def load_clip_backbone(cfg, models_dir: str | os.PathLike | None = None) -> CLIPConvNeXt:
    """The frozen FC-CLIP backbone named by cfg.MODEL.FC_CLIP (weights from a local file only)."""
    fc = cfg.MODEL.FC_CLIP
    if torch.get_default_device().type == "meta":  # shapes only: there is nothing to load weights into
        weights = None
    else:
        weights = resolve_weights_path(fc.CLIP_PRETRAINED_WEIGHTS, models_dir, fc.CLIP_MODEL_NAME,
                                       fc.CLIP_MODEL_CONFIG_PATHS)
    clip_model = build_clip_model(fc.CLIP_MODEL_NAME, weights, fc.CLIP_MODEL_CONFIG_PATHS)
    return CLIPConvNeXt(clip_model, fc.CLIP_MODEL_NAME)
