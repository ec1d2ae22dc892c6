"""The synthetic dataset generator: contract, label rules, palsy semantics, determinism, safety.

Clinical semantics are measured the way a clinician reads a photo, from the landmarks and the
masks: heights are taken along the face's own midline (so head roll does not matter) and scaled
by the inter-ocular distance; "rise" is a brow's height in the brow-raise photo minus its height
in the same patient's rest photo.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from palsyseg.data.images import read_depth, read_mask, read_rgb
from palsyseg.data.manifest import ManifestRow, read_manifest, resolve_in_root
from palsyseg.data.phantom import (
    BEARD_STYLES,
    GLASSES_STYLES,
    HAIR_STYLES,
    face_geometry,
    render_face,
    sample_capture,
    sample_identity,
    sample_patient,
    side_sign,
)
from palsyseg.data.synth import SynthConfig, generate_dataset, make_patient, patient_diagnosis
from palsyseg.errors import ConfigError
from palsyseg.labels import DIAGNOSES, POSES, Label, image_half_of_side
from palsyseg.params import from_section, load_section

SIZE = 128
# Thresholds (fractions of the inter-ocular distance) between natural and clinical asymmetry.
SMILE_CORNER_ASYMMETRY = 0.02
BROW_RISE_ASYMMETRY = 0.15  # relative to the healthy brow's rise


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 patients (6 per diagnosis) × the five exam poses at 128 px."""
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate_dataset(out, SynthConfig(patients=18, seed=11, size=SIZE))
    return out


@pytest.fixture(scope="module")
def rows(dataset: Path) -> list[ManifestRow]:
    return read_manifest(dataset)


def landmarks(dataset: Path, row: ManifestRow) -> dict:
    return json.loads(resolve_in_root(dataset, row.extras["landmarks"]).read_text(encoding="utf-8"))


class FaceFrame:
    """Coordinates along the face's midline (``down``) and across it (``right`` = image right)."""

    def __init__(self, doc: dict) -> None:
        self.top = np.array(doc["midline"]["top"], float)
        bottom = np.array(doc["midline"]["bottom"], float)
        self.down = (bottom - self.top) / np.linalg.norm(bottom - self.top)
        self.right = np.array([-self.down[1], self.down[0]]) * -1  # image right when upright
        eyes = doc["eyes"]
        centres = [
            (np.array(eyes[s]["inner"]) + np.array(eyes[s]["outer"])) / 2 for s in ("left", "right")
        ]
        self.iod = float(np.linalg.norm(centres[0] - centres[1]))

    def height(self, point) -> float:
        """Height above the midline's top point, in inter-ocular distances (up is positive)."""
        return float(-(np.asarray(point, float) - self.top) @ self.down) / self.iod

    def across(self, xy: np.ndarray) -> np.ndarray:
        """Signed pixel distance of pixel coordinates (N×2, x y) from the midline, image right > 0."""
        return (xy - self.top) @ self.right


def brow_height(doc: dict, side: str) -> float:
    frame = FaceFrame(doc)
    brow = doc["brows"][side]
    eye = doc["eyes"][side]
    eye_centre = (np.array(eye["inner"]) + np.array(eye["outer"])) / 2
    return np.mean([frame.height(brow[k]) for k in ("inner", "middle", "outer")]) - frame.height(
        eye_centre
    )


def corner_drop(doc: dict, side: str, other: str) -> float:
    """How much lower ``side``'s mouth corner sits than ``other``'s (inter-ocular distances)."""
    frame = FaceFrame(doc)
    mouth = doc["mouth"]
    return frame.height(mouth[f"{other}_corner"]) - frame.height(mouth[f"{side}_corner"])


def by_patient(rows: list[ManifestRow]) -> dict[str, dict[str, ManifestRow]]:
    out: dict[str, dict[str, ManifestRow]] = {}
    for row in rows:
        out.setdefault(row.patient_id, {})[row.pose] = row
    return out


def healthy_side(side: str) -> str:
    return "right" if side == "left" else "left"


# ---- contract and label rules ------------------------------------------------------------------


def test_manifest_follows_the_contract(dataset: Path, rows: list[ManifestRow]) -> None:
    assert len(rows) == 18 * 5
    patients = {r.patient_id: r.diagnosis for r in rows}
    assert sorted(patients.values()).count("healthy") == 6
    assert sorted(patients.values()).count("stroke") == 6
    for row in rows:
        assert row.pose in POSES
        assert row.depth and row.extras.get("landmarks")
        assert row.beard is not None and row.glasses is not None and row.skin_tone in range(1, 7)
        assert (row.diagnosis == "healthy") == (row.affected_side == "none") == (row.grade == 1)
    for pid in patients:
        assert sorted(r.pose for r in rows if r.patient_id == pid) == sorted(POSES)


