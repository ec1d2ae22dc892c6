"""Refit PalsyNet's per-part, per-side FPP decision on the trained network's frozen features.

PalsyNet decides FPP once per part and half (:class:`~palsyseg.models.asymmetry.PartSideFPP`):
the segmentation says where the eye and the mouth are, the decision says whether the weak half's
part shows its weakness. End to end, that decision is the weakest link: on the 160 px benchmark
(seed 7, 300 test photos; ``benchmarks/bench_decision.py``) the labels' own decision in place of
the network's would take FPP F1 from 0.653 to 0.905, and the decision's F1 over photos was 0.58
for the eye and 0.81 for the mouth. The evidence is there: the same decision block, refit on its
frozen inputs from 5,000 streamed faces, reached 0.72–0.81 (eye) and 0.86–0.89 (mouth) on those
test photos with the operating point chosen on validation. End to end it sees each face's
decision once or twice, among a loss dominated by pixels, while the features and the moments it
reads still move; after training they stand still and the decision can be fit to them.

So training ends with a refit (``TrainConfig.decision_refit`` > 0):

1. **Descriptors.** The trained network in eval mode (BatchNorm at its running statistics, as at
   inference) runs without gradients over training items and keeps what the decision reads per
   part and half (:meth:`PartSideFPP.describe`: the part-weighted mean features and the part's
   moments) and the decision's targets on the item's mask
   (:func:`palsyseg.losses.fpp_decision_targets`). The items are the run's own training epochs
   in order (:func:`epoch_order`), under their training augmentation: no photo the baselines of
   a benchmark did not see, and no more than the run trained on.
2. **Fit.** Only the block's parameters (embedding, side and shape terms, presence), from their
   trained values, by Adam on the decision BCE (:func:`palsyseg.losses.decision_loss`) over the
   cached descriptors: ``epochs`` passes in shuffled batches of ``batch_size``, seeded.
3. **Keep.** The caller (:func:`palsyseg.train.train_model`) chooses the operating point on
   validation again and keeps the refit only where validation's selection key (mean F1, then FPP
   F1) is not lower than before it.
4. **Operating point** (``TrainConfig.refit_operating_point``, default ``items``). A kept
   refit's per-part bias is then chosen on the refit's own items (:func:`choose_operating_point`:
   the bias that maximises the F1 of the per-half decisions, as on validation), and validation
   is scored at it. The benchmark's 150 validation photos hold ~20 weak eye halves and ~50 weak
   mouth halves, so the F1-best bias there is a noisy estimate (on one 192 px network it chose
   +1.5 for the eye, q > 0.18, where the 300 test photos' best was −0.5); the 6,000 items hold
   hundreds of each. In-sample (the decision's ~12,000 parameters were just fit to them: 6,000
   faces, 24,000 part halves). Measured on six trained networks (the benchmark's 160 px
   seed 7 before and after the 1/2 features, seeds 8 and 9, two 192 px seed-7 draws; the same
   300 test photos; ``benchmarks/results/refit-operating-point-items.json``): per-half decision
   F1 0.872 → 0.886 on average (6 of 12 part decisions better, 2 worse, 4 equal), mean F1
   0.894 → 0.896 and FPP F1 0.791 → 0.800 (5 of 6 networks better). ``validation`` keeps the
   old choice.

Measured (the benchmark's 160 px defaults, the same networks before and after, 300 test photos
per seed; ``benchmarks/results/decision-refit-160px-seeds.json``): mean F1 0.865 → 0.887 and
FPP F1 0.660 → 0.769 on average over seeds 7–9, in ~100 s on 2 cores. Described in the
training views' own geometry (rotated ±10°, rescaled 0.75–1.25) the refit lost on validation
(FPP F1 0.665 → 0.597) and was not kept: the moments are lengths in the face frame, so the
items are described in the frame as inference sees them (flips and colour jitter stay).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from palsyseg.losses import decision_loss, fpp_decision_targets

log = logging.getLogger(__name__)

REPORTED = ("mean_f1", "f1_eye", "f1_mouth", "f1_fpp", "palsy_accuracy", "side_accuracy")
"""The validation metrics a refit's report keeps, before and after."""


