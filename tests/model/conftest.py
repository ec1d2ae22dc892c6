"""Model tests run torch with one intra-op thread."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _one_thread_here(one_thread: None) -> None:
    """Every model test: ``one_thread`` (tests/conftest.py)."""


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny contract split: 6 synthetic patients × 2 photos of 64 px (train/val/test)."""
    from palsyseg.data.synth import SynthConfig, generate_dataset
    from palsyseg.split import SplitConfig, split_dataset

    root = tmp_path_factory.mktemp("tiny")
    generate_dataset(root / "data", SynthConfig(patients=6, seed=1, size=64, images_per_patient=2))
    split_dataset(root / "data", root / "split", SplitConfig(seed=1))
    return root / "split"
