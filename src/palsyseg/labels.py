"""The class map and the clinical vocabularies of the dataset contract (shared/CONTRACT.md).

Label values are part of the on-disk contract: a mask PNG stores these integers, so they never
change. ``FPP`` (facial-paralysis possibility) marks the eye and mouth pixels on the drooping
side of a face with palsy; no pixel of a healthy face is ``FPP``.

Sides are always the *patient's* anatomical side. A frontal photo is a mirror view: the
patient's left appears on the image's right. :func:`image_half_of_side` is the one place that
converts between the two, so nobody re-derives it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal


class Label(IntEnum):
    """Mask values, 0–6."""

    BACKGROUND = 0
    SKIN = 1
    HAIR = 2
    EYEBROW = 3
    EYE = 4
    MOUTH = 5
    FPP = 6


NUM_CLASSES: int = len(Label)
LABEL_NAMES: tuple[str, ...] = tuple(label.name.lower() for label in Label)
"""``("background", "skin", "hair", "eyebrow", "eye", "mouth", "fpp")``, indexed by value."""

FOREGROUND_LABELS: tuple[Label, ...] = tuple(label for label in Label if label != Label.BACKGROUND)

# An RGB colour per label for overlays and contact sheets (FPP in a warning red).
PALETTE: dict[Label, tuple[int, int, int]] = {
    Label.BACKGROUND: (0, 0, 0),
    Label.SKIN: (224, 172, 105),
    Label.HAIR: (90, 56, 37),
    Label.EYEBROW: (40, 200, 40),
    Label.EYE: (40, 120, 255),
    Label.MOUTH: (255, 105, 180),
    Label.FPP: (255, 0, 0),
}

Diagnosis = Literal["healthy", "bells_palsy", "stroke"]
Side = Literal["none", "left", "right"]
Pose = Literal["rest", "smile", "brow_raise", "eye_closure", "pucker"]

DIAGNOSES: tuple[str, ...] = ("healthy", "bells_palsy", "stroke")
SIDES: tuple[str, ...] = ("none", "left", "right")
POSES: tuple[str, ...] = ("rest", "smile", "brow_raise", "eye_closure", "pucker")
GRADES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
"""House–Brackmann grades: 1 is normal function, 6 is total paralysis."""
SKIN_TONES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
"""Fitzpatrick skin types."""


def image_half_of_side(side: str) -> Literal["left", "right"]:
    """Return the image half ("left"/"right" as seen on screen) that shows the patient's ``side``.

    A frontal photo mirrors the patient: their left is on the image's right.
    """
    if side == "left":
        return "right"
    if side == "right":
        return "left"
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def side_of_image_half(half: str) -> Literal["left", "right"]:
    """Inverse of :func:`image_half_of_side`: the patient's side shown on image half ``half``."""
    return image_half_of_side(half)  # the mirror map is its own inverse


def mirrored_side(side: str) -> str:
    """The affected side after a horizontal flip of the photo (``none`` stays ``none``)."""
    return {"left": "right", "right": "left", "none": "none"}[side]
