"""Training, validation and evaluation in the canonical face frame; the phantom stream."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from palsyseg.align import FaceFrame
from palsyseg.data.augment import AugmentConfig, TrainAugmentation
from palsyseg.data.face_points import points_for_row
from palsyseg.data.manifest import read_manifest, write_manifest
from palsyseg.data.stream import STREAM_OFFSET, PhantomStream, StreamConfig
from palsyseg.data.synth import SynthConfig, generate_dataset, make_patient
from palsyseg.data.torch_dataset import SegmentationDataset
from palsyseg.labels import SIDES, Label, image_half_of_side
from palsyseg.visibility import VISIBILITY_MEASURES

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("frame") / "d"
    generate_dataset(out, SynthConfig(patients=6, seed=4, size=128))
    return out


def eye_centroids(mask: np.ndarray, half: int) -> list[np.ndarray]:
    """Centroids of eye pixels (eye or FPP above the mouth) left and right of column ``half``."""
    ys, xs = np.nonzero(np.isin(mask, (Label.EYE, Label.FPP)))
    upper = ys < 0.6 * mask.shape[0]
    ys, xs = ys[upper], xs[upper]
    return [np.array([xs[side].mean(), ys[side].mean()]) for side in (xs < half, xs > half)]


def test_items_sit_in_the_face_frame(phantoms: Path) -> None:
    size = 64
    frame = FaceFrame(size=size)
    dataset = SegmentationDataset(phantoms, image_size=size)
    assert dataset.frame == frame
    checked = 0
    for index in range(len(dataset)):
        mask = dataset[index]["mask"].numpy()
        if dataset.rows[index].pose == "eye_closure":
            continue  # closed healthy eyes have no eye pixels
        left, right = eye_centroids(mask, size // 2)
        centre = (size - 1) / 2
        half_iod = frame.iod * size / 2
        # The eyes land where the frame puts them: level, iod apart, at eye_y, about the midline.
        for got, x in ((left, centre - half_iod), (right, centre + half_iod)):
            assert abs(got[0] - x) < 2.0 and abs(got[1] - frame.eye_y * size) < 2.5, index
        checked += 1
    assert checked >= 20


def test_a_flip_mirrors_the_face_about_its_midline_and_swaps_the_sides(phantoms: Path) -> None:
    flip_only = AugmentConfig(
        flip_p=1.0, affine_p=0.0, color_p=0.0, gamma_p=0.0, noise_p=0.0, blur_p=0.0
    )
    plain = SegmentationDataset(phantoms, image_size=64)
    flipped = SegmentationDataset(
        phantoms, image_size=64, augment=TrainAugmentation(flip_only), seed=3
    )
    swapped = 0
    for index in range(len(plain)):
        a, b = plain[index], flipped[index]
        assert torch.equal(b["mask"], a["mask"].flip(-1))
        assert b["palsy"] == a["palsy"]
        side_a, side_b = SIDES[int(a["visible_side"])], SIDES[int(b["visible_side"])]
        assert {side_a, side_b} in ({"none"}, {"left", "right"})
        if side_a != "none":
            # FPP lies on the image half of the (new) visible side, about the frame's midline
            # (within 2 px: the generator splits at its own midline line, which yaw moves a
            # little against the eye midpoint that fixes the frame).
            cols = np.nonzero(b["mask"].numpy() == Label.FPP)[1] - 31.5
            toward = 1 if image_half_of_side(side_b) == "right" else -1
            assert (cols * toward > -2).all(), index
            swapped += 1
    assert swapped > 0


def test_the_image_level_truth_is_what_the_photo_shows(phantoms: Path) -> None:
    dataset = SegmentationDataset(phantoms, image_size=64)
    hidden = 0
    for index, row in enumerate(dataset.rows):
        item = dataset[index]
        shows = bool(row.extras["fpp_parts"])
        assert bool(item["palsy"]) == shows == bool((item["mask"] == Label.FPP).any())
        assert SIDES[int(item["visible_side"])] == (row.affected_side if shows else "none")
        assert SIDES[int(item["affected_side"])] == row.affected_side
        hidden += row.has_palsy and not shows
    assert hidden > 0  # palsy patients' photos that show nothing are negatives here


def test_a_manifest_without_the_new_columns_still_loads(phantoms: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(phantoms, old)
    rows = [
        dataclasses.replace(
            row,
            extras={
                k: v
                for k, v in row.extras.items()
                if k != "fpp_parts" and k not in VISIBILITY_MEASURES
            },
        )
        for row in read_manifest(old)
    ]
    write_manifest(old, rows)
    assert "fpp_parts" not in (old / "manifest.csv").read_text().splitlines()[0]
    dataset = SegmentationDataset(old, image_size=64)
    assert dataset[0]["image"].shape == (3, 64, 64)


@pytest.fixture(scope="module")
def no_landmarks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Phantom photos at 250 px (dlib's HOG needs ~80 px faces) without a landmarks column."""
    root = tmp_path_factory.mktemp("nolm")
    generate_dataset(root / "with", SynthConfig(patients=3, seed=6, size=250, images_per_patient=2))
    import shutil

    shutil.copytree(root / "with", root / "without")
    shutil.rmtree(root / "without" / "landmarks")
    rows = read_manifest(root / "without")
    write_manifest(
        root / "without",
        [
            dataclasses.replace(
                row, extras={k: v for k, v in row.extras.items() if k != "landmarks"}
            )
            for row in rows
        ],
    )
    return root / "with", root / "without"


