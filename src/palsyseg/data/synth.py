"""``palsyseg data synth``: a synthetic labeled dataset of phantom faces with and without palsy.

Writes a dataset that follows shared/CONTRACT.md: per image an RGB JPEG (at a varied quality,
which is where the JPEG artefacts come from), a label mask (values 0–6; FPP on the drooping
half's eye and/or mouth pixels where this photo shows their weakness, by
:mod:`palsyseg.visibility`), a 16-bit relative depth map rendered from the face geometry, a
landmarks JSON (with the asymmetry measures and the FPP parts), and one ``manifest.csv`` row
with every contract column plus the extra columns ``landmarks``, ``hair_style``,
``beard_style``, ``fpp_parts`` and the visibility measures (``eye_aperture_excess``,
``mouth_corner_drop``, ``mouth_excursion_diff``, ``brow_height_deficit``). The faces, the palsy semantics
and the imaging nuisances are described in :mod:`palsyseg.data.phantom`.

Determinism: every random choice derives from ``numpy.random.SeedSequence(config.seed)`` with a
spawn key naming what it is for — ``(0, patient)`` for a person, ``(1, patient, image)`` for one
photo, ``(3, block)`` for the diagnosis mix, ``(2,)`` for the shared noise textures — so a file
depends only on the seed, the size and its own indices, never on generation order. The same
config gives byte-identical files, on any x86-64 CPU: the default dataset is pinned by its bytes
(``data.dvc``), and OpenCV's runtime-dispatched SIMD paths (AVX2, AVX-512) and IPP round
differently on different CPUs (seen: the pinned dataset, generated on one machine, did not
reproduce on an AVX2-only one), so :func:`generate_dataset` runs OpenCV on its baseline code
paths (:func:`baseline_opencv`); numpy's AVX-512 paths are off for the DVC ``synth`` stage
(``NPY_DISABLE_CPU_FEATURES`` in ``dvc.yaml``; they must be chosen before numpy loads), and its
AVX2 and baseline paths write the same files.

Diagnoses are balanced: each block of three consecutive patients holds one healthy, one
Bell's palsy and one stroke patient, in a seeded order. Layout below the output directory::

    manifest.csv
    images/<patient>/<patient>_<k>_<pose>.jpg
    masks/<patient>/<patient>_<k>_<pose>.png
    depth/<patient>/<patient>_<k>_<pose>.png
    landmarks/<patient>/<patient>_<k>_<pose>.json

The directory is built with :func:`palsyseg.atomic.atomic_directory`: a non-empty output is
refused unless ``force``, and a failure part-way leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from palsyseg.atomic import atomic_directory
from palsyseg.data.images import encode_depth
from palsyseg.data.manifest import ManifestRow, write_manifest
from palsyseg.data.phantom import Patient, Rendering, render_face, sample_capture, sample_patient
from palsyseg.labels import DIAGNOSES, POSES
from palsyseg.progress import track
from palsyseg.visibility import VISIBILITY_MEASURES, Visibility

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic dataset (``params.yaml`` section ``synth``)."""

    patients: int = 24
    seed: int = 0
    size: int = 250
    images_per_patient: int = 5
    max_roll_deg: float = 10.0
    max_yaw_deg: float = 8.0
    jpeg_quality_min: int = 55
    jpeg_quality_max: int = 95

    def __post_init__(self) -> None:
        if self.patients < 1:
            raise ValueError(f"patients must be at least 1, got {self.patients}")
        if not 64 <= self.size <= 2048:
            raise ValueError(f"size must be 64–2048 pixels, got {self.size}")
        if self.images_per_patient < 1:
            raise ValueError(
                f"images_per_patient must be at least 1, got {self.images_per_patient}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if not 0 <= self.max_roll_deg <= 45 or not 0 <= self.max_yaw_deg <= 20:
            raise ValueError("max_roll_deg must be 0–45 and max_yaw_deg 0–20")
        if not 1 <= self.jpeg_quality_min <= self.jpeg_quality_max <= 100:
            raise ValueError(
                "JPEG qualities must satisfy 1 <= jpeg_quality_min <= jpeg_quality_max <= 100"
            )


@dataclass
class SynthSummary:
    """What :func:`generate_dataset` wrote: patients and images per diagnosis."""

    out: Path
    config: SynthConfig
    patients: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    grades: dict[str, dict[int, int]] = field(default_factory=dict)
    showing: dict[str, int] = field(default_factory=dict)
    """Images per diagnosis whose mask holds FPP (the photo shows the palsy)."""
    seconds: float = 0.0

    @property
    def total_images(self) -> int:
        return sum(self.images.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "config": asdict(self.config),
            "patients": dict(self.patients),
            "images": dict(self.images),
            "grades": {
                d: {str(g): n for g, n in sorted(c.items())} for d, c in self.grades.items()
            },
            "total_patients": sum(self.patients.values()),
            "total_images": self.total_images,
            "images_showing_palsy": dict(self.showing),
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.total_images / self.seconds, 1)
            if self.seconds > 0
            else None,
        }

    def table(self) -> Any:
        """A rich Table: one row per diagnosis, then the totals."""
        from rich.table import Table

        table = Table(title=f"synthetic dataset → {self.out}")
        for name in ("diagnosis", "patients", "images", "show FPP", "House–Brackmann grades"):
            table.add_column(name, justify="left" if name == "diagnosis" else "right")
        for diagnosis in DIAGNOSES:
            grades = self.grades.get(diagnosis, {})
            spread = " ".join(f"{g}:{n}" for g, n in sorted(grades.items()))
            table.add_row(
                diagnosis,
                str(self.patients.get(diagnosis, 0)),
                str(self.images.get(diagnosis, 0)),
                str(self.showing.get(diagnosis, 0)),
                spread,
            )
        rate = f" ({self.total_images / self.seconds:.0f} images/s)" if self.seconds > 0 else ""
        table.add_row(
            "total",
            str(sum(self.patients.values())),
            str(self.total_images),
            str(sum(self.showing.values())),
            f"{self.seconds:.1f} s{rate}",
        )
        return table


