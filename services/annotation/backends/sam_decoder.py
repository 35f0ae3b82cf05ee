"""SAM's mask decoder for many boxes on a few images, with the image-only work done once per image.

segment-anything's `MaskDecoder.predict_masks` copies the image embedding once per prompt
(`repeat_interleave`) and runs the two-way transformer on each copy. With box prompts and no mask
prompt, the dense prompt embedding is the same learnt "no mask" vector for every box, so until the image
tokens first attend to the prompt tokens (the end of the first transformer block) they are identical for
every box. Three of the ten projections of the 64x64 image tokens fall in that stretch: the first
block's key and value projections of token-to-image attention and its query projection of
image-to-token attention. `prepare_image` computes them once per image (for several images at once);
`decode_boxes` runs the rest per box (or per chunk of boxes, which may come from several images), with
the stock modules and weights (attention through one fused kernel, the same function), and returns only
what the annotation keeps: the candidate with the highest predicted IoU among the three multimask
outputs (`multimask_output=True`), its low-resolution logits and its predicted IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PreparedImage:
    """Per-image state of the decoder for I images: the image tokens, their positional encoding and the
    first block's projections of them (heads split)."""

    keys: torch.Tensor  # (I, HW, C) image embedding + the "no mask" dense embedding
    key_pe: torch.Tensor  # (1, HW, C)
    size: tuple[int, int]  # (h, w) of the embedding grid
    k_token_to_image: torch.Tensor  # (I, heads, HW, d)
    v_token_to_image: torch.Tensor  # (I, heads, HW, d)
    q_image_to_token: torch.Tensor  # (I, heads, HW, d)

    def for_boxes(self, image_index: torch.Tensor | None) -> PreparedImage:
        """The state each box reads, one row per box (`image_index`: (B,) the image of each box; None:
        one image, shared by every box without copies)."""
        if image_index is None:
            if self.keys.shape[0] != 1:
                raise ValueError(f"{self.keys.shape[0]} prepared images: give each box's image_index")
            return self
        return PreparedImage(self.keys[image_index], self.key_pe, self.size, self.k_token_to_image[image_index],
                             self.v_token_to_image[image_index], self.q_image_to_token[image_index])


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, n, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, n * d)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention on split heads, scaled by 1/sqrt(head dim) as segment-anything's `Attention`,
    in one fused kernel (the image-to-token attention's 4096 x 7 scores are mostly softmax overhead
    otherwise)."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _attention(module, q, k, v, *, q_heads=None, k_heads=None, v_heads=None) -> torch.Tensor:
    """`segment_anything.modeling.transformer.Attention.forward`, taking already projected (and split)
    inputs where given."""
    n = module.num_heads
    q = q_heads if q_heads is not None else _heads(module.q_proj(q), n)
    k = k_heads if k_heads is not None else _heads(module.k_proj(k), n)
    v = v_heads if v_heads is not None else _heads(module.v_proj(v), n)
    if q.shape[0] != k.shape[0]:
        # Shared image keys against the tokens of several boxes: each query row is independent, so the
        # boxes' queries go in as one longer sequence instead of copying the keys per box.
        if k.shape[0] == 1:
            b, heads, t, d = q.shape
            out = _attend(q.transpose(0, 1).reshape(1, heads, b * t, d), k, v)
            out = out.reshape(heads, b, t, d).transpose(0, 1)
        else:  # shared image queries against per-box tokens: the queries are broadcast
            out = _attend(q.expand(k.shape[0], -1, -1, -1), k, v)
    else:
        out = _attend(q, k, v)
    return module.out_proj(_merge(out))


