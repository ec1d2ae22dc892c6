"""The torch Dataset over a contract dataset: item shapes, dtypes, resizing, labels, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from palsyseg.data.augment import TrainAugmentation
from palsyseg.data.images import encode_depth, write_png
from palsyseg.data.manifest import ManifestRow, write_manifest
from palsyseg.data.torch_dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationDataset,
    model_input,
)
from palsyseg.errors import DatasetError
from palsyseg.labels import DIAGNOSES, SIDES, Label


def make_dataset(root: Path, *, height: int = 40, width: int = 48) -> Path:
    """Three rows: a healthy face without depth, a left and a right palsy with depth."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (diagnosis, side) in enumerate(
        [("healthy", "none"), ("stroke", "left"), ("bells_palsy", "right")]
    ):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        mask[5:35, 8:40] = Label.SKIN
        mask[12:16, 12:20] = Label.EYE
        mask[12:16, 28:36] = Label.FPP if side != "none" else Label.EYE
        write_png(root / f"images/{i}.png", image)
        write_png(root / f"masks/{i}.png", mask)
        depth = None
        if i > 0:
            d = np.where(mask > 0, 0.25 + 0.5 * (mask == Label.SKIN), 0.0)
            write_png(root / f"depth/{i}.png", encode_depth(d))
            depth = f"depth/{i}.png"
        rows.append(
            ManifestRow(
                image=f"images/{i}.png",
                mask=f"masks/{i}.png",
                patient_id=f"p{i}",
                diagnosis=diagnosis,
                affected_side=side,
                depth=depth,
            )
        )
    write_manifest(root, rows)
    return root


def test_item_shapes_dtypes_and_labels(tmp_path: Path) -> None:
    ds = SegmentationDataset(make_dataset(tmp_path), image_size=32)
    assert len(ds) == 3
    for index in range(3):
        item = ds[index]
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.int64
        assert item["depth"].shape == (32, 32) and item["depth"].dtype == torch.float32
        assert set(item["mask"].unique().tolist()) <= {0, 1, 4, 6}
        assert item["index"].item() == index and item["patient_id"] == f"p{index}"
    healthy, left, right = ds[0], ds[1], ds[2]
    assert healthy["palsy"].item() == 0 and left["palsy"].item() == 1
    assert healthy["affected_side"].item() == SIDES.index("none")
    assert left["affected_side"].item() == SIDES.index("left")
    assert right["affected_side"].item() == SIDES.index("right")
    assert left["diagnosis"].item() == DIAGNOSES.index("stroke")
    assert right["diagnosis"].item() == DIAGNOSES.index("bells_palsy")


def test_depth_is_zero_without_a_depth_map_and_resized_by_nearest(tmp_path: Path) -> None:
    ds = SegmentationDataset(make_dataset(tmp_path), image_size=32)
    assert torch.count_nonzero(ds[0]["depth"]) == 0
    item = ds[1]
    values = set(np.round(item["depth"].unique().numpy(), 4).tolist())
    assert values == {0.0, 0.25, 0.75}  # nearest neighbour: no blended depths
    # depth and labels came through the same resize: skin carries 0.75, eye/FPP 0.25
    skin_depth = item["depth"][item["mask"] == Label.SKIN]
    torch.testing.assert_close(skin_depth, torch.full_like(skin_depth, 0.75), atol=1e-4, rtol=0)
    other = item["depth"][item["mask"] >= Label.EYE]
    torch.testing.assert_close(other, torch.full_like(other, 0.25), atol=1e-4, rtol=0)


def test_image_is_imagenet_normalised(tmp_path: Path) -> None:
    image = np.full((20, 20, 3), (255, 0, 128), np.uint8)
    tensor = model_input(image, 16)
    assert tensor.shape == (1, 3, 16, 16)
    expected = (np.array([255, 0, 128]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(tensor[0, :, 5, 5].numpy(), expected, rtol=1e-5)


def test_native_size_is_left_alone(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, height=32, width=32)
    from palsyseg.data.images import read_mask

    ds = SegmentationDataset(root, image_size=32)
    np.testing.assert_array_equal(ds[2]["mask"].numpy(), read_mask(root / "masks/2.png"))


def test_augmented_items_depend_on_seed_epoch_and_index_only(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    ds = SegmentationDataset(root, image_size=32, augment=TrainAugmentation(), seed=3)
    serial = [ds[i] for i in range(3)]
    again = [
        SegmentationDataset(root, image_size=32, augment=TrainAugmentation(), seed=3)[i]
        for i in range(3)
    ]
    for a, b in zip(serial, again, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    # the same epoch through two DataLoader workers gives the same items
    loader = DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="fork")
    batch = next(iter(loader))
    assert torch.equal(batch["image"], torch.stack([s["image"] for s in serial]))
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["image"], serial[0]["image"])


def test_mask_with_a_label_above_six_is_refused(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    bad = np.full((40, 48), 9, np.uint8)
    write_png(root / "masks/1.png", bad)
    ds = SegmentationDataset(root, image_size=32)
    with pytest.raises(DatasetError, match=r"masks/1\.png.*label 9"):
        ds[1]


def test_mask_of_another_size_is_refused(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    write_png(root / "masks/0.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"masks/0\.png.*same size"):
        SegmentationDataset(root, image_size=32)[0]


def test_missing_manifest_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"manifest\.csv"):
        SegmentationDataset(tmp_path)
