"""Segmentation and image-level metrics (paper §4.2, eq. 9–11).

Pixel level: one dataset-level confusion matrix (rows = truth, columns = prediction) is summed
over every evaluated pixel, and every number derives from it, so a metric over a test split is
the metric of all its pixels, not a mean of per-image metrics.

- F1 (eq. 9) per class is ``2·TP / (2·TP + FP + FN)``, which equals
  ``2·precision·recall / (precision + recall)`` wherever both are defined.
- IoU per class is ``TP / (TP + FP + FN)``; ``miou`` is their mean over all classes (eq. 10).
- Pixel accuracy is ``trace / total`` (eq. 11).

**Classes absent from both truth and prediction** have no defined precision, recall, F1 or IoU:
their per-class values are ``NaN`` and every mean skips them. This equals scikit-learn's
``average="macro"`` when ``labels`` is not passed (it averages over the labels present in
``y_true`` or ``y_pred``). A class present on one side only scores 0 (scikit-learn's
``zero_division=0``): precision 0 when it is in the truth but never predicted, recall 0 when it is
predicted but absent from the truth. ``mean_f1`` is over non-background classes (Table 1–2 of the
paper average F1 over skin … FPP), ``miou`` over all classes including background (eq. 10 sums
i = 0…k).

Image level (what a clinician acts on):

- ``palsy_findings(pred_mask)`` returns the FPP area fraction — FPP pixels over *face-region*
  pixels (all non-background labels), so the value does not depend on how tightly the photo is
  cropped — and the patient's side holding more FPP.
- The **midline** splitting the face into halves is the column centroid of the face region
  without hair (skin, eyebrow, eye, mouth, FPP): a face that is not centred in the photo, or a
  side parting of the hair, does not shift it. A photo is a mirror view: FPP on the image's left
  half is the patient's *right* side (:func:`palsyseg.labels.side_of_image_half`).
- A palsy is *present* when the FPP fraction is strictly above a threshold chosen on the
  validation split by :func:`choose_palsy_threshold` (maximum Youden's J; among ties the lowest
  threshold, favouring sensitivity: a missed stroke costs more than a second look).
- A model that decides FPP per part and side (PalsyNet's part-side decision) is scored by that
  decision instead (:func:`decision_findings`: the largest ``q`` over parts and halves, and the
  side of the half holding it; the checkpoint's ``palsy_score`` says which score its
  threshold is on, :data:`PALSY_SCORES`). Measured on the benchmark's PalsyNet (300 test
  photos): palsy AUROC 0.73 → 0.82 and side accuracy 0.69 → 0.91 against the FPP area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from palsyseg.labels import LABEL_NAMES, NUM_CLASSES, Label, side_of_image_half

__all__ = [
    "PALSY_SCORES",
    "ConfusionMatrix",
    "choose_decision_bias",
    "choose_palsy_threshold",
    "decision_findings",
    "image_level_metrics",
    "palsy_findings",
    "patient_finding",
    "patient_level_metrics",
    "roc_auc",
    "segmentation_metrics",
]

# Face region used to place the midline: every face label except hair (see module docstring).
_MIDLINE_LABELS = (Label.SKIN, Label.EYEBROW, Label.EYE, Label.MOUTH, Label.FPP)


def _as_numpy_labels(x: Any) -> np.ndarray:
    """A label map (torch tensor or array-like) as a flat int64 numpy array."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False).ravel()


