"""The classical baseline a clinician would ask about: a landmark rule, no learning.

Per photo, dlib's 68 iBUG points (:class:`palsyseg.data.face_points.FacePointDetector`) become
a landmarks document (:func:`landmarks_document_from_68`) that
:func:`palsyseg.visibility.measure_asymmetry` reads, the same measures the generator labels FPP
by. From them, per patient side ``s`` (``o`` the other side), the evidence that ``s`` is weak
(:func:`weakness_evidence`, IOD units):

- ``mouth_corner_drop`` = ``mouth_corner_y_s − mouth_corner_y_o`` (positive: that corner lower);
- ``eye_aperture_excess`` = ``eye_aperture_s − eye_aperture_o`` (positive: that eye more open);
- ``brow_height_deficit`` = ``brow_height_o − brow_height_s`` (positive: that brow lower).

**The rule** (:func:`finding_from_68`) uses the mouth-corner drop alone: the predicted side is
the side whose corner sits lower, the palsy score is that drop (``≥ 0``), and a palsy is
*present* when the score exceeds :attr:`LandmarkRule.threshold`, chosen on a validation split
by :func:`palsyseg.metrics.choose_palsy_threshold` (Youden's J). A photo in which dlib finds no
face scores 0 with side ``none``; :meth:`LandmarkRule.evaluate` reports the share found.

Why the drop alone, not a combination: on 675 phantom photos (``palsyseg data synth``, 45
patients × 5 poses each of seeds 21–23, dlib at the native 250 px), dlib's eye and brow points
do not follow the phantom's lids and brows — its six eye points barely move when a weak eye
stays open during eye closure, and its brow points vary as much on healthy faces as on palsied
ones. On seeds 22–23 (seed 21 set the healthy spread and the threshold), side accuracy on the
photos that show palsy was 0.69 by the drop alone, 0.58 by the eye aperture and 0.45 by the
brow; the three z-scored by the healthy faces' spread and summed gave 0.67, drop plus aperture
0.69, with image-level AUROC 0.63 for the drop and 0.63–0.64 for the combinations: no gain for
two more weights to justify. On grade ≥ 5 palsy photos at rest or smiling the drop finds the
side of 0.87. It is also the quick check the issue ran by hand, and what a clinician reads
first. dlib places points on whole pixels of a 250 px photo (about 0.02 IOD); detecting on a 2×
upscaled copy changed side accuracy by 0.03, not worth a cache apart from
:func:`~palsyseg.data.face_points.points_for_row`'s. The eye and brow evidence stay available
from :func:`weakness_evidence` for inspection.

Detections come from :func:`palsyseg.data.face_points.detection_for_row`: always from the
pixels (a generated row's landmarks JSON is not used), once per image, cached outside the
dataset (photos without a face too); the dataset directory is never written.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from palsyseg.data.face_points import FacePointDetector, detection_for_row
from palsyseg.data.manifest import ManifestRow, read_manifest, resolve_in_root
from palsyseg.metrics import choose_palsy_threshold, image_level_metrics, patient_level_metrics
from palsyseg.visibility import SIDES, measure_asymmetry

log = logging.getLogger(__name__)

EVIDENCE: tuple[str, ...] = ("mouth_corner_drop", "eye_aperture_excess", "brow_height_deficit")
"""The signed per-side measures of :func:`weakness_evidence` (positive = that side weaker)."""
SCORE_EVIDENCE = "mouth_corner_drop"
"""The one measure the rule scores by (module docstring says why)."""


def _mean(points68: np.ndarray, *indices: int) -> list[float]:
    return [float(v) for v in points68[list(indices)].mean(axis=0)]


def landmarks_document_from_68(points68: np.ndarray) -> dict[str, Any]:
    """dlib's 68 iBUG 300-W points (photo pixels) as a generator-style landmarks document.

    The layout is the one :func:`palsyseg.visibility.measure_asymmetry` and
    :func:`palsyseg.data.face_points.points_from_landmarks` read; sides are the *patient's*, so
    the image-left features (iBUG 36–41, 17–21, 48) are the patient's right. Eye corners and
    brow points are single iBUG points, an eye's top and bottom the mean of its two upper and
    two lower lid points (37, 38 / 40, 41 and 43, 44 / 46, 47). Raises ``ValueError`` unless
    ``points68`` is a finite 68×2 array.
    """
    points = np.asarray(points68, dtype=np.float64)
    if points.shape != (68, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"expected 68 finite (x, y) points, got an array of shape {points.shape}")
    return {
        "eyes": {
            "right": {
                "outer": _mean(points, 36),
                "inner": _mean(points, 39),
                "top": _mean(points, 37, 38),
                "bottom": _mean(points, 40, 41),
            },
            "left": {
                "inner": _mean(points, 42),
                "outer": _mean(points, 45),
                "top": _mean(points, 43, 44),
                "bottom": _mean(points, 46, 47),
            },
        },
        "brows": {
            "right": {
                "outer": _mean(points, 17),
                "middle": _mean(points, 19),
                "inner": _mean(points, 21),
            },
            "left": {
                "inner": _mean(points, 22),
                "middle": _mean(points, 24),
                "outer": _mean(points, 26),
            },
        },
        "mouth": {
            "right_corner": _mean(points, 48),
            "left_corner": _mean(points, 54),
            "top": _mean(points, 51),
            "bottom": _mean(points, 57),
        },
        "nose_tip": _mean(points, 30),
    }


def weakness_evidence(measures: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Per patient side, the :data:`EVIDENCE` that this side is the weak one (module docstring).

    ``measures`` are those of :func:`palsyseg.visibility.measure_asymmetry`. Each value of one
    side is the negative of the other side's.
    """
    evidence: dict[str, dict[str, float]] = {}
    for side, other in zip(SIDES, reversed(SIDES), strict=True):
        evidence[side] = {
            "mouth_corner_drop": measures[f"mouth_corner_y_{side}"]
            - measures[f"mouth_corner_y_{other}"],
            "eye_aperture_excess": measures[f"eye_aperture_{side}"]
            - measures[f"eye_aperture_{other}"],
            "brow_height_deficit": measures[f"brow_height_{other}"]
            - measures[f"brow_height_{side}"],
        }
    return evidence


