"""One photo → one finding: the face, the face frame, the network, the mask back on the photo.

:class:`Predictor` runs the path :mod:`palsyseg.evaluate` scores models by, on a user's photo:

1. decode (:func:`palsyseg.data.images.read_rgb`: the pixel count is read from the header
   first, so a decompression bomb is refused before it is decoded);
2. dlib finds the largest face on a downscaled working copy and its 68 points
   (:class:`palsyseg.data.face_points.FacePointDetector`), giving the five points;
3. the photo is warped into the checkpoint's own face frame (:func:`palsyseg.align.frame_transform`),
   normalised as in training, and the network's logits are mapped back onto the photo's pixels
   (:func:`labels_on_photo`: the labels of :func:`palsyseg.align.logits_to_photo`, faster);
4. the palsy finding is read in the frame, where the face's midline is the crop's centre
   column (:func:`palsyseg.metrics.palsy_findings`, as the evaluation does), or, for a
   checkpoint whose threshold is on PalsyNet's per-part, per-side FPP decision
   (``palsy_score: decision``), from that decision (:func:`palsyseg.metrics.decision_findings`).

The finding (:meth:`PhotoFinding.to_dict`, the object ``palsyseg predict --json`` prints):

- ``palsy.present``: ``palsy.score`` is above the checkpoint's ``palsy_threshold`` (chosen on
  its validation split by Youden's J). ``palsy.score_kind`` says what the score is:
  ``fpp_fraction`` (FPP pixels over face pixels, in the frame; also ``palsy.fpp_fraction``) or
  ``decision`` (the largest ``q`` of PalsyNet's per-part, per-side FPP decision);
- ``palsy.affected_side``: the patient's side holding more FPP (image left = patient's right),
  or with ``decision`` the side of the surer half, ``none`` when no palsy is present;
- ``palsy.probability``: with ``decision``, the decision's ``q``; otherwise the network's mean
  softmax FPP probability over the eye, mouth and FPP pixels of that half of the face (of the
  half where it is larger when no side leans). It says how sure the network is; it is not a
  calibrated probability that the person has palsy;
- ``palsy.parts``: ``eye`` and/or ``mouth``: which part holds at least :data:`PART_SHARE` of
  that side's FPP pixels (a pixel belongs to the eye above :data:`EYE_MOUTH_SPLIT` IOD below
  the eye line, to the mouth below it);
- ``measures`` (units of the inter-ocular distance, IOD; sides the patient's) compare the
  ``reference_side`` (the affected side, else the side the FPP leans to, else the side whose
  mouth corner dlib places lower) with the other: ``mouth_corner_drop`` (positive: that corner
  lower), ``eye_opening_ratio`` (its eye's aperture over the other's: above 1, wider open),
  ``brow_height_diff`` (positive: that brow lower). The top-level values come from dlib's 68
  points (:func:`palsyseg.visibility.measure_asymmetry`, the rule that labels FPP);
  ``measures.from_mask`` gives the same three read off the predicted mask in the frame;
- ``areas``: each class's share of the photo's pixels;
- ``model``: name, version, URI, threshold, frame, normalisation; ``warnings``; ``notice``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from palsyseg.align import FaceFrame, frame_transform, warp_image
from palsyseg.data.face_points import Detection, FacePointDetector
from palsyseg.labels import LABEL_NAMES, Label, side_of_image_half
from palsyseg.predict.model import PredictModel

log = logging.getLogger(__name__)

NOTICE = (
    "palsyseg is a research and screening aid, not a medical device: it does not diagnose, "
    "and a clinician decides."
)
PART_SHARE = 0.25
"""A part (eye, mouth) is named in ``palsy.parts`` when it holds this share of the side's FPP."""
EYE_MOUTH_SPLIT = 0.5
"""In the frame, FPP pixels less than this many IOD below the eye line belong to the eye."""
SMALL_FACE_IOD_PX = 40.0
"""Below this inter-ocular distance (photo pixels) the finding carries a small-face warning."""
_SIDES = ("left", "right")
_BROW_BAND, _MOUTH_BAND, _PART_REACH = 1.0, 1.6, 1.0  # IOD; see mask_measures
_CORNER_BAND = 0.05  # IOD (at least a pixel): the columns that make a mouth corner
_DIGITS = 4


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), _DIGITS)