def _rng(config: SynthConfig, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=key))


def patient_diagnosis(config: SynthConfig, index: int) -> str:
    """Diagnosis of patient ``index``: a seeded order of the three diagnoses per block of three."""
    order = _rng(config, 3, index // 3).permutation(len(DIAGNOSES))
    return DIAGNOSES[int(order[index % 3])]


def make_patient(config: SynthConfig, index: int) -> Patient:
    """Patient ``index`` of the dataset (identity, diagnosis, side, grade), from the seed alone."""
    patient_id = f"syn{config.seed}-{index:04d}"
    return sample_patient(_rng(config, 0, index), patient_id, patient_diagnosis(config, index))


def exam_poses(config: SynthConfig, index: int) -> list[str]:
    """The exam poses photographed for patient ``index``: the five in order from a seeded start
    (rest first when there are five or more images), cycling if there are more than five."""
    n = config.images_per_patient
    start = 0 if n >= len(POSES) else int(_rng(config, 4, index).integers(len(POSES)))
    return [POSES[(start + k) % len(POSES)] for k in range(n)]


def render_example(
    config: SynthConfig, patient: Patient, index: int, k: int, pose: str
) -> Rendering:
    """Image ``k`` of patient ``index`` in ``pose``: deterministic in (seed, size, index, k)."""
    capture = sample_capture(
        _rng(config, 1, index, k),
        max_roll_deg=config.max_roll_deg,
        max_yaw_deg=config.max_yaw_deg,
        jpeg_quality=(config.jpeg_quality_min, config.jpeg_quality_max),
    )
    return render_face(patient, pose, capture, config.size, pool_seed=config.seed)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _encode(ext: str, array: np.ndarray, params: list[int]) -> bytes:
    import cv2

    ok, buffer = cv2.imencode(ext, array, params)
    if not ok:
        raise OSError(f"could not encode {ext} image")
    return buffer.tobytes()


def _png_params() -> list[int]:
    """PNG settings for label masks and depth maps: "up" filter + run-length zlib strategy,
    3× faster than the defaults and smaller (large flat regions, smooth depth)."""
    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if hasattr(cv2, "IMWRITE_PNG_STRATEGY_RLE"):
        params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    if hasattr(cv2, "IMWRITE_PNG_FILTER_UP"):
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    return params


def visibility_columns(visibility: Visibility | None) -> dict[str, str]:
    """The manifest's extra columns for what a photo shows of a palsy (:mod:`palsyseg.visibility`):
    ``fpp_parts`` (``eye``, ``mouth``, ``eye+mouth`` or blank) and the weak side's measures in
    inter-ocular distances (blank for a healthy face, which has no weak side)."""
    if visibility is None:
        return {"fpp_parts": "", **dict.fromkeys(VISIBILITY_MEASURES, "")}
    return visibility.columns()


def write_example(
    root: Path, patient: Patient, k: int, pose: str, rendering: Rendering
) -> ManifestRow:
    """Write one example's files below ``root`` and return its manifest row.

    ``root`` is the staging directory of :func:`~palsyseg.atomic.atomic_directory`, which makes
    the whole dataset appear at once; per-file atomic writes (a temporary file and a rename
    each) would only add system calls, so the files are encoded in memory and written directly.
    Formats are those of :mod:`palsyseg.data.images`: JPEG RGB, 8-bit mask PNG, 16-bit depth
    PNG encoded with :func:`~palsyseg.data.images.encode_depth`.
    """
    import cv2

    pid = patient.patient_id
    stem = f"{pid}/{pid}_{k}_{pose}"
    image, mask, depth, landmarks = (
        f"images/{stem}.jpg",
        f"masks/{stem}.png",
        f"depth/{stem}.png",
        f"landmarks/{stem}.json",
    )
    bgr = cv2.cvtColor(rendering.rgb, cv2.COLOR_RGB2BGR)
    _write(root / image, _encode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, rendering.jpeg_quality]))
    png = _png_params()
    _write(root / mask, _encode(".png", rendering.mask, png))
    _write(root / depth, _encode(".png", encode_depth(rendering.depth), png))
    document = {"image": image, **rendering.landmarks}
    _write(root / landmarks, (json.dumps(document) + "\n").encode("utf-8"))
    ident = patient.identity
    return ManifestRow(
        image=image,
        mask=mask,
        patient_id=pid,
        diagnosis=patient.diagnosis,
        affected_side=patient.affected_side,
        grade=patient.grade,
        depth=depth,
        pose=pose,
        beard=ident.beard != "none",
        glasses=ident.glasses != "none",
        skin_tone=ident.skin_tone,
        extras={
            "landmarks": landmarks,
            "hair_style": ident.hair_style,
            "beard_style": ident.beard,
            **visibility_columns(rendering.visibility),
        },
    )


