"""GLIGEN text-box generation with a different layout per batch item.

diffusers 0.42.1 ships `StableDiffusionGLIGENPipeline` among its deprecated pipelines
(diffusers/pipelines/deprecated/stable_diffusion_gligen/). Its `__call__` encodes one list of phrases and
boxes, pads them to 30 grounding tokens, and repeats that single layout over the whole batch as
`cross_attention_kwargs["gligen"] = {"boxes", "positive_embeddings", "masks"}`; the UNet's `position_net`
(GLIGENTextBoundingboxProjection) turns them into grounding tokens for the gated self-attention fusers.

`GligenBatchPipeline` keeps that computation step for step (same prompt encoding, same phrase features
— the text encoder's pooled output —, same padding and null masks, the unconditional half of
classifier-free guidance with all masks 0, scheduled sampling that turns the fusers off after the first
`beta` share of the steps) but builds the grounding tensors per sample, and draws each sample's
starting noise from its own generator. A sample therefore comes out the same alone or in any batch.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .feature_cache import DeepFeatureCache

# The grounding-token count GLIGEN was trained with; the diffusers pipeline pads to it.
MAX_GROUNDING_TOKENS = 30
# Category names repeat across every scene of a job: their phrase features are kept (a few MB at most).
PHRASE_CACHE_SIZE = 4096
NEGATIVE_CACHE_SIZE = 8

SCHEDULER_CLASSES = {
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "pndm": "PNDMScheduler",
}


@dataclass
class GroundedPrompt:
    """One image to render: a global caption, one phrase per box (normalised xyxy), and its seed."""

    prompt: str
    phrases: list[str]
    boxes: list[list[float]]
    seed: int

    def __post_init__(self):
        if len(self.phrases) != len(self.boxes):
            raise ValueError(f"{len(self.phrases)} phrases for {len(self.boxes)} boxes; give one phrase per box")
        if len(self.boxes) > MAX_GROUNDING_TOKENS:
            raise ValueError(
                f"{len(self.boxes)} boxes; GLIGEN grounds at most {MAX_GROUNDING_TOKENS} (trim the layout first)"
            )


@dataclass
class GligenBatchOutput:
    images: np.ndarray  # float32 (B, H, W, 3) in [0, 1]
    info: dict[str, Any] = field(default_factory=dict)  # what was actually run (shared by the batch)
    prompt_truncated: list[bool] = field(default_factory=list)


def make_scheduler(base, name: str):
    """A fresh scheduler for one call: schedulers keep per-run state (PNDM's history, DPM's model
    outputs), so the loaded one is only a template. 'default' keeps the checkpoint's own class."""
    import diffusers

    if name == "default":
        cls = type(base)
    else:
        try:
            cls = getattr(diffusers, SCHEDULER_CLASSES[name])
        except KeyError:
            raise ValueError(f"unknown scheduler {name!r}; use one of default, {', '.join(SCHEDULER_CLASSES)}") from None
    return cls.from_config(base.config)


