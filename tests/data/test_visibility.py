"""FPP = visible asymmetry (palsyseg.visibility) and the generator that labels by it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from palsyseg.data.phantom import render_face, sample_capture, side_sign
from palsyseg.data.synth import SynthConfig, generate_dataset, make_patient
from palsyseg.labels import POSES, Label
from palsyseg.visibility import (
    EYE_APERTURE_EXCESS,
    MOUTH_CORNER_DROP,
    MOUTH_EXCURSION_DIFF,
    largest_healthy_excess,
    measure_asymmetry,
    visible_weakness,
)

SIZE = 96


def patients(diagnosis: str, count: int, seed: int = 11, **changes):
    """``count`` generated patients with ``diagnosis`` (grade etc. overridden by ``changes``)."""
    config = SynthConfig(patients=1, seed=seed)
    found, index = [], 0
    while len(found) < count:
        patient = make_patient(config, index)
        if patient.diagnosis == diagnosis:
            found.append((index, dataclasses.replace(patient, **changes)))
        index += 1
    return found


def render(index: int, patient, pose: str, k: int = 0):
    capture = sample_capture(np.random.default_rng([index, k, POSES.index(pose)]))
    return render_face(patient, pose, capture, SIZE)


def fpp_half(rendering, side: str) -> bool:
    """True when every FPP pixel lies on the image half of the patient's ``side`` (midline)."""
    doc = rendering.landmarks
    top, bottom = np.array(doc["midline"]["top"]), np.array(doc["midline"]["bottom"])
    d = bottom - top
    normal = np.array([d[1], -d[0]]) * side_sign(side)
    vv, uu = np.nonzero(rendering.mask == Label.FPP)
    return bool(((uu - top[0]) * normal[0] + (vv - top[1]) * normal[1] > -1.0).all())


def test_healthy_faces_never_cross_a_threshold() -> None:
    worst = dict.fromkeys(("eye_aperture_excess", "mouth_corner_drop", "mouth_excursion_diff"), 0.0)
    count = 0
    for index, patient in patients("healthy", 200):
        for pose in POSES:
            rendering = render(index, patient, pose)
            assert not (rendering.mask == Label.FPP).any()
            assert rendering.visibility is None and rendering.landmarks["fpp"]["parts"] == []
            for side in ("left", "right"):
                assert visible_weakness(measure_asymmetry(rendering.landmarks), side).parts == ()
            for key, value in largest_healthy_excess(
                measure_asymmetry(rendering.landmarks)
            ).items():
                worst[key] = max(worst[key], value)
            count += 1
    assert count == 1000
    # The thresholds keep a margin over the worst healthy face (not only "not crossed").
    assert worst["eye_aperture_excess"] < 0.85 * EYE_APERTURE_EXCESS
    assert worst["mouth_corner_drop"] < 0.5 * MOUTH_CORNER_DROP
    assert worst["mouth_excursion_diff"] < 0.9 * MOUTH_EXCURSION_DIFF


@pytest.mark.parametrize("diagnosis", ["bells_palsy", "stroke"])
def test_grade_2_at_rest_shows_no_palsy(diagnosis: str) -> None:
    for index, patient in patients(diagnosis, 40, grade=2):
        rendering = render(index, patient, "rest")
        assert rendering.visibility is not None and rendering.visibility.parts == ()
        assert not (rendering.mask == Label.FPP).any()
        assert (rendering.mask == Label.EYE).any() and (rendering.mask == Label.MOUTH).any()


@pytest.mark.parametrize("diagnosis", ["bells_palsy", "stroke"])
def test_grade_6_smile_marks_the_weak_mouth(diagnosis: str) -> None:
    for index, patient in patients(diagnosis, 20, grade=6):
        rendering = render(index, patient, "smile")
        assert "mouth" in rendering.visibility.parts
        assert (rendering.mask == Label.FPP).sum() > 10
        assert fpp_half(rendering, patient.affected_side)
        # The strong side's mouth keeps its label.
        assert (rendering.mask == Label.MOUTH).any()


def test_bells_grade_6_eye_closure_marks_the_eye_that_stays_open() -> None:
    for index, patient in patients("bells_palsy", 20, grade=6):
        rendering = render(index, patient, "eye_closure")
        assert "eye" in rendering.visibility.parts
        assert rendering.visibility.eye_aperture_excess > 3 * EYE_APERTURE_EXCESS
        assert fpp_half(rendering, patient.affected_side)