@dataclass(frozen=True)
class Descriptors:
    """What the decision reads for N items, and its targets (CPU, float32)."""

    pooled: Tensor  # N×P×2×C
    moments: Tensor | None  # N×P×2×M (None without the block's geometry)
    targets: Tensor  # N×P×2, 0/1

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def take(self, index: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        moments = None if self.moments is None else self.moments[index]
        return self.pooled[index], moments, self.targets[index]


def epoch_order(epochs: int, repeats: int = 1) -> list[int]:
    """The training epochs in the order the refit draws them: one epoch of every group of
    ``repeats`` (the stream keeps a draw of faces that long) before a second of any, so the
    first ``k`` epochs drawn hold as many distinct faces as ``k`` epochs can."""
    repeats = max(1, repeats)
    return [e for offset in range(repeats) for e in range(offset, epochs, repeats)]


@torch.no_grad()
def collect_descriptors(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    device: torch.device,
    limit: int,
) -> Descriptors:
    """Run ``model`` (a PalsyNet with ``part_side``; put in eval mode here) over ``batches``
    (items of :class:`palsyseg.data.torch_dataset.SegmentationDataset`: ``image``, ``mask``)
    until ``limit`` items, keeping :class:`Descriptors`."""
    block = model.part_side
    model.eval()
    pooled: list[Tensor] = []
    moments: list[Tensor] = []
    targets: list[Tensor] = []
    seen = 0
    for batch in batches:
        take = min(limit - seen, batch["image"].shape[0])
        if take <= 0:
            break
        out = model(batch["image"][:take].to(device))
        pooled.append(out["fpp_pooled"].float().cpu())
        if "fpp_moments" in out:
            moments.append(out["fpp_moments"].float().cpu())
        mask = batch["mask"][:take]
        targets.append(fpp_decision_targets(mask, block.parts, block.fpp_class).float())
        seen += take
    if not seen:
        raise ValueError("collect_descriptors: no items to collect")
    return Descriptors(
        pooled=torch.cat(pooled),
        moments=torch.cat(moments) if moments else None,
        targets=torch.cat(targets),
    )


def fit_decision(
    block: nn.Module,
    data: Descriptors,
    *,
    epochs: int = 30,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """Fit ``block``'s (a :class:`PartSideFPP`) parameters to ``data`` in place (module
    docstring, step 2); returns the mean decision BCE over ``data`` before and after, and the
    seconds taken. The block is left in eval mode."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in block.parameters() if p.requires_grad]
    device = params[0].device
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)

    def mean_loss() -> float:
        with torch.no_grad():
            pooled, moments, targets = data.take(torch.arange(len(data)))
            log_q = block.judge(pooled.to(device), None if moments is None else moments.to(device))
            return float(decision_loss(log_q, targets.to(device)))

    before = mean_loss()
    block.train()
    n = len(data)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            pooled, moments, targets = data.take(order[start : start + batch_size])
            log_q = block.judge(pooled.to(device), None if moments is None else moments.to(device))
            loss = decision_loss(log_q, targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    block.eval()
    after = mean_loss()
    if not math.isfinite(after):
        raise ValueError(f"the decision refit diverged (BCE {after})")
    return {
        "bce_before": round(before, 5),
        "bce_after": round(after, 5),
        "fit_seconds": round(time.perf_counter() - started, 2),
    }


@torch.no_grad()
def choose_operating_point(block: nn.Module, data: Descriptors) -> list[float]:
    """Set ``block``'s (a :class:`PartSideFPP`) per-part ``decision_bias`` to the one that
    maximises the F1 of its per-half decisions on ``data``, by the rule validation uses
    (:func:`palsyseg.scoring.set_operating_point`), and return it (module docstring, step 4)."""
    from palsyseg.scoring import set_operating_point

    device = block.decision_bias.device
    pooled, moments, targets = data.take(torch.arange(len(data)))
    log_q = block.judge(pooled.to(device), None if moments is None else moments.to(device))
    return set_operating_point(block, log_q, targets)


def describe_training_items(
    model: nn.Module, train_set: Any, config: Any, device: torch.device
) -> Descriptors:
    """Step 1 over up to ``config.decision_refit`` items of a run's training epochs
    (:func:`epoch_order`), in the face frame's geometry as inference sees it: refit on the
    rotated and rescaled training views, validation FPP F1 fell 0.665 → 0.597 and the refit was
    not kept; flips and the photometric jitter stay. ``train_set`` is the run's training
    Dataset (``set_epoch``, ``augment``); ``config`` its :class:`~palsyseg.train.TrainConfig`."""
    from torch.utils.data import DataLoader

    from palsyseg.data.augment import TrainAugmentation
    from palsyseg.progress import track

    limit = min(config.decision_refit, config.epochs * len(train_set))
    loader = DataLoader(train_set, batch_size=16, shuffle=False, num_workers=config.num_workers)

    def batches() -> Iterable[dict[str, Any]]:
        for epoch in epoch_order(config.epochs, config.stream_repeats):
            train_set.set_epoch(epoch)  # the items of that training epoch
            yield from loader

    augment = train_set.augment
    if augment is not None:
        train_set.augment = TrainAugmentation(dataclasses.replace(augment.config, affine_p=0.0))
    try:
        total = math.ceil(limit / 16)
        return collect_descriptors(
            model, track(batches(), "decision refit: features", total=total), device, limit
        )
    finally:
        train_set.augment = augment


def refit_decision(
    model: nn.Module,
    train_set: Any,
    config: Any,
    device: torch.device,
    *,
    before: dict[str, float],
    validate: Callable[[], tuple[dict[str, float], float]],
    rank: Callable[[dict[str, float]], Any],
    validate_at_point: Callable[[], tuple[dict[str, float], float]] | None = None,
) -> tuple[dict[str, Any], dict[str, float], float]:
    """Steps 1–4 on a trained PalsyNet (``model``, in place): describe, fit, then ``validate()``
    (which also chooses the operating points) and compare ``rank`` of its metrics with
    ``rank(before)``, the validation the model had. A kept refit then takes its operating point
    from the items where ``config.refit_operating_point`` is ``items`` and
    ``validate_at_point`` (a validation that leaves the decision's bias as it is) is given; the
    metrics returned are that validation's. Returns the report (items, BCE before and after,
    ``kept``, validation before and after in :data:`REPORTED`, the operating point, seconds),
    the metrics and the palsy threshold; restoring the model where ``kept`` is false is the
    caller's."""
    started = time.perf_counter()
    descriptors = describe_training_items(model, train_set, config, device)
    block = model.part_side
    fit = fit_decision(block, descriptors, seed=config.seed)
    metrics, threshold = validate()
    kept = list(rank(metrics)) >= list(rank(before))
    point: dict[str, Any] = {"chosen_on": "validation", "bias": block.decision_bias.tolist()}
    if kept and validate_at_point is not None and config.refit_operating_point == "items":
        point = {
            "chosen_on": "items",
            "bias": choose_operating_point(block, descriptors),
            "validation_bias": point["bias"],
            "val_at_validation_bias": _reported(metrics),
        }
        metrics, threshold = validate_at_point()
    report = {
        "items": len(descriptors),
        **fit,
        "kept": kept,
        "val_before": _reported(before),
        "val_after": _reported(metrics),
        "operating_point": point,
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info(
        "%s decision refit on %d training items (%.0fs): val mean F1 %.4f -> %.4f, FPP F1 "
        "%.4f -> %.4f, %s",
        config.model, report["items"], report["seconds"], before["mean_f1"],
        metrics["mean_f1"], before["f1_fpp"], metrics["f1_fpp"],
        "kept" if kept else "not kept (validation fell)",
    )  # fmt: skip
    return report, metrics, threshold


def _reported(metrics: dict[str, float]) -> dict[str, float | None]:
    """The report's validation metrics, rounded; ``None`` for an undefined one (NaN)."""
    return {
        key: round(float(metrics[key]), 4) if math.isfinite(metrics[key]) else None
        for key in REPORTED
        if key in metrics
    }


__all__ = [
    "REPORTED",
    "Descriptors",
    "collect_descriptors",
    "describe_training_items",
    "epoch_order",
    "fit_decision",
    "refit_decision",
]
