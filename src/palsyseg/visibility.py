"""FPP = visible asymmetry: the one rule that decides whether a photo *shows* a part's weakness.

FPP (label 6) marks what a photo shows, not the diagnosis (docs/CONTRACT.md). A House–Brackmann
grade II–IV face looks symmetric at rest; a stroke spares the eye; mild palsy shows in one or two
exam poses only. YFP's annotators tagged palsy zones "when the deformation intensity was deemed
sufficiently strong", and the paper builds FPP "by obtaining asymmetric facial parts from the
mouth and eyes". This module turns that into numbers, once, for every producer of labels: the
synthetic generator labels by it, its measures go into the manifest, and CONTRACT.md states it
for people who annotate real photos.

**Measures** (:func:`measure_asymmetry`) are read from landmarks of the two half-faces, in units
of the inter-ocular distance (IOD, between the eye centres) and in the face's own frame (x along
the eye line toward the patient's left, y perpendicular to it, down), so head roll, position and
photo size do not change them:

- ``eye_aperture_<side>``: the palpebral aperture, upper to lower lid at mid-eye, along y;
- ``mouth_corner_y_<side>``: the mouth corner's height below the eye line;
- ``mouth_corner_x_<side>``: the mouth corner's distance from the face's midline (the
  perpendicular bisector of the eye centres) — its excursion;
- ``brow_height_<side>``: the brow (its middle point) above the eye centre.

**The rule** (:func:`visible_weakness`): in a photo of a patient whose ``weak_side`` is known,

- the weak side's **eye** shows its weakness when its aperture exceeds the other eye's by more
  than :data:`EYE_APERTURE_EXCESS` IOD (a widened fissure at rest, lagophthalmos when the eyes
  close, no narrowing in a smile);
- the weak side's **mouth** shows it when its corner sits lower than the other by more than
  :data:`MOUTH_CORNER_DROP` IOD (droop at rest, no lift in a smile), or when the two corners'
  distances from the midline differ by more than :data:`MOUTH_EXCURSION_DIFF` IOD (a corner
  that does not follow in a smile or a pucker). A difference, not a ratio: head yaw shifts
  both corners sideways by the same amount, which a ratio magnifies when the lips purse.

A weak side that moves *more*, or a strong side that droops, is not weakness: the aperture and
drop measures are signed toward the weak side. The excursion difference is unsigned, since a weak
corner lags both ways: it stays in during a smile and stays out during a pucker. The thresholds sit above the largest asymmetry that the healthy
faces of the synthetic generator show under every exam pose and its imaging nuisances (head roll
±10°, yaw ±8°, natural brow/corner/eye asymmetry), with a margin (``tests/data/test_visibility.py``
checks a thousand healthy photos against them): measured on 2,000 healthy photos
(``palsyseg data synth`` faces, seed 7), the largest healthy values were an aperture excess of
0.022, a corner drop of 0.011 and an excursion difference of 0.058 IOD (yaw: the corners stand
behind the eyes, so turning the head moves them sideways against the eye midline); the
thresholds are 0.03, 0.04 and 0.075. The brow is measured (for a pattern hint:
peripheral palsy raises the brow less, a stroke spares it) but is not an FPP part: the paper's
FPP covers the eye and the mouth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EYE_APERTURE_EXCESS = 0.03
"""Weak eye's aperture minus the other's, in IOD, above which the eye shows weakness."""
MOUTH_CORNER_DROP = 0.04
"""Weak mouth corner's height below the other's, in IOD, above which the mouth shows weakness."""
MOUTH_EXCURSION_DIFF = 0.075
"""Difference of the two corners' distances from the midline, in IOD, above which the mouth
shows weakness."""

PARTS: tuple[str, ...] = ("eye", "mouth")
VISIBILITY_MEASURES: tuple[str, ...] = (
    "eye_aperture_excess",
    "mouth_corner_drop",
    "mouth_excursion_diff",
    "brow_height_deficit",
)
"""The weak side's signed measures (IOD units), as :meth:`Visibility.columns` names them."""
SIDES: tuple[str, str] = ("left", "right")


def _point(document: Mapping[str, Any], *keys: str) -> np.ndarray:
    value: Any = document
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            raise KeyError("landmarks: missing " + ".".join(keys))
        value = value[key]
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (2,) or not np.all(np.isfinite(array)):
        raise ValueError(f"landmarks: {'.'.join(keys)} is not a finite (x, y) point")
    return array