def finding_from_68(points68: np.ndarray | None) -> tuple[float, str]:
    """The rule's ``(palsy score, patient side)`` for one photo's 68 points.

    The side is the one whose mouth corner sits lower (about the eye line, in IOD), the score
    that drop; ``None`` (no face found) gives ``(0.0, "none")``, as does an exact tie.
    """
    if points68 is None:
        return 0.0, "none"
    evidence = weakness_evidence(measure_asymmetry(landmarks_document_from_68(points68)))
    side = max(SIDES, key=lambda s: evidence[s][SCORE_EVIDENCE])
    score = evidence[side][SCORE_EVIDENCE]
    return (score, side) if score > 0 else (0.0, "none")


def landmarks68_for_row(
    root: str | os.PathLike[str],
    row: ManifestRow,
    *,
    detector: FacePointDetector,
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray | None:
    """dlib's 68 points of one row's photo (pixels), or ``None`` when dlib finds no face.

    Always from the pixels, never from the row's landmarks JSON (a baseline must see what a
    real photo offers); cached once per image by
    :func:`palsyseg.data.face_points.detection_for_row`, outside the dataset.
    """
    detection = detection_for_row(root, row, detector=detector, cache_dir=cache_dir)
    return None if detection is None else detection.landmarks68


def _findings(
    root: str | os.PathLike[str],
    rows: list[ManifestRow],
    detector: FacePointDetector | None,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[list[tuple[float, str]], int]:
    """The rule's finding per row and how many photos had a face (photos without one are
    logged with their count)."""
    from palsyseg.progress import track

    detector = detector if detector is not None else FacePointDetector()
    points = [
        landmarks68_for_row(root, row, detector=detector, cache_dir=cache_dir)
        for row in track(rows, "landmark rule: dlib points")
    ]
    found = sum(p is not None for p in points)
    if found < len(rows):
        log.warning("%s: dlib found no face in %d of %d photos", root, len(rows) - found, len(rows))
    return [finding_from_68(p) for p in points], found


def _truth(root: str | os.PathLike[str], rows: list[ManifestRow]) -> tuple[list[bool], list[str]]:
    """Image-level truth as the segmentation metrics use it: the photo's mask holds FPP, and
    then the patient's side (:func:`~palsyseg.data.torch_dataset.visible_side`)."""
    from palsyseg.data.images import read_mask
    from palsyseg.data.torch_dataset import shows_palsy, visible_side

    palsy, sides = [], []
    for row in rows:
        mask = read_mask(resolve_in_root(root, row.mask))
        palsy.append(shows_palsy(mask))
        sides.append(visible_side(mask, row.affected_side))
    return palsy, sides


@dataclass(frozen=True)
class LandmarkRule:
    """The mouth-corner rule (module docstring) with its validation-chosen threshold.

    A palsy is present in a photo when :func:`finding_from_68`'s score is above ``threshold``
    (IOD units of mouth-corner drop).
    """

    threshold: float = 0.0

    @classmethod
    def fit(
        cls,
        val_dir: str | os.PathLike[str],
        *,
        detector: FacePointDetector | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> LandmarkRule:
        """The rule whose threshold maximises Youden's J on the validation dataset ``val_dir``
        (:func:`palsyseg.metrics.choose_palsy_threshold`; truth as in :meth:`evaluate`)."""
        rows = read_manifest(val_dir)
        findings, _ = _findings(val_dir, rows, detector, cache_dir)
        scores = [score for score, _ in findings]
        palsy, _ = _truth(val_dir, rows)
        return cls(threshold=choose_palsy_threshold(scores, palsy))

    def findings(
        self,
        test_dir: str | os.PathLike[str],
        *,
        detector: FacePointDetector | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> list[tuple[float, str]]:
        """``(score, side)`` per manifest row of ``test_dir``, in manifest order; a palsy is
        present where ``score > self.threshold``. The side is reported whatever the score."""
        return _findings(test_dir, read_manifest(test_dir), detector, cache_dir)[0]

    @classmethod
    def evaluate(
        cls,
        val_dir: str | os.PathLike[str],
        test_dir: str | os.PathLike[str],
        *,
        detector: FacePointDetector | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> dict[str, float]:
        """Fit on ``val_dir``, score ``test_dir`` with the network's image- and patient-level
        metrics, so the baseline reads side by side with the segmentation model.

        Truth per photo: ``shows_palsy(mask)`` and ``visible_side(mask, row.affected_side)``;
        patients from the manifest. Keys: those of
        :func:`~palsyseg.metrics.image_level_metrics` and
        :func:`~palsyseg.metrics.patient_level_metrics`, plus ``faces_found`` (share of test
        photos in which dlib found a face) and ``threshold``.
        """
        detector = detector if detector is not None else FacePointDetector()
        rule = cls.fit(val_dir, detector=detector, cache_dir=cache_dir)
        rows = read_manifest(test_dir)
        findings, found = _findings(test_dir, rows, detector, cache_dir)
        scores = [score for score, _ in findings]
        sides = [side for _, side in findings]
        palsy, true_sides = _truth(test_dir, rows)
        metrics = image_level_metrics(scores, palsy, sides, true_sides, rule.threshold)
        metrics.update(
            patient_level_metrics(
                [row.patient_id for row in rows], scores, palsy, sides, true_sides, rule.threshold
            )
        )
        metrics["faces_found"] = found / len(rows) if rows else math.nan
        metrics["threshold"] = rule.threshold
        return metrics


__all__ = [
    "EVIDENCE",
    "SCORE_EVIDENCE",
    "LandmarkRule",
    "finding_from_68",
    "landmarks68_for_row",
    "landmarks_document_from_68",
    "weakness_evidence",
]
