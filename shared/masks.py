"""Masks on the wire: COCO RLE (pycocotools), and image bytes in and out of storage."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def encode_rle(mask: np.ndarray) -> dict:
    """A boolean (H, W) mask as COCO compressed RLE: ``{"size": [h, w], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode_rle takes one (H, W) mask; got an array of shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else str(counts),
    }


def decode_rle(rle) -> np.ndarray:
    """A boolean (H, W) mask from COCO compressed RLE (a dict, or anything with ``size``/``counts``).

    Uncompressed RLE (``counts`` as a list of run lengths, as some COCO files hold) is accepted too.
    """
    if not isinstance(rle, dict):
        if hasattr(rle, "model_dump"):
            rle = rle.model_dump()
        else:
            raise ValueError(f"decode_rle takes a dict with 'size' and 'counts'; got {type(rle).__name__}")
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise ValueError("an RLE needs 'size': [height, width] and 'counts'") from None
    if isinstance(counts, list):
        if sum(int(c) for c in counts) != h * w:
            raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, not {h}x{w}={h * w}")
        compressed = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(compressed).astype(bool)


def rle_area(rle: dict) -> int:
    return int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class CorruptImage(ValueError):
    pass


def load_rgb(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (H, W, 3); a clear error for anything that is not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many types for bad data
        raise CorruptImage(f"image cannot be decoded ({type(e).__name__}: {e})") from None
