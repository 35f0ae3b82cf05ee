"""Deep-feature caching across denoising steps (DeepCache, Ma et al., CVPR 2024): a speed option that
changes the images, off by default (`DREAMMASK_GLIGEN_FEATURE_CACHE_INTERVAL`, docs/synthesis.md).

Between neighbouring denoising steps the UNet's deep features change little, while its shallowest level
(the first down block, the last up block and the convolutions around them) carries the detail. So on a
*full* step the whole UNet runs and the input of its last up block (the output of the up block before it)
is kept; on the steps in between only the shallow branch runs: the time embedding, the grounding tokens,
`conv_in`, the first down block, then the last up block on the kept feature with this step's skip
connections, and the output convolutions. The deeper down blocks, the middle block and the other up blocks
are skipped.

A shallow step runs the UNet's own `forward` with the skipped blocks standing in as pass-throughs (a
skipped down block hands on its input as each of its skip connections, which only skipped up blocks read),
so the time embedding, the position net and the calls of the blocks that do run stay diffusers' own.
"""

from __future__ import annotations

from contextlib import contextmanager


def _skip_connections(block) -> int:
    """How many skip connections a diffusers down block returns: one per resnet, one after its downsampler."""
    return len(block.resnets) + (1 if getattr(block, "downsamplers", None) is not None else 0)


class DeepFeatureCache:
    """Runs a UNet for one sampling loop: the whole UNet every `interval` steps (and whenever the caller
    asks for a refresh), the shallow branch on the kept feature in between. One instance per loop call:
    the kept feature belongs to that call's batch."""

    def __init__(self, unet, interval: int):
        if int(interval) < 1:
            raise ValueError(f"the feature-cache interval must be at least 1, got {interval}")
        if len(unet.down_blocks) < 2 or len(unet.up_blocks) < 2:
            raise ValueError("feature caching needs a UNet with at least two down and two up blocks")
        # The UNet pairs skip connections with up blocks by count; the stand-ins must return as many.
        produced = 1 + sum(_skip_connections(b) for b in unet.down_blocks)
        consumed = sum(len(b.resnets) for b in unet.up_blocks)
        if produced != consumed:
            raise ValueError(f"the UNet's down blocks make {produced} skip connections but its up blocks take "
                             f"{consumed}: not a UNet this cache understands")
        self.unet = unet
        self.interval = int(interval)
        self.feature = None
        self.full_steps = 0
        self.shallow_steps = 0

    def __call__(self, step: int, *args, refresh: bool = False, **kwargs):
        """The UNet's output for denoising iteration `step` (the UNet's arguments after it). `refresh`: run
        the whole UNet whatever the step (the kept feature is stale, e.g. the grounding fusers just went off)."""
        if self.feature is None or refresh or step % self.interval == 0:
            return self.full(*args, **kwargs)
        return self.shallow(*args, **kwargs)

    def full(self, *args, **kwargs):
        """The whole UNet; keeps the input of its last up block."""
        kept = []
        handle = self.unet.up_blocks[-2].register_forward_hook(lambda _m, _i, out: kept.append(out))
        try:
            out = self.unet(*args, **kwargs)
        finally:
            handle.remove()
        self.feature = kept[-1]
        self.full_steps += 1
        return out

    def shallow(self, *args, **kwargs):
        """The shallow branch on the kept feature (`full` must have run on a batch of the same shape)."""
        if self.feature is None:
            raise RuntimeError("no feature kept yet: run a full step first")
        with self._skipping():
            out = self.unet(*args, **kwargs)
        self.shallow_steps += 1
        return out

    @contextmanager
    def _skipping(self):
        unet, feature = self.unet, self.feature

        def down(n):
            return lambda hidden_states, *_a, **_k: (hidden_states, (hidden_states,) * n)

        def through(hidden_states, *_a, **_k):
            return hidden_states

        stand_ins = [(b, down(_skip_connections(b))) for b in unet.down_blocks[1:]]
        if unet.mid_block is not None:
            stand_ins.append((unet.mid_block, through))
        stand_ins += [(b, through) for b in unet.up_blocks[:-2]]
        stand_ins.append((unet.up_blocks[-2], lambda *_a, **_k: feature))
        # An instance attribute shadows the class's `forward` (hooks still run around it); one that was
        # there before (another library's wrapper) is put back.
        saved = [(m, m.__dict__.get("forward")) for m, _ in stand_ins]
        for m, fn in stand_ins:
            m.forward = fn
        try:
            yield
        finally:
            for m, before in saved:
                if before is None:
                    del m.forward
                else:
                    m.forward = before
