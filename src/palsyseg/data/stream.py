"""A training source that draws fresh phantom patients on the fly: no face is seen twice.

:class:`PhantomStream` is a map-style torch ``Dataset`` whose item ``i`` in epoch ``e`` is
image ``i mod P`` (``P`` = images per patient, one per exam pose) of a patient drawn for that
epoch and index alone, rendered by :mod:`palsyseg.data.phantom`, passed through the JPEG
round trip a written dataset gets, mapped into the canonical face frame
(:mod:`palsyseg.align`) from the generator's own landmarks, then augmented like any training
item. Everything is a function of ``(seed, epoch, index)``, so DataLoader workers, DDP ranks
and a resumed run all draw the same faces; nothing is written to disk, so the training set is
as large as the budget.

Held-out patients: a finite synthetic dataset uses patient indices ``0 … N-1`` of its seed
(:func:`palsyseg.data.synth.make_patient`); the stream draws from indices at and above
:data:`STREAM_OFFSET` (10⁷), which no written dataset reaches, so with the *same* seed as the
validation and test data it still never shows one of their faces — and with another seed the
faces are independent anyway.

Render size: a phantom face's inter-ocular distance is ~0.21 of the rendered side, and the
frame wants ``frame.iod`` of its own side, magnified up to 1.25× by the scale jitter; the
stream renders at :func:`render_size_for` so the crop is never upsampled by more than ~1.1×.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from palsyseg.align import FaceFrame
from palsyseg.data.augment import TrainAugmentation, sample_seed
from palsyseg.data.face_points import points_from_landmarks
from palsyseg.data.manifest import ManifestRow
from palsyseg.data.synth import SynthConfig, exam_poses, make_patient, render_example
from palsyseg.data.torch_dataset import RawSample, sample_item, to_frame

STREAM_OFFSET = 10_000_000
"""First patient index the stream draws: far above any written dataset's indices."""
PHANTOM_IOD_FRACTION = 0.21
"""A rendered phantom face's median inter-ocular distance as a fraction of the image side."""


def render_size_for(frame: FaceFrame) -> int:
    """The render side that gives the frame's inter-ocular distance at 1.25× magnification
    with at most ~1.1× upsampling (rounded up to a multiple of 8, at least 64)."""
    wanted = frame.iod * frame.size * 1.25 / 1.1 / PHANTOM_IOD_FRACTION
    return max(64, 8 * math.ceil(wanted / 8))


@dataclass(frozen=True)
class StreamConfig:
    """How many fresh patients an epoch draws, from which seed, and for how many epochs.

    ``repeats`` > 1 keeps an epoch's patients for that many consecutive epochs (fresh
    augmentation every epoch): each face is rendered once per group of epochs and kept in the
    frame in memory (~130 KB per image at 128 px), so rendering, ~40 % of a palsynet step on
    2 cores, is paid once per ``repeats`` epochs.
    """

    patients_per_epoch: int = 200
    seed: int = 0
    images_per_patient: int = 5
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.patients_per_epoch < 1:
            raise ValueError(
                f"patients_per_epoch must be at least 1, got {self.patients_per_epoch}"
            )
        if self.repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats}")
        if not 1 <= self.images_per_patient <= 5:
            raise ValueError(f"images_per_patient must be 1–5, got {self.images_per_patient}")


class PhantomStream(Dataset):
    """Fresh phantom faces per epoch, in the face frame (see the module docstring).

    Items have the keys of :class:`palsyseg.data.torch_dataset.SegmentationDataset`;
    ``patient_id`` is ``stream<seed>-<index>``.
    """

    def __init__(
        self,
        config: StreamConfig,
        *,
        image_size: int,
        augment: TrainAugmentation | None = None,
        seed: int = 0,
        frame: FaceFrame | None = None,
    ) -> None:
        self.config = config
        self.frame = frame or FaceFrame(size=image_size)
        if self.frame.size != image_size:
            raise ValueError(f"frame size {self.frame.size} differs from image_size {image_size}")
        self.synth = SynthConfig(
            patients=1,
            seed=config.seed,
            size=render_size_for(self.frame),
            images_per_patient=config.images_per_patient,
        )
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        # Frame-mapped renderings of the current group of epochs (see StreamConfig.repeats).
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, ManifestRow]] = {}
        self._cache_group = -1

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s patients (set before the DataLoader iterates)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.config.patients_per_epoch * self.config.images_per_patient

    def patient_index(self, index: int) -> int:
        """The generator's patient index behind item ``index`` of the current epoch."""
        per = self.config.images_per_patient
        group = self.epoch // self.config.repeats
        return STREAM_OFFSET + group * self.config.patients_per_epoch + index // per

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        image, mask, depth, row = self._framed(index)
        return sample_item(
            image, mask, depth, row, index, self.augment, sample_seed(self.seed, self.epoch, index)
        )

    def _framed(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, ManifestRow]:
        """Item ``index``'s photo, mask and depth in the frame, before augmentation (cached
        for the current group of epochs when ``repeats`` > 1)."""
        group = self.epoch // self.config.repeats
        if group != self._cache_group:
            self._cache, self._cache_group = {}, group
        if index in self._cache:
            return self._cache[index]
        framed = self._render(index)
        if self.config.repeats > 1:
            self._cache[index] = framed
        return framed

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, ManifestRow]:
        import cv2

        patient_index = self.patient_index(index)
        k = index % self.config.images_per_patient
        patient = make_patient(self.synth, patient_index)
        pose = exam_poses(self.synth, patient_index)[k]
        rendering = render_example(self.synth, patient, patient_index, k, pose)
        # The JPEG round trip every written image gets (its artefacts are part of the data).
        ok, buffer = cv2.imencode(
            ".jpg",
            cv2.cvtColor(rendering.rgb, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, rendering.jpeg_quality],
        )
        if not ok:
            raise OSError("could not encode a streamed phantom image as JPEG")
        rgb = cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        row = ManifestRow(
            image=f"stream/{patient_index}_{k}_{pose}.jpg",
            mask="",
            patient_id=f"stream{self.config.seed}-{patient_index}",
            diagnosis=patient.diagnosis,
            affected_side=patient.affected_side,
            grade=patient.grade,
            pose=pose,
        )
        raw = RawSample(rgb, rendering.mask, rendering.depth.astype(np.float32), row)
        points = points_from_landmarks(rendering.landmarks, source=row.image)
        image, mask, depth, _ = to_frame(raw, points, self.frame)
        return image, mask, depth, row
