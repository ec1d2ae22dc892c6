"""A torch ``Dataset`` over a contract dataset directory (shared/CONTRACT.md).

The manifest is read once with :func:`~palsyseg.data.manifest.read_manifest` (strict); files are
read with :mod:`palsyseg.data.images` when an item is asked for. Each item is a dict:

========================  ======================================================================
``image``                 float32 3×S×S, RGB scaled to [0, 1] then ImageNet-normalised
``mask``                  int64 S×S, labels 0–6
``depth``                 float32 S×S, relative depth in [0, 1], 0 = none (all zeros if the row
                          has no depth map)
``palsy``                 int64, 1 if the diagnosis is not ``healthy``
``affected_side``         int64 index into :data:`palsyseg.labels.SIDES` (after any flip)
``diagnosis``             int64 index into :data:`palsyseg.labels.DIAGNOSES`
``patient_id``            str
``index``                 int64, the manifest row
========================  ======================================================================

``S`` is ``image_size`` (the paper uses 250×250, §4.3): photos are resized with area
interpolation, masks and depth with nearest neighbour so labels are never blended. Training
augmentation (:mod:`palsyseg.data.augment`) runs after the resize, seeded per
``(seed, epoch, index)``; call :meth:`SegmentationDataset.set_epoch` before each epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from palsyseg.data.augment import TrainAugmentation, sample_seed
from palsyseg.data.images import read_depth, read_mask, read_rgb
from palsyseg.data.manifest import ManifestRow, read_manifest, resolve_in_root
from palsyseg.errors import DatasetError, Problem
from palsyseg.labels import DIAGNOSES, NUM_CLASSES, SIDES

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
    """A photo as the network expects it: resized to ``image_size``, normalised, 1×3×S×S."""
    return normalize_image(resize_image(image, image_size)).unsqueeze(0)


class SegmentationDataset(Dataset):
    """Items of a contract dataset as tensors (see the module docstring for the keys).

    ``augment`` (training only) is applied after the resize with a seed derived from
    ``(seed, epoch, index)``, so items are reproducible whatever the worker count or DDP rank.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_size: int = 250,
        augment: TrainAugmentation | None = None,
        seed: int = 0,
    ) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        self.root = Path(root)
        self.rows: list[ManifestRow] = read_manifest(self.root)
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw for ``epoch`` (set before the DataLoader iterates)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        raw = load_sample(self.root, self.rows[index])
        image = resize_image(raw.image, self.image_size)
        mask = resize_labels(raw.mask, self.image_size)
        depth = resize_labels(raw.depth, self.image_size)
        side = raw.row.affected_side
        if self.augment is not None:
            out = self.augment(
                image, mask, depth, side, seed=sample_seed(self.seed, self.epoch, index)
            )
            image, mask, depth, side = out.image, out.mask, out.depth, out.affected_side
        return {
            "image": normalize_image(image),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)),
            "palsy": torch.tensor(int(raw.row.has_palsy)),
            "affected_side": torch.tensor(SIDES.index(side)),
            "diagnosis": torch.tensor(DIAGNOSES.index(raw.row.diagnosis)),
            "patient_id": raw.row.patient_id,
            "index": torch.tensor(index),
        }