def prepare_image(model, features: torch.Tensor) -> PreparedImage:
    """The image-only part of the decoder for image embeddings `features` (I, C, h, w)."""
    if features.dim() != 4:
        raise ValueError(f"prepare_image takes image embeddings (I, C, h, w); got {tuple(features.shape)}")
    prompt = model.prompt_encoder
    block = model.mask_decoder.transformer.layers[0]
    h, w = features.shape[-2:]
    dense = prompt.no_mask_embed.weight.reshape(1, -1, 1, 1)
    keys = (features + dense).flatten(2).permute(0, 2, 1)
    key_pe = prompt.get_dense_pe().to(features.dtype).flatten(2).permute(0, 2, 1)
    k = keys + key_pe
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    return PreparedImage(
        keys=keys,
        key_pe=key_pe,
        size=(int(h), int(w)),
        k_token_to_image=_heads(t2i.k_proj(k), t2i.num_heads),
        v_token_to_image=_heads(t2i.v_proj(keys), t2i.num_heads),
        q_image_to_token=_heads(i2t.q_proj(k), i2t.num_heads),
    )


def _block(layer, queries, keys, query_pe, key_pe, prepared: PreparedImage | None):
    """`TwoWayAttentionBlock.forward`; with `prepared`, the first block on the shared image tokens."""
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + layer.self_attn(q=q, k=q, v=queries)
    queries = layer.norm1(queries)

    q = queries + query_pe
    if prepared is not None:
        out = _attention(layer.cross_attn_token_to_image, q, None, None,
                         k_heads=prepared.k_token_to_image, v_heads=prepared.v_token_to_image)
    else:
        k = keys + key_pe
        out = _attention(layer.cross_attn_token_to_image, q, k, keys)
    queries = layer.norm2(queries + out)
    queries = layer.norm3(queries + layer.mlp(queries))

    q = queries + query_pe
    if prepared is not None:
        out = _attention(layer.cross_attn_image_to_token, None, q, queries, q_heads=prepared.q_image_to_token)
    else:
        out = _attention(layer.cross_attn_image_to_token, k, q, queries)
    keys = layer.norm4(keys + out)
    return queries, keys


def decode_boxes(model, prepared: PreparedImage, sparse: torch.Tensor, rows_per_chunk: int | None = None,
                 image_index: torch.Tensor | None = None):
    """Best-of-three masks for a chunk of boxes on prepared images.

    `sparse`: (B, P, C) sparse prompt embeddings of the boxes (`model.prompt_encoder(points=None,
    boxes=..., masks=None)[0]`). Returns (low-resolution logits of the kept candidate (B, 4h, 4w), its
    predicted IoU (B,)), the kept candidate being the multimask output with the highest predicted IoU.
    `rows_per_chunk`: image tokens per step of the upscaling (a CPU keeps them in cache; None: all).
    `image_index`: (B,) which of the prepared images each box is on (None: there is one). Boxes of one
    image share its state; boxes of several images get a copy of their image's state each, which on a
    GPU costs far less than one decoder call per image (the decoder is a few hundred small kernels).
    """
    prepared = prepared.for_boxes(image_index)
    decoder = model.mask_decoder
    transformer = decoder.transformer
    n = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse), dim=1)

    queries, keys = tokens, prepared.keys
    for i, layer in enumerate(transformer.layers):
        queries, keys = _block(layer, queries, keys, tokens, prepared.key_pe, prepared if i == 0 else None)
    if not transformer.layers:
        keys = keys.expand(n, -1, -1)
    q = queries + tokens
    k = keys + prepared.key_pe
    queries = queries + _attention(transformer.final_attn_token_to_image, q, k, keys)
    hs = transformer.norm_final_attn(queries)

    # The IoU head reads only the IoU token, so the kept candidate is known before any mask is formed:
    # only its hypernetwork product is computed.
    iou = decoder.iou_prediction_head(hs[:, 0, :])[:, 1:]  # multimask outputs: mask tokens 1..
    best = iou.argmax(dim=1)
    rows = torch.arange(n, device=best.device)
    hyper = torch.stack(
        [decoder.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in range(1, decoder.num_mask_tokens)], dim=1
    )[rows, best]  # (B, C/8)
    h, w = prepared.size
    if _is_stock_upscaling(decoder.output_upscaling):
        logits = _upscaled_logits(decoder.output_upscaling, keys, hyper, (h, w), rows_per_chunk)
    else:
        upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(n, -1, h, w))
        b, c, uh, uw = upscaled.shape
        logits = (hyper[:, None, :] @ upscaled.view(b, c, uh * uw)).view(b, uh, uw)
    return logits, iou[rows, best]


