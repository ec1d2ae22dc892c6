"""What a training run is asked to do (:class:`TrainConfig`) and what it produced
(:class:`TrainResult`); :mod:`palsyseg.train` runs it and re-exports both.

``TrainConfig``'s defaults are the paper's (§4.3); ``params.yaml``'s ``train:`` section and the
named recipes (:mod:`palsyseg.recipes`) override them. ``to_dict`` gives the plain types a
checkpoint stores (it loads with ``weights_only=True``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from palsyseg.losses import LossConfig
from palsyseg.models import list_models


@dataclass
class TrainConfig:
    """Training settings; the defaults are the paper's (§4.3)."""

    model: str = "palsynet"
    epochs: int = 300
    batch_size: int = 32
    """The global batch: under DDP each of the N ranks takes ``batch_size / N``."""
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    optimizer: str = "sgd"
    """``sgd`` (the paper's: SGD with ``momentum``) or ``adamw`` (decoupled ``weight_decay``)."""
    schedule: str = "poly"
    """``poly`` (the paper's: ``(1 − t)^poly_power``) or ``cosine`` (half a cosine to 0), both
    after ``warmup``."""
    warmup: float = 0.0
    """Share of all training steps over which the learning rate rises linearly from 0."""
    image_size: int = 250
    seed: int = 7
    num_workers: int = 0
    amp: bool = True
    """Mixed precision (bf16 where supported, else fp16 with loss scaling); CUDA only."""
    channels_last: bool = True
    """NHWC memory format for the model and its input batches, on CPU as on CUDA (2 CPU threads,
    batch 4 at 192 px, one training step: palsynet 136 → 107 ms, U-Net-R18 534 → 480 ms,
    DeepLabV3+-R34 663 → 639 ms)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    loss: LossConfig = field(default_factory=LossConfig)
    model_kwargs: dict = field(default_factory=dict)
    face_frame: bool = True
    """Run the model in the canonical face frame (:mod:`palsyseg.align`); ``False`` resizes
    whole photos, as checkpoints from before the frame did."""
    stream_patients: int = 0
    """0: train on ``train_dir``. N > 0: train on N fresh phantom patients per epoch drawn on the
    fly (:mod:`palsyseg.data.stream`; ``train_dir`` is then unused), validate on ``val_dir``."""
    stream_repeats: int = 1
    """With ``stream_patients``: keep each draw of patients for this many consecutive epochs
    (rendered once, augmented afresh every epoch; :class:`~palsyseg.data.stream.StreamConfig`)."""
    init_weights: str = ""
    """A palsyseg checkpoint of the same model whose weights the run starts from
    (:mod:`palsyseg.train`, "Warm start"); empty: a random initialisation."""
    decision_refit: int = 0
    """After the last epoch, refit PalsyNet's per-part FPP decision on its frozen features over
    up to this many items of the run's own training epochs, and keep it where validation is not
    worse (:mod:`palsyseg.refit`); 0: off. Models without that decision ignore it."""
    refit_operating_point: str = "items"
    """Where a kept refit's operating point (the decision's per-part bias) is chosen: ``items``,
    on the refit's own training items (thousands of decided halves), or ``validation``, on the
    validation photos (tens of them per part; :mod:`palsyseg.refit`, step 4)."""
    class_offsets: bool = False
    """Choose per-class offsets on the logits at every validation (the ones that maximise the
    validation mean F1, :func:`palsyseg.scoring.choose_class_offsets`); the checkpoint keeps them
    and every evaluation and prediction applies them. ``False`` (the paper's): plain argmax."""

    def __post_init__(self) -> None:
        if self.model not in list_models():
            raise ValueError(
                f"unknown model {self.model!r}; valid names: {', '.join(list_models())}"
            )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {self.image_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.stream_repeats < 1:
            raise ValueError("stream_repeats must be at least 1")
        if self.decision_refit < 0:
            raise ValueError(f"decision_refit must not be negative, got {self.decision_refit}")
        if self.stream_patients < 0:
            raise ValueError(f"stream_patients must not be negative, got {self.stream_patients}")
        if self.stream_patients and not self.face_frame:
            raise ValueError("stream_patients needs face_frame: the stream is drawn in the frame")
        if self.weight_decay < 0 or self.poly_power < 0 or self.num_workers < 0:
            raise ValueError("weight_decay, poly_power and num_workers must not be negative")
        if self.refit_operating_point not in ("items", "validation"):
            raise ValueError(
                "refit_operating_point must be 'items' or 'validation', got "
                f"{self.refit_operating_point!r}"
            )
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("poly", "cosine"):
            raise ValueError(f"schedule must be 'poly' or 'cosine', got {self.schedule!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be a share of the steps in [0, 1), got {self.warmup}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (stored in checkpoints that load with ``weights_only=True``)."""
        return _plain(dataclasses.asdict(self))


@dataclass
class TrainResult:
    """What a finished run produced; ``history`` has one dict per epoch
    (:func:`palsyseg.train.train_model`)."""

    model_name: str
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    history: list[dict[str, float]]
    best_val_metrics: dict[str, float]
    palsy_threshold: float
    decision_refit: dict[str, Any] | None = None
    """What the decision refit did (:mod:`palsyseg.refit`; ``best.pt``'s metadata keeps the
    same), ``None`` when the run had none."""


def _plain(value: Any) -> Any:
    """Recursively turn tuples/Paths/numpy scalars into types ``weights_only`` loading accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = ["TrainConfig", "TrainResult"]