def test_a_dataset_without_landmarks_is_framed_by_dlib_and_trains_and_evaluates(
    no_landmarks: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from palsyseg.evaluate import evaluate_models
    from palsyseg.train import TrainConfig, train_model

    cache = tmp_path / "cache"
    monkeypatch.setenv("PALSYSEG_CACHE_DIR", str(cache))
    with_lm, without = no_landmarks
    dataset = SegmentationDataset(without, image_size=64)
    found = [p for p in dataset.points if p is not None]
    assert len(found) >= 5  # dlib finds (nearly) every phantom face
    assert len(list((cache / "points").glob("*.json"))) == len(dataset)  # once per image
    for row, points in zip(dataset.rows, dataset.points, strict=True):
        if points is None:
            continue
        truth = points_for_row(with_lm, row)
        error = np.abs(points.as_array()[:2] - truth.as_array()[:2]).max()
        assert error < 0.25 * truth.inter_ocular(), row.image

    result = train_model(
        without,
        without,
        tmp_path / "run",
        TrainConfig(model="palsynet", epochs=1, batch_size=3, image_size=64, device="cpu"),
    )
    report = evaluate_models(without, {"palsynet": result.best_checkpoint}, candidate="palsynet")
    assert report.models["palsynet"].confusion.sum() == 6 * 250 * 250  # the photos' own pixels


def test_the_stream_is_deterministic_fresh_per_epoch_and_held_out() -> None:
    config = StreamConfig(patients_per_epoch=3, seed=4)
    stream = PhantomStream(config, image_size=64, augment=TrainAugmentation(), seed=1)
    again = PhantomStream(config, image_size=64, augment=TrainAugmentation(), seed=1)
    assert len(stream) == 15
    first = stream[7]
    assert torch.equal(first["image"], again[7]["image"])
    assert torch.equal(first["mask"], again[7]["mask"])
    assert first["image"].shape == (3, 64, 64) and first["mask"].shape == (64, 64)
    ids = {stream[i]["patient_id"] for i in range(0, 15, 5)}
    stream.set_epoch(1)
    later = {stream[i]["patient_id"] for i in range(0, 15, 5)}
    assert len(ids) == 3 and not ids & later  # no face is seen twice
    # Never a face of a written dataset with the same seed: indices start far above them.
    assert stream.patient_index(0) >= STREAM_OFFSET
    written = make_patient(SynthConfig(patients=3, seed=4), 0)
    streamed = make_patient(SynthConfig(patients=3, seed=4), stream.patient_index(0))
    assert written.identity != streamed.identity
    # The image-level truth is read before the jitter: FPP in an item means it shows palsy.
    for i in range(15):
        item = stream[i]
        if (item["mask"] == Label.FPP).any():
            assert item["palsy"] == 1 and SIDES[int(item["visible_side"])] != "none"
    with pytest.raises(IndexError):
        stream[15]


def test_stream_repeats_keep_patients_for_a_group_of_epochs_rendered_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = StreamConfig(patients_per_epoch=2, seed=4, images_per_patient=2, repeats=2)
    stream = PhantomStream(config, image_size=48, augment=TrainAugmentation(), seed=1)
    plain = PhantomStream(
        StreamConfig(patients_per_epoch=2, seed=4, images_per_patient=2),
        image_size=48,
        augment=TrainAugmentation(),
        seed=1,
    )
    renders: list[int] = []
    original = PhantomStream._render

    def counting(self: PhantomStream, index: int) -> object:
        renders.append(index)
        return original(self, index)

    monkeypatch.setattr(PhantomStream, "_render", counting)
    first = [stream[i] for i in range(4)]
    assert torch.equal(first[1]["image"], plain[1]["image"])  # epoch 0 is the plain stream's
    renders.clear()
    stream.set_epoch(1)
    second = [stream[i] for i in range(4)]
    assert renders == []  # epoch 1 reuses epoch 0's renderings...
    assert [a["patient_id"] for a in first] == [b["patient_id"] for b in second]
    assert any(
        not torch.equal(a["image"], b["image"]) for a, b in zip(first, second, strict=True)
    )  # ...re-augmented
    stream.set_epoch(2)
    third = stream[0]
    assert renders == [0] and third["patient_id"] != first[0]["patient_id"]  # a new group
    with pytest.raises(ValueError, match="repeats"):
        StreamConfig(repeats=0)


def test_train_model_trains_on_the_stream(phantoms: Path, tmp_path: Path) -> None:
    from palsyseg.train import TrainConfig, load_checkpoint_model, train_model

    config = TrainConfig(
        model="palsynet",
        epochs=2,
        batch_size=5,
        image_size=64,
        device="cpu",
        stream_patients=2,
    )
    result = train_model(tmp_path / "unused", phantoms, tmp_path / "run", config)
    assert [entry["epoch"] for entry in result.history] == [1, 2]
    _, meta = load_checkpoint_model(result.best_checkpoint)
    assert meta["frame"] == FaceFrame(size=64).to_dict()
    assert meta["train_config"]["stream_patients"] == 2
    with pytest.raises(ValueError, match="face_frame"):
        dataclasses.replace(config, face_frame=False)