def test_files_obey_the_label_rules(dataset: Path, rows: list[ManifestRow]) -> None:
    for row in rows:
        image = read_rgb(resolve_in_root(dataset, row.image))
        mask = read_mask(resolve_in_root(dataset, row.mask))
        depth = read_depth(resolve_in_root(dataset, row.depth))
        assert image.shape == (SIZE, SIZE, 3)
        assert mask.shape == depth.shape == (SIZE, SIZE)
        assert mask.max() <= Label.FPP
        assert {Label.SKIN, Label.HAIR, Label.EYEBROW, Label.MOUTH} <= set(np.unique(mask))
        # Depth exists exactly on the labelled head, and the nose tip is nearer than the ears.
        assert np.array_equal(depth > 0, mask > 0)
        assert 0 < depth[mask > 0].min() < 0.05 and depth.max() <= 1.0
        doc = landmarks(dataset, row)
        nose = np.rint(doc["nose_tip"]).astype(int)
        assert depth[nose[1], nose[0]] < np.median(depth[mask == Label.SKIN])


def test_depth_png_is_16_bit(dataset: Path, rows: list[ManifestRow]) -> None:
    import cv2

    raw = cv2.imread(str(resolve_in_root(dataset, rows[0].depth)), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.ndim == 2


def test_fpp_marks_the_affected_half_of_exactly_the_visible_parts(
    dataset: Path, rows: list[ManifestRow]
) -> None:
    shown = 0
    for row in rows:
        mask = read_mask(resolve_in_root(dataset, row.mask))
        fpp = np.argwhere(mask == Label.FPP)[:, ::-1].astype(float)
        parts = set(filter(None, row.extras["fpp_parts"].split("+")))
        if row.diagnosis == "healthy":
            assert fpp.size == 0 and not parts, row.image
            continue
        doc = landmarks(dataset, row)
        assert set(doc["fpp"]["parts"]) == parts, row.image  # JSON and manifest agree
        assert (fpp.size > 0) == bool(parts), f"{row.image}: FPP pixels vs parts {parts}"
        if not parts:
            continue
        shown += 1
        frame = FaceFrame(doc)
        toward = 1 if image_half_of_side(row.affected_side) == "right" else -1
        # Every FPP pixel is on the affected half (one pixel of warp tolerance) ...
        assert (frame.across(fpp) * toward > -1.0).all(), row.image
        # ... a visible part keeps no pixel of its own label there ...
        for part, label in (("eye", Label.EYE), ("mouth", Label.MOUTH)):
            plain = np.argwhere(mask == label)[:, ::-1].astype(float)
            on_side = frame.across(plain) * toward >= 1.0
            if part in parts:
                assert not on_side.any(), f"{row.image}: {part} partly unmarked"
        # ... and FPP lies only where a visible part is: between the brows and the chin for the
        # eye, below the nose for the mouth.
        heights = np.array([frame.height(p) for p in fpp])
        nose = frame.height(doc["nose_tip"])
        if parts == {"eye"}:
            assert (heights > nose).all(), row.image
        if parts == {"mouth"}:
            assert (heights < nose).all(), row.image
    assert shown > 0


def test_the_patients_left_is_on_the_images_right() -> None:
    assert side_sign("left") == 1 and side_sign("right") == -1


# ---- clinical semantics -------------------------------------------------------------------------


def test_bells_palsy_brow_does_not_rise_on_the_affected_side(
    dataset: Path, rows: list[ManifestRow]
) -> None:
    checked = 0
    for poses in by_patient(rows).values():
        rest, raise_ = poses["rest"], poses["brow_raise"]
        if rest.diagnosis != "bells_palsy":
            continue
        side, other = rest.affected_side, healthy_side(rest.affected_side)
        a, b = landmarks(dataset, rest), landmarks(dataset, raise_)
        affected = brow_height(b, side) - brow_height(a, side)
        healthy = brow_height(b, other) - brow_height(a, other)
        assert healthy > 0.08, raise_.image
        assert affected < (1 - BROW_RISE_ASYMMETRY) * healthy, raise_.image
        if rest.grade >= 4:
            assert affected < 0.5 * healthy, raise_.image
        checked += 1
    assert checked == 6


def test_stroke_spares_the_forehead(dataset: Path, rows: list[ManifestRow]) -> None:
    checked = 0
    for poses in by_patient(rows).values():
        rest, raise_ = poses["rest"], poses["brow_raise"]
        if rest.diagnosis not in ("stroke", "healthy"):
            continue
        a, b = landmarks(dataset, rest), landmarks(dataset, raise_)
        left = brow_height(b, "left") - brow_height(a, "left")
        right = brow_height(b, "right") - brow_height(a, "right")
        assert min(left, right) > 0.08
        assert abs(left - right) < 0.5 * BROW_RISE_ASYMMETRY * max(left, right), raise_.image
        checked += 1
    assert checked == 12


def eye_pixels(mask: np.ndarray, doc: dict, side: str) -> int:
    """Eye (or FPP) pixels within reach of that eye's corners."""
    eye = doc["eyes"][side]
    centre = (np.array(eye["inner"]) + np.array(eye["outer"])) / 2
    reach = 0.8 * np.linalg.norm(np.array(eye["inner"]) - np.array(eye["outer"]))
    yx = np.argwhere(np.isin(mask, (Label.EYE, Label.FPP)))
    return int((np.linalg.norm(yx[:, ::-1] - centre, axis=1) < reach).sum())


def test_bells_palsy_eye_does_not_close(dataset: Path, rows: list[ManifestRow]) -> None:
    checked = 0
    for row in rows:
        if row.pose != "eye_closure":
            continue
        mask = read_mask(resolve_in_root(dataset, row.mask))
        doc = landmarks(dataset, row)
        if row.diagnosis == "bells_palsy":
            side = row.affected_side
            assert eye_pixels(mask, doc, side) > eye_pixels(mask, doc, healthy_side(side)), (
                row.image
            )
            checked += 1
        else:  # healthy and stroke faces close both eyes
            assert eye_pixels(mask, doc, "left") == eye_pixels(mask, doc, "right") == 0, row.image
    assert checked == 6


def test_smile_droops_on_the_affected_side_only(dataset: Path, rows: list[ManifestRow]) -> None:
    for row in rows:
        if row.pose != "smile":
            continue
        doc = landmarks(dataset, row)
        if row.diagnosis == "healthy":
            assert abs(corner_drop(doc, "left", "right")) < SMILE_CORNER_ASYMMETRY, row.image
        else:
            side = row.affected_side
            drop = corner_drop(doc, side, healthy_side(side))
            assert drop > SMILE_CORNER_ASYMMETRY, row.image


def test_smile_asymmetry_grows_with_grade() -> None:
    for diagnosis in ("bells_palsy", "stroke"):
        for seed in range(3):
            base = sample_patient(np.random.default_rng(seed), "p", diagnosis)
            capture = sample_capture(np.random.default_rng(100 + seed))
            drops = []
            for grade in range(2, 7):
                patient = dataclasses.replace(base, grade=grade, severity_jitter=0.0)
                doc = render_face(patient, "smile", capture, SIZE).landmarks
                side = patient.affected_side
                drops.append(corner_drop(doc, side, healthy_side(side)))
            assert all(b > a for a, b in itertools.pairwise(drops)), (diagnosis, drops)


def test_total_paralysis_does_not_move_at_all() -> None:
    base = sample_patient(np.random.default_rng(3), "p", "bells_palsy")
    patient = dataclasses.replace(base, grade=6, severity_jitter=0.0)
    sign = side_sign(patient.affected_side)
    rest = face_geometry(patient, "rest").halves[sign]
    for pose in ("smile", "brow_raise"):
        moved = face_geometry(patient, pose).halves[sign]
        assert np.allclose(moved.brow, rest.brow) and np.allclose(moved.corner, rest.corner), pose


def test_healthy_faces_stay_below_the_clinical_thresholds(
    dataset: Path, rows: list[ManifestRow]
) -> None:
    for poses in by_patient(rows).values():
        if poses["rest"].diagnosis != "healthy":
            continue
        a, b = landmarks(dataset, poses["rest"]), landmarks(dataset, poses["brow_raise"])
        left = brow_height(b, "left") - brow_height(a, "left")
        right = brow_height(b, "right") - brow_height(a, "right")
        assert abs(left - right) < 0.5 * BROW_RISE_ASYMMETRY * max(left, right)
        for pose in POSES:
            doc = landmarks(dataset, poses[pose])
            assert abs(corner_drop(doc, "left", "right")) < SMILE_CORNER_ASYMMETRY, pose


# ---- determinism, configuration, safety ---------------------------------------------------------


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    config = SynthConfig(patients=3, seed=5, size=96, images_per_patient=2)
    generate_dataset(tmp_path / "a", config)
    generate_dataset(tmp_path / "b", config)
    generate_dataset(tmp_path / "c", dataclasses.replace(config, seed=6))
    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert a == b
    images_a = [v for k, v in sorted(a.items()) if k.startswith("images/")]
    images_c = [v for k, v in sorted(c.items()) if k.startswith("images/")]
    assert len(images_a) == len(images_c) == 6
    assert all(x != y for x, y in zip(images_a, images_c, strict=True))


def test_files_do_not_depend_on_opencvs_cpu_specific_code_paths(tmp_path: Path) -> None:
    """The pinned default dataset must reproduce on any CPU: OpenCV's optimized (dispatched,
    CPU-specific) paths on or off outside the generator, the files are the same, and the
    caller's setting is left as it was."""
    import cv2

    config = SynthConfig(patients=3, seed=7, size=250, images_per_patient=2)
    was = cv2.useOptimized()
    try:
        cv2.setUseOptimized(True)
        generate_dataset(tmp_path / "optimized", config)
        assert cv2.useOptimized()
        cv2.setUseOptimized(False)
        generate_dataset(tmp_path / "baseline", config)
        assert not cv2.useOptimized()
    finally:
        cv2.setUseOptimized(was)
    assert tree(tmp_path / "optimized") == tree(tmp_path / "baseline")


def test_an_image_does_not_depend_on_how_many_patients_are_made(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "small", SynthConfig(patients=2, seed=9, size=96))
    generate_dataset(tmp_path / "large", SynthConfig(patients=4, seed=9, size=96))
    small, large = tree(tmp_path / "small"), tree(tmp_path / "large")
    shared = [k for k in small if k != "manifest.csv"]
    assert shared and all(small[k] == large[k] for k in shared)


def test_diagnoses_are_balanced_per_block_of_three() -> None:
    config = SynthConfig(seed=4)
    for block in range(10):
        found = {patient_diagnosis(config, 3 * block + i) for i in range(3)}
        assert found == set(DIAGNOSES)
    assert make_patient(config, 7) == make_patient(config, 7)


def test_params_yaml_section_maps_onto_the_config(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("synth:\n  patients: 4\n  seed: 3\n  size: 96\n  images_per_patient: 2\n")
    assert load_section("synth", SynthConfig, params) == SynthConfig(4, 3, 96, 2)
    repo_params = Path(__file__).resolve().parents[2] / "params.yaml"
    if repo_params.is_file():
        assert isinstance(load_section("synth", SynthConfig, repo_params), SynthConfig)
    with pytest.raises(ConfigError, match="unknown key"):
        from_section({"patients": 2, "colour": "blue"}, SynthConfig)
    with pytest.raises(ConfigError, match="size"):
        from_section({"size": 10}, SynthConfig)


def test_summary_counts_patients_and_images(tmp_path: Path) -> None:
    summary = generate_dataset(
        tmp_path / "ds", SynthConfig(patients=4, seed=2, size=64, images_per_patient=2)
    )
    data = summary.to_dict()
    assert data["total_patients"] == 4 and data["total_images"] == 8
    assert sum(data["images"].values()) == 8 and set(data["patients"]) <= set(DIAGNOSES)
    assert summary.table().row_count == 4
    rows = read_manifest(tmp_path / "ds")
    for diagnosis in DIAGNOSES:
        showing = sum(r.diagnosis == diagnosis and bool(r.extras["fpp_parts"]) for r in rows)
        assert data["images_showing_palsy"].get(diagnosis, 0) == showing


def test_cli_writes_a_valid_dataset(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "ds"
    result = cli("data", "synth", "--out", out, "--patients", 3, "--size", 96, "--seed", 5)
    assert result.code == 0, result.stderr
    assert "bells_palsy" in result.stdout
    assert len(read_manifest(out)) == 15


def test_cli_refuses_a_non_empty_output_without_force(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("data", "synth", "--out", out, "--patients", 1, "--size", 64)
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(out) in lines[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    forced = cli("data", "synth", "--out", out, "--patients", 1, "--size", 64, "--force")
    assert forced.code == 0 and not (out / "keep.txt").exists()


def test_a_failure_mid_generation_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import palsyseg.data.synth as synth

    real, calls = synth._encode, []

    def failing(*args):  # type: ignore[no-untyped-def]
        calls.append(args[0])
        if len(calls) > 9:
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(synth, "_encode", failing)
    with pytest.raises(OSError, match="disk full"):
        generate_dataset(tmp_path / "ds", SynthConfig(patients=3, size=64))
    assert list(tmp_path.iterdir()) == []


def test_identities_cover_every_look() -> None:
    rng = np.random.default_rng(0)
    people = [sample_identity(rng) for _ in range(400)]
    assert {p.hair_style for p in people} == set(HAIR_STYLES)
    assert {p.beard for p in people} == set(BEARD_STYLES)
    assert {p.glasses for p in people} == set(GLASSES_STYLES)
    assert {p.skin_tone for p in people} == set(range(1, 7))
    assert min(p.age for p in people) < 0.15 < 0.85 < max(p.age for p in people)
