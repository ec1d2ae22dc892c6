"""A torch ``Dataset`` over a contract dataset directory (shared/CONTRACT.md), in the face frame.

The manifest is read once with :func:`~palsyseg.data.manifest.read_manifest` (strict); files are
read with :mod:`palsyseg.data.images` when an item is asked for. Each item is a dict:

========================  ======================================================================
``image``                 float32 3×S×S, RGB scaled to [0, 1] then ImageNet-normalised
``mask``                  int64 S×S, labels 0–6
``depth``                 float32 S×S, relative depth in [0, 1], 0 = none (all zeros if the row
                          has no depth map)
``palsy``                 int64, 1 if this photo *shows* palsy (its mask holds FPP): the
                          image-level truth of the metrics (the diagnosis is the patient's)
``visible_side``          int64 index into :data:`palsyseg.labels.SIDES`: the patient's affected
                          side when the photo shows palsy, else ``none`` (after any flip)
``affected_side``         int64 index into :data:`palsyseg.labels.SIDES`: the patient's side
                          (after any flip)
``diagnosis``             int64 index into :data:`palsyseg.labels.DIAGNOSES`
``patient_id``            str
``index``                 int64, the manifest row
========================  ======================================================================

**The face frame** (:mod:`palsyseg.align`): by default every photo is mapped into the canonical
crop of side ``S = image_size`` by the similarity its five facial points fix (eye line level,
fixed inter-ocular distance, midline on the crop's mirror axis); the mask and the depth map go
with it (nearest neighbour; what the crop does not cover of the photo is left out, what the
photo does not cover of the crop is background). The points come from the row's landmarks JSON
(the generator writes one) or, for a dataset without landmarks, from dlib once per image
(:func:`palsyseg.data.face_points.points_for_row`, cached outside the dataset). A photo in
which dlib finds no face is framed by :func:`fallback_points` (the whole photo, centred) and
counted in a warning. ``frame=None`` gives the former whole-photo resize (area interpolation for
photos, nearest for labels), kept for checkpoints trained before the frame existed.

Training augmentation (:mod:`palsyseg.data.augment`) is jitter *around* the frame, seeded per
``(seed, epoch, index)``; call :meth:`SegmentationDataset.set_epoch` before each epoch. Its
horizontal flip mirrors the crop about the face's own midline and swaps the sides.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from palsyseg.align import FaceFrame, FivePoints, frame_transform, warp_image
from palsyseg.data.augment import TrainAugmentation, sample_seed
from palsyseg.data.images import read_depth, read_mask, read_rgb
from palsyseg.data.manifest import ManifestRow, read_manifest, resolve_in_root
from palsyseg.errors import DatasetError, Problem
from palsyseg.labels import DIAGNOSES, NUM_CLASSES, SIDES, Label

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass
class RawSample:
    """One manifest row's files at their stored size: uint8 RGB, uint8 mask, float32 depth."""

    image: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    row: ManifestRow


def load_sample(root: str | os.PathLike[str], row: ManifestRow) -> RawSample:
    """Read a row's image, mask and (optional) depth; refuse size mismatches and labels > 6.

    Raises :class:`DatasetError` naming the file and the broken rule.
    """
    image_path = resolve_in_root(root, row.image)
    mask_path = resolve_in_root(root, row.mask)
    image = read_rgb(image_path)
    mask = read_mask(mask_path)
    if mask.shape != image.shape[:2]:
        raise DatasetError(
            Problem(
                file=str(mask_path),
                rule=f"mask is {mask.shape[1]}×{mask.shape[0]} but its image is "
                f"{image.shape[1]}×{image.shape[0]} (must be the same size)",
            )
        )
    if int(mask.max(initial=0)) >= NUM_CLASSES:
        raise DatasetError(
            Problem(
                file=str(mask_path),
                rule=f"mask holds label {int(mask.max())} (labels are 0–{NUM_CLASSES - 1})",
            )
        )
    if row.depth:
        depth_path = resolve_in_root(root, row.depth)
        depth = read_depth(depth_path)
        if depth.shape != mask.shape:
            raise DatasetError(
                Problem(
                    file=str(depth_path),
                    rule=f"depth map is {depth.shape[1]}×{depth.shape[0]} but its image is "
                    f"{image.shape[1]}×{image.shape[0]} (must be the same size)",
                )
            )
    else:
        depth = np.zeros(mask.shape, dtype=np.float32)
    return RawSample(image=image, mask=mask, depth=depth, row=row)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB photo to ``size``×``size`` with area interpolation (no-op if already that size)."""
    import cv2

    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def resize_labels(array: np.ndarray, size: int) -> np.ndarray:
    """Resize a mask or depth map to ``size``×``size`` with nearest neighbour (labels never blend)."""
    import cv2

    if array.shape[:2] == (size, size):
        return array
    return cv2.resize(array, (size, size), interpolation=cv2.INTER_NEAREST)


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 RGB → float32 3×H×W, scaled to [0, 1] and ImageNet-normalised."""
    array = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def model_input(image: np.ndarray, image_size: int) -> torch.Tensor:
    """A photo as a network without the face frame expects it: resized, normalised, 1×3×S×S."""
    return normalize_image(resize_image(image, image_size)).unsqueeze(0)


