"""Small, valid contract datasets built from numpy, for tests of validation, splitting and loading.

:func:`make_dataset` writes a dataset that satisfies shared/CONTRACT.md: several patients of all
three diagnoses, PNG and JPEG photos, single-channel 8-bit masks with values 0–6, FPP (6) only on
the affected side of palsy faces (the patient's side, drawn on the image half
:func:`~palsyseg.labels.image_half_of_side` names), optional 16-bit depth and an optional extra
``landmarks`` column. It does not use ``palsyseg.data.synth`` so these tests stand on their own.

Tests below ``tests/data`` take the ``make_dataset`` fixture (it returns the function, since
conftest modules are not imported by name), or the ``dataset`` fixture for the default dataset in
``tmp_path``; ``tree_digest`` hashes a tree to prove a step left it unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from palsyseg.data.images import encode_depth, write_jpeg, write_png
from palsyseg.data.manifest import ManifestRow, write_manifest
from palsyseg.labels import DIAGNOSES, PALETTE, POSES, Label, image_half_of_side


def draw_face(size: int, side: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A cartoon frontal face: ``(rgb H×W×3 uint8, mask H×W uint8)``.

    Skin ellipse, hair cap, two brows, two eyes, a mouth. When ``side`` is ``left`` or ``right``
    (the patient's side) the eye and mouth pixels on that side's image half become FPP.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    mask = np.zeros((size, size), np.uint8)
    mask[((xx - 0.5) / 0.36) ** 2 + ((yy - 0.55) / 0.42) ** 2 <= 1] = Label.SKIN
    mask[(((xx - 0.5) / 0.38) ** 2 + ((yy - 0.45) / 0.42) ** 2 <= 1) & (yy < 0.28)] = Label.HAIR
    for cx in (0.35, 0.65):
        mask[(np.abs(xx - cx) < 0.08) & (np.abs(yy - 0.38) < 0.02)] = Label.EYEBROW
        mask[((xx - cx) / 0.07) ** 2 + ((yy - 0.46) / 0.035) ** 2 <= 1] = Label.EYE
    mask[((xx - 0.5) / 0.14) ** 2 + ((yy - 0.75) / 0.05) ** 2 <= 1] = Label.MOUTH
    if side != "none":
        half = (xx < 0.5) if image_half_of_side(side) == "left" else (xx >= 0.5)
        mask[half & np.isin(mask, (Label.EYE, Label.MOUTH))] = Label.FPP
    colours = np.array([PALETTE[Label(v)] for v in range(len(Label))], dtype=np.int16)
    rgb = colours[mask] + rng.integers(-12, 13, size=(size, size, 3), dtype=np.int16)
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def make_dataset(
    root: Path,
    *,
    patients: int = 9,
    images_per_patient: int = 2,
    size: int = 32,
    depth: bool = False,
    landmarks: bool = False,
    seed: int = 0,
) -> list[ManifestRow]:
    """Write a valid contract dataset to ``root`` (created) and return its manifest rows.

    Patient ``p{i:02d}`` has diagnosis ``DIAGNOSES[i % 3]`` (healthy, bells_palsy, stroke, ...),
    palsy sides alternate left/right, odd-numbered images are JPEG. Row ``k`` of the manifest is
    on CSV line ``k + 2``.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows: list[ManifestRow] = []
    for i in range(patients):
        patient = f"p{i:02d}"
        diagnosis = DIAGNOSES[i % len(DIAGNOSES)]
        side = "none" if diagnosis == "healthy" else ("left" if (i // 3) % 2 == 0 else "right")
        for k in range(images_per_patient):
            stem = f"{patient}/{patient}_{k}"
            rgb, mask = draw_face(size, side, rng)
            image = f"images/{stem}.{'jpg' if k % 2 else 'png'}"
            (write_jpeg if k % 2 else write_png)(root / image, rgb)
            write_png(root / f"masks/{stem}.png", mask)
            extras: dict[str, str] = {}
            if depth:
                relative = np.where(mask > 0, 0.2 + 0.6 * rng.random(mask.shape), 0.0)
                write_png(root / f"depth/{stem}.png", encode_depth(relative))
            if landmarks:
                extras["landmarks"] = f"landmarks/{stem}.json"
                target = root / extras["landmarks"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps({"points": [[1, 2], [3, 4]]}), encoding="utf-8")
            rows.append(
                ManifestRow(
                    image=image,
                    mask=f"masks/{stem}.png",
                    patient_id=patient,
                    diagnosis=diagnosis,
                    affected_side=side,
                    grade=1 if diagnosis == "healthy" else 2 + i % 5,
                    depth=f"depth/{stem}.png" if depth else None,
                    pose=POSES[k % len(POSES)],
                    beard=bool(i % 2),
                    glasses=bool(k % 2),
                    skin_tone=1 + i % 6,
                    extras=extras,
                )
            )
    write_manifest(root, rows)
    return rows


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file and symlink target below ``root``: proves nothing changed."""
    digest: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest[rel] = "symlink->" + str(path.readlink())
        elif path.is_file():
            digest[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest[rel] = "dir"
    return digest


@pytest.fixture(name="tree_digest")
def tree_digest_fixture() -> Callable[[Path], dict[str, str]]:
    """The :func:`tree_digest` function (conftest modules are not imported by name)."""
    return tree_digest


@pytest.fixture(name="make_dataset")
def make_dataset_fixture() -> Callable[..., list[ManifestRow]]:
    """The :func:`make_dataset` function, for tests that want their own sizes or options."""
    return make_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """The default valid dataset (9 patients, 3 per diagnosis, 18 images of 32×32) in ``tmp_path/ds``."""
    root = tmp_path / "ds"
    make_dataset(root)
    return root
