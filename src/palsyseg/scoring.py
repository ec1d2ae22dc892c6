"""A model on a validation split: its metrics, its palsy threshold and its FPP operating point.

:func:`validate` runs after every training epoch (:mod:`palsyseg.train`) and returns the
segmentation metrics (eq. 9–11) and image-level palsy metrics the best model is chosen by,
with the palsy threshold chosen on the same images. For PalsyNet's per-part, per-side FPP
decision it also chooses the decision's operating point and sets it on the model, so the
checkpoint written next keeps it; :func:`palsy_score_of` says which score a model's threshold
is on (:data:`palsyseg.metrics.PALSY_SCORES`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from palsyseg.labels import LABEL_NAMES, NUM_CLASSES, SIDES
from palsyseg.processes import autocast

__all__ = ["palsy_score_of", "validate"]


@torch.inference_mode()
def validate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    midline: float | None = None,
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
    (:func:`~palsyseg.metrics.decision_findings`; :func:`palsy_score_of`).
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
    confusion = ConfusionMatrix(NUM_CLASSES)
    palsy_scores: list[float] = []  # FPP fractions, or the decision's q (palsy_score_of)
    true_palsy: list[bool] = []
    pred_sides: list[str] = []
    true_sides: list[str] = []
    held: list[tuple[Tensor, Tensor, Tensor]] = []  # (base logits, raw log q, mask) per batch

    def score(logits: Tensor, mask: Tensor, log_q: Tensor | None = None) -> None:
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
        _choose_operating_point(decision, held)
        for base, log_q, mask in held:
            shifted = decision.shift(log_q)
            score(decision.compose(base.float(), shifted), mask, shifted)
    model.train(was_training)
    threshold = choose_palsy_threshold(palsy_scores, true_palsy)
    metrics = segmentation_metrics(confusion.matrix)
    metrics.update(image_level_metrics(palsy_scores, true_palsy, pred_sides, true_sides, threshold))
    if held:
        for i, part in enumerate(decision.parts):
            metrics[f"fpp_decision_bias_{LABEL_NAMES[part]}"] = float(decision.decision_bias[i])
    return metrics, threshold


def palsy_score_of(model: nn.Module) -> str:
    """What :func:`validate` chooses a model's palsy threshold on (:data:`~palsyseg.metrics.
    PALSY_SCORES`): the part-side decision where the model has one, else the FPP area."""
    return "decision" if _decision_of(model) is not None else "fpp_fraction"


def _decision_of(model: nn.Module) -> Any:
    """The model's per-part, per-side FPP decision (PalsyNet's ``part_side``; through a DDP
    wrapper), or ``None``."""
    return getattr(getattr(model, "module", model), "part_side", None)


def _choose_operating_point(decision: Any, held: list[tuple[Tensor, Tensor, Tensor]]) -> None:
    """Set ``decision.decision_bias`` per part from the validation batches ``held``."""
    from palsyseg.losses import fpp_decision_targets
    from palsyseg.metrics import choose_decision_bias

    log_q = torch.cat([item[1] for item in held])  # N×P×2, raw
    targets = fpp_decision_targets(
        torch.cat([item[2] for item in held]), tuple(decision.parts), decision.fpp_class
    )
    side_logits = decision.decision_logits(log_q)
    bias = [
        choose_decision_bias(side_logits[:, i].numpy(), targets[:, i].numpy())
        for i in range(len(decision.parts))
    ]
    decision.decision_bias.copy_(torch.tensor(bias, dtype=decision.decision_bias.dtype))
