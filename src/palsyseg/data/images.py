"""Reading and writing the image files of a dataset: RGB photos, label masks, depth maps.

Formats are the contract's (shared/CONTRACT.md): images PNG or JPEG (RGB), masks single-channel
8-bit PNG with values 0–6, depth optional 16-bit PNG. Every reader checks the pixel count from
the file header *before* decoding, so a decompression bomb is refused without allocating it.
Writers are atomic.

Depth encoding (our choice; the contract only says "relative depth"): a 16-bit PNG where 0 means
"no depth here" (background, unknown) and ``v`` in 1..65535 means relative depth ``v / 65535``
in (0, 1], larger is farther from the camera, spanning the face's own depth extent (nose tip
near 0, ears and the hairline near 1). Losses compare against ``m_max * depth`` where valid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from palsyseg.atomic import atomic_path
from palsyseg.errors import DatasetError, Problem

MAX_PIXELS = 40_000_000
"""Refuse images with more pixels than this (about 6300×6300): decompression-bomb guard."""

DEPTH_MAX_VALUE = 65535


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` from the file header only (no decoding). Raises :class:`DatasetError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except Image.DecompressionBombError as exc:  # PIL's own limit, far above MAX_PIXELS
        first = str(exc).split(",")[0]
        rule = f"refused as a decompression bomb ({first})"
        raise DatasetError(Problem(file=str(path), rule=rule)) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(Problem(file=str(path), rule=f"not a readable image ({type(exc).__name__})")) from None


def _check_pixels(path: str | os.PathLike[str], max_pixels: int) -> None:
    width, height = image_size(path)
    if width * height > max_pixels:
        raise DatasetError(
            Problem(file=str(path), rule=f"{width}×{height} = {width * height} pixels exceeds the limit of {max_pixels}")
        )


def _decode(path: str | os.PathLike[str], flags: int) -> np.ndarray:
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    array = cv2.imdecode(data, flags) if data.size else None
    if array is None:
        raise DatasetError(Problem(file=str(path), rule="image does not decode"))
    return array


def read_rgb(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a photo as ``H×W×3`` uint8 RGB (grey and RGBA are converted)."""
    import cv2

    _check_pixels(path, max_pixels)
    array = _decode(path, cv2.IMREAD_COLOR_RGB if hasattr(cv2, "IMREAD_COLOR_RGB") else cv2.IMREAD_COLOR)
    if not hasattr(cv2, "IMREAD_COLOR_RGB"):
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    return array


def read_mask(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a label mask as ``H×W`` uint8 exactly as stored; refuse anything not single-channel 8-bit."""
    import cv2

    _check_pixels(path, max_pixels)
    array = _decode(path, cv2.IMREAD_UNCHANGED)
    if array.ndim != 2:
        raise DatasetError(Problem(file=str(path), rule=f"mask has {array.shape[2]} channels (must be single-channel)"))
    if array.dtype != np.uint8:
        raise DatasetError(Problem(file=str(path), rule=f"mask is {array.dtype} (must be 8-bit)"))
    return array


def read_depth(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a 16-bit depth PNG as ``H×W`` float32 in [0, 1]; 0 where there is no depth."""
    import cv2

    _check_pixels(path, max_pixels)
    array = _decode(path, cv2.IMREAD_UNCHANGED)
    if array.ndim != 2 or array.dtype != np.uint16:
        raise DatasetError(Problem(file=str(path), rule=f"depth map is {array.dtype} with shape {array.shape} (must be single-channel 16-bit)"))
    return array.astype(np.float32) / DEPTH_MAX_VALUE


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """Relative depth in [0, 1] (0 = none) → uint16 for :func:`write_png`; positive depths stay ≥ 1."""
    scaled = np.rint(np.clip(depth, 0.0, 1.0) * DEPTH_MAX_VALUE).astype(np.uint16)
    scaled[(depth > 0) & (scaled == 0)] = 1
    return scaled


def write_png(path: str | os.PathLike[str], array: np.ndarray, *, compression: int = 1) -> Path:
    """Write a mask (uint8 H×W), a depth map (uint16 H×W) or an RGB image (uint8 H×W×3) as PNG, atomically."""
    import cv2

    data = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), data, [cv2.IMWRITE_PNG_COMPRESSION, compression]):
            raise OSError(f"could not write PNG {path}")
    return Path(path)


def write_jpeg(path: str | os.PathLike[str], rgb: np.ndarray, *, quality: int = 90) -> Path:
    """Write an RGB image as JPEG at ``quality``, atomically."""
    import cv2

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
            raise OSError(f"could not write JPEG {path}")
    return Path(path)
