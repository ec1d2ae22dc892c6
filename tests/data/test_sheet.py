"""The contact sheet: grid size, choice of examples, tiles that match the dataset, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from palsyseg.data.images import read_rgb
from palsyseg.data.manifest import read_manifest
from palsyseg.data.sheet import (
    CAPTION,
    COLUMNS,
    GAP,
    LEGEND,
    TILE,
    contact_sheet,
    pick_examples,
    sheet_size,
)
from palsyseg.data.synth import SynthConfig, generate_dataset
from palsyseg.errors import DatasetError
from palsyseg.labels import DIAGNOSES, PALETTE, Label


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sheet") / "ds"
    generate_dataset(out, SynthConfig(patients=3, seed=2, size=96, images_per_patient=5))
    return out


def test_sheet_has_the_expected_grid_size(dataset: Path, tmp_path: Path) -> None:
    path = contact_sheet(dataset, tmp_path / "sheet.png", count=5)
    sheet = read_rgb(path)
    rows = -(-5 // COLUMNS)
    expected_w = COLUMNS * 3 * TILE + (COLUMNS + 1) * GAP
    expected_h = LEGEND + rows * (TILE + CAPTION) + (rows + 1) * GAP
    assert sheet.shape == (expected_h, expected_w, 3) == (*sheet_size(5)[::-1], 3)


def test_tiles_show_image_mask_and_overlay(dataset: Path, tmp_path: Path) -> None:
    sheet = read_rgb(contact_sheet(dataset, tmp_path / "sheet.png", count=3))
    y, x = LEGEND + GAP, GAP
    photo = sheet[y : y + TILE, x : x + TILE]
    labels = sheet[y : y + TILE, x + TILE : x + 2 * TILE]
    overlay = sheet[y : y + TILE, x + 2 * TILE : x + 3 * TILE]
    palette = {tuple(c) for c in PALETTE.values()}
    colours = {tuple(c) for c in labels.reshape(-1, 3)}
    assert colours <= palette and tuple(PALETTE[Label.SKIN]) in colours
    assert photo.std() > 10 and not np.array_equal(photo, overlay)
    # The first example is healthy (diagnoses in turn): no FPP red in its mask tile.
    assert tuple(PALETTE[Label.FPP]) not in colours


def test_examples_rotate_through_diagnoses_and_poses(dataset: Path) -> None:
    rows = read_manifest(dataset)
    picked = pick_examples(rows, 6)
    assert [r.diagnosis for r in picked[:3]] == list(DIAGNOSES)
    assert len({(r.diagnosis, r.pose) for r in picked}) == 6
    assert len(pick_examples(rows, 100)) == len(rows)


def test_cli_writes_the_sheet(cli, dataset: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "nested" / "sheet.png"
    result = cli("data", "sheet", dataset, "--out", out, "--count", 4)
    assert result.code == 0, result.stderr
    assert read_rgb(out).shape[:2] == sheet_size(4)[::-1]


def test_a_missing_dataset_is_one_error_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("data", "sheet", tmp_path / "nothing", "--out", tmp_path / "s.png")
    assert result.code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.png").exists()
    with pytest.raises(DatasetError):
        contact_sheet(tmp_path / "nothing", tmp_path / "s.png")
