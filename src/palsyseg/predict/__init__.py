"""From a photo to a finding: what ``palsyseg predict`` runs, step by step.

- :mod:`palsyseg.predict.model` — which network: ``models:/palsyseg@champion`` (default), a
  registered version, a run, or a checkpoint file; its face frame and palsy threshold;
- :mod:`palsyseg.predict.photo` — one photo: face, frame, network, mask on the photo, the
  palsy finding, the measures, the areas (:class:`Predictor`);
- :mod:`palsyseg.predict.outputs` — the mask and overlay PNGs;
- :mod:`palsyseg.predict.exam` — one person's photos combined into a patient finding with a
  pattern hint (peripheral or central).

palsyseg is a research and screening aid, not a medical device: a clinician decides.
Importing this package imports neither torch nor MLflow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from palsyseg.errors import Problem

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_photos(
    inputs: Iterable[str | os.PathLike[str]], *, skip: str | os.PathLike[str] | None = None
) -> tuple[list[Path], list[Problem]]:
    """The photos named by ``inputs`` (files, or folders searched recursively for
    :data:`PHOTO_SUFFIXES`, case-insensitive, in sorted order), each once, and a problem for
    every input that names nothing usable. A folder search does not enter ``skip`` (the
    output folder: a second run must not take the first run's masks for photos)."""
    photos: list[Path] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    skipped = Path(skip).resolve() if skip is not None else None

    def wanted(path: Path) -> bool:
        if not path.is_file() or path.suffix.lower() not in PHOTO_SUFFIXES:
            return False
        return skipped is None or not path.resolve().is_relative_to(skipped)

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            photos.append(path)

    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if wanted(p))
            if not found:
                problems.append(
                    Problem(file=str(path), rule="folder holds no .jpg, .jpeg or .png photo")
                )
            for p in found:
                add(p)
        elif path.is_file():
            add(path)
        else:
            problems.append(Problem(file=str(path), rule="no such file or folder"))
    return photos, problems


def output_stems(photos: Iterable[Path]) -> list[str]:
    """A distinct file stem per photo for its outputs: the photo's stem, with ``-2``, ``-3``…
    appended when two photos share one (``a/x.jpg`` and ``b/x.png``)."""
    stems: list[str] = []
    used: set[str] = set()
    for photo in photos:
        stem, k = photo.stem, 1
        while stem in used:
            k += 1
            stem = f"{photo.stem}-{k}"
        used.add(stem)
        stems.append(stem)
    return stems


__all__ = ["PHOTO_SUFFIXES", "find_photos", "output_stems"]
