"""``palsyseg data sheet``: a contact sheet to eyeball a dataset, its labels and its palsy signs.

Each example is shown as three tiles — the photo, its label mask in :data:`palsyseg.labels.PALETTE`
colours, and the mask over the photo (with the face midline when the manifest has a
``landmarks`` column, as synthetic datasets do) — above a caption with the diagnosis, the
affected side (the patient's, and where it appears in the image), the House–Brackmann grade
and the exam pose. A legend of the label colours heads the sheet.

Examples are picked deterministically to show variety: diagnoses in turn, and within a
diagnosis the exam poses in turn, in manifest order.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from palsyseg.data.images import read_mask, read_rgb, write_png
from palsyseg.data.manifest import ManifestRow, read_manifest, resolve_in_root
from palsyseg.errors import DatasetError, Problem
from palsyseg.labels import DIAGNOSES, LABEL_NAMES, PALETTE, POSES, Label, image_half_of_side

TILE = 160
"""Side of one tile in pixels."""
GAP = 8
"""Space between examples and around the sheet."""
CAPTION = 34
"""Height of the two caption lines under an example."""
LEGEND = 30
"""Height of the label legend at the top."""
COLUMNS = 3
"""Examples per sheet row (each three tiles wide): with diagnoses in turn, a row shows a
healthy, a Bell's palsy and a stroke face, in the same exam pose when the dataset has it."""

_BACKGROUND = (28, 28, 32)
_TEXT = (235, 235, 235)
_MUTED = (170, 170, 178)


def sheet_size(count: int, *, tile: int = TILE, columns: int = COLUMNS) -> tuple[int, int]:
    """``(width, height)`` in pixels of a sheet showing ``count`` examples."""
    rows = math.ceil(count / columns)
    width = columns * 3 * tile + (columns + 1) * GAP
    height = LEGEND + rows * (tile + CAPTION) + (rows + 1) * GAP
    return width, height


def pick_examples(rows: list[ManifestRow], count: int) -> list[ManifestRow]:
    """Up to ``count`` rows: diagnoses in turn, and within each diagnosis the poses in turn
    (so a palsy patient is seen at rest, smiling, raising the brows, closing the eyes...)."""
    streams: list[deque[ManifestRow]] = []
    for diagnosis in DIAGNOSES:
        by_pose: dict[str, deque[ManifestRow]] = defaultdict(deque)
        for row in rows:
            if row.diagnosis == diagnosis:
                by_pose[row.pose or ""].append(row)
        buckets = [
            by_pose[p]
            for p in sorted(
                by_pose, key=lambda p: (p not in POSES, POSES.index(p) if p in POSES else 0, p)
            )
        ]
        stream: deque[ManifestRow] = deque()
        while any(buckets):
            stream.extend(bucket.popleft() for bucket in buckets if bucket)
        if stream:
            streams.append(stream)
    picked: list[ManifestRow] = []
    while len(picked) < count and any(streams):
        for stream in streams:
            if stream and len(picked) < count:
                picked.append(stream.popleft())
    return picked


def _fit(array: np.ndarray, tile: int, interpolation: int) -> np.ndarray:
    """Scale to fit a ``tile`` square, keeping the aspect ratio, centred on black."""
    import cv2

    h, w = array.shape[:2]
    scale = tile / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(array, (nw, nh), interpolation=interpolation)
    out = np.zeros((tile, tile, *array.shape[2:]), array.dtype)
    y0, x0 = (tile - nh) // 2, (tile - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = resized
    return out


def _colourise(mask: np.ndarray) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    for label, colour in PALETTE.items():
        lut[int(label)] = colour
    return lut[mask]