def fallback_points(height: int, width: int) -> FivePoints:
    """Five points of an average frontal face filling a ``height``×``width`` photo, centred.

    Used where no landmarks exist and dlib finds no face: the frame then holds the whole photo
    at roughly the scale of a tightly framed portrait (eyes 0.42 of the height down, 0.25 of the
    shorter side apart), which is how the generator and most face datasets frame a face.
    """
    side = min(height, width)
    cx, eye_y, iod = (width - 1) / 2, 0.42 * height, 0.25 * side
    mouth_y, mouth_half = eye_y + 1.1 * iod, 0.42 * iod
    return FivePoints(
        left_eye=(cx + iod / 2, eye_y),
        right_eye=(cx - iod / 2, eye_y),
        nose_tip=(cx, eye_y + 0.6 * iod),
        mouth_left=(cx + mouth_half, mouth_y),
        mouth_right=(cx - mouth_half, mouth_y),
    )


def to_frame(
    sample: RawSample, points: FivePoints, frame: FaceFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Photo, mask and depth of ``sample`` in ``frame``, and the photo → crop matrix."""
    matrix = frame_transform(points, frame)
    image = warp_image(sample.image, matrix, frame.size, interpolation="linear")
    mask = warp_image(sample.mask, matrix, frame.size, interpolation="nearest")
    depth = warp_image(sample.depth, matrix, frame.size, interpolation="nearest")
    return image, mask, depth, matrix


def shows_palsy(mask: np.ndarray) -> bool:
    """True when a label mask holds FPP: the photo shows palsy (docs/CONTRACT.md)."""
    return bool(np.any(np.asarray(mask) == Label.FPP))


def visible_side(mask: np.ndarray, affected_side: str) -> str:
    """The image-level truth of the side: the patient's ``affected_side`` where the mask shows
    palsy, ``none`` otherwise."""
    return affected_side if shows_palsy(mask) else "none"


def row_points(
    root: str | os.PathLike[str], rows: list[ManifestRow], *, description: str = "face points"
) -> list[FivePoints | None]:
    """The five points of every row (landmarks JSON, else dlib, cached); ``None`` where dlib
    finds no face (logged once with the count)."""
    from palsyseg.data.face_points import FacePointDetector, points_for_row
    from palsyseg.progress import track

    detector = None
    if any(not (row.extras or {}).get("landmarks") for row in rows):
        detector = FacePointDetector()
    points: list[FivePoints | None] = []
    missing: list[str] = []
    for row in track(rows, description) if detector is not None else rows:
        try:
            points.append(points_for_row(root, row, detector=detector))
        except DatasetError as error:
            if "no face" not in str(error):
                raise
            points.append(None)
            missing.append(row.image)
    if missing:
        log.warning(
            "%s: dlib found no face in %d of %d image(s) (e.g. %s); those are framed whole",
            root,
            len(missing),
            len(rows),
            missing[0],
        )
    return points


class SegmentationDataset(Dataset):
    """Items of a contract dataset as tensors (see the module docstring for the keys).

    ``frame`` (default: the canonical :class:`~palsyseg.align.FaceFrame` of side
    ``image_size``; ``None`` for the whole-photo resize) is where items live. ``augment``
    (training only) is applied in that frame with a seed derived from ``(seed, epoch, index)``,
    so items are reproducible whatever the worker count or DDP rank.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_size: int = 250,
        augment: TrainAugmentation | None = None,
        seed: int = 0,
        frame: FaceFrame | str | None = "default",
    ) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        self.root = Path(root)
        self.rows: list[ManifestRow] = read_manifest(self.root)
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.frame: FaceFrame | None = (
            FaceFrame(size=image_size) if frame == "default" else frame  # type: ignore[assignment]
        )
        if self.frame is not None and self.frame.size != image_size:
            raise ValueError(f"frame size {self.frame.size} differs from image_size {image_size}")
        self.points = row_points(self.root, self.rows) if self.frame is not None else []

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw for ``epoch`` (set before the DataLoader iterates)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        raw = load_sample(self.root, self.rows[index])
        if self.frame is not None:
            points = self.points[index] or fallback_points(*raw.mask.shape)
            image, mask, depth, _ = to_frame(raw, points, self.frame)
        else:
            image = resize_image(raw.image, self.image_size)
            mask = resize_labels(raw.mask, self.image_size)
            depth = resize_labels(raw.depth, self.image_size)
        return sample_item(
            image,
            mask,
            depth,
            raw.row,
            index,
            self.augment,
            sample_seed(self.seed, self.epoch, index),
        )


def sample_item(
    image: np.ndarray,
    mask: np.ndarray,
    depth: np.ndarray,
    row: ManifestRow,
    index: int,
    augment: TrainAugmentation | None,
    seed: int,
) -> dict[str, torch.Tensor | str]:
    """One item's dict (module docstring) from frame-sized arrays; ``augment`` applied if given.

    The image-level truth (``palsy``, ``visible_side``) is read from the mask before
    augmentation, so an FPP part pushed out of the crop by the jitter does not change it.
    """
    side = row.affected_side
    palsy = shows_palsy(mask)
    if augment is not None:
        out = augment(image, mask, depth, side, seed=seed)
        image, mask, depth, side = out.image, out.mask, out.depth, out.affected_side
    return {
        "image": normalize_image(image),
        "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
        "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)),
        "palsy": torch.tensor(int(palsy)),
        "visible_side": torch.tensor(SIDES.index(side if palsy else "none")),
        "affected_side": torch.tensor(SIDES.index(side)),
        "diagnosis": torch.tensor(DIAGNOSES.index(row.diagnosis)),
        "patient_id": row.patient_id,
        "index": torch.tensor(index),
    }