def relative_measures(per_side: Mapping[str, float | None], side: str) -> dict[str, float | None]:
    """The three measures of ``side`` against the other (module docstring), from per-side values
    named as :func:`palsyseg.visibility.measure_asymmetry` names them; ``None`` where one is
    missing (a part the mask does not show)."""
    other = _other(side)

    def get(key: str) -> float | None:
        value = per_side.get(key)
        return None if value is None or not np.isfinite(value) else float(value)

    drop = ratio = brow = None
    if (a := get(f"mouth_corner_y_{side}")) is not None and (
        b := get(f"mouth_corner_y_{other}")
    ) is not None:
        drop = a - b
    if (
        (a := get(f"eye_aperture_{side}")) is not None
        and (b := get(f"eye_aperture_{other}")) is not None
        and b > 0
    ):
        ratio = a / b
    if (a := get(f"brow_height_{side}")) is not None and (
        b := get(f"brow_height_{other}")
    ) is not None:
        brow = b - a
    return {
        "mouth_corner_drop": _round(drop),
        "eye_opening_ratio": _round(ratio),
        "brow_height_diff": _round(brow),
    }


def _crop_halves(size: int) -> dict[str, np.ndarray]:
    """Patient side → boolean column mask of its half of the frame (the centre column, on the
    mirror axis when ``size`` is odd, belongs to neither)."""
    cols = np.arange(size, dtype=np.float64)
    mid = (size - 1) / 2
    return {side_of_image_half("left"): cols < mid, side_of_image_half("right"): cols > mid}


def mask_measures(framed: np.ndarray, frame: FaceFrame) -> dict[str, float | None]:
    """Per-side eye aperture, mouth-corner height and brow height (IOD) of a label map in the
    frame, named as :func:`palsyseg.visibility.measure_asymmetry` names them.

    The frame fixes the eye line (``frame.eye_y``), the midline (the centre column) and the
    IOD (``frame.iod``), so only the parts' pixels are read, each within its band (brows and
    eyes from 1 IOD above the eye line to :data:`EYE_MOUTH_SPLIT` below it, the mouth from
    there to 1.6 IOD below; all within 1 IOD of the midline): an eye's aperture is its pixel
    count over the columns it spans; a mouth corner is the mean row of the mouth's pixels
    within 0.05 IOD (at least a pixel) of its outermost column on that side; a brow's height
    is its centroid above the eye line. A part the mask does not show is ``None``.
    """
    size = frame.size
    eye_line, iod = frame.eye_y * size, frame.iod * size
    mid = (size - 1) / 2
    # Rows (in IOD from the eye line) and reach from the midline where each part can be: a
    # stray pixel elsewhere (hair, a collar) must not pass for a brow or a mouth corner.
    depth = (np.arange(size, dtype=np.float64)[:, None] - eye_line) / iod
    reach_iod = np.abs(np.arange(size, dtype=np.float64)[None, :] - mid) / iod
    near = reach_iod < _PART_REACH
    eye_band = (depth > -_BROW_BAND) & (depth < EYE_MOUTH_SPLIT) & near
    mouth_band = (depth >= EYE_MOUTH_SPLIT) & (depth < _MOUTH_BAND) & near
    brow_band = (depth > -_BROW_BAND) & (depth < 0) & near
    eye_like = (framed == Label.EYE) | (framed == Label.FPP)
    mouth_like = (framed == Label.MOUTH) | (framed == Label.FPP)
    out: dict[str, float | None] = {}
    for side, half in _crop_halves(size).items():
        eye = eye_like & eye_band & half[None, :]
        mouth = mouth_like & mouth_band & half[None, :]
        brow = (framed == Label.EYEBROW) & brow_band & half[None, :]
        columns = np.flatnonzero(eye.any(axis=0))
        out[f"eye_aperture_{side}"] = (
            float(eye.sum()) / len(columns) / iod if len(columns) else None
        )
        ys, xs = np.nonzero(mouth)
        if len(xs):
            reach = np.abs(xs - mid)
            outer = reach >= reach.max() - max(_CORNER_BAND * iod, 1.0)
            out[f"mouth_corner_y_{side}"] = (float(ys[outer].mean()) - eye_line) / iod
        else:
            out[f"mouth_corner_y_{side}"] = None
        ys, _ = np.nonzero(brow)
        out[f"brow_height_{side}"] = (eye_line - float(ys.mean())) / iod if len(ys) else None
    return out


