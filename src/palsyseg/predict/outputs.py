"""The files ``palsyseg predict --out DIR`` writes per photo: the label mask and an overlay.

- ``<stem>_mask.png``: single-channel 8-bit PNG at the photo's size, values 0–6 (the dataset
  contract's labels), so a mask predicted on a photo can be corrected and fed back as truth;
- ``<stem>_overlay.png``: the photo with the labels blended in (FPP more strongly), the face
  box, and a strip below it with a colour legend and the finding in one line.

Both are written atomically (:func:`palsyseg.data.images.write_png`: temporary file, then
rename), so an interrupted run never leaves half a PNG. The overlay is drawn with OpenCV, not
matplotlib: it costs milliseconds on a 1-megapixel photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from palsyseg.labels import LABEL_NAMES, NUM_CLASSES, PALETTE, Label
from palsyseg.predict.photo import PhotoFinding

PART_ALPHA = 0.45
"""Weight of a label's colour over the photo; FPP gets :data:`FPP_ALPHA` so it stands out."""
FPP_ALPHA = 0.7


def _palette() -> np.ndarray:
    return np.array([PALETTE[Label(v)] for v in range(NUM_CLASSES)], dtype=np.uint8)


def _score(finding: PhotoFinding) -> str:
    name = "decision q" if finding.score_kind == "decision" else "FPP"
    return f"{name} {finding.score:.3f}"


def _summary(finding: PhotoFinding) -> str:
    if finding.present:
        parts = "+".join(finding.parts) or "unspecified part"
        text = (
            f"palsy: shown, patient's {finding.affected_side} {parts} "
            f"({_score(finding)} > {finding.threshold:.3f}, p {finding.probability:.2f})"
        )
    else:
        text = f"palsy: not shown ({_score(finding)} <= {finding.threshold:.3f})"
    return text + " - research aid, not a medical device"


def overlay_image(finding: PhotoFinding) -> np.ndarray:
    """The photo with the finding's mask blended in and a legend strip below (uint8 RGB)."""
    import cv2

    rgb = finding.photo
    if rgb is None:
        raise ValueError(f"{finding.image}: the finding holds no photo to draw on")
    mask = finding.mask
    colours = _palette()[mask]
    picture = rgb.copy()
    for selected, alpha in ((mask != Label.BACKGROUND, PART_ALPHA), (mask == Label.FPP, FPP_ALPHA)):
        blended = cv2.addWeighted(rgb, 1 - alpha, colours, alpha, 0.0)
        np.copyto(picture, blended, where=selected[:, :, None])
    width = mask.shape[1]
    thickness = max(1, round(width / 400))
    x, y, w, h = finding.detection.box
    cv2.rectangle(picture, (x, y), (x + w, y + h), (255, 255, 255), thickness)

    names = [(Label(i), LABEL_NAMES[i]) for i in range(1, NUM_CLASSES)]
    per_row = len(names) if width >= 480 else (len(names) + 1) // 2
    rows = -(-len(names) // per_row)
    row_h = max(18, round(width / 45))
    scale = row_h / 34
    strip = np.full((row_h * (rows + 1) + row_h // 2, width, 3), 255, dtype=np.uint8)
    cell = width // per_row
    for k, (label, name) in enumerate(names):
        r, c = divmod(k, per_row)
        x0, y0 = c * cell + row_h // 3, r * row_h + row_h // 4
        box = row_h // 2
        cv2.rectangle(
            strip, (x0, y0), (x0 + box, y0 + box), tuple(int(v) for v in PALETTE[label]), -1
        )
        cv2.rectangle(strip, (x0, y0), (x0 + box, y0 + box), (128, 128, 128), 1)
        cv2.putText(
            strip,
            name,
            (x0 + box + row_h // 4, y0 + box),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 0),
            max(1, thickness // 2),
            cv2.LINE_AA,
        )
    text = _summary(finding)
    text_scale = scale
    (text_w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, text_scale, 1)
    if text_w > width - row_h // 2:
        text_scale *= (width - row_h // 2) / text_w
    cv2.putText(
        strip,
        text,
        (row_h // 3, rows * row_h + row_h),
        cv2.FONT_HERSHEY_SIMPLEX,
        text_scale,
        (170, 0, 0) if finding.present else (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return np.vstack([picture, strip])


def output_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    """Where :func:`write_outputs` puts a photo's files."""
    return {"mask": out_dir / f"{stem}_mask.png", "overlay": out_dir / f"{stem}_overlay.png"}


def write_outputs(finding: PhotoFinding, out_dir: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>_mask.png`` and ``<stem>_overlay.png`` into ``out_dir`` (atomic each)."""
    from palsyseg.data.images import write_png

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = output_paths(out_dir, stem)
    write_png(paths["mask"], finding.mask)
    write_png(paths["overlay"], overlay_image(finding))
    return paths
