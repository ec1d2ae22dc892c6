"""A model on a validation split: its metrics, its palsy threshold and its operating points.

:func:`validate` runs after every training epoch (:mod:`palsyseg.train`) and returns the
segmentation metrics (eq. 9–11) and image-level palsy metrics the best model is chosen by,
with the palsy threshold chosen on the same images. For PalsyNet's per-part, per-side FPP
decision it also chooses the decision's operating point and sets it on the model, so the
checkpoint written next keeps it; :func:`palsy_score_of` says which score a model's threshold
is on (:data:`palsyseg.metrics.PALSY_SCORES`).

**Per-class offsets** (``class_offsets=True``; the ``palsyseg`` recipe): ``argmax`` of the
logits is the most probable class per pixel, not the labelling with the best F1 per class, and
a training objective can bias it (eq. 7 on one-sided contours drew the small parts a pixel too
wide: :mod:`palsyseg.losses`, measured in :mod:`palsyseg.recipes`). An additive offset per
class on the logits, chosen on the validation split to maximise its mean F1
(:func:`choose_class_offsets`), is the segmentation's operating point, as the decision bias is
the FPP decision's: the model keeps it (a ``class_offsets`` buffer applied in eval mode only,
so training never sees it), and every evaluation and prediction reads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from palsyseg.labels import LABEL_NAMES, NUM_CLASSES, SIDES
from palsyseg.processes import autocast

CLASS_OFFSETS = torch.arange(-16, 17, dtype=torch.float32) / 4
"""Candidate offsets per class (:func:`choose_class_offsets`): −4 … 4 in steps of 0.25."""

__all__ = [
    "CLASS_OFFSETS",
    "choose_class_offsets",
    "palsy_score_of",
    "set_operating_point",
    "validate",
]


@torch.inference_mode()
def validate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    midline: float | None = None,
    class_offsets: bool = False,
    operating_point: bool = True,
) -> tuple[dict[str, float], float]:
    """Segmentation metrics (eq. 9–11) and image-level palsy metrics on a validation loader.

    Returns ``(metrics, palsy_threshold)``: the threshold is chosen on these images
    (:func:`~palsyseg.metrics.choose_palsy_threshold`) and the image-level metrics use it. The
    truth per image is whether it *shows* palsy (``palsy``, ``visible_side``). ``midline`` is
    the face's midline column when items are in the face frame (``(size - 1) / 2``).

    A model that decides FPP per part and side (PalsyNet's ``part_side``) also gets its
    operating point here: the per-part bias on the decision (``decision_bias``) that maximises
    the F1 of the per-half decisions against :func:`~palsyseg.losses.fpp_decision_targets` on
    these images (:func:`~palsyseg.metrics.choose_decision_bias`) is set on the model, and the
    metrics are those of the model at that point (the pre-composition logits are kept as
    float16 until it is chosen: 2 bytes per class and pixel of the split). Its image-level
    findings, and so the threshold, are on the decision
    (:func:`~palsyseg.metrics.decision_findings`; :func:`palsy_score_of`). With
    ``operating_point=False`` the decision's bias is left as it is (chosen elsewhere: the
    decision refit chooses it on its training items, :mod:`palsyseg.refit`) and the metrics are
    those at it.

    With ``class_offsets`` a model that has a ``class_offsets`` buffer gets the per-class
    offsets that maximise these images' mean F1 (:func:`choose_class_offsets`, after the
    decision's operating point), and the metrics are those at the offsets; the logits of the
    split are then kept as float16 until they are chosen. Without it the model's offsets are
    left as they are and apply.
    """
    from palsyseg.metrics import (
        ConfusionMatrix,
        choose_palsy_threshold,
        decision_findings,
        image_level_metrics,
        palsy_findings,
        segmentation_metrics,
    )

    was_training = model.training
    model.eval()
    decision = _decision_of(model)
    offsets = _class_offsets_of(model) if class_offsets else None
    if offsets is not None:
        offsets.zero_()  # the logits below are the raw ones; the offsets are chosen on them
    confusion = ConfusionMatrix(NUM_CLASSES)
    palsy_scores: list[float] = []  # FPP fractions, or the decision's q (palsy_score_of)
    true_palsy: list[bool] = []
    pred_sides: list[str] = []
    true_sides: list[str] = []
    held: list[tuple[Tensor, Tensor, Tensor]] = []  # (base logits, raw log q, mask) per batch
    final: list[tuple[Tensor, Tensor, Tensor | None]] = []  # (logits, mask, log q) per batch

    def score(logits: Tensor, mask: Tensor, log_q: Tensor | None = None) -> None:
        if offsets is not None:  # scored once the offsets are chosen
            final.append((logits.half().cpu(), mask, log_q))
        else:
            tally(logits, mask, log_q)

    def tally(logits: Tensor, mask: Tensor, log_q: Tensor | None) -> None:
        pred = logits.argmax(dim=1).cpu()
        confusion.update(pred, mask)
        for i in range(pred.shape[0]):
            if log_q is None:
                fraction, side = palsy_findings(pred[i].numpy(), midline=midline)
            else:
                fraction, side = decision_findings(log_q[i])
            palsy_scores.append(fraction)
            pred_sides.append(side)

    for batch in loader:
        image = batch["image"].to(device)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            out = model(image)
        if decision is not None and "base_logits" in out:
            held.append(
                (
                    out["base_logits"].half().cpu(),
                    out["fpp_side_log_q"].float().cpu(),
                    batch["mask"],
                )
            )
        else:
            score(out["logits"], batch["mask"])
        true_palsy += [bool(p) for p in batch["palsy"].tolist()]
        true_sides += [SIDES[s] for s in batch["visible_side"].tolist()]
    if held:
        if operating_point:
            _choose_operating_point(decision, held)
        for base, log_q, mask in held:
            shifted = decision.shift(log_q)
            score(decision.compose(base.float(), shifted), mask, shifted)
    if offsets is not None and final:
        chosen = choose_class_offsets(
            torch.cat([item[0] for item in final]), torch.cat([item[1] for item in final])
        )
        offsets.copy_(chosen.to(offsets))
        for logits, mask, log_q in final:
            tally(logits.float() + chosen[:, None, None], mask, log_q)
    model.train(was_training)
    threshold = choose_palsy_threshold(palsy_scores, true_palsy)
    metrics = segmentation_metrics(confusion.matrix)
    metrics.update(image_level_metrics(palsy_scores, true_palsy, pred_sides, true_sides, threshold))
    if held:
        for i, part in enumerate(decision.parts):
            metrics[f"fpp_decision_bias_{LABEL_NAMES[part]}"] = float(decision.decision_bias[i])
    if offsets is not None:
        for name, value in zip(LABEL_NAMES[1:], offsets[1:].tolist(), strict=True):
            metrics[f"class_offset_{name}"] = float(value)
    return metrics, threshold


@torch.inference_mode()
def choose_class_offsets(logits: Tensor, mask: Tensor, *, rounds: int = 3) -> Tensor:
    """Per-class offsets ``o`` (C,) on ``logits`` (N×C×H×W, any float dtype) that maximise the
    mean F1 (classes 1 … C−1, :func:`~palsyseg.metrics.segmentation_metrics`) of
    ``argmax(logits + o)`` against ``mask`` (N×H×W).

    Coordinate ascent: the background keeps 0 (only differences between offsets matter), each
    other class in turn takes the :data:`CLASS_OFFSETS` candidate with the best mean F1 given the
    others, ``rounds`` times over. One pass over the logits per class and round: with the other
    classes fixed, a pixel goes to class ``c`` at offset ``o`` exactly when its margin
    ``d = z_c − max_{k≠c} z_k`` (offsets included) exceeds ``o_c − o``, and otherwise to the
    runner-up, so one histogram of the margins per (truth, runner-up) pair gives the confusion
    matrix at every candidate. A candidate must beat the current offset to replace it, and
    among equally good ones the smallest ``|o|`` wins, so a model whose argmax is already best
    keeps 0.
    """
    from palsyseg.metrics import segmentation_metrics

    n, c = logits.shape[:2]
    if mask.shape != (n, *logits.shape[2:]):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit logits {tuple(logits.shape)}")
    names = [str(i) for i in range(c)]
    candidates = CLASS_OFFSETS.to(torch.float64)
    k = len(candidates)
    offsets = torch.zeros(c, dtype=torch.float64)
    target = mask.long()
    chunk = max(1, 2_000_000 // max(1, logits[0].numel()))
    for _ in range(rounds):
        for j in range(1, c):
            # thresholds on the margin, ascending: candidate candidates[k − 1 − t] ↔ t
            thresholds = (offsets[j] - candidates.flip(0)).to(torch.float32)
            counts = torch.zeros(c * c * (k + 1), dtype=torch.int64)
            for i in range(0, n, chunk):
                z = logits[i : i + chunk].float() + offsets.to(torch.float32)[:, None, None]
                z_j = z[:, j].clone()
                z[:, j] = -torch.inf
                runner_up, alt = z.max(dim=1)
                bucket = torch.bucketize(z_j - runner_up, thresholds)  # thresholds below d
                key = (target[i : i + chunk] * c + alt) * (k + 1) + bucket
                counts += torch.bincount(key.flatten(), minlength=c * c * (k + 1))
            counts = counts.view(c, c, k + 1).numpy()
            # moved[t, p, x]: pixels of truth t, runner-up p whose margin beats threshold x
            moved = np.flip(np.cumsum(np.flip(counts, -1), -1), -1)[..., 1:]
            stay = counts.sum(-1)[..., None] - moved
            matrices = np.moveaxis(stay, -1, 0).copy()  # threshold × truth × prediction
            matrices[:, :, j] += moved.sum(1).T
            # mean F1 per candidate, in CLASS_OFFSETS order
            scores = [segmentation_metrics(m, names)["mean_f1"] for m in matrices[::-1]]
            current = int(np.argmin(np.abs(candidates.numpy() - float(offsets[j]))))
            best = current
            for t in sorted(range(k), key=lambda x: (abs(float(candidates[x])), x)):
                if scores[t] > scores[best] + 1e-9:
                    best = t
            offsets[j] = candidates[best]
    return offsets.to(torch.float32)


def palsy_score_of(model: nn.Module) -> str:
    """What :func:`validate` chooses a model's palsy threshold on (:data:`~palsyseg.metrics.
    PALSY_SCORES`): the part-side decision where the model has one, else the FPP area."""
    return "decision" if _decision_of(model) is not None else "fpp_fraction"


def _class_offsets_of(model: nn.Module) -> Tensor | None:
    """The model's ``class_offsets`` buffer (through a DDP wrapper), or ``None``."""
    return getattr(getattr(model, "module", model), "class_offsets", None)


def _decision_of(model: nn.Module) -> Any:
    """The model's per-part, per-side FPP decision (PalsyNet's ``part_side``; through a DDP
    wrapper), or ``None``."""
    return getattr(getattr(model, "module", model), "part_side", None)


def _choose_operating_point(decision: Any, held: list[tuple[Tensor, Tensor, Tensor]]) -> None:
    """Set ``decision.decision_bias`` per part from the validation batches ``held``."""
    from palsyseg.losses import fpp_decision_targets

    targets = fpp_decision_targets(
        torch.cat([item[2] for item in held]), tuple(decision.parts), decision.fpp_class
    )
    set_operating_point(decision, torch.cat([item[1] for item in held]), targets)


@torch.no_grad()
def set_operating_point(decision: Any, log_q: Tensor, targets: Tensor) -> list[float]:
    """Set ``decision.decision_bias`` (a :class:`~palsyseg.models.asymmetry.PartSideFPP`'s)
    per part to the bias that maximises the F1 of its per-half decisions, raw ``log_q``
    (N×P×2) against 0/1 ``targets`` (N×P×2)
    (:func:`~palsyseg.metrics.choose_decision_bias`), and return it. Validation chooses it on
    its photos; the decision refit on its training items (:mod:`palsyseg.refit`)."""
    from palsyseg.metrics import choose_decision_bias

    side_logits = decision.decision_logits(log_q).float().cpu()
    targets = targets.float().cpu()
    bias = [
        choose_decision_bias(side_logits[:, i].numpy(), targets[:, i].numpy())
        for i in range(side_logits.shape[1])
    ]
    decision.decision_bias.copy_(torch.tensor(bias, dtype=decision.decision_bias.dtype))
    return bias