class GligenBatchPipeline:
    """Batched GLIGEN sampling over the components of a loaded `StableDiffusionGLIGENPipeline`."""

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.unet = unet
        self.scheduler = scheduler
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        from diffusers.models.attention import GatedSelfAttentionDense

        self._fusers = [m for m in unet.modules() if type(m) is GatedSelfAttentionDense]
        if not self._fusers:
            raise ValueError("the UNet has no gated self-attention layers: it is not a GLIGEN UNet")
        # Constant per deployment: the negative prompt's embedding and each phrase's pooled feature are
        # computed once, not per batch.
        self._negative_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._phrase_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        # "auto": whole-batch VAE decode until it runs out of memory once, then one image at a time.
        self.vae_slicing = "auto"
        self.text_encoder_calls = 0  # how often the text encoder ran (the caches' test reads it)
        # A compiled copy of the UNet (sharing its weights) for the input shapes it was warmed for; every
        # other shape runs on the eager UNet, so no task ever waits for a compilation (`use_compiled`).
        self.compiled_unet = None
        self.compiled_shapes: frozenset[tuple[int, int, int]] = frozenset()
        self.compiled_cudagraphs = False
        self.use_compiled_unet = True  # False: the eager UNet for every shape (the equality tests)
        self.compiled_calls = 0  # UNet passes that ran compiled (the tests and the bench read it)
        # Deep-feature caching (`feature_cache.DeepFeatureCache`): the whole UNet every this many steps, its
        # shallow branch in between. 1: off, every step exact. It changes the images; eager UNet only.
        self.feature_cache_interval = 1
        # Optional per-stage timing (bench/gpu_timing.StageTimer: CUDA events on a GPU); None in production.
        self.timer = None

    @classmethod
    def from_pipe(cls, pipe) -> GligenBatchPipeline:
        return cls(pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet, pipe.scheduler)

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def native_image_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def prompt_length(self) -> int:
        """Tokens per caption: the text encoder's position count (77 for CLIP). A tokenizer built from
        vocabulary files has no usable `model_max_length` (transformers leaves a 1e30 placeholder, which
        overflows as a truncation length), so the encoder decides; a tokenizer that declares a shorter
        length keeps it."""
        length = int(self.text_encoder.config.max_position_embeddings)
        declared = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(declared, int) and 0 < declared < length:
            length = declared
        return length

    def use_compiled(self, compiled_unet, shapes, *, cudagraphs: bool = False) -> None:
        """Route the UNet passes whose (rows, latent height, latent width) is in `shapes` to
        `compiled_unet`, a compiled copy of this loop's UNet with its own module objects and the same
        weights; the others stay eager. `cudagraphs`: the compiled module replays CUDA graphs, whose
        outputs are overwritten by the next replay (so they are copied where they outlive a step)."""
        from diffusers.models.attention import GatedSelfAttentionDense

        fusers = [m for m in compiled_unet.modules() if type(m) is GatedSelfAttentionDense]
        if not fusers:
            raise ValueError("the compiled UNet has no gated self-attention layers")
        ids = {id(m) for m in self._fusers}
        self._fusers = self._fusers + [m for m in fusers if id(m) not in ids]
        self.compiled_unet = compiled_unet
        self.compiled_shapes = frozenset(tuple(s) for s in shapes)
        self.compiled_cudagraphs = cudagraphs

    def _unet_for(self, sample: torch.Tensor):
        if (self.compiled_unet is not None and self.use_compiled_unet
                and tuple(sample.shape[:1]) + tuple(sample.shape[2:]) in self.compiled_shapes):
            return self.compiled_unet, True
        return self.unet, False

    def _gpu(self, name: str):
        return self.timer.gpu(name) if self.timer is not None else nullcontext()

    def _host(self, name: str):
        return self.timer.host(name) if self.timer is not None else nullcontext()

    # ------------------------------------------------------------------ conditioning

    def enable_fuser(self, enabled: bool) -> None:
        for m in self._fusers:
            m.enabled = enabled

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, list[bool]]:
        """Caption embeddings as the SD pipelines make them: padded to the prompt length (the text
        encoder's, `prompt_length`), last hidden state of the text encoder."""
        tok, length = self.tokenizer, self.prompt_length
        with self._host("tokenize"):
            inputs = tok(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
            truncated = [len(ids) > length for ids in tok(prompts, truncation=False).input_ids]
        attention_mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            attention_mask = inputs.attention_mask.to(self.device)
        self.text_encoder_calls += 1
        with self._gpu("text_encoder"):
            embeds = self.text_encoder(inputs.input_ids.to(self.device), attention_mask=attention_mask)[0]
        return embeds.to(dtype=self.text_encoder.dtype), truncated

    def negative_embedding(self, negative_prompt: str) -> torch.Tensor:
        """(1, L, D) embedding of the negative prompt, cached: it is the same for every batch of a job."""
        cached = self._negative_cache.get(negative_prompt)
        if cached is None:
            cached, _ = self.encode_prompts([negative_prompt])
            self._negative_cache[negative_prompt] = cached
            while len(self._negative_cache) > NEGATIVE_CACHE_SIZE:
                self._negative_cache.popitem(last=False)
        else:
            self._negative_cache.move_to_end(negative_prompt)
        return cached

    def encode_phrases(self, phrases: list[str]) -> dict[str, torch.Tensor]:
        """Phrase features as the GLIGEN pipeline makes them: the text encoder's pooled (EOS) output.
        Each distinct phrase is encoded once per call; CLIP's causal mask makes the pooled feature
        independent of how far the batch is padded."""
        unique = list(dict.fromkeys(phrases))
        missing = [p for p in unique if p not in self._phrase_cache]
        if missing:
            inputs = self.tokenizer(missing, padding=True, truncation=True, max_length=self.prompt_length,
                                    return_tensors="pt").to(self.device)
            self.text_encoder_calls += 1
            with self._gpu("text_encoder"):
                pooled = self.text_encoder(**inputs).pooler_output
            for p, f in zip(missing, pooled, strict=True):
                self._phrase_cache[p] = f
        out = {}
        for p in unique:
            self._phrase_cache.move_to_end(p)
            out[p] = self._phrase_cache[p]
        while len(self._phrase_cache) > PHRASE_CACHE_SIZE:
            self._phrase_cache.popitem(last=False)
        return out

    def grounding_inputs(self, samples: list[GroundedPrompt]) -> dict[str, torch.Tensor]:
        """Per-sample boxes, phrase embeddings and masks, each padded to 30 tokens."""
        n, dim = len(samples), self.unet.config.cross_attention_dim
        dtype, device = self.text_encoder.dtype, self.device
        features = self.encode_phrases([p for s in samples for p in s.phrases])
        boxes = torch.zeros(n, MAX_GROUNDING_TOKENS, 4, device=device, dtype=dtype)
        embeds = torch.zeros(n, MAX_GROUNDING_TOKENS, dim, device=device, dtype=dtype)
        masks = torch.zeros(n, MAX_GROUNDING_TOKENS, device=device, dtype=dtype)
        for i, s in enumerate(samples):
            k = len(s.boxes)
            if k:
                boxes[i, :k] = torch.tensor(s.boxes, device=device, dtype=dtype)
                embeds[i, :k] = torch.stack([features[p] for p in s.phrases]).to(dtype)
                masks[i, :k] = 1
        return {"boxes": boxes, "positive_embeddings": embeds, "masks": masks}

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(
        self,
        samples: list[GroundedPrompt],
        *,
        height: int,
        width: int,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        gligen_scheduled_sampling_beta: float = 0.3,
        negative_prompt: str | None = None,
        scheduler: str = "default",
        eta: float = 0.0,
    ) -> GligenBatchOutput:
        from diffusers.utils.torch_utils import randn_tensor

        if not samples:
            raise ValueError("nothing to render: give at least one sample")
        # Trusts height and width to be multiples of the VAE factor (8 for SD): the job schema checked the size
        # once, at submission.
        device, batch = self.device, len(samples)
        do_cfg = guidance_scale > 1.0

        prompt_embeds, truncated = self.encode_prompts([s.prompt for s in samples])
        with self._host("grounding"):
            grounding = self.grounding_inputs(samples)
        if do_cfg:
            negative = self.negative_embedding(negative_prompt or "")
            prompt_embeds = torch.cat([negative.expand(batch, -1, -1), prompt_embeds])
            # The unconditional half sees the same boxes with every mask off: only null grounding tokens.
            grounding = {k: torch.cat([v, v]) for k, v in grounding.items()}
            grounding["masks"][:batch] = 0
        cross_attention_kwargs = {"gligen": grounding}

        sched = make_scheduler(self.scheduler, scheduler)
        sched.set_timesteps(num_inference_steps, device=device)
        timesteps = sched.timesteps

        # One generator per sample, on the CPU: its noise does not depend on the batch or on the GPU model.
        generators = [torch.Generator("cpu").manual_seed(int(s.seed)) for s in samples]
        shape = (batch, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        with self._host("noise"):
            latents = randn_tensor(shape, generator=generators, device=device, dtype=prompt_embeds.dtype)
            latents = latents * sched.init_noise_sigma

        step_params = set(inspect.signature(sched.step).parameters)
        step_kwargs = {}
        if "eta" in step_params:
            step_kwargs["eta"] = eta
        if "generator" in step_params:
            step_kwargs["generator"] = generators

        # Scheduled sampling: grounding for the first `beta` share of the steps, plain SD after.
        num_grounding_steps = int(gligen_scheduled_sampling_beta * len(timesteps))
        compiled_steps = 0
        cache = DeepFeatureCache(self.unet, self.feature_cache_interval) if self.feature_cache_interval > 1 else None
        self.enable_fuser(True)
        try:
            for i, t in enumerate(timesteps):
                if i == num_grounding_steps:
                    self.enable_fuser(False)
                model_input = torch.cat([latents] * 2) if do_cfg else latents
                model_input = sched.scale_model_input(model_input, t)
                with self._gpu("unet"):
                    if cache is not None:
                        # The features kept while the fusers were on are stale once they are off.
                        noise_pred = cache(i, model_input, t, encoder_hidden_states=prompt_embeds,
                                           cross_attention_kwargs=cross_attention_kwargs,
                                           refresh=i == num_grounding_steps).sample
                    else:
                        unet, compiled = self._unet_for(model_input)
                        noise_pred = self._run_unet(unet, compiled, model_input, t, prompt_embeds,
                                                    cross_attention_kwargs, keep=not do_cfg)
                        compiled_steps += compiled
                with self._gpu("scheduler"):
                    if do_cfg:
                        uncond, cond = noise_pred.chunk(2)
                        noise_pred = uncond + guidance_scale * (cond - uncond)
                    latents = sched.step(noise_pred, t, latents, **step_kwargs).prev_sample
        finally:
            self.enable_fuser(True)
        self.compiled_calls += compiled_steps

        images = self.decode(latents)
        info = {
            "scheduler": type(sched).__name__,
            "steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "gligen_scheduled_sampling_beta": gligen_scheduled_sampling_beta,
            # PNDM (PLMS) repeats one timestep, so the loop can run more UNet passes than `steps`.
            "denoising_iterations": len(timesteps),
            "grounding_steps": num_grounding_steps,
            "negative_prompt": negative_prompt or "",
            "eta": eta,
            # True when every UNet pass of this batch ran compiled (images equal the eager ones within
            # the tolerance docs/synthesis.md states)
            "compiled_unet": compiled_steps == len(timesteps),
            # 1: every UNet pass exact; above 1 the images depend on it (docs/synthesis.md, feature caching)
            "feature_cache_interval": cache.interval if cache is not None else 1,
            "full_unet_passes": cache.full_steps if cache is not None else len(timesteps),
        }
        return GligenBatchOutput(images=images, info=info, prompt_truncated=truncated)

    def _run_unet(self, unet, compiled: bool, model_input, t, prompt_embeds, cross_attention_kwargs, *, keep: bool):
        if not compiled:
            return unet(model_input, t, encoder_hidden_states=prompt_embeds,
                        cross_attention_kwargs=cross_attention_kwargs).sample
        if self.compiled_cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        # After the warm-up a guard that fails (a shape or flag nobody planned for) runs eagerly instead
        # of stalling the task on a compilation. The stance is process-wide while it is set: the compiled
        # copy is installed only after its own compile thread finished, so no compile runs beside it.
        with torch.compiler.set_stance("eager_on_recompile"):
            out = unet(model_input, t, encoder_hidden_states=prompt_embeds,
                       cross_attention_kwargs=cross_attention_kwargs).sample
        # A CUDA graph's output lives in its pool and the next replay overwrites it; without guidance the
        # raw output goes into the scheduler's history (PNDM keeps several), so it is copied out.
        return out.clone() if keep and self.compiled_cudagraphs else out

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        cfg = self.vae.config
        latents = latents / cfg.scaling_factor
        if getattr(cfg, "shift_factor", None):
            latents = latents + cfg.shift_factor
        latents = latents.to(self.vae.dtype)
        with self._gpu("vae"):
            image = self._decode(latents)
        image = (image / 2 + 0.5).clamp(0, 1)
        with self._host("to_host"):
            if self.timer is not None:
                self.timer.copy("device_to_host", image.numel() * image.element_size())
            return image.cpu().permute(0, 2, 3, 1).float().numpy()

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        image = None
        if self.vae_slicing == "auto" and len(latents) > 1:
            try:
                image = self.vae.decode(latents, return_dict=False)[0]
            except torch.cuda.OutOfMemoryError:
                pass  # leave the except block first, so the failed attempt's tensors can be freed
            if image is None:
                self.vae_slicing = "on"
                free_cuda_memory(self.device)
        if image is None:
            if self.vae_slicing == "off" or len(latents) == 1:
                image = self.vae.decode(latents, return_dict=False)[0]
            else:
                image = torch.cat([self.vae.decode(x, return_dict=False)[0] for x in latents.split(1)])
        return image


def free_cuda_memory(device) -> None:
    """Give the memory of dead tensors back (cycles first), so a retry starts from a clean allocator."""
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float [0, 1] images to uint8 the way diffusers' numpy_to_pil rounds them."""
    return (images * 255).round().astype("uint8")