class ConfusionMatrix:
    """Dataset-level confusion matrix: ``matrix[t, p]`` counts pixels of truth t predicted as p."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: Any, target: Any) -> None:
        """Add a batch (any shape, same for both) of predicted and true labels.

        Raises ``ValueError`` when the shapes differ or a label lies outside ``[0, num_classes)``.
        """
        p, t = _as_numpy_labels(pred), _as_numpy_labels(target)
        pred_shape = tuple(getattr(pred, "shape", np.shape(pred)))
        target_shape = tuple(getattr(target, "shape", np.shape(target)))
        if pred_shape != target_shape:
            raise ValueError(f"pred shape {pred_shape} != target shape {target_shape}")
        for name, arr in (("pred", p), ("target", t)):
            if arr.size and (arr.min() < 0 or arr.max() >= self.num_classes):
                raise ValueError(
                    f"{name} holds labels outside [0, {self.num_classes}): "
                    f"min {arr.min()}, max {arr.max()}"
                )
        self.matrix += np.bincount(t * self.num_classes + p, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def reset(self) -> None:
        self.matrix[...] = 0

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix (e.g. from another DDP rank)."""
        self.matrix += other.matrix

    def compute(self) -> dict[str, float]:
        """:func:`segmentation_metrics` of the accumulated matrix."""
        return segmentation_metrics(self.matrix)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0`` (zero_division=0)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def segmentation_metrics(
    matrix: np.ndarray, label_names: Sequence[str] = LABEL_NAMES
) -> dict[str, float]:
    """Flat metrics of a confusion matrix (rows = truth): eq. 9 (F1), eq. 10 (IoU), eq. 11 (PA).

    Keys: ``pixel_accuracy``, ``mean_f1`` (non-background classes, i.e. all but index 0),
    ``miou`` (all classes), and ``precision_<name>``, ``recall_<name>``, ``f1_<name>``,
    ``iou_<name>`` per class. Per-class values are ``NaN`` for a class absent from both truth and
    prediction; means skip ``NaN`` (see the module docstring). An empty matrix gives ``NaN``
    everywhere.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
    if len(label_names) != m.shape[0]:
        raise ValueError(f"{len(label_names)} label names for a {m.shape[0]}-class matrix")
    tp = np.diag(m)
    truth = m.sum(axis=1)  # TP + FN
    predicted = m.sum(axis=0)  # TP + FP
    union = truth + predicted - tp  # TP + FP + FN
    seen = union > 0

    precision = np.where(seen, _ratio(tp, predicted), np.nan)
    recall = np.where(seen, _ratio(tp, truth), np.nan)
    f1 = np.where(seen, _ratio(2 * tp, truth + predicted), np.nan)  # eq. 9
    iou = np.where(seen, _ratio(tp, union), np.nan)  # eq. 10, per class

    total = m.sum()
    out: dict[str, float] = {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,  # eq. 11
        "mean_f1": _nanmean(f1[1:]),
        "miou": _nanmean(iou),  # eq. 10: mean over classes
    }
    for i, name in enumerate(label_names):
        out[f"precision_{name}"] = float(precision[i])
        out[f"recall_{name}"] = float(recall[i])
        out[f"f1_{name}"] = float(f1[i])
        out[f"iou_{name}"] = float(iou[i])
    return out


def palsy_findings(pred_mask: Any, midline: float | None = None) -> tuple[float, str]:
    """FPP area fraction and the patient's affected side of one predicted label map (H×W).

    ``fpp_fraction`` = FPP pixels / face-region pixels (all non-background labels); 0 when no
    face is found. ``affected_side`` is ``"left"``/``"right"`` (the *patient's* side, mirror
    convention of :mod:`palsyseg.labels`) holding more FPP pixels about the face midline, or
    ``"none"`` when there is no FPP or both halves hold exactly as much. Pixels on the midline
    column count half to each side. The midline is the column ``midline`` when given (in the
    face frame of :mod:`palsyseg.align` it is known: ``(size - 1) / 2``), else the column
    centroid of skin, eyebrow, eye, mouth and FPP pixels.
    """
    mask = np.asarray(
        pred_mask.detach().cpu().numpy() if hasattr(pred_mask, "detach") else pred_mask
    )
    if mask.ndim != 2:
        raise ValueError(f"pred_mask must be H×W, got shape {mask.shape}")
    face = mask != Label.BACKGROUND
    fpp = mask == Label.FPP
    n_face, n_fpp = int(face.sum()), int(fpp.sum())
    fraction = n_fpp / n_face if n_face else 0.0
    if n_fpp == 0:
        return fraction, "none"

    cols = np.arange(mask.shape[1], dtype=np.float64)
    if midline is None:
        midline_region = np.isin(mask, np.asarray(_MIDLINE_LABELS))
        col_weights = midline_region.sum(axis=0)
        midline = float((cols * col_weights).sum() / col_weights.sum())  # never empty: FPP is in it

    fpp_cols = fpp.sum(axis=0).astype(np.float64)
    left = float(fpp_cols[cols < midline].sum()) + 0.5 * float(fpp_cols[cols == midline].sum())
    right = float(fpp_cols.sum()) - left
    if left == right:
        return fraction, "none"
    return fraction, side_of_image_half("left" if left > right else "right")


PALSY_SCORES = ("fpp_fraction", "decision")
"""What an image-level palsy threshold is on: the predicted FPP area (:func:`palsy_findings`)
or the per-part, per-side FPP decision (:func:`decision_findings`)."""


def decision_findings(log_q: Any) -> tuple[float, str]:
    """Palsy score and the patient's affected side of one image from its FPP decision.

    ``log_q`` (P×2: parts × left, right half of the image, at the model's operating point) is
    PalsyNet's per-part, per-side decision (:class:`palsyseg.models.asymmetry.PartSideFPP`).
    The score is the largest ``q`` (how sure the model is that some part of some half is
    weak); the side is the patient's side shown on the half that holds it (mirror convention
    of :mod:`palsyseg.labels`), ``"none"`` when both halves hold exactly the same ``q``. Scored
    on the decision rather than on the FPP pixels it composes, the side does not hang on
    which half a few stray FPP pixels fall in.
    """
    q = np.exp(
        np.asarray(log_q.detach().float().cpu().numpy() if hasattr(log_q, "detach") else log_q)
    )
    if q.ndim != 2 or q.shape[1] != 2 or not q.size:
        raise ValueError(f"log_q must be parts × 2 halves, got shape {q.shape}")
    if np.isnan(q).any():
        raise ValueError("log_q holds NaN")
    left, right = float(q[:, 0].max()), float(q[:, 1].max())
    if left == right:
        return left, "none"
    return max(left, right), side_of_image_half("left" if left > right else "right")


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann–Whitney U with tied scores counted half); ``NaN`` if one
    class is missing. Equals ``sklearn.metrics.roc_auc_score``."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty_like(s)
    sorted_s = s[order]
    # average ranks over ties (1-based)
    i = 0
    while i < len(sorted_s):
        j = i
        while j + 1 < len(sorted_s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _check_same_length(**arrays: Sequence[Any]) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")
    return next(iter(lengths.values()), 0)


def choose_palsy_threshold(fpp_fractions: Sequence[float], true_palsy: Sequence[bool]) -> float:
    """The FPP-fraction threshold (palsy present ⇔ fraction > threshold) maximising Youden's J.

    Candidates are 0 (when every fraction is above it), the midpoints between consecutive
    distinct fractions, and the largest fraction (which predicts no palsy at all). J = sensitivity + specificity − 1, where a rate
    whose class is missing counts 0, so an all-healthy split yields the largest fraction and an
    all-palsy split yields 0. Among equally good thresholds the lowest wins (sensitivity first).
    An empty input gives 0.
    """
    n = _check_same_length(fpp_fractions=fpp_fractions, true_palsy=true_palsy)
    if n == 0:
        return 0.0
    s = np.asarray(fpp_fractions, dtype=np.float64)
    y = np.asarray(true_palsy, dtype=bool)
    if np.isnan(s).any():
        raise ValueError("fpp_fractions holds NaN")
    distinct = np.unique(s)
    # One candidate per distinct classification: below every fraction (0, if the smallest
    # fraction is above 0), the midpoints between neighbours (the widest margin), the largest.
    below = [0.0] if distinct[0] > 0 else []
    candidates = np.concatenate([below, (distinct[:-1] + distinct[1:]) / 2.0, [distinct[-1]]])
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    best, best_j = 0.0, -math.inf
    for t in candidates:  # ascending: strict '>' keeps the lowest of tied thresholds
        present = s > t
        tpr = (present & y).sum() / n_pos if n_pos else 0.0
        tnr = (~present & ~y).sum() / n_neg if n_neg else 0.0
        j = tpr + tnr - 1.0
        if j > best_j + 1e-12:
            best, best_j = float(t), j
    return best


DECISION_BIASES = np.round(np.arange(-2.0, 6.0 + 1e-9, 0.25), 2)
"""Candidate operating points of the part-side FPP decision (:func:`choose_decision_bias`)."""


def choose_decision_bias(side_logits: np.ndarray, targets: np.ndarray) -> float:
    """The bias ``b`` on one part's decision logits (``logit(q)``, N×2: left and right half of
    N images) that maximises the F1 of ``logit(q) + b > 0`` against 0/1 ``targets`` (N×2).

    The candidates are :data:`DECISION_BIASES` (−2 … 6 in steps of 0.25: ``q`` thresholds from
    0.88 down to 0.0025); among equally good ones the smallest ``|b|`` wins, so a decision
    that needs no shift keeps 0. With no positive target, or no candidate above F1 0, the
    answer is 0 (no evidence to move the decision on).
    """
    z = np.asarray(side_logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64) > 0.5
    if z.shape != y.shape:
        raise ValueError(f"side_logits {z.shape} and targets {y.shape} differ in shape")
    if np.isnan(z).any():
        raise ValueError("side_logits holds NaN")
    n_pos = int(y.sum())
    if n_pos == 0:
        return 0.0
    best, best_f1 = 0.0, 0.0
    for b in sorted(DECISION_BIASES, key=lambda v: (abs(v), v)):
        marked = z + b > 0
        tp = int((marked & y).sum())
        f1 = 2 * tp / (int(marked.sum()) + n_pos)
        if f1 > best_f1 + 1e-12:
            best, best_f1 = float(b), f1
    return best


def image_level_metrics(
    fpp_fractions: Sequence[float],
    true_palsy: Sequence[bool],
    pred_sides: Sequence[str],
    true_sides: Sequence[str],
    threshold: float,
) -> dict[str, float]:
    """Image-level palsy detection and side metrics.

    - ``palsy_sensitivity`` / ``palsy_specificity`` / ``palsy_accuracy`` of
      ``fraction > threshold`` against ``true_palsy`` (``NaN`` when a class is missing);
    - ``palsy_auroc``: threshold-free AUROC of the FPP fraction as a palsy score;
    - ``side_accuracy``: over images with a true palsy (true side not ``none``), the share whose
      predicted side equals the true side — scored whatever the threshold says, so it measures
      localisation alone (``NaN`` without palsied images);
    - ``num_images``, ``num_palsy``: the counts behind them.
    """
    n = _check_same_length(
        fpp_fractions=fpp_fractions,
        true_palsy=true_palsy,
        pred_sides=pred_sides,
        true_sides=true_sides,
    )
    s = np.asarray(fpp_fractions, dtype=np.float64)
    y = np.asarray(true_palsy, dtype=bool)
    present = s > threshold
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tp = int((present & y).sum())
    tn = int((~present & ~y).sum())
    palsied = [i for i in range(n) if true_sides[i] != "none"]
    side_hits = sum(pred_sides[i] == true_sides[i] for i in palsied)
    return {
        "palsy_sensitivity": tp / n_pos if n_pos else math.nan,
        "palsy_specificity": tn / n_neg if n_neg else math.nan,
        "palsy_accuracy": (tp + tn) / n if n else math.nan,
        "palsy_auroc": roc_auc(s, y),
        "side_accuracy": side_hits / len(palsied) if palsied else math.nan,
        "num_images": float(n),
        "num_palsy": float(n_pos),
    }


def patient_finding(
    fpp_fractions: Sequence[float], sides: Sequence[str], threshold: float | None = None
) -> tuple[float, str]:
    """One patient's ``(palsy score, affected side)`` from the findings of their photos.

    The score is the mean of the photos' scores, FPP fractions or decision ``q``s (compare it
    with the image-level threshold: same scale). The side is the one the photos that *show*
    palsy lean to: with ``threshold``, the photos scoring above it vote, each photo's side
    (``left``/``right``/``none``, the patient's) weighted by its excess over the threshold; when
    none is above it (or without ``threshold``), every photo votes, weighted by its score.
    ``none`` on a tie or without photos. :func:`patient_level_metrics` scores patients by it;
    ``palsyseg predict --exam`` reports it.

    Why only the photos above the threshold: a face that shows its weakness in one or two poses
    of five looks symmetric in the others, and there the decision's ``q`` sits near its floor
    (~0.35–0.55 on the benchmark's palsynet) on a side that is chance. Weighted by the score
    alone, such photos outvoted the one or two that showed the palsy (3 of the 5 patients whose
    side the 160 px palsynet missed among the benchmark's 34 test patients with palsy). Measured
    on four trained palsynets (160 px seeds 7 and 8, 128 px seed 8, 192 px seed 7), sides right, score
    rule → the excess rule: validation 19 → 19, 17 → 19, 17 → 18 and 16 → 19 of 19; test
    29 → 30, 28 → 30, 31 → 34 and 33 → 33 of 34.
    """
    _check_same_length(fpp_fractions=fpp_fractions, sides=sides)
    if not len(fpp_fractions):
        return 0.0, "none"
    weights = [float(f) for f in fpp_fractions]
    if threshold is not None and any(f > threshold for f in weights):
        weights = [max(f - threshold, 0.0) for f in weights]
    lean = sum(
        weight * {"left": 1.0, "right": -1.0}.get(side, 0.0)
        for weight, side in zip(weights, sides, strict=True)
    )
    side = "left" if lean > 0 else "right" if lean < 0 else "none"
    return float(np.mean(fpp_fractions)), side


def patient_level_metrics(
    patient_ids: Sequence[str],
    fpp_fractions: Sequence[float],
    true_palsy: Sequence[bool],
    pred_sides: Sequence[str],
    true_sides: Sequence[str],
    threshold: float,
) -> dict[str, float]:
    """The findings of :func:`image_level_metrics` per *patient*, as an examination reads them.

    A clinician grades palsy from the whole exam (rest, smile, brow raise, eye closure, pucker),
    not from one photo: mild palsy often shows in one or two poses only. Per patient the palsy
    score is the mean FPP fraction of their images (the image-level ``threshold`` applies to it
    unchanged: same scale), the predicted side is the side of the images above that threshold
    (:func:`patient_finding`; ``none`` on a tie), and the truth is the
    patient's (one diagnosis and side per patient in the contract). Keys are those of
    :func:`image_level_metrics` prefixed ``patient_`` (``num_images`` becomes
    ``patient_num_patients``).
    """
    n = _check_same_length(
        patient_ids=patient_ids,
        fpp_fractions=fpp_fractions,
        true_palsy=true_palsy,
        pred_sides=pred_sides,
        true_sides=true_sides,
    )
    order: dict[str, list[int]] = {}
    for i in range(n):
        order.setdefault(patient_ids[i], []).append(i)
    scores, truth, sides, true_side = [], [], [], []
    for images in order.values():
        score, side = patient_finding(
            [fpp_fractions[i] for i in images], [pred_sides[i] for i in images], threshold
        )
        scores.append(score)
        truth.append(any(true_palsy[i] for i in images))
        sides.append(side)
        true_side.append(next((true_sides[i] for i in images if true_sides[i] != "none"), "none"))
    per_patient = image_level_metrics(scores, truth, sides, true_side, threshold)
    per_patient["num_patients"] = per_patient.pop("num_images")
    return {f"patient_{key}": value for key, value in per_patient.items()}
