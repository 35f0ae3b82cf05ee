"""A tiny, randomly initialised GLIGEN pipeline of the real architecture, built like diffusers'
`get_dummy_components()`: gated-attention UNet, small AutoencoderKL, small CLIP text model, and the real
CLIP BPE tokenizer (49408 tokens) built from the vocabulary file that open_clip ships.

`build_tiny_gligen(models_dir)` saves it with `save_pretrained` under
`models_dir/gligen/tiny-generation-text-box`, where the production loader reads it. Used by the tests and
by bench/synthesis.py.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

CLIP_VOCAB_SIZE = 49408
TINY_MODEL_SUBPATH = "gligen/tiny-generation-text-box"
TINY_IMAGE_SIZE = 64


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (the same one GPT-2 uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


@lru_cache(maxsize=1)
def clip_bpe_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """Vocabulary and merges exactly as CLIP's SimpleTokenizer builds them from bpe_simple_vocab_16e6."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    # CLIP keeps the first 49152 - 256 - 2 merges after the header line.
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_clip_tokenizer_files(directory: Path) -> Path:
    """vocab.json + merges.txt in the layout that transformers' CLIPTokenizer reads."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_vocab_and_merges()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return directory


def build_clip_tokenizer(work_dir: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_clip_tokenizer_files(work_dir / "clip-bpe")))


def tiny_gligen_components(work_dir: Path, seed: int = 0) -> dict:
    """The five pipeline components, randomly initialised (deterministic for `seed`)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    hidden = 32  # the text width is the UNet's cross-attention width and the phrase-embedding width
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 2,
        block_out_channels=(32, 64),
        layers_per_block=1,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=hidden,
        attention_head_dim=8,
        norm_num_groups=32,
        attention_type="gated",  # adds the GLIGEN position_net and a gated self-attention fuser per block
    )
    # Trained GLIGEN has open gates and sharp fuser attention; at their init (gates at 0, near-uniform
    # attention) the grounding tokens would barely reach the image and the per-sample conditioning
    # would be untestable. Open the gates and sharpen the attention so boxes visibly move pixels.
    from diffusers.models.attention import GatedSelfAttentionDense

    with torch.no_grad():
        for module in unet.modules():
            if type(module) is GatedSelfAttentionDense:
                module.alpha_attn.fill_(1.0)
                module.alpha_dense.fill_(1.0)
                module.attn.to_q.weight.mul_(8.0)
                module.attn.to_k.weight.mul_(8.0)
        unet.position_net.null_positive_feature.normal_()
        unet.position_net.null_position_feature.normal_()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=TINY_IMAGE_SIZE,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=hidden,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            layer_norm_eps=1e-5,
        )
    )
    tokenizer = CLIPTokenizer.from_pretrained(
        str(write_clip_tokenizer_files(work_dir / "clip-bpe")), model_max_length=77
    )
    # Stable Diffusion 1.x's scheduler, as shipped with the GLIGEN generation checkpoint.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def build_tiny_gligen(models_dir: Path, seed: int = 0, variant: str | None = None) -> Path:
    """Save the tiny pipeline as a diffusers folder under `models_dir`; returns that folder."""
    from diffusers import StableDiffusionGLIGENPipeline

    target = Path(models_dir) / TINY_MODEL_SUBPATH
    pipe = StableDiffusionGLIGENPipeline(
        **tiny_gligen_components(Path(models_dir) / ".build", seed=seed),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(target), safe_serialization=True, variant=variant)
    return target
