"""The pieces of a finding on known truth: sides, parts, measures from a mask, the exam's hint.

Phantom photos carry their truth (mask, landmarks, which parts show palsy), so the mask-side
reading of :mod:`palsyseg.predict.photo` is checked on the *true* mask warped into the frame:
if it names the wrong side or misreads a brow, no network can make the finding right.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from palsyseg.align import FaceFrame, FivePoints, frame_transform, warp_image
from palsyseg.data.face_points import Detection, points_from_landmarks
from palsyseg.data.images import read_mask
from palsyseg.metrics import palsy_findings, patient_finding
from palsyseg.predict.exam import BROW_INVOLVED, exam_finding, pattern_hint, pose_of
from palsyseg.predict.photo import PhotoFinding, _fpp_parts, mask_measures, relative_measures
from palsyseg.visibility import measure_asymmetry

FRAME = FaceFrame(96)


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _framed_truth(root: Path, row: dict[str, str]) -> tuple[np.ndarray, dict]:
    """The row's true mask in the frame (warped by its exact landmarks) and the landmarks."""
    document = json.loads((root / row["landmarks"]).read_text())
    matrix = frame_transform(points_from_landmarks(document), FRAME)
    mask = warp_image(read_mask(root / row["mask"]), matrix, FRAME.size, interpolation="nearest")
    return mask, document


def test_side_and_parts_of_true_masks_are_the_patients(phantom_exam) -> None:
    folder, _ = phantom_exam
    root = folder.parent.parent
    checked = 0
    for row in _rows(root):
        framed, _ = _framed_truth(root, row)
        fraction, side = palsy_findings(framed, midline=(FRAME.size - 1) / 2)
        if not row["fpp_parts"]:
            assert fraction == 0.0 and side == "none", row["image"]
            continue
        checked += 1
        assert side == row["affected_side"], row["image"]  # the patient's side, not the image's
        assert _fpp_parts(framed, FRAME, side) == row["fpp_parts"].split("+"), row["image"]
    assert checked >= 3  # the phantom exam has photos that show palsy


def test_mask_measures_agree_with_the_generators_landmarks(phantom_exam) -> None:
    folder, _ = phantom_exam
    root = folder.parent.parent
    for row in _rows(root):
        framed, document = _framed_truth(root, row)
        side = row["affected_side"] if row["affected_side"] != "none" else "left"
        from_mask = relative_measures(mask_measures(framed, FRAME), side)
        truth = relative_measures(measure_asymmetry(document), side)
        assert from_mask["brow_height_diff"] == pytest.approx(truth["brow_height_diff"], abs=0.02)
        # a mouth corner is read to about a pixel of a 96 px frame: 1/24 IOD
        assert from_mask["mouth_corner_drop"] == pytest.approx(
            truth["mouth_corner_drop"], abs=0.045
        ), row["image"]
        if row["pose"] == "brow_raise":  # the pose the pattern hint decides on
            involved = from_mask["brow_height_diff"] > BROW_INVOLVED
            assert involved == (row["diagnosis"] == "bells_palsy"), row["image"]


def test_relative_measures_name_the_reference_sides_weakness() -> None:
    per_side = {
        "mouth_corner_y_left": 1.10,  # the left corner 0.1 IOD lower
        "mouth_corner_y_right": 1.00,
        "eye_aperture_left": 0.15,
        "eye_aperture_right": 0.10,
        "brow_height_left": 0.30,  # the left brow 0.05 IOD lower
        "brow_height_right": 0.35,
    }
    assert relative_measures(per_side, "left") == {
        "mouth_corner_drop": 0.1,
        "eye_opening_ratio": 1.5,
        "brow_height_diff": 0.05,
    }
    right = relative_measures(per_side, "right")
    assert right["mouth_corner_drop"] == -0.1 and right["brow_height_diff"] == -0.05
    assert (
        relative_measures({**per_side, "eye_aperture_right": None}, "left")["eye_opening_ratio"]
        is None
    )


def test_pose_names_are_read_from_file_names() -> None:
    assert pose_of("syn5-0001_2_brow_raise.jpg") == "brow_raise"
    assert pose_of("/exam/Smile.JPG") == "smile"
    assert pose_of("patient-eye_closure-2.png") == "eye_closure"
    assert pose_of("IMG_0042.jpg") is None
    assert pose_of("restaurant.jpg") is None  # "rest" only as a word