def _fpp_parts(framed: np.ndarray, frame: FaceFrame, side: str) -> list[str]:
    """Which parts (eye, mouth) hold at least :data:`PART_SHARE` of ``side``'s FPP pixels."""
    half = _crop_halves(frame.size)[side]
    fpp = (framed == Label.FPP) & half[None, :]
    total = int(fpp.sum())
    if total == 0:
        return []
    split = int(np.ceil(frame.eye_y * frame.size + EYE_MOUTH_SPLIT * frame.iod * frame.size))
    counts = {"eye": int(fpp[:split].sum()), "mouth": int(fpp[split:].sum())}
    return [part for part, count in counts.items() if count >= PART_SHARE * total]


def _fpp_confidence(framed: np.ndarray, fpp_probability: np.ndarray, side: str) -> float:
    """Mean FPP probability over the eye, mouth and FPP pixels of one side's half (or of the
    surer half when ``side`` is ``none``); 0 when the half shows none of them."""
    halves = _crop_halves(framed.shape[1])
    parts = np.isin(framed, (Label.EYE, Label.MOUTH, Label.FPP))

    def mean_on(half: np.ndarray) -> float:
        region = parts & half[None, :]
        return float(fpp_probability[region].mean()) if region.any() else 0.0

    if side in halves:
        return mean_on(halves[side])
    return max(mean_on(h) for h in halves.values())


