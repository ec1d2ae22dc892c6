"""Where the five points of the face frame (:class:`palsyseg.align.FivePoints`) come from.

Two sources, in order of preference:

1. The landmarks JSON a dataset row names in its ``landmarks`` column (the synthetic
   generator writes one per image, :func:`palsyseg.data.phantom._landmark_document`): exact,
   read by :func:`points_from_landmarks`.
2. For photos without landmarks (real datasets, ``predict`` on a user's photo): dlib's HOG face
   detector and its 68-point shape predictor (:class:`FacePointDetector`; model file from the
   ``face-recognition-models`` wheel, nothing is downloaded). :func:`points_for_row` caches each
   detection as JSON under ``<cache>/points/<sha256 of the image bytes>.json``, so it runs once
   per image ever, and never writes into the dataset directory (it is DVC-tracked).

The 68-point model was trained on iBUG 300-W, whose licence excludes commercial use.
Sides are always the patient's: a frontal photo shows the patient's left on the image's right.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from palsyseg.align import POINT_NAMES, FivePoints
from palsyseg.atomic import atomic_write_json
from palsyseg.data.manifest import ManifestRow, resolve_in_root
from palsyseg.errors import ConfigError, DatasetError, Problem

log = logging.getLogger(__name__)

CACHE_ENV = "PALSYSEG_CACHE_DIR"
CACHE_FORMAT = 1
"""Version of the cached detection JSON; an entry of another version is recomputed."""

CONFIDENT_FRACTION = 0.5
"""A face is a candidate when its HOG score is at least this fraction of the best one's."""

MIN_SHORT_SIDE = 200
"""Photos are upscaled so their short side is at least this (HOG needs faces of ~80 px)."""

# iBUG 300-W 68-point indexing, as seen in the image (image-left = the patient's right).
_IMAGE_LEFT_EYE = slice(36, 42)  # patient's right eye
_IMAGE_RIGHT_EYE = slice(42, 48)  # patient's left eye
_IMAGE_LEFT_MOUTH_CORNER = 48  # patient's right
_IMAGE_RIGHT_MOUTH_CORNER = 54  # patient's left
_NOSE_TIP = 30


def _lookup(document: Any, path: tuple[str, ...], source: str) -> Any:
    node = document
    for depth, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            dotted = ".".join(path[: depth + 1])
            raise DatasetError(Problem(file=source, rule=f"landmarks JSON has no {dotted!r}"))
        node = node[key]
    return node


def _xy(value: Any, path: tuple[str, ...], source: str) -> np.ndarray:
    try:
        xy = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        xy = np.empty(0)
    if xy.shape != (2,) or not np.all(np.isfinite(xy)):
        dotted = ".".join(path)
        raise DatasetError(
            Problem(file=source, rule=f"landmarks JSON {dotted!r} is not a point [x, y]")
        )
    return xy


def points_from_landmarks(document: dict[str, Any], source: str = "<landmarks>") -> FivePoints:
    """The five points of a generator landmarks document (image pixels, patient's sides).

    Eye centre = mean of the inner and outer corner; mouth corners and nose tip as given. A
    top-level ``"points"`` already in :meth:`FivePoints.to_dict` form is used as is. A missing
    key or a malformed point raises :class:`DatasetError` naming ``source`` and the key.
    """
    if isinstance(document, dict) and "points" in document:
        points = document["points"]
        if not isinstance(points, dict):
            raise DatasetError(
                Problem(
                    file=source, rule="landmarks JSON 'points' is not an object of named points"
                )
            )
        xy = {
            name: _xy(_lookup(document, ("points", name), source), ("points", name), source)
            for name in POINT_NAMES
        }
        return FivePoints(**{name: tuple(p) for name, p in xy.items()})

    def point(*path: str) -> np.ndarray:
        return _xy(_lookup(document, path, source), path, source)

    def eye_centre(side: str) -> tuple[float, float]:
        return tuple((point("eyes", side, "inner") + point("eyes", side, "outer")) / 2)

    return FivePoints(
        left_eye=eye_centre("left"),
        right_eye=eye_centre("right"),
        nose_tip=tuple(point("nose_tip")),
        mouth_left=tuple(point("mouth", "left_corner")),
        mouth_right=tuple(point("mouth", "right_corner")),
    )