def _finding(image: str, fraction: float, side: str, brow: float, threshold: float = 0.01):
    """A photo finding with the given FPP and a landmark brow deficit of ``brow`` on the left."""
    points = FivePoints((60, 50), (40, 50), (50, 60), (58, 70), (42, 70))
    detection = Detection(points, (30, 30, 40, 50), 1.0, np.zeros((68, 2)), 1)
    per_side = {"brow_height_left": 0.3 - brow, "brow_height_right": 0.3}
    return PhotoFinding(
        image=image,
        width=100,
        height=100,
        detection=detection,
        mask=np.zeros((100, 100), np.uint8),
        fpp_fraction=fraction,
        score=fraction,
        score_kind="fpp_fraction",
        leaning_side=side,
        present=fraction > threshold,
        threshold=threshold,
        probability=0.8 if side != "none" else 0.1,
        parts=["mouth"] if fraction > threshold else [],
        landmark_measures=per_side,
        mask_measures={},
        reference_side="left",
    )


def test_an_exam_combines_photos_as_the_patient_metrics_do_and_hints_the_pattern() -> None:
    poses = ("rest", "smile", "brow_raise", "eye_closure", "pucker")
    fractions = (0.0, 0.05, 0.002, 0.03, 0.0)
    sides = ("none", "left", "right", "left", "none")
    bells = [
        _finding(f"p_{pose}.jpg", fraction, side, brow=0.12 if pose == "brow_raise" else 0.04)
        for pose, fraction, side in zip(poses, fractions, sides, strict=True)
    ]
    exam = exam_finding(bells, threshold=0.01)["exam"]
    score, side = patient_finding(list(fractions), list(sides))
    assert exam["palsy"]["score"] == round(score, 4) and side == "left"
    assert exam["palsy"]["present"] and exam["palsy"]["affected_side"] == "left"
    assert exam["palsy"]["parts"] == ["mouth"] and exam["palsy"]["photos_showing"] == 2
    pattern = exam["pattern"]
    assert pattern["hint"] == "peripheral" and pattern["forehead_involved"] is True
    assert pattern["decided_on"] == "1 brow_raise photo(s)"
    assert pattern["largest_brow_height_diff"] == 0.12
    assert [e["pose"] for e in pattern["evidence"]] == list(poses)
    assert not exam["warnings"]
    assert "not a medical device" in exam["notice"]

    # The forehead spared when the brows rise alike (a stroke's pattern), whatever rest shows.
    stroke = [_finding(f.image, f.fpp_fraction, f.leaning_side, brow=0.0) for f in bells]
    stroke[0].landmark_measures = {"brow_height_left": 0.2, "brow_height_right": 0.3}
    assert pattern_hint(stroke, "left")["hint"] == "central"

    # Without a brow-raise photo the hint says what it rests on.
    no_raise = [f for f in bells if "brow_raise" not in f.image]
    exam = exam_finding(no_raise, threshold=0.01)["exam"]
    assert exam["pattern"]["decided_on"] == "all 4 photo(s)"
    assert any("no brow_raise photo" in w for w in exam["warnings"])
    assert any("lacks the pose(s) brow_raise" in w for w in exam["warnings"])

    healthy = [_finding(f"h_{pose}.jpg", 0.0, "none", brow=0.0) for pose in poses]
    exam = exam_finding(healthy, threshold=0.01)["exam"]
    assert not exam["palsy"]["present"] and exam["palsy"]["affected_side"] == "none"
    assert exam["pattern"]["hint"] == "none" and exam["pattern"]["evidence"] == []


def test_labels_on_the_photo_are_exactly_those_of_logits_to_photo() -> None:
    """predict's fast mapping gives the labels evaluate scores (logits_to_photo, argmax)."""
    import torch

    from palsyseg.align import logits_to_photo
    from palsyseg.predict.photo import labels_on_photo

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 7, 64, 64, generator=generator) * 3
    logits[:, :, 20:30, 20:30] = 0.0  # exact ties: the first class wins in both
    points = FivePoints((171.0, 140.0), (118.0, 131.0), (150, 170), (170, 200), (120, 195))
    matrix = frame_transform(points, FaceFrame(64))  # rolled about 10 degrees
    for shape in ((300, 280), (97, 113)):
        expected = logits_to_photo(logits, matrix, shape).argmax(dim=1)[0].numpy()
        found = labels_on_photo(logits, matrix, shape)
        assert found.dtype == np.uint8 and found.shape == shape
        np.testing.assert_array_equal(found, expected.astype(np.uint8))
    assert (found == 0).any() and (found > 0).any()  # both outside and inside the crop
