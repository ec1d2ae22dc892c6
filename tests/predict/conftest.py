"""Photos and a network for the ``predict`` tests.

- ``tiny_checkpoint``: an *untrained* palsynet in a 64 px face frame, saved as training saves
  (digests, frame, palsy threshold). Its masks are noise; the tests check the path from photo to
  finding (face, frame, mapping back, files, JSON, errors), not the network's quality.
- ``photos``: ``skimage.data.astronaut()`` (a real public-domain face) as JPEG and
  ``skimage.data.coffee()`` (no face) as PNG. Used for these checks only, never to tune.
- ``phantom_exam``: one Bell's-palsy patient's five exam photos from ``palsyseg data synth``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _one_thread_here(one_thread: None) -> None:
    """Every predict test: ``one_thread`` (tests/conftest.py)."""


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from palsyseg.checkpoint import save_untrained_checkpoint

    return save_untrained_checkpoint(tmp_path_factory.mktemp("model") / "best.pt", image_size=64)


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from skimage import data

    from palsyseg.data.images import write_jpeg, write_png

    folder = tmp_path_factory.mktemp("photos")
    return {
        "astronaut": write_jpeg(folder / "astronaut.jpg", data.astronaut(), quality=92),
        "coffee": write_png(folder / "coffee.png", np.ascontiguousarray(data.coffee())),
    }


@pytest.fixture(scope="session")
def phantom_exam(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``(folder of one Bell's patient's five photos, the patient's affected side)``."""
    from palsyseg.data.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("phantom") / "data"
    generate_dataset(out, SynthConfig(patients=3, seed=5, size=250, images_per_patient=5))
    with open(out / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    bells = next(r for r in rows if r["diagnosis"] == "bells_palsy")
    return (out / bells["image"]).parent, bells["affected_side"]