@dataclass
class Detection:
    """One face found by :class:`FacePointDetector`, in photo pixels (OpenCV pixel centres)."""

    points: FivePoints
    box: tuple[int, int, int, int]
    """``(x, y, w, h)`` of the detector's face box."""
    score: float
    """HOG detection score (higher is surer; dlib's default threshold is 0)."""
    landmarks68: np.ndarray
    """68×2 iBUG 300-W points (image-left eye 36–41 = the patient's right eye)."""
    faces: int
    """How many faces the detector found (the largest is kept)."""
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of ``detect`` (HOG on the working copy) and ``landmarks`` (the 68 points);
    not cached, not in :meth:`to_dict`."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the cache format's payload)."""
        return {
            "points": self.points.to_dict(),
            "box": list(self.box),
            "score": self.score,
            "landmarks68": np.round(self.landmarks68, 3).tolist(),
            "faces": self.faces,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Detection:
        """Inverse of :meth:`to_dict`."""
        return cls(
            points=FivePoints.from_dict(document["points"]),
            box=tuple(int(v) for v in document["box"]),  # type: ignore[arg-type]
            score=float(document["score"]),
            landmarks68=np.asarray(document["landmarks68"], dtype=np.float64).reshape(68, 2),
            faces=int(document["faces"]),
            warnings=[str(w) for w in document.get("warnings", [])],
        )


def _model_path(name: str) -> Path:
    """A model file of the ``face-recognition-models`` wheel, found without importing it.

    Its ``__init__`` imports ``pkg_resources``, which setuptools ≥ 81 no longer ships; the files
    themselves sit in the package directory.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "face-recognition-models is not installed (pip install face-recognition-models): "
            "it holds dlib's 68-point landmark model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise ConfigError(f"{path}: dlib model file missing from face-recognition-models")
    return path


def _scale_from(value: float, factor: float) -> float:
    """A coordinate of an image resized by ``factor`` back to the original (pixel centres)."""
    return (value + 0.5) / factor - 0.5


def _choose_face(rects: Any, scores: list[float]) -> tuple[int, list[str]]:
    """Index of the face to keep and the warnings to give: the largest of the confident faces.

    The patient is the subject of the photo, so the largest face wins, but only among faces
    scoring at least :data:`CONFIDENT_FRACTION` of the best score: HOG's false faces (seen on
    the suit of ``skimage.data.astronaut()``) score near 0 and can be as large as the real one.
    """
    best_score = max(scores)
    confident = [i for i, s in enumerate(scores) if s >= CONFIDENT_FRACTION * best_score]
    chosen = max(confident, key=lambda i: (rects[i].area(), scores[i]))
    warnings: list[str] = []
    if len(rects) > 1:
        weak = len(rects) - len(confident)
        note = f" ({weak} weak, scoring under half the best, ignored)" if weak else ""
        warnings.append(f"{len(rects)} faces found; using the largest{note}")
    return chosen, warnings


class FacePointDetector:
    """Five face points on a real photo with dlib (HOG face detector + 68-point predictor).

    The models load on the first :meth:`detect`. Detection runs on a copy resized so the long
    side is at most ``working_size`` and the short side at least :data:`MIN_SHORT_SIDE`
    (upscaling wins for extreme aspect ratios): HOG cost grows with pixels, and it misses faces
    under ~80 px. The 68 points are predicted on the original photo, or on the working copy
    when that was upscaled.
    """

    def __init__(self, working_size: int = 640, adjust_threshold: float = 0.0) -> None:
        if working_size < MIN_SHORT_SIDE:
            raise ValueError(f"working_size must be at least {MIN_SHORT_SIDE}, got {working_size}")
        self.working_size = working_size
        self.adjust_threshold = adjust_threshold
        self._detector: Any = None
        self._predictor: Any = None

    def _load(self) -> None:
        if self._detector is None:
            import dlib

            self._predictor = dlib.shape_predictor(
                str(_model_path("shape_predictor_68_face_landmarks.dat"))
            )
            self._detector = dlib.get_frontal_face_detector()

    def settings(self) -> dict[str, Any]:
        """What the detections depend on, recorded next to cached results."""
        import dlib

        return {
            "detector": "dlib HOG frontal face + shape_predictor_68_face_landmarks",
            "dlib": dlib.__version__,
            "working_size": self.working_size,
            "adjust_threshold": self.adjust_threshold,
        }

    def detect(self, rgb: np.ndarray, source: str = "<image>") -> Detection:
        """Find the largest face of an RGB (H×W×3) or grey (H×W) uint8 photo and its five points.

        Tries the detector without upsampling, then once upsampled if nothing was found. Raises
        :class:`DatasetError` naming ``source`` when no face is found.
        """
        import time

        import cv2
        import dlib

        started = time.perf_counter()
        image = np.asarray(rgb)
        if image.dtype != np.uint8 or not (
            image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
        ):
            raise ValueError(
                f"expected an H×W×3 or H×W uint8 image, got {image.dtype} {image.shape}"
            )
        self._load()
        height, width = image.shape[:2]
        factor = min(1.0, self.working_size / max(height, width))
        factor = max(factor, MIN_SHORT_SIDE / min(height, width))
        photo = np.ascontiguousarray(image)
        working, factor_x, factor_y = photo, 1.0, 1.0
        if factor != 1.0:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            method = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            working = cv2.resize(working, size, interpolation=method)
            factor_x, factor_y = size[0] / width, size[1] / height

        rects, scores = [], []
        for upsample in (0, 1):
            found, found_scores, _ = self._detector.run(working, upsample, self.adjust_threshold)
            rects, scores = list(found), list(found_scores)
            if rects:
                break
        if not rects:
            raise DatasetError(
                Problem(file=source, rule="no face found (dlib HOG detector, upsampled once too)")
            )
        best, warnings = _choose_face(rects, scores)
        rect = rects[best]
        detected = time.perf_counter()

        def to_photo(x: float, y: float) -> tuple[float, float]:
            return _scale_from(x, factor_x), _scale_from(y, factor_y)

        x0, y0 = to_photo(rect.left(), rect.top())
        x1, y1 = to_photo(rect.right(), rect.bottom())
        # dlib's right/bottom are inclusive: width() = right − left + 1.
        width_px, height_px = rect.width() / factor_x, rect.height() / factor_y
        box = (round(x0), round(y0), max(1, round(width_px)), max(1, round(height_px)))

        if factor > 1:
            shape = self._predictor(working, rect)
            landmarks = np.array([to_photo(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        else:
            photo_rect = dlib.rectangle(round(x0), round(y0), round(x1), round(y1))
            shape = self._predictor(photo, photo_rect)
            landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

        points = FivePoints(
            left_eye=tuple(landmarks[_IMAGE_RIGHT_EYE].mean(axis=0)),
            right_eye=tuple(landmarks[_IMAGE_LEFT_EYE].mean(axis=0)),
            nose_tip=tuple(landmarks[_NOSE_TIP]),
            mouth_left=tuple(landmarks[_IMAGE_RIGHT_MOUTH_CORNER]),
            mouth_right=tuple(landmarks[_IMAGE_LEFT_MOUTH_CORNER]),
        )
        for warning in warnings:
            log.warning("%s: %s", source, warning)
        return Detection(
            points=points,
            box=box,
            score=float(scores[best]),
            landmarks68=landmarks,
            faces=len(rects),
            warnings=warnings,
            seconds={
                "detect": detected - started,
                "landmarks": time.perf_counter() - detected,
            },
        )


def default_cache_dir() -> Path:
    """``$PALSYSEG_CACHE_DIR`` or ``~/.cache/palsyseg`` (read when called, never created here)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "palsyseg"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(Problem(file=str(path), rule="landmarks file does not exist")) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(Problem(file=str(path), rule=f"not valid JSON ({exc})")) from None