def _is_stock_upscaling(seq) -> bool:
    """segment-anything's output upscaling: two 2x2 stride-2 transposed convolutions with a LayerNorm2d
    and activations (anything else runs through the module itself)."""
    from segment_anything.modeling.common import LayerNorm2d

    if not isinstance(seq, torch.nn.Sequential) or len(seq) != 5:
        return False
    convs = (seq[0], seq[3])
    return isinstance(seq[1], LayerNorm2d) and all(
        isinstance(c, torch.nn.ConvTranspose2d) and c.kernel_size == (2, 2) and c.stride == (2, 2)
        and c.padding == (0, 0) and c.output_padding == (0, 0) and c.dilation == (1, 1) and c.groups == 1
        and c.bias is not None
        for c in convs
    )


def _upsample_weight(conv: torch.nn.ConvTranspose2d) -> torch.Tensor:
    # (in, out, 2, 2) -> (in, 2 * 2 * out): columns ordered (row offset, column offset, channel)
    return conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, -1)


def _upscaled_logits(seq, keys: torch.Tensor, hyper: torch.Tensor, size: tuple[int, int],
                     rows_per_chunk: int | None = None) -> torch.Tensor:
    """`(hyper @ output_upscaling(image tokens))` as (B, 4h, 4w), computed on the tokens' own layout.

    A 2x2 stride-2 transposed convolution maps each input pixel to its own 2x2 block of output pixels:
    it is one matrix product per pixel (in channels -> 2*2*out channels), with no overlap between
    pixels. So both upsamplings run as matrix products on channels-last tokens (no NCHW conversion,
    no convolution kernel), the LayerNorm2d is a layer norm over the last dimension, and the output
    pixels are put in image order only once, for the single logit map of the kept candidate. Every
    token is independent here, so `rows_per_chunk` tokens at a time keep the intermediates (16 output
    pixels per token) in cache on a CPU; None: all at once.
    """
    deconv1, norm, act1, deconv2, act2 = seq
    b, n, c = keys.shape
    h, w = size
    c1, c2 = deconv1.out_channels, deconv2.out_channels
    w1, b1 = _upsample_weight(deconv1), deconv1.bias.repeat(4)
    w2, b2 = _upsample_weight(deconv2), deconv2.bias.repeat(4)

    def pixels(tokens):  # (T, C) -> (T * 16, c2): both upsamplings of T tokens
        x = torch.addmm(b1, tokens, w1)
        x = torch.nn.functional.layer_norm(x.view(-1, c1), (c1,), norm.weight, norm.bias, norm.eps)
        return act2(torch.addmm(b2, act1(x), w2)).view(-1, c2)

    if not rows_per_chunk:
        logits = (pixels(keys.reshape(b * n, c)).view(b, n * 16, c2) @ hyper[:, :, None]).view(b, n, 16)
    else:
        logits = torch.empty(b, n, 16, dtype=torch.result_type(keys, hyper), device=keys.device)
        for k in range(b):
            for start in range(0, n, rows_per_chunk):
                logits[k, start : start + rows_per_chunk] = (pixels(keys[k, start : start + rows_per_chunk])
                                                             @ hyper[k]).view(-1, 16)
    # token (i, j), offsets (a, b) then (a', b'): output row 4i + 2a + a', column 4j + 2b + b'
    return logits.view(b, h, w, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, 4 * h, 4 * w)