@dataclass
class PhotoFinding:
    """What :meth:`Predictor.predict` found in one photo (module docstring)."""

    image: str
    width: int
    height: int
    detection: Detection
    mask: np.ndarray
    """H×W uint8 labels 0–6 on the photo's own pixels."""
    fpp_fraction: float
    score: float
    """The number compared with ``threshold``: ``fpp_fraction``, or the part-side decision's
    largest ``q`` (``score_kind``, the checkpoint's ``palsy_score``)."""
    score_kind: str
    leaning_side: str
    """The patient's side holding more FPP, or the side of the surer decision, whatever the
    threshold (``none`` on a tie)."""
    present: bool
    threshold: float
    probability: float
    parts: list[str]
    landmark_measures: dict[str, float]
    """Per-side measures from dlib's 68 points (:func:`palsyseg.visibility.measure_asymmetry`)."""
    mask_measures: dict[str, float | None]
    """The same per-side measures from the predicted mask (:func:`mask_measures`)."""
    reference_side: str
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    photo: np.ndarray | None = field(default=None, repr=False)
    """The decoded RGB photo (for the overlay); not part of the JSON."""

    @property
    def affected_side(self) -> str:
        return self.leaning_side if self.present else "none"

    def areas(self) -> dict[str, float]:
        """Each non-background class's share of the photo's pixels."""
        counts = np.bincount(self.mask.ravel(), minlength=len(LABEL_NAMES))
        total = max(int(self.mask.size), 1)
        return {name: round(counts[i] / total, _DIGITS) for i, name in enumerate(LABEL_NAMES) if i}

    def to_dict(self, model: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON finding of ``palsyseg predict --json`` (``../shared/CONTRACT.md``)."""
        detection = self.detection
        points = {k: [round(v, 2) for v in xy] for k, xy in detection.points.to_dict().items()}
        measures: dict[str, Any] = relative_measures(self.landmark_measures, self.reference_side)
        measures["reference_side"] = self.reference_side
        measures["unit"] = "inter-ocular distance"
        measures["source"] = "dlib 68 landmarks"
        measures["from_mask"] = relative_measures(self.mask_measures, self.reference_side)
        return {
            "image": self.image,
            "size": [self.width, self.height],
            "face": {
                "box": list(detection.box),
                "points": points,
                "detector_score": round(detection.score, 3),
                "faces_found": detection.faces,
                "inter_ocular_px": round(detection.points.inter_ocular(), 1),
            },
            "palsy": {
                "present": self.present,
                "probability": round(self.probability, _DIGITS),
                "affected_side": self.affected_side,
                "parts": list(self.parts),
                "fpp_fraction": round(self.fpp_fraction, _DIGITS),
                "score": round(self.score, _DIGITS),
                "score_kind": self.score_kind,
                "threshold": self.threshold,
            },
            "measures": measures,
            "areas": self.areas(),
            "model": dict(model) if model is not None else None,
            "warnings": list(self.warnings),
            "notice": NOTICE,
        }


def labels_on_photo(logits: Any, matrix: np.ndarray, photo_shape: tuple[int, int]) -> np.ndarray:
    """``logits_to_photo(logits, matrix, photo_shape).argmax(dim=1)[0]`` as uint8, ten times faster.

    The same samples (:func:`torch.nn.functional.grid_sample`, bilinear, ``align_corners=True``,
    the same float32 grid) and the same rule outside the crop (background), so the labels are
    those :mod:`palsyseg.evaluate` scores; only the work differs: the grid is built from a row
    and a column instead of an H×W×3 product, and the argmax runs as a contiguous running
    maximum (the first class wins a tie, as ``argmax`` does) instead of torch's strided one.
    """
    import torch
    import torch.nn.functional as F

    height, width = photo_shape
    size = logits.shape[-1]
    xs = np.arange(width, dtype=np.float64)[None, :]
    ys = np.arange(height, dtype=np.float64)[:, None]
    crop_x = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    crop_y = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    inside = (crop_x >= -0.5) & (crop_x < size - 0.5) & (crop_y >= -0.5) & (crop_y < size - 0.5)
    grid = np.empty((1, height, width, 2), dtype=np.float32)
    grid[0, :, :, 0] = crop_x * (2.0 / (size - 1)) - 1.0
    grid[0, :, :, 1] = crop_y * (2.0 / (size - 1)) - 1.0
    sampled = F.grid_sample(
        logits.float(),
        torch.from_numpy(grid),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )[0].numpy()
    best = sampled[0].copy()
    labels = np.zeros((height, width), dtype=np.uint8)
    for label in range(1, sampled.shape[0]):
        better = sampled[label] > best
        np.maximum(best, sampled[label], out=best)
        labels[better] = label
    labels[~inside] = Label.BACKGROUND
    return labels


class Predictor:
    """A loaded network and a face detector: :meth:`predict` turns a photo into a finding."""

    def __init__(self, model: PredictModel, detector: FacePointDetector | None = None) -> None:
        self.model = model
        self.detector = detector if detector is not None else FacePointDetector()
        self.frame = model.frame

    def predict(self, path: str | Path) -> PhotoFinding:
        """The finding of one photo file; :class:`palsyseg.errors.DatasetError` naming the file
        when it is unreadable, too large (decompression bomb), or shows no face."""
        from palsyseg.data.images import read_rgb

        started = time.perf_counter()
        rgb = read_rgb(path)
        decoded = time.perf_counter() - started
        finding = self.predict_array(rgb, source=str(path))
        finding.seconds = {"decode": decoded, **finding.seconds}
        return finding

    def predict_array(self, rgb: np.ndarray, source: str = "<image>") -> PhotoFinding:
        """The finding of a uint8 H×W×3 RGB photo; ``source`` names it in errors and the JSON."""
        import torch

        from palsyseg.landmark_rule import finding_from_68, landmarks_document_from_68
        from palsyseg.metrics import decision_findings, palsy_findings
        from palsyseg.visibility import measure_asymmetry

        detection = self.detector.detect(rgb, source=source)
        warnings = list(detection.warnings)
        iod = detection.points.inter_ocular()
        if iod < SMALL_FACE_IOD_PX:
            warnings.append(
                f"small face: the eyes are {iod:.0f} px apart (under {SMALL_FACE_IOD_PX:.0f}); "
                "the mask and the measures are coarse"
            )
        started = time.perf_counter()
        height, width = rgb.shape[:2]
        frame = self.frame
        network = self.model.network
        with torch.inference_mode():
            if frame is not None:
                from palsyseg.data.torch_dataset import normalize_image

                matrix = frame_transform(detection.points, frame)
                crop = warp_image(rgb, matrix, frame.size, interpolation="linear")
                out = network(normalize_image(crop).unsqueeze(0))
                logits = out["logits"]
                framed = logits.argmax(dim=1)[0].numpy().astype(np.uint8)
                fpp_probability = torch.softmax(logits, dim=1)[0, Label.FPP].numpy()
                fraction, side = palsy_findings(framed, midline=(frame.size - 1) / 2)
                if self.model.palsy_score == "decision":  # the threshold is on the decision
                    score, side = decision_findings(out["fpp_decision_log_q"][0])
                    confidence = score
                else:
                    score = fraction
                    confidence = _fpp_confidence(framed, fpp_probability, side)
                mask = labels_on_photo(logits, matrix, (height, width))
                measured = mask_measures(framed, frame)
                parts_side = side
            else:  # a checkpoint from before the frame: the whole photo, as evaluate scores it
                import torch.nn.functional as F

                from palsyseg.data.torch_dataset import model_input

                logits = network(model_input(rgb, self.model.image_size))["logits"]
                logits = F.interpolate(
                    logits, size=(height, width), mode="bilinear", align_corners=False
                )
                mask = logits.argmax(dim=1)[0].numpy().astype(np.uint8)
                fraction, side = palsy_findings(mask)
                score = fraction
                fpp = torch.softmax(logits, dim=1)[0, Label.FPP].numpy()
                parts_region = np.isin(mask, (Label.EYE, Label.MOUTH, Label.FPP))
                confidence = float(fpp[parts_region].mean()) if parts_region.any() else 0.0
                measured = {}
                parts_side = None
                warnings.append("checkpoint has no face frame: predicted on the whole photo")
        threshold = self.model.palsy_threshold
        present = score > threshold
        parts: list[str] = []
        if present and frame is not None and parts_side in _SIDES:
            parts = _fpp_parts(framed, frame, parts_side)
        landmarks = measure_asymmetry(landmarks_document_from_68(detection.landmarks68))
        reference = side if side in _SIDES else finding_from_68(detection.landmarks68)[1]
        seconds = dict(detection.seconds)
        seconds["model"] = time.perf_counter() - started
        return PhotoFinding(
            image=source,
            width=width,
            height=height,
            detection=detection,
            mask=mask,
            fpp_fraction=float(fraction),
            score=float(score),
            score_kind=self.model.palsy_score if frame is not None else "fpp_fraction",
            leaning_side=side,
            present=bool(present),
            threshold=threshold,
            probability=confidence,
            parts=parts,
            landmark_measures=landmarks,
            mask_measures=measured,
            reference_side=reference if reference in _SIDES else "left",
            warnings=warnings,
            seconds=seconds,
            photo=rgb,
        )