def test_stroke_eye_is_fpp_only_when_its_measure_crosses() -> None:
    seen_crossing = 0
    for index, patient in patients("stroke", 40):
        for pose in POSES:
            vis = render(index, patient, pose).visibility
            assert ("eye" in vis.parts) == (vis.eye_aperture_excess > EYE_APERTURE_EXCESS)
            if pose in ("rest", "brow_raise", "eye_closure"):  # the forehead and lids are spared
                assert "eye" not in vis.parts, (patient.grade, pose)
            seen_crossing += "eye" in vis.parts
    # a weak cheek does not push the lower lid up in a smile: a severe stroke's eye can show it
    assert seen_crossing < 40


def test_more_severe_palsy_shows_in_more_photos() -> None:
    shown = {}
    for grade in (2, 4, 6):
        hits = 0
        for index, patient in patients("bells_palsy", 12, grade=grade):
            hits += sum(bool(render(index, patient, pose).visibility.parts) for pose in POSES)
        shown[grade] = hits
    assert shown[2] < shown[4] < shown[6] == 60


# ---- the rule itself -----------------------------------------------------------------------------


def document(**offsets: float) -> dict:
    """A symmetric face's landmarks (IOD = 100 px) with per-point vertical offsets in pixels."""
    doc = {"eyes": {}, "brows": {}, "mouth": {}}
    for side, x in (("left", 250.0), ("right", 150.0)):
        lid = offsets.get(f"{side}_lid", 0.0)
        doc["eyes"][side] = {
            "inner": [x - np.sign(x - 200) * 20, 100.0],
            "outer": [x + np.sign(x - 200) * 20, 100.0],
            "top": [x, 92.0 - lid],
            "bottom": [x, 108.0],
        }
        doc["brows"][side] = {"middle": [x, 70.0 + offsets.get(f"{side}_brow", 0.0)]}
        doc["mouth"][f"{side}_corner"] = [
            200 + np.sign(x - 200) * (45 + offsets.get(f"{side}_out", 0.0)),
            210.0 + offsets.get(f"{side}_corner", 0.0),
        ]
    return doc


def rotated(doc: dict, degrees: float, scale: float) -> dict:
    t = np.deg2rad(degrees)
    m = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return list(m @ np.asarray(node) + [30.0, -12.0])

    return walk(doc)


def test_measures_are_in_iod_units_and_ignore_roll_and_size() -> None:
    doc = document(left_corner=8.0, left_lid=5.0, right_out=10.0)
    plain = measure_asymmetry(doc)
    assert plain["mouth_corner_y_left"] - plain["mouth_corner_y_right"] == pytest.approx(0.08)
    assert plain["eye_aperture_left"] - plain["eye_aperture_right"] == pytest.approx(0.05)
    assert plain["mouth_corner_x_right"] - plain["mouth_corner_x_left"] == pytest.approx(0.10)
    turned = measure_asymmetry(rotated(doc, 9.0, 0.37))
    for key, value in plain.items():
        assert turned[key] == pytest.approx(value, abs=1e-9), key


def test_the_rule_is_signed_toward_the_weak_side() -> None:
    drooping_left = measure_asymmetry(document(left_corner=6.0))
    assert visible_weakness(drooping_left, "left").parts == ("mouth",)
    assert visible_weakness(drooping_left, "right").parts == ()  # the strong side droops: no
    open_left = measure_asymmetry(document(left_lid=4.0))
    assert visible_weakness(open_left, "left").parts == ("eye",)
    assert visible_weakness(open_left, "right").parts == ()
    lagging = measure_asymmetry(document(left_out=-9.0))  # a corner that does not follow
    assert visible_weakness(lagging, "left").parts == ("mouth",)
    below = measure_asymmetry(document(left_corner=3.0, left_lid=2.0, left_out=-5.0))
    assert visible_weakness(below, "left").parts == ()
    with pytest.raises(ValueError, match="weak_side"):
        visible_weakness(below, "none")


def test_a_missing_point_is_named() -> None:
    doc = document()
    del doc["mouth"]["left_corner"]
    with pytest.raises(KeyError, match=r"mouth\.left_corner"):
        measure_asymmetry(doc)


def test_dataset_validates_with_palsy_photos_that_show_nothing(tmp_path: Path) -> None:
    from palsyseg.data.manifest import read_manifest
    from palsyseg.validate import validate_dataset

    out = tmp_path / "d"
    generate_dataset(out, SynthConfig(patients=9, seed=5, size=96))
    rows = read_manifest(out)
    hidden = [r for r in rows if r.has_palsy and not r.extras["fpp_parts"]]
    assert hidden, "expected palsy photos without visible weakness"
    assert all(r.extras["fpp_parts"] == "" for r in rows if not r.has_palsy)
    assert validate_dataset(out).ok
