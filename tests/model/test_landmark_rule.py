"""The landmark-rule baseline: the 68-point mapping, the mouth-corner rule, and its metrics on
generated faces with dlib run for real."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from palsyseg.data.face_points import FacePointDetector
from palsyseg.data.images import read_mask
from palsyseg.data.manifest import read_manifest, resolve_in_root
from palsyseg.data.synth import SynthConfig, generate_dataset
from palsyseg.data.torch_dataset import shows_palsy
from palsyseg.errors import ConfigError
from palsyseg.landmark_rule import (
    LandmarkRule,
    finding_from_68,
    landmarks_document_from_68,
    weakness_evidence,
)
from palsyseg.metrics import image_level_metrics, patient_level_metrics
from palsyseg.visibility import measure_asymmetry

COUNTS = ("num_images", "num_palsy", "patient_num_patients", "patient_num_palsy")

# Image-left points of a frontal face (the patient's right) and their iBUG mirror partners.
_IMAGE_LEFT = {
    17: (70.0, 80.0),
    19: (90.0, 72.0),
    21: (112.0, 78.0),
    36: (78.0, 100.0),
    37: (88.0, 95.0),
    38: (100.0, 95.0),
    39: (110.0, 100.0),
    40: (100.0, 105.0),
    41: (88.0, 105.0),
    48: (95.0, 170.0),
}
_MIRROR = {17: 26, 19: 24, 21: 22, 36: 45, 37: 44, 38: 43, 39: 42, 40: 47, 41: 46, 48: 54}


def symmetric_points68(width: float = 250.0) -> np.ndarray:
    """68 iBUG points of a face mirror-symmetric about the photo's vertical midline."""
    points = np.tile([width / 2, 140.0], (68, 1))
    for index, (x, y) in _IMAGE_LEFT.items():
        points[index] = (x, y)
        points[_MIRROR[index]] = (width - x, y)
    points[51], points[57] = (width / 2, 162.0), (width / 2, 180.0)
    return points


def test_document_puts_the_patients_left_on_the_image_right_of_astronaut() -> None:
    points = FacePointDetector().detect(skdata.astronaut(), source="astronaut").landmarks68
    document = landmarks_document_from_68(points)
    eyes, brows, mouth = document["eyes"], document["brows"], document["mouth"]
    for part in ("inner", "outer"):
        assert eyes["left"][part][0] > eyes["right"][part][0]
    assert brows["left"]["middle"][0] > brows["right"]["middle"][0]
    assert mouth["left_corner"][0] > mouth["right_corner"][0]
    assert eyes["right"]["outer"] == pytest.approx(points[36])
    assert eyes["left"]["top"] == pytest.approx(points[[43, 44]].mean(axis=0))
    assert document["nose_tip"] == pytest.approx(points[30])
    measures = measure_asymmetry(document)
    assert measures and all(math.isfinite(v) for v in measures.values())


def test_document_refuses_a_point_set_that_is_not_68_points() -> None:
    with pytest.raises(ValueError, match="68"):
        landmarks_document_from_68(np.zeros((5, 2)))
    broken = symmetric_points68()
    broken[54] = np.nan
    with pytest.raises(ValueError, match="finite"):
        landmarks_document_from_68(broken)


@pytest.mark.parametrize(("corner", "side"), [(54, "left"), (48, "right")])
def test_a_lowered_mouth_corner_names_its_side(corner: int, side: str) -> None:
    symmetric = symmetric_points68()
    drooping = symmetric.copy()
    drooping[corner, 1] += 6.0  # image y points down: this corner sits lower
    score, found_side = finding_from_68(drooping)
    assert found_side == side
    assert score > finding_from_68(symmetric)[0]
    evidence = weakness_evidence(measure_asymmetry(landmarks_document_from_68(drooping)))
    other = "right" if side == "left" else "left"
    assert evidence[side]["mouth_corner_drop"] == pytest.approx(score)
    assert evidence[other]["mouth_corner_drop"] == pytest.approx(-score)
    assert evidence[side]["eye_aperture_excess"] == pytest.approx(0.0)


def test_no_face_scores_zero_with_no_side() -> None:
    assert finding_from_68(None) == (0.0, "none")


@pytest.fixture(scope="module")
def val_test(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two generated datasets of 9 patients each at the native 250 px (different seeds, so
    different people): validation and test."""
    root = tmp_path_factory.mktemp("landmark-rule")
    generate_dataset(root / "val", SynthConfig(patients=9, seed=7, size=250))
    generate_dataset(root / "test", SynthConfig(patients=9, seed=8, size=250))
    return root / "val", root / "test"


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_rule_finds_the_side_of_severe_palsy_better_than_chance(
    val_test: tuple[Path, Path],
) -> None:
    hits, total = 0, 0
    for root in val_test:
        rows = read_manifest(root)
        for (_, side), row in zip(LandmarkRule().findings(root), rows, strict=True):
            severe = (row.grade or 0) >= 5 and row.pose in ("smile", "rest")
            if severe and shows_palsy(read_mask(resolve_in_root(root, row.mask))):
                total += 1
                hits += side == row.affected_side
    assert total >= 4
    assert hits / total > 0.5, f"{hits}/{total}"


def test_evaluate_reports_the_networks_metrics_and_leaves_the_data_alone(
    val_test: tuple[Path, Path],
) -> None:
    val, test = val_test
    before = [tree_digest(root) for root in val_test]
    metrics = LandmarkRule.evaluate(val, test)
    assert [tree_digest(root) for root in val_test] == before

    expected = set(image_level_metrics([], [], [], [], 0.0))
    expected |= set(patient_level_metrics([], [], [], [], [], 0.0))
    assert set(metrics) == expected | {"faces_found", "threshold"}
    assert metrics["num_images"] == len(read_manifest(test))
    for key, value in metrics.items():
        if key not in (*COUNTS, "threshold"):
            assert math.isnan(value) or 0.0 <= value <= 1.0, key
    assert metrics["faces_found"] > 0.8
    assert metrics["threshold"] == LandmarkRule.fit(val).threshold >= 0.0


def test_a_cache_inside_the_dataset_is_refused(val_test: tuple[Path, Path]) -> None:
    val, _ = val_test
    with pytest.raises(ConfigError, match="inside the dataset"):
        LandmarkRule().findings(val, cache_dir=val / "cache")
    assert not (val / "cache").exists()
