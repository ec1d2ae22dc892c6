"""Importers: tiny fixtures in the exact public layouts → contract datasets, pixel for pixel.

Expected masks are written out by hand (ASCII art / explicit per-value tables) rather than
derived from the importer's own tables, so a wrong mapping or merge order fails here.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from palsyseg.atomic import OutputExistsError
from palsyseg.data.importers import (
    CELEBAMASK_PARTS,
    CELEBAMASK_TO_LABEL,
    FORMATS,
    LAPA_TO_LABEL,
    import_dataset,
)
from palsyseg.data.manifest import ManifestRow, read_manifest
from palsyseg.errors import ConfigError, DatasetError
from palsyseg.labels import Label

# Our labels as letters, for hand-drawn expected masks.
GLYPH = {".": 0, "s": 1, "h": 2, "b": 3, "e": 4, "m": 5}

# LaPa / HELEN* value → our label, written from the LaPa labelmap.txt by hand:
# 0 bg, 1 skin, 2 l-brow, 3 r-brow, 4 l-eye, 5 r-eye, 6 nose, 7 u-lip, 8 inner mouth, 9 l-lip, 10 hair
ELEVEN_EXPECTED = [0, 1, 3, 3, 4, 4, 1, 5, 5, 5, 2]


def art(*rows: str) -> np.ndarray:
    return np.array([[GLYPH[c] for c in row] for row in rows], dtype=np.uint8)


def write_jpg(path: Path, height: int, width: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), bgr)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def stripes(height: int, width_per_value: int, shift: int = 0) -> np.ndarray:
    """A class map with one vertical stripe per LaPa value 0..10 (rolled by ``shift`` stripes)."""
    row = np.repeat(np.arange(11, dtype=np.uint8), width_per_value)
    return np.tile(np.roll(row, shift * width_per_value), (height, 1))


def expected_stripes(height: int, width_per_value: int, shift: int = 0) -> np.ndarray:
    row = np.repeat(np.array(ELEVEN_EXPECTED, dtype=np.uint8), width_per_value)
    return np.tile(np.roll(row, shift * width_per_value), (height, 1))


# ------------------------------------------------------------------------------------------
# Fixtures in the public layouts


def make_lapa(root: Path, counts: dict[str, int] | None = None) -> Path:
    """SRC/{split}/{images,labels,landmarks}/<name>.{jpg,png,txt} with striped 24×44 labels."""
    counts = counts or {"train": 2, "val": 1, "test": 1}
    for split, n in counts.items():
        for k in range(n):
            name = f"{split}_{k:03d}_1"
            write_jpg(root / split / "images" / f"{name}.jpg", 24, 44, seed=k)
            write_png(root / split / "labels" / f"{name}.png", stripes(24, 4, shift=k))
            points = "\n".join(f"{i % 44}.5 {i % 24}.25" for i in range(106))
            (root / split / "landmarks").mkdir(parents=True, exist_ok=True)
            (root / split / "landmarks" / f"{name}.txt").write_text(f"106\n{points}\n")
    return root


def make_helen(root: Path, *, with_test: bool = True) -> Path:
    """HELEN*: train/ and test/ (original size) and test_resize/, files <name>_{image,label,viz}."""
    write_jpg(root / "train" / "100032540_1_image.jpg", 20, 33)
    write_png(root / "train" / "100032540_1_label.png", stripes(20, 3))
    write_jpg(root / "train" / "100032540_1_viz.jpg", 20, 33)
    # a label stored as 3 equal channels (read with IMREAD_GRAYSCALE in the HELEN* README)
    write_jpg(root / "train" / "2968560214_2_image.jpg", 20, 33, seed=1)
    write_png(root / "train" / "2968560214_2_label.png", np.dstack([stripes(20, 3, shift=2)] * 3))
    if with_test:
        write_jpg(root / "test" / "1629243_1_image.jpg", 20, 33, seed=2)
        write_png(root / "test" / "1629243_1_label.png", stripes(20, 3, shift=5))
    write_jpg(root / "test_resize" / "1629243_1_image.jpg", 10, 22, seed=2)
    write_png(root / "test_resize" / "1629243_1_label.png", stripes(10, 2, shift=5))
    return root


# CelebAMask-HQ scene on 16×16 masks; rectangles are rows r0:r1, cols c0:c1.
CELEBAMASK_SCENE: dict[str, tuple[int, int, int, int]] = {
    "skin": (2, 15, 2, 14),
    "nose": (9, 11, 7, 9),
    "eye_g": (6, 9, 3, 13),
    "l_eye": (7, 8, 4, 7),
    "r_eye": (7, 8, 9, 12),
    "l_brow": (5, 6, 4, 7),
    "r_brow": (5, 6, 9, 12),
    "l_ear": (7, 10, 0, 2),
    "r_ear": (7, 10, 14, 16),
    "mouth": (12, 13, 6, 10),
    "u_lip": (11, 12, 5, 11),
    "l_lip": (13, 14, 5, 11),
    "hair": (0, 5, 0, 16),
    "hat": (0, 2, 0, 8),
    "ear_r": (9, 10, 0, 1),
    "neck_l": (14, 15, 6, 10),
    "neck": (14, 16, 4, 12),
    "cloth": (15, 16, 0, 16),
}
# What the official order (later parts overwrite) gives, in our labels, drawn by hand:
CELEBAMASK_EXPECTED = art(
    "........hhhhhhhh",  # hat (background) over hair
    "........hhhhhhhh",
    "hhhhhhhhhhhhhhhh",  # hair over skin
    "hhhhhhhhhhhhhhhh",
    "hhhhhhhhhhhhhhhh",
    "..ssbbbssbbbss..",
    "..s..........s..",  # eyeglasses (background) over skin
    "sss.eee..eee.sss",  # eyes over eyeglasses; ears → skin
    "sss..........sss",
    ".sssssssssssssss",  # earring (background) over the ear; nose → skin
    "..ssssssssssss..",
    "..sssmmmmmmsss..",  # upper lip
    "..ssssmmmmssss..",  # inner mouth
    "..sssmmmmmmsss..",  # lower lip
    "..ss........ss..",  # neck and necklace over skin
    "................",  # cloth
)


def _part_png(shape: tuple[int, int], box: tuple[int, int, int, int], *, rgb: bool) -> np.ndarray:
    r0, r1, c0, c1 = box
    mask = np.zeros(shape, dtype=np.uint8)
    mask[r0:r1, c0:c1] = 255
    return np.dstack([mask] * 3) if rgb else mask


def make_celebamask(root: Path, *, metadata: bool = True) -> Path:
    """CelebA-HQ-img/<id>.jpg + CelebAMask-HQ-mask-anno/<id//2000>/<%05d>_<part>.png (+ txt files).

    Image 0 is 32×32 (twice its 16×16 masks, like 1024 vs 512) with the full scene as black/white
    RGB PNGs; image 2 (16×16) has skin+hair; image 2001 (folder 1) has skin+eye_g as grey PNGs.
    """
    quadrants = np.zeros((32, 32, 3), np.uint8)  # smooth content, so JPEG noise stays small
    quadrants[:16, 16:] = (200, 40, 40)
    quadrants[16:, :16] = (40, 200, 40)
    quadrants[16:, 16:] = (40, 40, 200)
    assert cv2.imwrite(str(write_jpg(root / "CelebA-HQ-img" / "0.jpg", 32, 32)), quadrants)
    for part, box in CELEBAMASK_SCENE.items():
        write_png(
            root / "CelebAMask-HQ-mask-anno" / "0" / f"00000_{part}.png",
            _part_png((16, 16), box, rgb=True),
        )
    write_jpg(root / "CelebA-HQ-img" / "2.jpg", 16, 16, seed=2)
    for part in ("skin", "hair"):
        write_png(
            root / "CelebAMask-HQ-mask-anno" / "0" / f"00002_{part}.png",
            _part_png((16, 16), CELEBAMASK_SCENE[part], rgb=False),
        )
    write_jpg(root / "CelebA-HQ-img" / "2001.jpg", 16, 16, seed=3)
    for part in ("skin", "eye_g"):
        write_png(
            root / "CelebAMask-HQ-mask-anno" / "1" / f"02001_{part}.png",
            _part_png((16, 16), CELEBAMASK_SCENE[part], rgb=False),
        )
    if metadata:
        (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
            "idx         orig_idx  orig_file\n"
            "0           119613    119614.jpg\n"
            "1           99094     099095.jpg\n"
            "2           200121    200122.jpg\n"
            "2001        162890    162891.jpg\n"
        )
        (root / "list_eval_partition.txt").write_text(
            "099095.jpg 0\n119614.jpg 0\n162891.jpg 1\n200122.jpg 0\n"
        )
        (root / "identity_CelebA.txt").write_text(
            "099095.jpg 7\n119614.jpg 42\n162891.jpg 7\n200122.jpg 42\n"
        )
        (root / "CelebAMask-HQ-attribute-anno.txt").write_text(
            "3\n5_o_Clock_Shadow Eyeglasses No_Beard\n"
            "0.jpg  1 -1 -1\n2.jpg -1 -1  1\n2001.jpg -1  1  1\n"
        )
    return root


def read_out_mask(root: Path, rel: str) -> np.ndarray:
    mask = cv2.imread(str(root / rel), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.ndim == 2 and mask.dtype == np.uint8
    return mask


def rows_by_image(root: Path) -> dict[str, ManifestRow]:
    return {row.image: row for row in read_manifest(root)}


# ------------------------------------------------------------------------------------------
# Label tables


def test_every_source_value_is_mapped_to_a_healthy_label() -> None:
    assert [int(LAPA_TO_LABEL[v]) for v in range(11)] == ELEVEN_EXPECTED
    assert (LAPA_TO_LABEL[11:] == 255).all(), "values beyond 10 must stay unmapped (→ error)"
    by_part = dict(
        zip(("background", *CELEBAMASK_PARTS), CELEBAMASK_TO_LABEL[:19].tolist(), strict=True)
    )
    assert by_part == {
        "background": 0, "skin": 1, "nose": 1, "eye_g": 0, "l_eye": 4, "r_eye": 4,
        "l_brow": 3, "r_brow": 3, "l_ear": 1, "r_ear": 1, "mouth": 5, "u_lip": 5,
        "l_lip": 5, "hair": 2, "hat": 0, "ear_r": 0, "neck_l": 0, "neck": 0, "cloth": 0,
    }  # fmt: skip
    assert (CELEBAMASK_TO_LABEL[19:] == 255).all()
    assert Label.FPP not in LAPA_TO_LABEL.tolist() and Label.FPP not in CELEBAMASK_TO_LABEL.tolist()


# ------------------------------------------------------------------------------------------
# LaPa


def test_lapa_imports_every_split_pixel_for_pixel(tmp_path: Path) -> None:
    src = make_lapa(tmp_path / "LaPa")
    summary = import_dataset("lapa", src, tmp_path / "out")
    out = tmp_path / "out"
    rows = read_manifest(out)
    assert summary.images_per_source == {"lapa/test": 1, "lapa/train": 2, "lapa/val": 1}
    assert sorted(r.extras["source"] for r in rows) == [
        "lapa/test",
        "lapa/train",
        "lapa/train",
        "lapa/val",
    ]
    for row in rows:
        split, name = row.extras["source"].split("/")[1], Path(row.image).stem
        k = int(name.split("_")[1])
        assert row.image == f"images/lapa/{split}/{name}.jpg"  # JPEG stays JPEG, copied
        assert (out / row.image).read_bytes() == (
            src / split / "images" / f"{name}.jpg"
        ).read_bytes()
        np.testing.assert_array_equal(
            read_out_mask(out, row.mask), expected_stripes(24, 4, shift=k)
        )
        assert (row.diagnosis, row.affected_side, row.grade) == ("healthy", "none", 1)
        assert row.patient_id == f"lapa-{name}"
    assert summary.to_dict()["images"] == 4
    assert summary.label_pixels["fpp"] == 0 and summary.label_pixels["hair"] > 0


def test_lapa_unknown_label_value_names_file_and_value_and_writes_nothing(tmp_path: Path) -> None:
    src = make_lapa(tmp_path / "LaPa")
    bad = stripes(24, 4)
    bad[3, 5] = 11
    bad[4, 6] = 200
    write_png(src / "val" / "labels" / "val_000_1.png", bad)
    with pytest.raises(DatasetError) as caught:
        import_dataset("lapa", src, tmp_path / "out")
    (line,) = caught.value.lines()
    assert "val/labels/val_000_1.png" in line and "11, 200" in line
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "staging left behind"


def test_lapa_missing_mask_size_mismatch_and_unreadable_image_one_line_each(tmp_path: Path) -> None:
    src = make_lapa(tmp_path / "LaPa", {"train": 4})
    (src / "train" / "labels" / "train_000_1.png").unlink()
    with pytest.raises(DatasetError) as caught:
        import_dataset("lapa", src, tmp_path / "out")
    (line,) = caught.value.lines()
    assert "train/images/train_000_1.jpg" in line and "no label map" in line

    write_png(src / "train" / "labels" / "train_000_1.png", stripes(24, 4))
    write_png(src / "train" / "labels" / "train_001_1.png", stripes(20, 4))  # 44×20 vs image 44×24
    (src / "train" / "images" / "train_002_1.jpg").write_bytes(b"not a jpeg at all")
    write_png(src / "train" / "labels" / "orphan.png", stripes(24, 4))
    with pytest.raises(DatasetError) as caught:
        import_dataset("lapa", src, tmp_path / "out")
    assert (
        len(caught.value.lines()) == 1 and "orphan.png" in caught.value.lines()[0]
    )  # layout first
    (src / "train" / "labels" / "orphan.png").unlink()
    with pytest.raises(DatasetError) as caught:
        import_dataset("lapa", src, tmp_path / "out")
    lines = caught.value.lines()
    assert len(lines) == 2
    assert "train_001_1.jpg" in lines[0] and "44×24" in lines[0] and "44×20" in lines[0]
    assert "train_002_1.jpg" in lines[1] and "not a readable image" in lines[1]
    assert not (tmp_path / "out").exists()


def test_lapa_label_must_be_a_lossless_grey_png(tmp_path: Path) -> None:
    src = make_lapa(tmp_path / "LaPa", {"test": 1})
    colour = np.dstack([stripes(24, 4)] * 3)
    colour[0, 0] = (0, 1, 2)
    write_png(src / "test" / "labels" / "test_000_1.png", colour)
    with pytest.raises(DatasetError, match=r"test_000_1\.png: label map is a colour image"):
        import_dataset("lapa", src, tmp_path / "out")


# ------------------------------------------------------------------------------------------
# HELEN*


def test_helen_imports_train_and_test_not_test_resize(tmp_path: Path) -> None:
    src = make_helen(tmp_path / "helenstar_release")
    summary = import_dataset("helen", src, tmp_path / "out")
    rows = rows_by_image(tmp_path / "out")
    assert summary.images_per_source == {"helen/test": 1, "helen/train": 2}
    assert set(rows) == {
        "images/helen/train/100032540_1.jpg",
        "images/helen/train/2968560214_2.jpg",
        "images/helen/test/1629243_1.jpg",
    }
    expected = {"100032540_1": 0, "2968560214_2": 2, "1629243_1": 5}
    for image, row in rows.items():
        name = Path(image).stem
        np.testing.assert_array_equal(
            read_out_mask(tmp_path / "out", row.mask), expected_stripes(20, 3, shift=expected[name])
        )
        assert row.patient_id == f"helen-{name}"


def test_helen_falls_back_to_test_resize(tmp_path: Path) -> None:
    src = make_helen(tmp_path / "helen", with_test=False)
    summary = import_dataset("helen", src, tmp_path / "out")
    assert summary.images_per_source == {"helen/test_resize": 1, "helen/train": 2}
    row = rows_by_image(tmp_path / "out")["images/helen/test_resize/1629243_1.jpg"]
    np.testing.assert_array_equal(
        read_out_mask(tmp_path / "out", row.mask), expected_stripes(10, 2, shift=5)
    )


# ------------------------------------------------------------------------------------------
# CelebAMask-HQ


def test_celebamask_merges_parts_in_official_order(tmp_path: Path) -> None:
    src = make_celebamask(tmp_path / "CelebAMask-HQ")
    summary = import_dataset("celebamask-hq", src, tmp_path / "out")
    out = tmp_path / "out"
    rows = rows_by_image(out)
    row = rows["images/celebamask-hq/train/0.jpg"]
    mask = read_out_mask(out, row.mask)
    np.testing.assert_array_equal(mask, CELEBAMASK_EXPECTED)
    # the cases where the order decides, spelled out
    assert mask[3, 3] == Label.HAIR  # hair (13) over skin (1)
    assert mask[1, 3] == Label.BACKGROUND  # hat (14) over hair (13)
    assert mask[7, 5] == Label.EYE  # l_eye (4) over eye_g (3): glasses do not hide the eye
    assert mask[6, 5] == Label.BACKGROUND  # eye_g over skin
    assert mask[14, 5] == Label.BACKGROUND  # neck (17) over skin
    assert mask[9, 0] == Label.BACKGROUND and mask[8, 0] == Label.SKIN  # earring over the ear

    # 32×32 photo downscaled to the 16×16 mask (INTER_AREA), still a JPEG
    image = cv2.imread(str(out / row.image))
    assert image.shape == (16, 16, 3)
    for (r, c), colour in {
        (0, 0): (0, 0, 0),
        (0, 8): (200, 40, 40),
        (8, 0): (40, 200, 40),
        (8, 8): (40, 40, 200),
    }.items():
        quadrant = (
            image[r + 1 : r + 7, c + 1 : c + 7].reshape(-1, 3).astype(int)
        )  # whole image, shrunk
        assert np.abs(np.median(quadrant, axis=0) - colour).max() <= 8
    assert summary.resized_images == 1
    # a photo already at the mask size is copied byte for byte
    assert (out / "images/celebamask-hq/val/2001.jpg").read_bytes() == (
        src / "CelebA-HQ-img/2001.jpg"
    ).read_bytes()


def test_celebamask_identity_split_and_attributes(tmp_path: Path) -> None:
    src = make_celebamask(tmp_path / "CelebAMask-HQ")
    summary = import_dataset("celebamask-hq", src, tmp_path / "out")
    rows = rows_by_image(tmp_path / "out")
    zero, two, other = (
        rows[f"images/celebamask-hq/{s}.jpg"] for s in ("train/0", "train/2", "val/2001")
    )
    assert zero.patient_id == two.patient_id == "celeba-42"  # same CelebA identity → one patient
    assert other.patient_id == "celeba-7" and other.extras["source"] == "celebamask-hq/val"
    assert (zero.beard, two.beard, other.beard) == (True, False, False)  # from No_Beard
    assert (zero.glasses, two.glasses, other.glasses) == (True, False, True)  # an eye_g part exists
    assert summary.patients_per_source == {"celebamask-hq/train": 1, "celebamask-hq/val": 1}
    skin_hair = read_out_mask(tmp_path / "out", two.mask)
    assert set(np.unique(skin_hair).tolist()) == {0, 1, 2}


def test_celebamask_without_celeba_files_each_image_is_a_patient(tmp_path: Path) -> None:
    src = make_celebamask(tmp_path / "CelebAMask-HQ", metadata=False)
    import_dataset("celebamask-hq", src, tmp_path / "out")
    rows = read_manifest(tmp_path / "out")
    assert sorted(r.patient_id for r in rows) == [
        "celebamask-hq-0",
        "celebamask-hq-2",
        "celebamask-hq-2001",
    ]
    assert {r.extras["source"] for r in rows} == {"celebamask-hq"}
    assert {r.beard for r in rows} == {None}


def test_celebamask_rejects_missing_parts_unknown_part_and_grey_values(tmp_path: Path) -> None:
    src = make_celebamask(tmp_path / "CelebAMask-HQ")
    write_jpg(src / "CelebA-HQ-img" / "1.jpg", 16, 16)  # in the mapping, but no part masks
    write_png(
        src / "CelebAMask-HQ-mask-anno" / "0" / "00002_beard.png", np.zeros((16, 16), np.uint8)
    )
    with pytest.raises(DatasetError) as caught:
        import_dataset("celebamask-hq", src, tmp_path / "out")
    lines = caught.value.lines()
    assert len(lines) == 2
    assert any(
        "00002_beard.png" in line and "not a CelebAMask-HQ part mask name" in line for line in lines
    )
    assert any("CelebA-HQ-img/1.jpg" in line and "no part masks" in line for line in lines)

    (src / "CelebA-HQ-img" / "1.jpg").unlink()
    (src / "CelebAMask-HQ-mask-anno" / "0" / "00002_beard.png").unlink()
    soft = _part_png((16, 16), CELEBAMASK_SCENE["hair"], rgb=False)
    soft[0, 0] = 128  # an anti-aliased edge would be silently relabelled by a "> 0" rule
    write_png(src / "CelebAMask-HQ-mask-anno" / "0" / "00002_hair.png", soft)
    write_png(src / "CelebAMask-HQ-mask-anno" / "1" / "02001_eye_g.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError) as caught:
        import_dataset("celebamask-hq", src, tmp_path / "out")
    lines = caught.value.lines()
    assert len(lines) == 2
    assert "00002_hair.png" in lines[0] and "128" in lines[0]
    assert "02001_eye_g.png" in lines[1] and "8×8" in lines[1]
    assert not (tmp_path / "out").exists()


def test_celebamask_part_in_wrong_folder_is_refused(tmp_path: Path) -> None:
    src = make_celebamask(tmp_path / "CelebAMask-HQ", metadata=False)
    (src / "CelebAMask-HQ-mask-anno" / "1" / "02001_skin.png").rename(
        src / "CelebAMask-HQ-mask-anno" / "0" / "02001_skin.png"
    )
    with pytest.raises(
        DatasetError, match=r"02001_skin\.png: part mask of image 2001 must be in folder 1/"
    ):
        import_dataset("celebamask-hq", src, tmp_path / "out")


# ------------------------------------------------------------------------------------------
# Formats, output directory, CLI


def test_unknown_format_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid formats: celebamask-hq, lapa, helen"):
        import_dataset("ibugmask", tmp_path, tmp_path / "out")
    assert FORMATS == ("celebamask-hq", "lapa", "helen")
    assert not (tmp_path / "out").exists()


def test_wrong_layout_and_missing_source_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="source dataset directory does not exist"):
        import_dataset("lapa", tmp_path / "nowhere", tmp_path / "out")
    make_helen(tmp_path / "helen")
    with pytest.raises(DatasetError, match="no LaPa split found"):
        import_dataset("lapa", tmp_path / "helen", tmp_path / "out")


def test_force_replaces_and_a_failed_import_keeps_the_old_output(tmp_path: Path) -> None:
    src, out = make_lapa(tmp_path / "LaPa", {"train": 1}), tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(OutputExistsError):
        import_dataset("lapa", src, out)
    write_png(src / "train" / "labels" / "train_000_1.png", np.full((24, 44), 42, np.uint8))
    with pytest.raises(DatasetError):
        import_dataset("lapa", src, out, force=True)
    assert (out / "stale.txt").read_text() == "old"  # atomic: the failure changed nothing
    write_png(src / "train" / "labels" / "train_000_1.png", stripes(24, 4))
    import_dataset("lapa", src, out, force=True)
    assert not (out / "stale.txt").exists()
    assert len(read_manifest(out)) == 1


def test_output_must_not_be_the_source(tmp_path: Path) -> None:
    src = make_lapa(tmp_path / "LaPa", {"train": 1})
    with pytest.raises(ConfigError, match="must not be"):
        import_dataset("lapa", src, src, force=True)
    assert (src / "train" / "images" / "train_000_1.jpg").exists()


def test_cli_import_end_to_end(tmp_path: Path, cli) -> None:
    src, out = make_lapa(tmp_path / "LaPa"), tmp_path / "imported"
    result = cli("data", "import", "lapa", src, "--out", out)
    assert result.code == 0, result.stderr
    assert "lapa/train" in result.stdout and "lapa/val" in result.stdout
    assert len(read_manifest(out)) == 4
    again = cli("data", "import", "lapa", src, "--out", out)
    assert again.code == 1 and "--force" in again.stderr
    assert cli("data", "import", "lapa", src, "--out", out, "--force").code == 0

    bad = cli("data", "import", "voc", src, "--out", tmp_path / "x")
    assert bad.code == 1
    assert (
        bad.stderr.strip()
        == "error: unknown dataset format 'voc'; valid formats: celebamask-hq, lapa, helen"
    )


def test_imported_dataset_passes_the_validator(tmp_path: Path) -> None:
    validate = pytest.importorskip("palsyseg.validate")
    src = make_celebamask(tmp_path / "CelebAMask-HQ")
    import_dataset("celebamask-hq", src, tmp_path / "out")
    result = validate.validate_dataset(tmp_path / "out")
    assert result.ok, result.problems