def _read_cached(path: Path) -> Detection | None:
    """The cached detection, or ``None`` when absent, unreadable or of another format."""
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != CACHE_FORMAT:
            return None
        return Detection.from_dict(document["detection"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # A cache entry is disposable: detect again rather than fail the user's step.
        log.warning("%s: unreadable cached face points (%s); detecting again", path, exc)
        return None


def detection_for_row(
    root: str | os.PathLike[str],
    row: ManifestRow,
    *,
    detector: FacePointDetector | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Detection | None:
    """dlib's detection on one row's photo, or ``None`` when it finds no face; cached.

    Always from the pixels (never the row's landmarks JSON). The result is stored atomically in
    ``cache_dir/points/<sha256 of the image file>.json`` (``no_face/<sha256>.json`` when there
    is none; ``cache_dir`` defaults to :func:`default_cache_dir`), so the detector runs once per
    image bytes ever. A cache directory inside ``root`` is refused: the dataset directory is
    DVC-tracked and never written.
    """
    from palsyseg.data.images import read_rgb

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cache.resolve().is_relative_to(Path(root).resolve()):
        raise ConfigError(
            f"{cache}: face-point cache lies inside the dataset {root} (DVC-tracked); "
            f"choose another cache_dir or {CACHE_ENV}"
        )
    image_path = resolve_in_root(root, row.image)
    try:
        digest = hashlib.sha256(image_path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise DatasetError(
            Problem(file=str(image_path), rule="image file does not exist")
        ) from None
    cached_path = cache / "points" / f"{digest}.json"
    no_face_path = cache / "no_face" / f"{digest}.json"
    cached = _read_cached(cached_path)
    if cached is not None:
        return cached
    if no_face_path.is_file():
        return None

    detector = detector if detector is not None else FacePointDetector()
    record = {
        "format": CACHE_FORMAT,
        "image_sha256": digest,
        "image": row.image,
        "settings": detector.settings(),
    }
    try:
        detection = detector.detect(read_rgb(image_path), source=str(image_path))
    except DatasetError as error:
        if "no face" not in str(error):
            raise
        atomic_write_json(no_face_path, record)
        return None
    atomic_write_json(cached_path, {**record, "detection": detection.to_dict()})
    return detection


def points_for_row(
    root: str | os.PathLike[str],
    row: ManifestRow,
    *,
    detector: FacePointDetector | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> FivePoints:
    """The five points of one dataset row: from its landmarks JSON, else from dlib (cached).

    A row whose ``extras`` name a ``landmarks`` file (relative to ``root``) is read with
    :func:`points_from_landmarks`. Otherwise :func:`detection_for_row` runs ``detector`` (a new
    :class:`FacePointDetector` if ``None``) once per image, cached outside the dataset; a photo
    without a face raises :class:`DatasetError` ("no face found").
    """
    relative = row.extras.get("landmarks") if row.extras else None
    if relative:
        path = resolve_in_root(root, relative)
        return points_from_landmarks(_read_json(path), source=str(path))
    detection = detection_for_row(root, row, detector=detector, cache_dir=cache_dir)
    if detection is None:
        image = resolve_in_root(root, row.image)
        raise DatasetError(Problem(file=str(image), rule="no face found (cached detection)"))
    return detection.points
