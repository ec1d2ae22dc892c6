"""The canonical face frame: every step (training, evaluation, predict) runs the model in it.

A photo is mapped into the frame by the similarity (rotation, uniform scale, translation; never a
reflection) fixed by five facial points (:class:`FivePoints`): the eye line is horizontal, the
patient's right eye (the image-left one) is on the crop's left, the inter-ocular distance is a
fixed fraction of the crop side, the eyes sit at a fixed height, and the face's midline is the
crop's vertical centre line. :class:`FaceFrame` holds those fractions and the crop side.

Why a frame rather than the raw photo:

* Mirror symmetry becomes an array operation. With the midline on the crop's mirror axis,
  ``crop[:, ::-1]`` *is* the face's own mirror image (up to the face's true asymmetry), so a
  model can compare each half with the other (palsy is an asymmetry) and a horizontal-flip
  augmentation swaps the patient's sides exactly.
* The small parts get bigger. Eyes and mouth corners — where FPP lives — fill a fixed share of
  the crop whatever the photo's resolution or framing, instead of a few pixels of a wide shot.
* Roll and scale no longer vary, so the model spends no capacity on them.

Predictions made in the frame are mapped back to the photo with :func:`warp_to_photo` (labels)
or :func:`logits_to_photo` (scores); photo pixels the crop does not cover become background.

Pixel convention (OpenCV's, used throughout): pixel ``(row i, column j)`` has its centre at
``(x, y) = (j, i)``; a ``W``-wide array spans ``x`` in ``[-0.5, W - 0.5]``. Flipping an array with
``[:, ::-1]`` maps column ``c`` to ``W - 1 - c``, i.e. ``x → W - 1 - x``, mirror axis
``x = (W - 1) / 2``. The frame's midline is therefore put at ``x = (size - 1) / 2``.

This module imports only numpy at import time; cv2 and torch are imported where they are used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

Point = tuple[float, float]
Interpolation = Literal["linear", "nearest"]

OUTSIDE_BACKGROUND_LOGIT = 0.0
"""Logit given to the background class where a photo pixel lies outside the crop."""
OUTSIDE_OTHER_LOGIT = -20.0
"""Logit given to every other class there: softmax puts ≥ 1 − C·2e−9 on background."""

POINT_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")


def _point(value: Any, name: str) -> Point:
    x, y = (float(v) for v in value)  # raises ValueError/TypeError unless exactly two numbers
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"{name} is not finite: ({x}, {y})")
    return (x, y)


@dataclass(frozen=True)
class FivePoints:
    """Five facial points in image pixels (x right, y down; OpenCV pixel centres).

    ``left``/``right`` are the *patient's* sides: a frontal photo shows the patient's left on
    the image's right, so normally ``left_eye[0] > right_eye[0]``. Eye points are eye centres.
    """

    left_eye: Point
    right_eye: Point
    nose_tip: Point
    mouth_left: Point
    mouth_right: Point

    def __post_init__(self) -> None:
        for name in POINT_NAMES:
            object.__setattr__(self, name, _point(getattr(self, name), name))

    def as_array(self) -> np.ndarray:
        """The points as a 5×2 float64 array, rows in field order (:data:`POINT_NAMES`)."""
        return np.array([getattr(self, name) for name in POINT_NAMES], dtype=np.float64)

    @classmethod
    def from_array(cls, array: Any) -> FivePoints:
        """Inverse of :meth:`as_array`: a 5×2 array-like, rows in field order."""
        a = np.asarray(array, dtype=np.float64)
        if a.shape != (5, 2):
            raise ValueError(f"expected a 5×2 array of points, got shape {a.shape}")
        return cls(*(tuple(row) for row in a.tolist()))

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-friendly: ``{"left_eye": [x, y], ...}``."""
        return {name: list(getattr(self, name)) for name in POINT_NAMES}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> FivePoints:
        """Inverse of :meth:`to_dict`; a missing name raises ``KeyError`` naming it."""
        return cls(**{name: document[name] for name in POINT_NAMES})

    def inter_ocular(self) -> float:
        """Distance between the two eye centres, in pixels."""
        return math.dist(self.left_eye, self.right_eye)

    def mirrored(self, width: int) -> FivePoints:
        """The points of the photo flipped left–right with ``photo[:, ::-1]`` (``width`` columns).

        ``x → width − 1 − x`` (OpenCV pixel centres; see the module docstring), and the sides
        swap: the mirrored photo shows a face whose patient-left is the original's patient-right.
        """

        def flip(p: Point) -> Point:
            return (width - 1 - p[0], p[1])

        return FivePoints(
            left_eye=flip(self.right_eye),
            right_eye=flip(self.left_eye),
            nose_tip=flip(self.nose_tip),
            mouth_left=flip(self.mouth_right),
            mouth_right=flip(self.mouth_left),
        )


