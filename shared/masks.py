"""Masks on the wire: COCO RLE (pycocotools), and image bytes in and out of storage."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def encode_rle(mask: np.ndarray) -> dict:
    """Bool (H, W) -> {"size": [H, W], "counts": str} (compressed COCO RLE)."""
    m = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    rle = mask_utils.encode(m)
    return {"size": [int(x) for x in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    counts = rle["counts"]
    r = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(r).astype(bool)


def rle_area(rle: dict) -> int:
    counts = rle["counts"]
    r = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return int(mask_utils.area(r))


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