@contextmanager
def baseline_opencv() -> Iterator[None]:
    """Run OpenCV on its baseline code paths only (no runtime SIMD dispatch, no IPP) inside the
    block, so its results do not depend on the CPU; the previous setting is restored after."""
    import cv2

    was = cv2.useOptimized()
    cv2.setUseOptimized(False)
    try:
        yield
    finally:
        cv2.setUseOptimized(was)


def generate_dataset(out: Path, config: SynthConfig, *, force: bool = False) -> SynthSummary:
    """Write a synthetic dataset of ``config.patients`` × ``config.images_per_patient`` images.

    Refuses a non-empty ``out`` unless ``force`` (:class:`~palsyseg.atomic.OutputExistsError`);
    builds everything in a temporary sibling and moves it into place only when complete.
    """
    out = Path(out)
    started = time.perf_counter()
    summary = SynthSummary(out=out, config=config)
    jobs = []
    patients = [make_patient(config, i) for i in range(config.patients)]
    for index, patient in enumerate(patients):
        jobs += [(index, patient, k, pose) for k, pose in enumerate(exam_poses(config, index))]
    with atomic_directory(out, force=force) as staging, baseline_opencv():
        rows = []
        for index, patient, k, pose in track(jobs, "synthesising faces"):
            rendering = render_example(config, patient, index, k, pose)
            rows.append(write_example(staging, patient, k, pose, rendering))
        write_manifest(staging, rows)
    summary.patients = dict(Counter(p.diagnosis for p in patients))
    summary.images = dict(Counter(row.diagnosis for row in rows))
    summary.showing = dict(Counter(row.diagnosis for row in rows if row.extras["fpp_parts"]))
    for patient in patients:
        summary.grades.setdefault(patient.diagnosis, Counter())[patient.grade] += 1
    summary.grades = {d: dict(c) for d, c in summary.grades.items()}
    summary.seconds = time.perf_counter() - started
    log.info(
        "wrote %d images of %d patients to %s in %.1f s",
        summary.total_images,
        len(patients),
        out,
        summary.seconds,
    )
    return summary