@dataclass(frozen=True)
class FaceFrame:
    """The canonical crop: ``size`` pixels square, eyes ``iod·size`` apart at height ``eye_y·size``.

    ``iod`` is the inter-ocular distance and ``eye_y`` the eye line's height from the top, both
    as fractions of ``size``. The defaults put the mouth near 0.42 + 0.25 · 0.95 ≈ 0.66 of the
    side (the mouth sits ~0.95 inter-ocular distances below the eyes) and keep the whole face in
    the crop: on generated faces ≥ 99.8 % of the skin, brow, eye and mouth pixels and ~97 % of
    the hair land inside.
    """

    size: int
    iod: float = 0.25
    eye_y: float = 0.42

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or int(self.size) != self.size or self.size < 16:
            raise ValueError(f"FaceFrame.size must be an integer >= 16, got {self.size!r}")
        if not 0 < self.iod < 1:
            raise ValueError(f"FaceFrame.iod must be in (0, 1), got {self.iod!r}")
        if not 0 < self.eye_y < 1:
            raise ValueError(f"FaceFrame.eye_y must be in (0, 1), got {self.eye_y!r}")
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "iod", float(self.iod))
        object.__setattr__(self, "eye_y", float(self.eye_y))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: ``{"size": ..., "iod": ..., "eye_y": ...}``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> FaceFrame:
        """Inverse of :meth:`to_dict`; unknown keys are refused (a typo would otherwise vanish)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ValueError(f"unknown FaceFrame keys: {', '.join(unknown)}")
        return cls(**dict(document))


def frame_transform(points: FivePoints, frame: FaceFrame) -> np.ndarray:
    """The 2×3 float64 affine matrix photo pixels → crop pixels of the canonical frame.

    A similarity (rotation, uniform scale, translation; no reflection) such that:

    * the line through the eye centres is horizontal, with the patient's right eye (image-left
      in a frontal photo) on the crop's left;
    * the inter-ocular distance becomes ``frame.iod * frame.size``;
    * the eye midpoint lies at height ``y = frame.eye_y * frame.size``;
    * the face's midline lies at ``x = (frame.size - 1) / 2``, the exact axis about which
      ``crop[:, ::-1]`` mirrors (OpenCV pixel centres), so the flipped crop is the face's mirror.

    The midline passes through the eye midpoint, perpendicular to the eye line. The eye centres
    (each the mean of its two canthi) are a symmetric pair whose midpoint lies on the face's
    symmetry plane, and palsy does not move the canthi. The mouth corners are not used: palsy
    is exactly what moves them (a drooping, lagging corner would pull the midline toward the
    strong side by half the asymmetry, right where FPP is judged). Nor is the nose tip: it
    stands in front of the plane and swings sideways under yaw. The mouth corners and the nose
    tip stay in :class:`FivePoints` for the contract and for checks of a detection.

    Raises ``ValueError`` if the eye centres coincide.
    """
    p = points.as_array()
    left_eye, right_eye = p[0], p[1]
    across = left_eye - right_eye  # must point to the crop's +x
    distance = float(np.hypot(*across))
    if distance < 1e-9:
        raise ValueError("the eye centres coincide: no face frame can be fixed")
    scale = frame.iod * frame.size / distance
    cos, sin = across / distance
    # Rotation by −angle(across), times the scale: maps `across` onto +x.
    linear = scale * np.array([[cos, sin], [-sin, cos]])
    eye_mid = linear @ ((left_eye + right_eye) / 2)
    shift = np.array([(frame.size - 1) / 2 - eye_mid[0], frame.eye_y * frame.size - eye_mid[1]])
    return np.hstack([linear, shift[:, None]])


def _as_matrix(matrix: Any) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"expected a 2×3 affine matrix, got shape {m.shape}")
    return m


def inverse_transform(matrix: Any) -> np.ndarray:
    """The inverse of a 2×3 affine matrix (crop → photo for a :func:`frame_transform`)."""
    m = _as_matrix(matrix)
    linear_inv = np.linalg.inv(m[:, :2])
    return np.hstack([linear_inv, (-linear_inv @ m[:, 2])[:, None]])


def map_points(points_xy: Any, matrix: Any) -> np.ndarray:
    """Apply a 2×3 affine matrix to N×2 points (x, y); returns N×2 float64."""
    m = _as_matrix(matrix)
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


# OpenCV warps keep these dtypes; others go through a wider type and back.
_CV2_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32)} | {
    np.dtype(np.float32),
    np.dtype(np.float64),
}


def _warp(
    array: np.ndarray,
    matrix: np.ndarray,
    out_hw: tuple[int, int],
    interpolation: Interpolation,
    border_value: float,
    inverse_map: bool,
) -> np.ndarray:
    import cv2

    if interpolation not in ("linear", "nearest"):
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an H×W or H×W×C array, got shape {array.shape}")
    dtype = array.dtype
    work = array
    if dtype not in _CV2_DTYPES:
        # bool, int64, uint32, float16: exact in float64 (integers up to 2**53).
        work = array.astype(np.float32 if dtype == np.float16 else np.float64)
    flags = cv2.INTER_LINEAR if interpolation == "linear" else cv2.INTER_NEAREST
    if inverse_map:
        flags |= cv2.WARP_INVERSE_MAP
    height, width = out_hw
    out = cv2.warpAffine(
        np.ascontiguousarray(work),
        _as_matrix(matrix),
        (int(width), int(height)),
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )
    if array.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing single channel
        out = out[:, :, None]
    if out.dtype != dtype:
        if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
            out = np.rint(out)
        out = out.astype(dtype)
    return out


def warp_image(
    image: np.ndarray,
    matrix: Any,
    size: int,
    *,
    interpolation: Interpolation = "linear",
    border_value: float = 0,
) -> np.ndarray:
    """The ``size``×``size`` crop of ``image`` (H×W or H×W×C, dtype kept) under ``matrix``.

    ``matrix`` maps photo pixels to crop pixels (:func:`frame_transform`). Crop pixels that fall
    outside the photo get ``border_value``. Use ``"nearest"`` for label maps.
    """
    return _warp(image, matrix, (size, size), interpolation, border_value, inverse_map=False)


def warp_to_photo(
    array: np.ndarray,
    matrix: Any,
    photo_shape: Sequence[int],
    *,
    interpolation: Interpolation = "nearest",
) -> np.ndarray:
    """Map a crop-frame array (labels, probabilities) back onto the photo's ``(H, W)`` grid.

    ``matrix`` is the photo → crop matrix the crop was made with; each photo pixel samples the
    crop at ``matrix @ (x, y, 1)``. Photo pixels outside the crop are 0 (background).
    """
    height, width = int(photo_shape[0]), int(photo_shape[1])
    return _warp(array, matrix, (height, width), interpolation, 0, inverse_map=True)


def _matrices_for(matrix: Any, count: int) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (2, 3):
        return np.broadcast_to(m, (count, 2, 3))
    if m.shape == (count, 2, 3):
        return m
    raise ValueError(f"expected one 2×3 matrix or {count} of them (N×2×3), got shape {m.shape}")


def logits_to_photo(
    logits: torch.Tensor,
    matrix: Any,
    photo_shape: Sequence[int],
    *,
    background_index: int = 0,
) -> torch.Tensor:
    """Crop-frame logits N×C×S×S → photo-frame logits N×C×H×W (bilinear), for ``photo_shape`` (H, W).

    ``matrix`` is one 2×3 photo → crop matrix (used for every item) or N of them (list or
    N×2×3 array). Each photo pixel samples the crop at ``matrix @ (x, y, 1)`` with
    ``grid_sample(align_corners=True)``: normalised −1 and +1 are the centres of the first and
    last crop pixels, which is OpenCV's pixel-centre convention, so the result agrees with
    :func:`warp_to_photo`. Photo pixels whose sample point lies outside the crop (beyond the
    outer pixels' edges, where :func:`warp_to_photo` with ``"nearest"`` gives 0) get a confident
    background vector: :data:`OUTSIDE_BACKGROUND_LOGIT` for ``background_index``,
    :data:`OUTSIDE_OTHER_LOGIT` for the other classes.
    """
    import torch
    import torch.nn.functional as F

    if logits.ndim != 4 or logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"expected N×C×S×S logits, got shape {tuple(logits.shape)}")
    n, c, size = logits.shape[0], logits.shape[1], logits.shape[-1]
    if not 0 <= background_index < c:
        raise ValueError(f"background_index {background_index} is not a class of {c}")
    height, width = int(photo_shape[0]), int(photo_shape[1])
    matrices = _matrices_for(matrix, n)

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    homogeneous = np.stack([xs, ys, np.ones_like(xs)], axis=-1)  # H×W×3
    crop_xy = np.einsum("hwk,nik->nhwi", homogeneous, matrices)  # N×H×W×2
    inside = np.all((crop_xy >= -0.5) & (crop_xy < size - 0.5), axis=-1)  # N×H×W
    grid = crop_xy * (2.0 / (size - 1)) - 1.0

    # Coordinates in float32 at least: half precision cannot address a large crop.
    work_dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
    grid_t = torch.from_numpy(grid).to(device=logits.device, dtype=work_dtype)
    sampled = F.grid_sample(
        logits.to(work_dtype), grid_t, mode="bilinear", padding_mode="border", align_corners=True
    )
    outside_vector = torch.full((c,), OUTSIDE_OTHER_LOGIT, dtype=work_dtype, device=logits.device)
    outside_vector[background_index] = OUTSIDE_BACKGROUND_LOGIT
    inside_t = torch.from_numpy(inside).to(logits.device)[:, None]  # N×1×H×W
    out = torch.where(inside_t, sampled, outside_vector[None, :, None, None])
    return out.to(logits.dtype)
