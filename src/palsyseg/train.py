"""Train one segmentation model on a contract dataset split: single process or ``torchrun`` DDP.

Follows the paper's §4.3: SGD with momentum 0.9, batch size 32, 300 epochs, 250×250 inputs,
random rotation (±10°) and scaling (0.75–1.25) — :class:`TrainConfig`'s defaults. The learning
rate follows the "poly" schedule, ``lr · (1 − it / total)^power`` per iteration (the paper gives
no schedule; poly is the DeepLab convention for segmentation).

What a run promises:

- **Checkpoints.** After every epoch ``OUT/last.pt`` is written atomically with everything needed
  to continue: model, optimizer, scheduler and AMP-scaler states, epoch, best-so-far, history and
  the RNG states (python, numpy, torch, CUDA). ``resume=True`` continues from it exactly: data
  order and augmentation are functions of ``(seed, epoch, index)``, so on CPU with deterministic
  algorithms a resumed run ends with the same weights as an uninterrupted one.
- **Validation** every epoch on ``val_dir`` with :mod:`palsyseg.metrics`; the model with the
  best mean F1 over the face classes (``mean_f1``, FPP one of its six; ties broken by
  ``f1_fpp``, then the earlier epoch) is kept as
  ``OUT/best.pt`` together with the palsy threshold chosen on validation
  (:func:`~palsyseg.metrics.choose_palsy_threshold`) and, for PalsyNet's per-part FPP decision,
  its operating point (:func:`palsyseg.scoring.validate`; the metrics are those at that point).
  ``OUT/history.json`` holds every epoch.
- **Checkpoint files** (:mod:`palsyseg.checkpoint`) hold plain types and tensors only, so they
  load with ``torch.load(..., weights_only=True)``, and carry SHA-256 digests checked on every
  load; ``last.pt`` is written before ``best.pt`` and a run directory left by a killed write is
  made whole when the next run starts in it. :func:`load_checkpoint_model` rebuilds the model by
  name through :func:`palsyseg.models.create_model`.
- **Devices.** AMP runs only on CUDA; channels-last (``channels_last``) on CPU too, where it
  made every model's training step faster (``TrainConfig``). Under ``torchrun`` (``WORLD_SIZE > 1``)
  the model is wrapped in DDP (gloo on CPU, nccl on CUDA), ``batch_size`` is the *global* batch
  split evenly over the ranks, and rank 0 alone validates, logs and writes files.
- **Warm start.** ``init_weights`` names a palsyseg checkpoint of the same model (name and
  ``model_kwargs``) whose weights the run starts from instead of a random draw: fine-tuning, as
  a team retrains its champion on new data or the demo starts from the shipped phantom-trained
  palsynet (``pretrained/``). Only the weights come along (not the optimizer, schedule or
  epoch count: it is a new run), the operating points are chosen afresh on validation (the
  source's class offsets are dropped when this run does not choose its own), and
  every checkpoint of the run records the starting weights' SHA-256 (``init_weights_sha256``).
  A resumed run continues from ``last.pt`` and ignores it.

The ``on_epoch_end(epoch, metrics)`` callback (rank 0, after the epoch's checkpoint is on disk)
is how the tracking layer logs per-epoch metrics; nothing here knows about MLflow.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from palsyseg.align import FaceFrame
from palsyseg.atomic import atomic_write_json
from palsyseg.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    LAST_CHECKPOINT,
    CheckpointError,
    read_checkpoint,
    reconcile_run,
    save_checkpoint,
)
from palsyseg.checkpoint import load_checkpoint_model as load_checkpoint_model
from palsyseg.errors import ConfigError, PalsysegError, Problem
from palsyseg.labels import LABEL_NAMES, NUM_CLASSES
from palsyseg.losses import SegmentationLoss
from palsyseg.models import create_model
from palsyseg.processes import (
    Processes,
    autocast,
    deterministic,
    restore_rng_state,
    rng_state,
    seed_everything,
    start_processes,
)
from palsyseg.scoring import palsy_score_of
from palsyseg.scoring import validate as validate
from palsyseg.train_config import TrainConfig as TrainConfig
from palsyseg.train_config import TrainResult as TrainResult

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"

# Settings a resumed run must share with the run that wrote the checkpoint; the rest (epochs,
# workers, device, AMP) may change between the two.
_RESUME_MUST_MATCH = (
    "model",
    "model_kwargs",
    "image_size",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "poly_power",
    "seed",
    "loss",
)


class TrainingError(PalsysegError):
    """Training cannot go on (a non-finite loss, too little data)."""


# ----------------------------------------------------------------------------------------------
# Checkpoints


# The file format, its reading, writing and verification live in palsyseg.checkpoint; its names
# are re-exported here for callers of palsyseg.train.load_checkpoint_model / read_checkpoint.
# Every checkpoint of a run is written through this name (a seam tests watch).
_save_checkpoint = save_checkpoint


# ----------------------------------------------------------------------------------------------
# One epoch of training, one pass of validation


def _lr_factor(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier per step: linear warm-up over ``config.warmup`` of the
    steps, then ``poly`` (the paper's, eq. of DeepLab: ``(1 − t)^power``) or ``cosine`` decay
    over the rest, ``t`` running from 0 to 1."""
    warm = round(config.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(step - warm, total_steps - warm) / max(total_steps - warm, 1)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return (1.0 - t) ** config.poly_power

    return factor


def _to_float32(outputs: Any) -> Any:
    """Cast floating tensors in a model's output dict (or list) to float32 for the loss."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: _to_float32(v) for k, v in outputs.items()}
    if isinstance(outputs, list | tuple):
        return type(outputs)(_to_float32(v) for v in outputs)
    return outputs


class _TrainStep(nn.Module):
    """Model and loss as one module, so DDP synchronises the loss's own parameters too."""

    def __init__(self, model: nn.Module, criterion: nn.Module, amp_dtype: torch.dtype | None):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.amp_dtype = amp_dtype

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        with autocast(image.device, self.amp_dtype):
            outputs = self.model(image)
        # the loss in float32: boundary/HIST/depth terms are sensitive to half precision
        return self.criterion(_to_float32(outputs), mask, depth)


def _selection_key(metrics: dict[str, float]) -> tuple[float, float]:
    """Best model = highest mean F1 (classes 1–6, FPP among them), then highest FPP F1 (NaN counts
    as worst). FPP F1 alone is the wrong key: early in training it is a few noisy pixels, and
    an epoch-1 model that marks some FPP (0.04) beat a later one at mean F1 0.55 that marks
    none (measured, 6 × 100 streamed patients), so the run kept its worst weights."""

    def finite(value: float | None) -> float:
        return -1.0 if value is None or math.isnan(value) else float(value)

    return finite(metrics.get("mean_f1")), finite(metrics.get("f1_fpp"))


# ----------------------------------------------------------------------------------------------
# The run


def _check_resume_config(path: Path, saved: dict[str, Any], config: TrainConfig) -> None:
    current = config.to_dict()
    problems = [
        Problem(
            file=str(path),
            rule=f"cannot resume: {key} was {saved.get(key)!r} in the checkpoint, now {current[key]!r}",
        )
        for key in _RESUME_MUST_MATCH
        if saved.get(key) != current[key]
    ]
    if problems:
        raise ConfigError(problems)
    if saved.get("epochs") != config.epochs:
        log.warning(
            "resuming with epochs=%s (checkpoint: %s): the poly schedule is stretched from here on",
            config.epochs,
            saved.get("epochs"),
        )


def frame_of(config: TrainConfig) -> FaceFrame | None:
    """The face frame a run trains in (``None`` without ``face_frame``)."""
    return FaceFrame(size=config.image_size) if config.face_frame else None


def _make_loaders(
    train_dir: Path, val_dir: Path, config: TrainConfig, procs: Processes, device: torch.device
) -> tuple[Any, Any, Any, Any]:
    from torch.utils.data import DataLoader, DistributedSampler

    from palsyseg.data.augment import TrainAugmentation
    from palsyseg.data.torch_dataset import SegmentationDataset

    if config.batch_size % procs.world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} does not split evenly over {procs.world_size} processes"
        )
    per_rank_batch = config.batch_size // procs.world_size
    frame = frame_of(config)
    train_set: Any
    if config.stream_patients:
        from palsyseg.data.stream import PhantomStream, StreamConfig

        train_set = PhantomStream(
            StreamConfig(
                patients_per_epoch=config.stream_patients,
                seed=config.seed,
                repeats=config.stream_repeats,
            ),
            image_size=config.image_size,
            augment=TrainAugmentation(),
            seed=config.seed,
            frame=frame,
        )
    else:
        train_set = SegmentationDataset(
            train_dir,
            image_size=config.image_size,
            augment=TrainAugmentation(),
            seed=config.seed,
            frame=frame,
        )
    val_set = SegmentationDataset(val_dir, image_size=config.image_size, frame=frame)
    # The shuffle order is a function of (seed, epoch) (DistributedSampler.set_epoch), also for a
    # single process, so a resumed run draws the same order as an uninterrupted one.
    sampler = DistributedSampler(
        train_set,
        num_replicas=procs.world_size,
        rank=procs.rank,
        shuffle=True,
        seed=config.seed,
    )
    per_rank = len(sampler)
    if per_rank < 2:
        raise TrainingError(
            f"{train_dir}: {len(train_set)} training image(s) give {per_rank} per process; "
            "batch normalisation needs at least 2"
        )
    # Full batches only, so BatchNorm never sees a batch of one; a split smaller than one batch
    # trains as a single smaller batch.
    drop_last = per_rank >= per_rank_batch
    common = {
        "num_workers": config.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": False,  # workers must see the Dataset's epoch (set_epoch) afresh
    }
    train_loader = DataLoader(
        train_set, batch_size=per_rank_batch, sampler=sampler, drop_last=drop_last, **common
    )
    val_loader = DataLoader(val_set, batch_size=per_rank_batch, shuffle=False, **common)
    return train_set, sampler, train_loader, val_loader


