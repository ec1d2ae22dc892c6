"""``palsyseg predict`` end to end on real photos: findings, files, and per-photo errors.

The network is untrained (``tiny_checkpoint``): these tests hold the path from a photo to a
finding — dlib's face, the frame, the mask mapped back at the photo's size, the overlay, the
JSON of ``../shared/CONTRACT.md``, one error line per failing photo — not its quality.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

from palsyseg.labels import LABEL_NAMES

CONTRACT_KEYS = {"image", "face", "palsy", "measures", "areas", "model", "warnings", "notice"}


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _read(path: Path, flags: int) -> np.ndarray:
    import cv2

    array = cv2.imread(str(path), flags)
    assert array is not None, path
    return array


def test_astronaut_gets_a_well_formed_finding_mask_and_overlay(
    cli, photos, tiny_checkpoint, tmp_path: Path
) -> None:
    import cv2

    out = tmp_path / "out"
    result = cli("predict", photos["astronaut"], "--model", tiny_checkpoint, "--json", "--out", out)
    assert result.code == 0, result.stderr
    [finding] = _lines(result.stdout)
    assert set(finding) >= CONTRACT_KEYS
    assert finding["image"] == str(photos["astronaut"])
    assert finding["size"] == [512, 512]

    # dlib finds Eileen Collins' face (x ≈ 180–270, y ≈ 80–175), not the suit's false face.
    x, y, w, h = finding["face"]["box"]
    assert 150 < x + w / 2 < 300 and 80 < y + h / 2 < 180, finding["face"]["box"]
    points = finding["face"]["points"]
    assert set(points) == {"left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right"}
    # Sides are the patient's: their left eye is on the image's right.
    assert points["left_eye"][0] > points["right_eye"][0]
    assert points["mouth_left"][0] > points["mouth_right"][0]
    assert any("faces found" in w for w in finding["warnings"])

    palsy = finding["palsy"]
    assert isinstance(palsy["present"], bool)
    assert 0.0 <= palsy["probability"] <= 1.0
    assert palsy["affected_side"] in ("left", "right", "none")
    assert (palsy["affected_side"] == "none") == (not palsy["present"])
    assert set(palsy["parts"]) <= {"eye", "mouth"}
    assert palsy["present"] == (palsy["fpp_fraction"] > palsy["threshold"])
    assert palsy["threshold"] == 0.01  # the checkpoint's, not a default

    measures = finding["measures"]
    for key in ("mouth_corner_drop", "eye_opening_ratio", "brow_height_diff"):
        assert isinstance(measures[key], float), key  # dlib's 68 points always give all three
        assert key in measures["from_mask"]
    assert abs(measures["mouth_corner_drop"]) < 0.2  # a healthy face, in IOD units
    assert 0.5 < measures["eye_opening_ratio"] < 2.0
    assert measures["reference_side"] in ("left", "right")

    assert set(finding["areas"]) == set(LABEL_NAMES[1:])
    assert 0 < sum(finding["areas"].values()) <= 1.0
    model = finding["model"]
    assert model["uri"] == str(tiny_checkpoint) and model["architecture"] == "palsynet"
    assert model["frame"] == {"size": 64, "iod": 0.25, "eye_y": 0.42}
    assert model["normalisation"]["mean"] == [0.485, 0.456, 0.406]
    assert "not a medical device" in finding["notice"]

    mask = _read(out / "astronaut_mask.png", cv2.IMREAD_UNCHANGED)
    assert mask.shape == (512, 512) and mask.dtype == np.uint8
    assert mask.max() <= 6 and (mask > 0).any()
    assert (mask[400:] == 0).all()  # the suit below the face frame's crop is background
    areas = {n: round(float((mask == i).mean()), 4) for i, n in enumerate(LABEL_NAMES) if i}
    assert areas == finding["areas"]
    overlay = _read(out / "astronaut_overlay.png", cv2.IMREAD_COLOR)
    assert overlay.shape[1] == 512 and overlay.shape[0] > 512  # the photo, then the legend
    assert finding["outputs"]["mask"] == str(out / "astronaut_mask.png")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width``×``height`` (the data is a stub): a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def test_each_failing_photo_is_one_error_line_and_the_others_still_get_outputs(
    cli, photos, tiny_checkpoint, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    (folder / "nested" / "astronaut.jpg").write_bytes(photos["astronaut"].read_bytes())
    (folder / "notes.txt").write_text("not a photo, skipped by the folder search")
    broken = folder / "broken.jpg"
    broken.write_text("this is not a JPEG")
    bomb = _png_header_only(folder / "bomb.png", 8_000, 6_000)  # over palsyseg's 40 MP
    huge = _png_header_only(folder / "huge.png", 20_000, 20_000)  # over PIL's own limit
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"

    result = cli(
        "predict",
        folder,
        photos["coffee"],
        missing,
        "--model",
        tiny_checkpoint,
        "--json",
        "--out",
        out,
    )
    assert result.code == 1
    errors = result.stderr.strip().splitlines()
    errors = [line for line in errors if line.startswith("error:")]
    assert len(errors) == 5, result.stderr
    assert f"error: {missing}: no such file or folder" in errors
    assert any(e.startswith(f"error: {photos['coffee']}: no face found") for e in errors)
    assert any(e.startswith(f"error: {broken}: not a readable image") for e in errors)
    assert any(
        e.startswith(f"error: {bomb}: 8000×6000") and "exceeds the limit" in e for e in errors
    )
    assert (
        f"error: {huge}: refused as a decompression bomb (Image size (400000000 pixels) "
        "exceeds limit of 178956970 pixels)" in errors
    )
    [finding] = _lines(result.stdout)  # the good photo, found in the nested folder
    assert finding["image"] == str(folder / "nested" / "astronaut.jpg")
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_mask.png", "astronaut_overlay.png"]


def test_the_table_without_json_and_two_photos_of_one_name(
    cli, photos, tiny_checkpoint, tmp_path: Path
) -> None:
    other = tmp_path / "b" / "astronaut.png"
    other.parent.mkdir()
    import cv2

    cv2.imwrite(str(other), _read(photos["astronaut"], cv2.IMREAD_COLOR))
    out = tmp_path / "out"
    result = cli("predict", photos["astronaut"], other, "--model", tiny_checkpoint, "--out", out)
    assert result.code == 0, result.stderr
    assert "not a medical device" in result.stdout and "astronaut" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "astronaut-2_mask.png",
        "astronaut-2_overlay.png",
        "astronaut_mask.png",
        "astronaut_overlay.png",
    ]


def test_a_model_that_cannot_be_found_is_one_line(cli, photos, tmp_path: Path) -> None:
    result = cli("predict", photos["astronaut"], "--model", tmp_path / "nope.pt")
    assert result.code == 1
    assert (
        result.stderr.strip() == f"error: {tmp_path / 'nope.pt'}: no such checkpoint file "
        "(and not a models:/ or runs:/ URI)"
    )
    store = tmp_path / "absent.db"
    result = cli("predict", photos["astronaut"], "--tracking-uri", f"sqlite:///{store}")
    assert result.code == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and str(store) in result.stderr
    assert not store.exists()  # a mistyped store is never created
    result = cli("predict", photos["astronaut"], "--model", "models:/palsyseg")
    assert result.code == 1 and "not a model URI palsyseg reads" in result.stderr


def test_an_exam_of_phantom_photos_gives_one_patient_finding_with_its_evidence(
    cli, phantom_exam, tiny_checkpoint
) -> None:
    folder, _side = phantom_exam
    result = cli("predict", "--exam", folder, "--model", tiny_checkpoint, "--json")
    documents = _lines(result.stdout)
    exam = documents[-1]["exam"]
    photos = documents[:-1]
    assert len(photos) + len(exam["failed"]) == 5
    assert result.code == (1 if exam["failed"] else 0), result.stderr
    assert len(photos) >= 4, result.stderr  # dlib finds the phantom's face in nearly every pose
    assert [p["image"] for p in exam["photos"]] == [p["image"] for p in photos]
    poses = {p["pose"] for p in exam["photos"]}
    assert poses <= {"rest", "smile", "brow_raise", "eye_closure", "pucker"} and len(poses) >= 4

    from palsyseg.metrics import patient_finding

    palsy = exam["palsy"]
    score, side = patient_finding(
        [p["palsy"]["fpp_fraction"] for p in photos],
        [p["side"] for p in exam["photos"]],
        palsy["threshold"],
    )
    assert palsy["score"] == round(score, 4)
    assert palsy["present"] == (score > palsy["threshold"])
    assert palsy["affected_side"] == (side if palsy["present"] else "none")
    pattern = exam["pattern"]
    assert pattern["hint"] in ("peripheral", "central", "none", "undetermined")
    if palsy["present"]:
        assert [e["pose"] for e in pattern["evidence"]] == [p["pose"] for p in exam["photos"]]
        assert all("landmarks" in e["brow_height_diff"] for e in pattern["evidence"])
    assert "not a medical device" in exam["notice"]


def test_a_folder_search_skips_the_output_folder_inside_it(
    cli, photos, tiny_checkpoint, tmp_path: Path
) -> None:
    folder = tmp_path / "exam"
    folder.mkdir()
    (folder / "astronaut.jpg").write_bytes(photos["astronaut"].read_bytes())
    for _ in range(2):  # the second run must not take the first run's PNGs for photos
        result = cli(
            "predict", folder, "--model", tiny_checkpoint, "--json", "--out", folder / "out"
        )
        assert result.code == 0, result.stderr
        assert len(_lines(result.stdout)) == 1