def measure_asymmetry(document: Mapping[str, Any]) -> dict[str, float]:
    """Per-side measures (see the module docstring) from a landmarks document.

    ``document`` has the layout of the generator's landmarks JSON (``eyes.<side>.inner|outer|
    top|bottom``, ``brows.<side>.middle``, ``mouth.<side>_corner``; sides are the patient's), in
    any pixel frame. Raises ``KeyError``/``ValueError`` naming a missing or broken point.
    """
    centres = {
        side: (_point(document, "eyes", side, "inner") + _point(document, "eyes", side, "outer"))
        / 2
        for side in SIDES
    }
    axis = centres["left"] - centres["right"]
    iod = float(np.hypot(*axis))
    if iod <= 0:
        raise ValueError("landmarks: the two eye centres coincide")
    u = axis / iod  # along the eye line, toward the patient's left
    v = np.array([-u[1], u[0]])  # perpendicular; "down" when the patient's left is image-right
    if v[1] < 0:  # a photo whose patient-left lies image-left (not a frontal mirror view)
        v = -v
    mid = (centres["left"] + centres["right"]) / 2
    measures: dict[str, float] = {}
    for side in SIDES:
        top, bottom = (
            _point(document, "eyes", side, "top"),
            _point(document, "eyes", side, "bottom"),
        )
        corner = _point(document, "mouth", f"{side}_corner")
        brow = _point(document, "brows", side, "middle")
        measures[f"eye_aperture_{side}"] = float((bottom - top) @ v) / iod
        measures[f"mouth_corner_y_{side}"] = float((corner - mid) @ v) / iod
        measures[f"mouth_corner_x_{side}"] = abs(float((corner - mid) @ u)) / iod
        measures[f"brow_height_{side}"] = float((centres[side] - brow) @ v) / iod
    return measures


@dataclass(frozen=True)
class Visibility:
    """What one photo shows of a weak side: the signed measures and the parts that cross."""

    weak_side: str
    eye_aperture_excess: float
    mouth_corner_drop: float
    mouth_excursion_diff: float
    brow_height_deficit: float
    parts: tuple[str, ...] = field(default=())

    @property
    def eye(self) -> bool:
        return "eye" in self.parts

    @property
    def mouth(self) -> bool:
        return "mouth" in self.parts

    def columns(self) -> dict[str, str]:
        """The measures and parts as manifest extra columns (strings; parts joined by ``+``)."""
        return {
            "fpp_parts": "+".join(self.parts),
            "eye_aperture_excess": f"{self.eye_aperture_excess:.4f}",
            "mouth_corner_drop": f"{self.mouth_corner_drop:.4f}",
            "mouth_excursion_diff": f"{self.mouth_excursion_diff:.4f}",
            "brow_height_deficit": f"{self.brow_height_deficit:.4f}",
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "weak_side": self.weak_side,
            "parts": list(self.parts),
            "eye_aperture_excess": round(self.eye_aperture_excess, 4),
            "mouth_corner_drop": round(self.mouth_corner_drop, 4),
            "mouth_excursion_diff": round(self.mouth_excursion_diff, 4),
            "brow_height_deficit": round(self.brow_height_deficit, 4),
            "thresholds": {
                "eye_aperture_excess": EYE_APERTURE_EXCESS,
                "mouth_corner_drop": MOUTH_CORNER_DROP,
                "mouth_excursion_diff": MOUTH_EXCURSION_DIFF,
            },
        }


def visible_weakness(measures: Mapping[str, float], weak_side: str) -> Visibility:
    """Apply the rule (module docstring) for a patient whose ``weak_side`` is ``left``/``right``."""
    if weak_side not in SIDES:
        raise ValueError(f"weak_side must be 'left' or 'right', got {weak_side!r}")
    strong = "right" if weak_side == "left" else "left"
    aperture = measures[f"eye_aperture_{weak_side}"] - measures[f"eye_aperture_{strong}"]
    drop = measures[f"mouth_corner_y_{weak_side}"] - measures[f"mouth_corner_y_{strong}"]
    excursion = abs(measures[f"mouth_corner_x_{weak_side}"] - measures[f"mouth_corner_x_{strong}"])
    brow = measures[f"brow_height_{strong}"] - measures[f"brow_height_{weak_side}"]
    parts = []
    if aperture > EYE_APERTURE_EXCESS:
        parts.append("eye")
    if drop > MOUTH_CORNER_DROP or excursion > MOUTH_EXCURSION_DIFF:
        parts.append("mouth")
    return Visibility(weak_side, aperture, drop, excursion, brow, tuple(parts))


def visibility_of(document: Mapping[str, Any], weak_side: str) -> Visibility:
    """:func:`visible_weakness` of :func:`measure_asymmetry` of a landmarks document."""
    return visible_weakness(measure_asymmetry(document), weak_side)


def largest_healthy_excess(measures: Mapping[str, float]) -> dict[str, float]:
    """For a healthy face: the largest value each rule measure takes over both choices of weak
    side (what the thresholds must stay above)."""
    both = [visible_weakness(measures, side) for side in SIDES]
    return {
        "eye_aperture_excess": max(v.eye_aperture_excess for v in both),
        "mouth_corner_drop": max(v.mouth_corner_drop for v in both),
        "mouth_excursion_diff": both[0].mouth_excursion_diff,
    }


__all__ = [
    "EYE_APERTURE_EXCESS",
    "MOUTH_CORNER_DROP",
    "MOUTH_EXCURSION_DIFF",
    "PARTS",
    "VISIBILITY_MEASURES",
    "Visibility",
    "largest_healthy_excess",
    "measure_asymmetry",
    "visibility_of",
    "visible_weakness",
]