def _result(
    out_dir: Path,
    config: TrainConfig,
    state: dict[str, Any],
    decision_refit: dict[str, Any] | None = None,
) -> TrainResult:
    return TrainResult(
        model_name=config.model,
        best_checkpoint=out_dir / BEST_CHECKPOINT,
        last_checkpoint=out_dir / LAST_CHECKPOINT,
        best_epoch=int(state["best_epoch"]),
        history=list(state["history"]),
        best_val_metrics=dict(state["best_val_metrics"]),
        palsy_threshold=float(state["best_threshold"]),
        decision_refit=decision_refit,
    )


def train_model(
    train_dir: str | os.PathLike[str],
    val_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: TrainConfig,
    *,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``train_dir``, validate on ``val_dir``, checkpoint into ``out_dir``.

    ``history`` entries hold ``epoch`` (1-based), ``train_loss`` (and ``train_<term>`` per loss
    term), ``lr`` (at the epoch's end), ``epoch_seconds`` and ``val_<metric>`` for every key of
    :func:`palsyseg.metrics.segmentation_metrics` and :func:`palsyseg.metrics.image_level_metrics`
    plus ``val_palsy_threshold``. ``on_epoch_end(epoch, entry)`` runs on rank 0 after the epoch's
    checkpoint is on disk, so an exception there stops the run at a resumable point.

    ``resume=True`` continues from ``out_dir/last.pt`` (fresh start if there is none); without it
    an ``out_dir`` that already holds a run is refused rather than overwritten. Every process of
    a ``torchrun`` job returns the same :class:`TrainResult`.
    """
    train_dir, val_dir, out_dir = Path(train_dir), Path(val_dir), Path(out_dir)
    last_path, best_path = out_dir / LAST_CHECKPOINT, out_dir / BEST_CHECKPOINT
    if not resume and (last_path.exists() or best_path.exists()):
        raise CheckpointError(
            Problem(
                file=str(out_dir),
                rule="already holds a training run (last.pt/best.pt); resume it (--resume) "
                "or choose another output directory",
            )
        )
    procs, device = start_processes(config.device)
    if procs.is_main:  # the directory's only writer: clear what a killed write left
        reconcile_run(out_dir, also=(HISTORY_FILE,))
    try:
        with deterministic(device):
            result = _train(
                train_dir, val_dir, out_dir, config, procs, device, resume, on_epoch_end
            )
        if procs.world_size > 1:
            import torch.distributed as dist

            shared = [result]
            dist.broadcast_object_list(shared, src=0)
            result = shared[0]
        return result
    finally:
        if procs.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


@dataclass
class _Run:
    """What one training run holds and mutates; ``last.pt`` stores all of it."""

    config: TrainConfig
    procs: Processes
    device: torch.device
    out_dir: Path
    amp_dtype: torch.dtype | None
    channels_last: bool
    model: nn.Module
    criterion: nn.Module
    step: nn.Module  # model + loss, DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    init_sha256: str = ""  # SHA-256 of the weights the run started from (init_weights)
    state: dict[str, Any] = field(
        default_factory=lambda: {
            "epoch": 0,  # epochs completed
            "best_key": [-math.inf, -math.inf],
            "best_epoch": 0,
            "best_val_metrics": {},
            "best_threshold": 0.0,
            "history": [],
        }
    )

    def payload(self, metadata: dict[str, Any], *, training: bool) -> dict[str, Any]:
        data = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model_state": self.model.state_dict(),
            "metadata": metadata,
        }
        if training:
            data["training"] = {
                **self.state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "loss_state": self.criterion.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "rng": rng_state(),
            }
        return data


def _build_run(
    config: TrainConfig, procs: Processes, device: torch.device, out_dir: Path, steps: int
) -> _Run:
    cuda = device.type == "cuda"
    amp_dtype: torch.dtype | None = None
    if cuda and config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    channels_last = config.channels_last
    model = create_model(config.model, num_classes=NUM_CLASSES, **config.model_kwargs)
    init_sha256 = ""
    if config.init_weights:
        from palsyseg.checkpoint import load_initial_weights

        init_sha256 = load_initial_weights(
            model, config.init_weights, config.model, keep_class_offsets=config.class_offsets
        )
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # The HIST loss owns parameters (class means, HGNN): they train with the model, sit in the
    # optimizer, the checkpoint and, under DDP, the gradient all-reduce.
    criterion = SegmentationLoss(config.loss, num_classes=NUM_CLASSES).to(device)
    step = _TrainStep(model, criterion, amp_dtype)
    optimizer: torch.optim.Optimizer
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(
            step.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            step.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(config, config.epochs * steps)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return _Run(
        config, procs, device, out_dir, amp_dtype, channels_last,
        model, criterion, step, optimizer, scheduler, scaler, init_sha256,
    )  # fmt: skip


def _resume(run: _Run, path: Path) -> None:
    """Load model, loss, optimizer, scheduler, scaler, progress and RNG states from ``path``."""
    checkpoint = read_checkpoint(path, map_location=str(run.device))
    if "training" not in checkpoint:
        raise CheckpointError(
            Problem(file=str(path), rule="holds no training state to resume from")
        )
    _check_resume_config(path, checkpoint["metadata"].get("train_config", {}), run.config)
    training = checkpoint["training"]
    state = checkpoint["model_state"]
    offsets = getattr(run.model, "class_offsets", None)
    if offsets is not None and "class_offsets" not in state:  # a run from before the offsets
        state = {**state, "class_offsets": offsets.clone()}
    run.model.load_state_dict(state)
    run.criterion.load_state_dict(training["loss_state"])
    run.optimizer.load_state_dict(training["optimizer"])
    run.scheduler.load_state_dict(training["scheduler"])
    if training.get("scaler"):
        run.scaler.load_state_dict(training["scaler"])
    run.state = {key: training[key] for key in run.state}
    restore_rng_state(training["rng"])
    log.info("resumed %s from %s after epoch %d", run.config.model, path, run.state["epoch"])


def _train_epoch(
    run: _Run, loader: Any, epoch: int, on_batch: Callable[[float], None]
) -> dict[str, float]:
    """One pass over the training data; returns the sample-weighted mean loss terms (all ranks)."""
    run.step.train()
    sums: dict[str, float] = {}
    seen = 0
    for index, batch in enumerate(loader):
        image = batch["image"].to(run.device, non_blocking=True)
        if run.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        mask = batch["mask"].to(run.device, non_blocking=True)
        depth = batch["depth"].to(run.device, non_blocking=True)
        loss, terms = run.step(image, mask, depth)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{run.config.model}: loss became {loss.item()} at epoch {epoch + 1}, step "
                f"{index + 1} (lr {run.scheduler.get_last_lr()[0]:.3g}); lower the learning rate"
            )
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()  # poly decay per iteration
        n = image.shape[0]
        seen += n
        sums["loss"] = sums.get("loss", 0.0) + loss.item() * n
        for term, value in terms.items():
            if term != "total":  # the same number as "loss"
                sums[term] = sums.get(term, 0.0) + float(value) * n
        on_batch(sums["loss"] / seen)
    return _reduce_means(sums, seen, run.procs, run.device)


def _validate(
    run: _Run, val_loader: Any, *, operating_point: bool = True
) -> tuple[dict[str, float], float]:
    """:func:`palsyseg.scoring.validate` of the run's model, which also sets its operating
    points (the FPP decision's bias unless ``operating_point`` is false, the class offsets when
    the run chooses them)."""
    frame = frame_of(run.config)
    return validate(
        run.model,
        val_loader,
        run.device,
        amp_dtype=run.amp_dtype,
        channels_last=run.channels_last,
        midline=None if frame is None else (frame.size - 1) / 2,
        class_offsets=run.config.class_offsets,
        operating_point=operating_point,
    )


def _finish_epoch(
    run: _Run, epoch: int, entry: dict[str, float], val_loader: Any, started: float
) -> None:
    """Rank 0: validate, keep the best model, write last.pt and history.json."""
    metrics, threshold = _validate(run, val_loader)
    entry.update({f"val_{k}": float(v) for k, v in metrics.items()})
    entry["val_palsy_threshold"] = float(threshold)
    entry["epoch_seconds"] = time.perf_counter() - started  # training and validation
    state = run.state
    state["history"].append(entry)
    state["epoch"] = epoch + 1
    metadata = _metadata(run.config, epoch + 1, metrics, threshold, palsy_score_of(run.model))
    if run.init_sha256:
        metadata["init_weights_sha256"] = run.init_sha256
    key = list(_selection_key(metrics))
    new_best = key > state["best_key"]  # strictly better: on a tie the earlier epoch stays
    if new_best:
        state.update(
            best_key=key,
            best_epoch=epoch + 1,
            best_val_metrics=dict(metrics),
            best_threshold=float(threshold),
        )
    # last.pt first: best.pt never describes an epoch last.pt has not recorded, and a kill
    # between the two is completed from last.pt at the next start (checkpoint.reconcile_run).
    _save_checkpoint(run.out_dir / LAST_CHECKPOINT, run.payload(metadata, training=True))
    if new_best:
        _save_checkpoint(run.out_dir / BEST_CHECKPOINT, run.payload(metadata, training=False))
    atomic_write_json(run.out_dir / HISTORY_FILE, state["history"], indent=1)


def _train(
    train_dir: Path,
    val_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    procs: Processes,
    device: torch.device,
    resume: bool,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
) -> TrainResult | None:
    seed_everything(config.seed)
    train_set, sampler, train_loader, val_loader = _make_loaders(
        train_dir, val_dir, config, procs, device
    )
    run = _build_run(config, procs, device, out_dir, len(train_loader))
    last_path = out_dir / LAST_CHECKPOINT
    if resume and last_path.exists():
        _resume(run, last_path)
    elif resume:
        log.info("no %s in %s: starting %s from scratch", LAST_CHECKPOINT, out_dir, config.model)
    if procs.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        run.step = DistributedDataParallel(
            run.step,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # ablations and aux heads leave some parameters idle
        )
    if run.state["epoch"] >= config.epochs:
        log.info("%s already trained for %d epochs", config.model, run.state["epoch"])
        if not procs.is_main:
            return None
        refit = _refit_decision(run, train_set, val_loader)
        return _result(out_dir, config, run.state, refit)

    from rich.progress import TextColumn

    from palsyseg.progress import progress_bar

    bar = progress_bar(TextColumn("{task.fields[status]}")) if procs.is_main else None
    with bar or contextlib.nullcontext():
        if bar is not None:
            epochs_task = bar.add_task(
                f"{config.model}", total=config.epochs, completed=run.state["epoch"], status=""
            )
            batches_task = bar.add_task("batches", total=len(train_loader), status="")

        def on_batch(mean_loss: float) -> None:
            if bar is not None:
                bar.update(batches_task, advance=1, status=f"loss {mean_loss:.4f}")

        for epoch in range(run.state["epoch"], config.epochs):
            started = time.perf_counter()
            # data order and augmentation are functions of (seed, epoch): resumable exactly
            sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            if bar is not None:
                bar.reset(batches_task, total=len(train_loader), description=f"epoch {epoch + 1}")
            means = _train_epoch(run, train_loader, epoch, on_batch)
            entry: dict[str, float] = {"epoch": epoch + 1, "train_loss": means.pop("loss")}
            entry.update({f"train_{k}": v for k, v in means.items()})
            entry["lr"] = float(run.scheduler.get_last_lr()[0])
            if procs.is_main:
                _finish_epoch(run, epoch, entry, val_loader, started)
                log.info(
                    "%s epoch %d/%d: loss %.4f, val mean F1 %.4f, mIoU %.4f, FPP F1 %.4f (%.1fs)",
                    config.model, epoch + 1, config.epochs, entry["train_loss"],
                    entry["val_mean_f1"], entry["val_miou"], entry["val_f1_fpp"],
                    entry["epoch_seconds"],
                )  # fmt: skip
                if bar is not None:
                    bar.update(
                        epochs_task,
                        advance=1,
                        status=f"loss {entry['train_loss']:.4f} | val mF1 "
                        f"{entry['val_mean_f1']:.3f} mIoU {entry['val_miou']:.3f} "
                        f"FPP F1 {entry['val_f1_fpp']:.3f}",
                    )
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, dict(entry))
            else:
                run.state["epoch"] = epoch + 1
            if procs.world_size > 1:
                import torch.distributed as dist

                dist.barrier()
    if not procs.is_main:
        return None
    refit = _refit_decision(run, train_set, val_loader)
    return _result(out_dir, config, run.state, refit)


def _refit_decision(run: _Run, train_set: Any, val_loader: Any) -> dict[str, Any] | None:
    """Rank 0, after the last epoch: refit the best model's FPP decision (:mod:`palsyseg.refit`)
    and rewrite ``best.pt`` with it, or with the note that it was not kept, where validation's
    selection key fell. ``best.pt``'s metadata records it (``decision_refit``), so a resumed run
    neither repeats it nor loses it."""
    config = run.config
    if not config.decision_refit or getattr(run.model, "part_side", None) is None:
        return None
    from palsyseg.refit import refit_decision

    best_path = run.out_dir / BEST_CHECKPOINT
    best = read_checkpoint(best_path, map_location=str(run.device))
    metadata = best["metadata"]
    if not metadata.get("decision_refit"):  # else done before this run was resumed
        run.model.load_state_dict(best["model_state"])
        report, metrics, threshold = refit_decision(
            run.model,
            train_set,
            config,
            run.device,
            before=metadata["val_metrics"],
            validate=lambda: _validate(run, val_loader),
            rank=_selection_key,
            validate_at_point=lambda: _validate(run, val_loader, operating_point=False),
        )
        if report["kept"]:
            metadata.update(
                val_metrics={k: float(v) for k, v in metrics.items()},
                palsy_threshold=float(threshold),
                palsy_score=palsy_score_of(run.model),
            )
        else:  # back to the weights and operating points best.pt holds
            run.model.load_state_dict(best["model_state"])
        metadata["decision_refit"] = report
        _save_checkpoint(best_path, run.payload(metadata, training=False))
    run.state.update(
        best_val_metrics=dict(metadata["val_metrics"]),
        best_threshold=float(metadata["palsy_threshold"]),
    )
    return dict(metadata["decision_refit"])


def _reduce_means(
    sums: dict[str, float], seen: int, procs: Processes, device: torch.device
) -> dict[str, float]:
    """Sample-weighted means of the epoch's loss terms over every rank."""
    keys = sorted(sums)
    if procs.world_size > 1:
        import torch.distributed as dist

        totals = torch.tensor(
            [sums[k] for k in keys] + [float(seen)], dtype=torch.float64, device=device
        )
        dist.all_reduce(totals)
        values = totals.tolist()
        return {k: values[i] / values[-1] for i, k in enumerate(keys)}
    return {k: sums[k] / max(seen, 1) for k in keys}


def _metadata(
    config: TrainConfig,
    epoch: int,
    metrics: dict[str, float],
    threshold: float,
    palsy_score: str,
) -> dict[str, Any]:
    return {
        "model_name": config.model,
        "num_classes": NUM_CLASSES,
        "label_names": list(LABEL_NAMES),
        "image_size": config.image_size,
        "frame": frame.to_dict() if (frame := frame_of(config)) is not None else None,
        "palsy_threshold": float(threshold),
        "palsy_score": palsy_score,
        "epoch": epoch,
        "val_metrics": {k: float(v) for k, v in metrics.items()},
        "train_config": config.to_dict(),
        "torch_version": str(torch.__version__),
    }