def _midline(
    dataset: Path, row: ManifestRow, image_shape: tuple[int, ...], tile: int
) -> tuple | None:
    """The face midline from the row's landmarks JSON, in tile pixels (None if unavailable)."""
    rel = row.extras.get("landmarks")
    if not rel:
        return None
    path = resolve_in_root(dataset, rel)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        top, bottom = doc["midline"]["top"], doc["midline"]["bottom"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    h, w = image_shape[:2]
    scale = tile / max(h, w)
    dx, dy = (tile - round(w * scale)) // 2, (tile - round(h * scale)) // 2
    return tuple((round(p[0] * scale + dx), round(p[1] * scale + dy)) for p in (top, bottom))


def _caption(row: ManifestRow) -> tuple[str, str]:
    if row.affected_side in ("left", "right"):
        side = f"{row.affected_side} side (image {image_half_of_side(row.affected_side)})"
    else:
        side = "no affected side"
    grade = f"HB {row.grade}" if row.grade is not None else "HB ?"
    first = f"{row.diagnosis.replace('_', ' ')} · {side} · {grade}"
    second = f"{row.pose or 'pose ?'} · {row.patient_id}"
    return first, second


def _font(size: int):  # type: ignore[no-untyped-def]
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizing
        return ImageFont.load_default()


def contact_sheet(
    dataset: Path, out: Path, count: int = 12, *, tile: int = TILE, columns: int = COLUMNS
) -> Path:
    """Write a PNG contact sheet of up to ``count`` examples of ``dataset`` to ``out``.

    Raises :class:`~palsyseg.errors.DatasetError` for a broken manifest or unreadable files.
    """
    import cv2
    from PIL import Image, ImageDraw

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    dataset = Path(dataset)
    rows = pick_examples(read_manifest(dataset), count)
    width, height = sheet_size(len(rows), tile=tile, columns=columns)
    sheet = np.full((height, width, 3), _BACKGROUND, np.uint8)
    for i, row in enumerate(rows):
        image = read_rgb(resolve_in_root(dataset, row.image))
        mask = read_mask(resolve_in_root(dataset, row.mask))
        if mask.shape != image.shape[:2]:
            raise DatasetError(
                Problem(
                    file=str(dataset / row.mask),
                    rule=f"mask is {mask.shape[1]}×{mask.shape[0]}, image is {image.shape[1]}×{image.shape[0]}",
                )
            )
        photo = _fit(image, tile, cv2.INTER_AREA)
        labels = _fit(mask, tile, cv2.INTER_NEAREST)
        colour = _colourise(labels)
        overlay = photo.copy()
        on = labels > 0
        overlay[on] = (0.5 * photo[on] + 0.5 * colour[on]).astype(np.uint8)
        line = _midline(dataset, row, image.shape, tile)
        if line is not None:
            cv2.line(overlay, line[0], line[1], (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(i, columns)
        x = GAP + c * (3 * tile + GAP)
        y = LEGEND + GAP + r * (tile + CAPTION + GAP)
        sheet[y : y + tile, x : x + 3 * tile] = np.hstack([photo, colour, overlay])

    canvas = Image.fromarray(sheet)
    draw = ImageDraw.Draw(canvas)
    font, small = _font(13), _font(11)
    for i, row in enumerate(rows):
        r, c = divmod(i, columns)
        x = GAP + c * (3 * tile + GAP)
        y = LEGEND + GAP + r * (tile + CAPTION + GAP) + tile
        first, second = _caption(row)
        draw.text((x + 2, y + 3), first, fill=_TEXT, font=font)
        draw.text((x + 2, y + 19), second, fill=_MUTED, font=small)
    x = GAP
    for label in Label:
        draw.rectangle((x, 10, x + 14, 24), fill=PALETTE[label], outline=_MUTED)
        name = LABEL_NAMES[label]
        draw.text((x + 19, 10), name, fill=_TEXT, font=font)
        x += 19 + int(draw.textlength(name, font=font)) + 14
    out = Path(out)
    if out.parent and not out.parent.exists():
        os.makedirs(out.parent, exist_ok=True)
    return write_png(out, np.asarray(canvas), compression=6)
