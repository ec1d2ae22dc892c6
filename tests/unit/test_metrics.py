"""Metrics (eq. 9–11) cross-checked against scikit-learn; image-level findings on drawn masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, roc_auc_score

from palsyseg.labels import LABEL_NAMES, Label, mirrored_side
from palsyseg.metrics import (
    ConfusionMatrix,
    choose_decision_bias,
    choose_palsy_threshold,
    decision_findings,
    image_level_metrics,
    palsy_findings,
    patient_finding,
    patient_level_metrics,
    roc_auc,
    segmentation_metrics,
)

C = 7


def random_maps(seed: int, shape: tuple[int, ...] = (3, 20, 17), classes: int = C):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, shape)
    pred = np.where(rng.random(shape) < 0.6, truth, rng.integers(0, classes, shape))
    return pred, truth


@pytest.mark.parametrize("seed", range(5))
def test_per_class_and_means_match_sklearn(seed: int) -> None:
    pred, truth = random_maps(seed)
    cm = ConfusionMatrix(C)
    cm.update(pred, truth)
    m = cm.compute()
    y, p = truth.ravel(), pred.ravel()
    labels = list(range(C))
    f1 = f1_score(y, p, labels=labels, average=None, zero_division=0)
    iou = jaccard_score(y, p, labels=labels, average=None, zero_division=0)
    for i, name in enumerate(LABEL_NAMES):
        assert m[f"f1_{name}"] == pytest.approx(f1[i])
        assert m[f"iou_{name}"] == pytest.approx(iou[i])
    assert m["pixel_accuracy"] == pytest.approx(accuracy_score(y, p))  # eq. 11
    assert m["miou"] == pytest.approx(iou.mean())  # eq. 10
    assert m["mean_f1"] == pytest.approx(f1[1:].mean())


def test_absent_classes_are_nan_and_means_match_sklearn_macro_over_present_labels() -> None:
    pred, truth = random_maps(7, classes=4)  # classes 4, 5, 6 never occur
    pred[0, 0, 0] = 5  # 5 predicted once, never true: present, F1 0
    cm = ConfusionMatrix(C)
    cm.update(pred, truth)
    m = cm.compute()
    assert math.isnan(m["f1_eye"]) and math.isnan(m["iou_fpp"]) and math.isnan(m["precision_fpp"])
    assert m["f1_mouth"] == 0.0 and m["recall_mouth"] == 0.0
    y, p = truth.ravel(), pred.ravel()
    assert m["miou"] == pytest.approx(jaccard_score(y, p, average="macro", zero_division=0))
    present_fg = [c for c in np.union1d(y, p) if c != 0]
    assert m["mean_f1"] == pytest.approx(
        f1_score(y, p, labels=present_fg, average="macro", zero_division=0)
    )


def test_class_in_truth_never_predicted_scores_zero() -> None:
    truth = np.array([[0, 6, 6, 1]])
    pred = np.array([[0, 1, 1, 1]])
    cm = ConfusionMatrix(C)
    cm.update(pred, truth)
    m = cm.compute()
    assert m["precision_fpp"] == 0.0 and m["recall_fpp"] == 0.0 and m["f1_fpp"] == 0.0
    assert m["precision_skin"] == pytest.approx(1 / 3) and m["recall_skin"] == 1.0
    assert m["f1_skin"] == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))  # eq. 9


def test_accumulating_batches_equals_one_update_and_torch_equals_numpy() -> None:
    pred, truth = random_maps(3)
    whole = ConfusionMatrix(C)
    whole.update(pred, truth)
    parts = ConfusionMatrix(C)
    for i in range(pred.shape[0]):
        parts.update(torch.from_numpy(pred[i]), torch.from_numpy(truth[i]))
    assert np.array_equal(whole.matrix, parts.matrix)
    assert whole.matrix.dtype == np.int64 and whole.matrix.sum() == pred.size
    # rows are truth
    assert whole.matrix[truth.ravel()[0], pred.ravel()[0]] > 0
    merged = ConfusionMatrix(C)
    merged.merge(whole)
    merged.merge(parts)
    assert np.array_equal(merged.matrix, 2 * whole.matrix)


def test_bad_updates_are_refused() -> None:
    cm = ConfusionMatrix(C)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="outside"):
        cm.update(np.full((2, 2), 7), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="outside"):
        cm.update(np.zeros((2, 2)), np.full((2, 2), -1))
    assert cm.matrix.sum() == 0


def test_empty_matrix_gives_nan() -> None:
    m = segmentation_metrics(np.zeros((C, C), dtype=np.int64))
    assert math.isnan(m["pixel_accuracy"]) and math.isnan(m["miou"]) and math.isnan(m["mean_f1"])


# ---------------------------------------------------------------------------------------------
# Image level


def drawn_face(
    width: int = 80, face_cx: int = 40, fpp_image_half: str | None = "left"
) -> np.ndarray:
    """A face (skin ellipse around ``face_cx``) with eyes and mouth; FPP replaces the eye and
    mouth pixels on one image half of the face (relative to the face, not the image)."""
    h = 60
    yy, xx = np.mgrid[0:h, 0:width]
    m = np.zeros((h, width), np.int64)
    m[((xx - face_cx) / 18) ** 2 + ((yy - 30) / 25) ** 2 <= 1] = Label.SKIN
    m[(yy < 12) & (m == Label.SKIN)] = Label.HAIR
    for dx in (-8, 8):
        m[(np.abs(xx - (face_cx + dx)) <= 3) & (np.abs(yy - 22) <= 1)] = Label.EYE
    mouth = (np.abs(xx - face_cx) <= 7) & (np.abs(yy - 42) <= 1)
    m[mouth] = Label.MOUTH
    if fpp_image_half is not None:
        half = xx < face_cx if fpp_image_half == "left" else xx > face_cx
        m[half & np.isin(m, [Label.EYE, Label.MOUTH])] = Label.FPP
    return m


def test_fpp_on_the_image_left_is_the_patients_right() -> None:
    fraction, side = palsy_findings(drawn_face(fpp_image_half="left"))
    assert side == "right"
    mask = drawn_face(fpp_image_half="left")
    assert fraction == pytest.approx((mask == Label.FPP).sum() / (mask != 0).sum())
    assert palsy_findings(drawn_face(fpp_image_half="right"))[1] == "left"


def test_a_horizontal_flip_mirrors_the_side() -> None:
    mask = drawn_face(fpp_image_half="right")
    _, side = palsy_findings(mask)
    flipped_fraction, flipped_side = palsy_findings(mask[:, ::-1].copy())
    assert flipped_side == mirrored_side(side)
    assert flipped_fraction == pytest.approx(palsy_findings(mask)[0])


def test_midline_follows_the_face_not_the_image_centre() -> None:
    # The face sits in the image's right part: all of it is right of the image centre, yet the
    # FPP is on the face's (image-)left half → the patient's right side.
    mask = drawn_face(width=120, face_cx=90, fpp_image_half="left")
    assert palsy_findings(mask)[1] == "right"
    # torch tensors work too
    assert palsy_findings(torch.from_numpy(mask))[1] == "right"


def test_midline_ignores_an_asymmetric_hair_parting() -> None:
    mask = drawn_face(fpp_image_half="right")
    mask[0:30, 40:80] = np.where(
        mask[0:30, 40:80] == Label.BACKGROUND, Label.HAIR, mask[0:30, 40:80]
    )
    assert palsy_findings(mask)[1] == "left"


def test_no_fpp_or_no_face_is_none() -> None:
    assert palsy_findings(drawn_face(fpp_image_half=None)) == (0.0, "none")
    assert palsy_findings(np.zeros((10, 10), np.int64)) == (0.0, "none")
    with pytest.raises(ValueError):
        palsy_findings(np.zeros((2, 3, 3)))


def test_balanced_fpp_is_none() -> None:
    mask = drawn_face(fpp_image_half=None)
    mask[np.isin(mask, [Label.EYE])] = Label.FPP  # both eyes: symmetric
    assert palsy_findings(mask)[1] == "none"


def test_threshold_separates_separable_fractions() -> None:
    fractions = [0.0, 0.01, 0.02, 0.10, 0.12, 0.3]
    truth = [False, False, False, True, True, True]
    t = choose_palsy_threshold(fractions, truth)
    assert t == pytest.approx(0.06)
    metrics = image_level_metrics(fractions, truth, ["none"] * 6, ["none"] * 6, t)
    assert metrics["palsy_sensitivity"] == 1.0 and metrics["palsy_specificity"] == 1.0


def test_threshold_prefers_the_lowest_of_equally_good_ones() -> None:
    fractions = [0.0, 0.05, 0.08, 0.2]
    truth = [False, True, False, True]
    # 0.025 → sens 1, spec 0.5 (J .5); 0.14 → sens .5, spec 1 (J .5): the lower wins
    assert choose_palsy_threshold(fractions, truth) == pytest.approx(0.025)


def test_threshold_with_one_class_only() -> None:
    assert choose_palsy_threshold([0.0, 0.1, 0.3], [False] * 3) == pytest.approx(0.3)
    assert choose_palsy_threshold([0.1, 0.3], [True] * 2) == 0.0
    assert choose_palsy_threshold([], []) == 0.0
    with pytest.raises(ValueError):
        choose_palsy_threshold([0.1], [True, False])


@pytest.mark.parametrize("seed", range(4))
def test_auroc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(40) < 0.4
    scores = np.round(rng.random(40) + 0.3 * labels, 1)  # rounding makes ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert math.isnan(roc_auc(scores, np.zeros(40, bool)))


def test_image_level_metrics_by_hand() -> None:
    fractions = [0.0, 0.2, 0.05, 0.3, 0.0]
    truth = [False, True, True, True, False]
    pred_sides = ["none", "left", "right", "left", "none"]
    true_sides = ["none", "left", "left", "right", "none"]
    m = image_level_metrics(fractions, truth, pred_sides, true_sides, threshold=0.1)
    assert m["palsy_sensitivity"] == pytest.approx(2 / 3)
    assert m["palsy_specificity"] == 1.0
    assert m["palsy_accuracy"] == pytest.approx(4 / 5)
    assert m["side_accuracy"] == pytest.approx(1 / 3)
    assert m["palsy_auroc"] == pytest.approx(roc_auc_score(truth, fractions))
    healthy_only = image_level_metrics([0.0], [False], ["none"], ["none"], 0.1)
    assert math.isnan(healthy_only["palsy_sensitivity"]) and math.isnan(
        healthy_only["side_accuracy"]
    )


def test_patient_level_metrics_read_the_whole_exam() -> None:
    # p1: palsy (left) visible in one pose of three; p2: healthy with a stray FPP blob;
    # p3: palsy (right) seen on the wrong side once but more strongly on the right side.
    ids = ["p1", "p1", "p1", "p2", "p2", "p3", "p3"]
    fractions = [0.0, 0.0, 0.3, 0.05, 0.0, 0.02, 0.2]
    truth = [True, True, True, False, False, True, True]
    pred_sides = ["none", "none", "left", "right", "none", "left", "right"]
    true_sides = ["left", "left", "left", "none", "none", "right", "right"]
    m = patient_level_metrics(ids, fractions, truth, pred_sides, true_sides, threshold=0.04)
    # per patient: means 0.1, 0.025, 0.11 → present, absent, present
    assert m["patient_palsy_sensitivity"] == 1.0 and m["patient_palsy_specificity"] == 1.0
    assert m["patient_side_accuracy"] == 1.0  # p1 left; p3: 0.2 right outweighs 0.02 left
    assert m["patient_palsy_auroc"] == pytest.approx(roc_auc_score([1, 0, 1], [0.1, 0.025, 0.11]))
    assert m["patient_num_patients"] == 3 and m["patient_num_palsy"] == 2
    # image by image the same predictions miss p1's two quiet poses
    per_image = image_level_metrics(fractions, truth, pred_sides, true_sides, threshold=0.04)
    assert per_image["palsy_sensitivity"] == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="differ in length"):
        patient_level_metrics(ids[:-1], fractions, truth, pred_sides, true_sides, 0.04)


def test_a_patients_side_comes_from_the_photos_that_show_the_palsy() -> None:
    # One pose shows a left palsy (q 0.8); three quiet poses sit near the decision's floor on a
    # chance side (right). Weighted by the score alone they outvote it; above the threshold only
    # the showing photo votes.
    scores = [0.8, 0.45, 0.45, 0.45]
    sides = ["left", "right", "right", "right"]
    assert patient_finding(scores, sides) == (pytest.approx(0.5375), "right")
    assert patient_finding(scores, sides, threshold=0.5) == (pytest.approx(0.5375), "left")
    # two photos above it: the larger excess wins (0.9 − 0.5 against 0.6 − 0.5)
    assert patient_finding([0.9, 0.6, 0.4], ["right", "left", "left"], 0.5)[1] == "right"
    # none above it: every photo votes by its score, as without a threshold
    assert patient_finding([0.3, 0.2], ["left", "right"], 0.5)[1] == "left"
    assert patient_finding([], [], 0.5) == (0.0, "none")
    ids = ["p"] * 4
    m = patient_level_metrics(ids, scores, [True] * 4, sides, ["left"] * 4, threshold=0.5)
    assert m["patient_side_accuracy"] == 1.0


def test_the_decision_bias_moves_an_under_confident_decision_to_its_best_f1() -> None:
    # Weak halves at logit(q) ≈ −0.85 (q 0.3), the others at ≈ −2.9 (q 0.05): no half is
    # marked at bias 0; any bias in (0.85, 2.9] marks exactly the weak ones, the smallest wins.
    logits = np.array([[-0.85, -2.9], [-2.9, -0.85], [-2.9, -2.9], [-0.85, -2.9]])
    truth = np.array([[1, 0], [0, 1], [0, 0], [1, 0]])
    assert choose_decision_bias(logits, truth) == 1.0
    # An over-confident one is pulled back: the healthy halves at logit 0.1 need b ≤ −0.1.
    assert choose_decision_bias(logits + 3.0, truth) == -0.25
    # Overlapping scores: the F1 optimum, not the separating point, e.g. marking one false
    # half for two more true ones.
    mixed = np.array([[0.0, -3.0], [-1.0, -3.0], [-1.5, -3.0], [-1.2, -3.0]])
    mixed_truth = np.array([[1, 0], [1, 0], [1, 0], [0, 0]])
    assert choose_decision_bias(mixed, mixed_truth) == 1.75  # F1 6/7 against 2/3 at 1.25


def test_the_decision_bias_stays_zero_without_evidence_and_refuses_bad_input() -> None:
    assert choose_decision_bias(np.zeros((3, 2)), np.zeros((3, 2))) == 0.0  # no weak half
    assert choose_decision_bias(np.full((2, 2), 0.5), np.array([[1, 0], [0, 1]])) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        choose_decision_bias(np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        choose_decision_bias(np.full((1, 2), np.nan), np.ones((1, 2)))


def test_decision_findings_take_the_surer_half_in_the_mirror_convention() -> None:
    # parts × (image left, image right): the mouth's left image half is the surest
    log_q = np.log(np.array([[0.2, 0.3], [0.7, 0.1]]))
    score, side = decision_findings(log_q)
    assert score == pytest.approx(0.7) and side == "right"  # image left = patient's right
    score, side = decision_findings(log_q[:, ::-1])
    assert score == pytest.approx(0.7) and side == "left"
    assert decision_findings(np.log(np.full((2, 2), 0.4))) == (pytest.approx(0.4), "none")
    with pytest.raises(ValueError, match="parts × 2"):
        decision_findings(np.zeros((2, 3)))


def _f1_of(logits: torch.Tensor, mask: torch.Tensor, offsets: torch.Tensor) -> float:
    confusion = ConfusionMatrix(logits.shape[1])
    confusion.update((logits + offsets[:, None, None]).argmax(1), mask)
    names = [f"c{i}" for i in range(logits.shape[1])]
    return segmentation_metrics(confusion.matrix, names)["mean_f1"]


def test_class_offsets_undo_an_over_predicted_class_and_match_brute_force() -> None:
    """A class whose logits run 1.5 too high is predicted too wide; the chosen offsets win back
    the F1 that argmax loses, and each coordinate step scores every candidate exactly as
    scoring the shifted argmax would (checked against the brute force for the first step)."""
    from palsyseg.scoring import CLASS_OFFSETS, choose_class_offsets

    generator = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 4, (4, 24, 24), generator=generator)
    truth = 2.0 * torch.nn.functional.one_hot(mask, 4).permute(0, 3, 1, 2).float()
    logits = truth + torch.randn(4, 4, 24, 24, generator=generator)
    logits[:, 2] += 1.5
    offsets = choose_class_offsets(logits, mask)
    assert offsets[0] == 0 and -2.0 <= offsets[2] - offsets[[1, 3]].mean() <= -1.0
    assert _f1_of(logits, mask, offsets) > _f1_of(logits, mask, torch.zeros(4)) + 0.03
    first = choose_class_offsets(logits, mask, rounds=1)[:2]  # class 1 is chosen first, alone
    brute = max(
        (_f1_of(logits, mask, torch.tensor([0.0, float(o), 0.0, 0.0])), -abs(float(o)), float(o))
        for o in CLASS_OFFSETS
    )
    assert float(first[1]) == brute[2]


def test_class_offsets_stay_zero_when_argmax_is_already_best_and_refuse_bad_input() -> None:
    from palsyseg.scoring import choose_class_offsets

    mask = torch.zeros(2, 8, 8, dtype=torch.long)
    mask[:, 2:5, 2:6] = 1
    mask[:, 6:, :] = 2
    perfect = 5.0 * torch.nn.functional.one_hot(mask, 3).permute(0, 3, 1, 2).float()
    assert torch.equal(choose_class_offsets(perfect, mask), torch.zeros(3))
    assert torch.equal(choose_class_offsets(perfect.half(), mask), torch.zeros(3))
    with pytest.raises(ValueError, match="does not fit"):
        choose_class_offsets(perfect, mask[:1])
