"""SegmentationLoss and its terms at their edges (eq. 6–8)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from palsyseg.losses import (
    HISTLoss,
    LossConfig,
    SegmentationLoss,
    boundary_enhanced_loss,
    category_bands,
    category_contours,
    decision_loss,
    fpp_decision_targets,
    label_edges,
    soft_dice_loss,
)

C = 7


def perfect_logits(mask: torch.Tensor, margin: float = 30.0) -> torch.Tensor:
    return margin * F.one_hot(mask, C).permute(0, 3, 1, 2).float()


def random_batch(seed: int = 0, b: int = 2, h: int = 24, w: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, h, w, dtype=torch.long)
    mask[:, 4:20, 3:17] = 1
    mask[:, 6:9, 5:8] = 4
    mask[:, 6:9, 12:15] = 6
    mask[:, 14:17, 6:14] = 5
    noise = torch.randint(0, C, (b, h, w), generator=g)
    mask[:, 0:2] = noise[:, 0:2]
    return mask


def full_outputs(mask: torch.Tensor, dim: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b, h, w = mask.shape
    return {
        "logits": torch.randn(b, C, h, w, generator=g, requires_grad=True),
        "aux_logits": [torch.randn(b, C, h // 4, w // 4, generator=g, requires_grad=True)],
        "category_embeddings": torch.randn(b, C, dim, generator=g, requires_grad=True),
        "depth": (80 * torch.rand(b, 1, h, w, generator=g)).requires_grad_(),
        "edge": torch.randn(b, 1, h, w, generator=g, requires_grad=True),
    }


# ---------------------------------------------------------------------------------------------
# Contours


def test_contours_are_inner_4_neighbour_boundaries_and_not_the_image_border() -> None:
    mask = torch.zeros(1, 5, 5, dtype=torch.long)
    mask[0, 1:4, 1:4] = 1
    mask[0, 2, 2] = 2
    contours = category_contours(mask, 3)
    ring = torch.zeros(5, 5, dtype=torch.bool)
    ring[1:4, 1:4] = True
    ring[2, 2] = False
    assert torch.equal(contours[0, 1], ring)  # the whole ring of 1 touches 0 or 2
    assert contours[0, 2].sum() == 1  # the single 2
    background = contours[0, 0]
    assert not background[0, 0] and not background[4, 4]  # corners touch 1 only diagonally
    assert background[0, 2] and background[2, 0]
    assert category_contours(torch.ones(1, 4, 4, dtype=torch.long), 3).sum() == 0
    assert torch.equal(label_edges(mask)[0], contours[0].any(0).float())


def test_bands_add_the_pixels_of_other_labels_that_touch_the_category() -> None:
    mask = torch.zeros(1, 5, 5, dtype=torch.long)
    mask[0, 1:4, 1:4] = 1
    mask[0, 2, 2] = 2
    bands = category_bands(mask, 3)
    contours = category_contours(mask, 3)
    cross = torch.zeros(5, 5, dtype=torch.bool)
    cross[2, 1:4] = cross[1:4, 2] = True
    assert torch.equal(bands[0, 2], cross)  # the single 2 and its four neighbours of label 1
    outer = torch.zeros(5, 5, dtype=torch.bool)
    outer[0, 1:4] = outer[4, 1:4] = outer[1:4, 0] = outer[1:4, 4] = True
    assert torch.equal(bands[0, 1], contours[0, 1] | outer | (mask[0] == 2))
    assert category_bands(torch.ones(1, 4, 4, dtype=torch.long), 3).sum() == 0


def test_the_two_sided_band_stops_eq7_favouring_wide_small_parts() -> None:
    """One-sided, eq. 7 charges a small part drawn a pixel too narrow far more than one drawn a
    pixel too wide (the skin ring around it is a sliver of the skin's long contour); with the
    band both errors cost about the same."""
    mask = torch.zeros(1, 32, 32, dtype=torch.long)
    mask[0, 2:30, 2:30] = 1  # skin, with a long border to the background
    mask[0, 14:18, 10:22] = 4  # an eye
    wide, narrow = mask.clone(), mask.clone()
    wide[0, 13:19, 9:23] = 4
    narrow[0, 14:18, 10:22] = 1
    narrow[0, 15:17, 11:21] = 4

    def cost(prediction: torch.Tensor, outer: bool) -> float:
        criterion = SegmentationLoss(LossConfig(boundary_outer=outer))
        return criterion({"logits": perfect_logits(prediction, 5.0)}, mask)[1]["boundary"]

    assert cost(narrow, outer=False) > 3 * cost(wide, outer=False)
    assert 0.6 < cost(narrow, outer=True) / cost(wide, outer=True) < 1.5


def test_boundary_loss_is_eq7_by_hand() -> None:
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, :, 2:] = 1  # a vertical edge between columns 1 and 2
    pixel_ce = torch.arange(16, dtype=torch.float32).view(1, 4, 4)
    contours = category_contours(mask, 2)
    # category 0 contour = column 1 (CE 1, 5, 9, 13), category 1 = column 2 (2, 6, 10, 14)
    expected = ((1 + 5 + 9 + 13) / 4 * 1.0 + (2 + 6 + 10 + 14) / 4 * 3.0) / 2
    weights = torch.tensor([1.0, 3.0])
    assert boundary_enhanced_loss(pixel_ce, contours, weights).item() == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# The whole objective


def test_perfect_prediction_gives_near_zero_ce_and_boundary() -> None:
    mask = random_batch()
    loss, logs = SegmentationLoss(LossConfig())({"logits": perfect_logits(mask)}, mask)
    assert logs["ce"] < 1e-6 and logs["boundary"] < 1e-6
    assert loss.item() < 1e-6


def test_a_wrong_boundary_costs_more_than_the_same_error_inside() -> None:
    mask = torch.zeros(1, 16, 16, dtype=torch.long)
    mask[0, 4:12, 4:12] = 1
    logits = perfect_logits(mask)
    at_edge, inside = logits.clone(), logits.clone()
    at_edge[0, :, 4, 6] = torch.tensor([30.0, 0, 0, 0, 0, 0, 0])  # a contour pixel of class 1
    inside[0, :, 8, 8] = torch.tensor([30.0, 0, 0, 0, 0, 0, 0])  # an interior pixel
    criterion = SegmentationLoss(LossConfig())
    _, edge_logs = criterion({"logits": at_edge}, mask)
    _, inside_logs = criterion({"logits": inside}, mask)
    assert edge_logs["ce"] == pytest.approx(inside_logs["ce"])
    assert edge_logs["boundary"] > 0 and inside_logs["boundary"] == 0


def test_baseline_outputs_get_only_the_segmentation_terms() -> None:
    mask = random_batch()
    logits = torch.randn(2, C, *mask.shape[1:], requires_grad=True)
    loss, logs = SegmentationLoss(LossConfig())({"logits": logits}, mask, torch.rand(mask.shape))
    assert set(logs) == {"ce", "boundary", "total"}
    loss.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("combine", ["sum", "product"])
def test_sum_or_product_as_configured(combine: str) -> None:
    mask = random_batch()
    logits = torch.randn(2, C, *mask.shape[1:])
    config = LossConfig(combine=combine, ce_weight=2.0, boundary_weight=0.5)
    loss, logs = SegmentationLoss(config)({"logits": logits}, mask)
    if combine == "sum":
        expected = 2.0 * logs["ce"] + 0.5 * logs["boundary"]
    else:  # eq. 8: λ·L_CE·L_best
        expected = 2.0 * logs["ce"] * logs["boundary"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_soft_dice_is_zero_when_perfect_and_one_minus_dice_by_hand() -> None:
    mask = random_batch()
    assert soft_dice_loss(perfect_logits(mask), mask).item() < 1e-6
    # two-pixel image, classes 0 and 1 only: by hand with the softmax's probabilities
    mask = torch.tensor([[[0, 1]]])
    logits = torch.zeros(1, C, 1, 2)
    logits[0, 1, 0, 1] = math.log(6.0)  # pixel 1: p(class 1) = 6 / (6 + 6) = 0.5
    prob = logits.softmax(dim=1)[0, :, 0]  # C×2
    per_class = []
    for j in range(1, C):
        target = (mask[0, 0] == j).float()
        inter = (prob[j] * target).sum()
        per_class.append((2 * inter + 1) / (prob[j].sum() + target.sum() + 1))
    expected = 1 - torch.stack(per_class).mean()
    assert soft_dice_loss(logits, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_dice_term_is_added_only_when_weighted() -> None:
    mask = random_batch()
    logits = torch.randn(2, C, *mask.shape[1:], requires_grad=True)
    _, off = SegmentationLoss(LossConfig())({"logits": logits}, mask)
    loss, on = SegmentationLoss(LossConfig(dice_weight=2.0))({"logits": logits}, mask)
    assert "dice" not in off
    assert on["total"] == pytest.approx(off["total"] + 2.0 * on["dice"], rel=1e-5)
    assert on["dice"] == pytest.approx(soft_dice_loss(logits, mask).item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_fpp_decision_targets_name_the_part_and_half_of_the_fpp_pixels() -> None:
    mask = torch.zeros(3, 12, 9, dtype=torch.long)  # centre column 4
    mask[:, 2:4, 1:3], mask[:, 2:4, 6:8] = 4, 4  # two eyes
    mask[:, 8:10, 2:7] = 5  # a mouth across the centre line
    mask[0, 2:4, 6:8] = 6  # image 0: the right eye is FPP
    mask[1, 8:10, 2:4] = 6  # image 1: the mouth's left half (its eye rows are far)
    mask[1, 8:10, 4] = 6  # ...and its centre column, which counts for neither half
    mask[1, 9, 5] = 6  # ...and one pixel past it: the weak half is where most of it lies
    targets = fpp_decision_targets(mask, (4, 5), 6)
    expected = torch.zeros(3, 2, 2)
    expected[0, 0, 1] = 1
    expected[1, 1, 0] = 1
    assert torch.equal(targets, expected)  # image 2 shows no palsy: all zero
    # an eye closure: the strong eye shut, the weak one all FPP; no eye pixel is left, and the
    # eyebrows say where the eyes are, so the FPP is the eye's (not the mouth's, as once)
    closed = torch.zeros(1, 12, 9, dtype=torch.long)
    closed[0, 0, 1:3], closed[0, 0, 6:8] = 3, 3  # the brows, just above the eyes
    closed[0, 2:4, 1:3] = 6
    closed[0, 8:10, 2:7] = 5
    assert torch.equal(fpp_decision_targets(closed, (4, 5), 6)[0], torch.tensor([[1.0, 0], [0, 0]]))
    # a part with neither its own pixels nor a fallback's is never nearest: FPP goes elsewhere
    alone = closed.clone()
    alone[0, 0] = 0
    assert torch.equal(fpp_decision_targets(alone, (4, 5), 6)[0], torch.tensor([[0.0, 0], [1, 0]]))
    assert torch.equal(
        fpp_decision_targets(closed, (4, 5), 6, fallbacks={})[0], torch.tensor([[0.0, 0], [1, 0]])
    )


def test_decision_loss_is_the_bce_of_q_and_joins_the_total_when_weighted() -> None:
    q = torch.tensor([[[0.8, 0.1], [0.3, 0.05]]])
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    expected = F.binary_cross_entropy(q, targets)
    assert decision_loss(q.log(), targets).item() == pytest.approx(expected.item(), rel=1e-5)
    mask = random_batch()
    log_q = torch.full((2, 2, 2), math.log(0.5), requires_grad=True)
    outputs = {"logits": torch.randn(2, C, *mask.shape[1:]), "fpp_side_log_q": log_q}
    loss, logs = SegmentationLoss(LossConfig(decision_weight=1.0))(outputs, mask)
    assert logs["decision"] == pytest.approx(math.log(2), rel=1e-5)  # q = 0.5: log 2 per entry
    loss.backward()
    assert torch.isfinite(log_q.grad).all()
    with pytest.raises(ValueError, match="fpp_parts"):
        SegmentationLoss(LossConfig(decision_weight=1.0, fpp_parts=(4,)))(outputs, mask)


def test_class_weights_match_torch_weighted_cross_entropy() -> None:
    mask = random_batch()
    logits = torch.randn(2, C, *mask.shape[1:])
    weights = [0.5, 1, 2, 3, 3, 2, 4]
    _, logs = SegmentationLoss(LossConfig(class_weights=weights))({"logits": logits}, mask)
    expected = F.cross_entropy(logits, mask, weight=torch.tensor(weights, dtype=torch.float32))
    assert logs["ce"] == pytest.approx(expected.item(), rel=1e-5)


def test_every_term_is_finite_and_backpropagates() -> None:
    mask = random_batch()
    outputs = full_outputs(mask)
    criterion = SegmentationLoss(LossConfig())
    loss, logs = criterion(outputs, mask, torch.rand(mask.shape))
    assert {"ce", "boundary", "hist", "hist_ce", "hist_d", "aux", "depth", "edge", "total"} == set(
        logs
    )
    assert all(math.isfinite(v) for v in logs.values())
    loss.backward()
    for key in ("logits", "category_embeddings", "depth", "edge"):
        assert torch.isfinite(outputs[key].grad).all() and outputs[key].grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in criterion.parameters())


def test_all_background_batch_and_all_zero_depth_stay_finite() -> None:
    mask = torch.zeros(2, 16, 16, dtype=torch.long)
    outputs = full_outputs(mask)
    loss, logs = SegmentationLoss(LossConfig())(outputs, mask, torch.zeros(2, 16, 16))
    assert all(math.isfinite(v) for v in logs.values()), logs
    assert logs["boundary"] == 0.0 and logs["depth"] == 0.0
    loss.backward()
    for key in ("logits", "category_embeddings", "depth", "edge"):
        assert torch.isfinite(outputs[key].grad).all()


def test_empty_classes_with_class_weights_stay_finite() -> None:
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[0, 2:5, 2:5] = 3  # only background and eyebrow present
    config = LossConfig(class_weights=[1, 2, 3, 4, 5, 6, 7], boundary_category_weights=[1] * 7)
    loss, logs = SegmentationLoss(config)(full_outputs(mask), mask, torch.zeros(1, 8, 8))
    assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in logs.values())


def test_depth_loss_is_zero_for_the_true_depth_and_ignores_pixels_without_depth() -> None:
    relative = torch.rand(2, 12, 12) * 0.8 + 0.1
    relative[:, :4] = 0.0  # no depth there
    mask = torch.ones(2, 12, 12, dtype=torch.long)
    criterion = SegmentationLoss(LossConfig(m_max=80.0))
    depth = (80.0 * relative)[:, None]
    _, logs = criterion({"logits": perfect_logits(mask), "depth": depth}, mask, relative)
    assert logs["depth"] < 1e-3
    wrong_where_unknown = depth.clone()
    wrong_where_unknown[:, :, :4] = 55.0
    _, logs2 = criterion(
        {"logits": perfect_logits(mask), "depth": wrong_where_unknown}, mask, relative
    )
    assert logs2["depth"] == pytest.approx(logs["depth"], abs=1e-6)
    _, logs3 = criterion({"logits": perfect_logits(mask), "depth": depth * 0.5}, mask, relative)
    assert logs3["depth"] > 0.4  # abs rel 0.5 plus the (λ<1) scale part of SILog


def test_zero_predicted_depth_is_finite() -> None:
    mask = torch.ones(1, 8, 8, dtype=torch.long)
    depth = torch.zeros(1, 1, 8, 8, requires_grad=True)
    loss, logs = SegmentationLoss(LossConfig())(
        {"logits": perfect_logits(mask), "depth": depth}, mask, torch.full((1, 8, 8), 0.5)
    )
    loss.backward()
    assert math.isfinite(logs["depth"]) and torch.isfinite(depth.grad).all()


def test_perfect_aux_masks_and_edges_cost_little() -> None:
    mask = torch.zeros(1, 16, 16, dtype=torch.long)
    mask[0, 4:12, 4:12] = 1
    onehot = F.one_hot(mask, C).permute(0, 3, 1, 2).float()
    edge_target = label_edges(mask)[:, None]
    outputs = {
        "logits": perfect_logits(mask),
        "aux_logits": [40 * (2 * onehot - 1)],
        "edge": 40 * (2 * edge_target - 1),
    }
    _, logs = SegmentationLoss(LossConfig())(outputs, mask)
    assert logs["aux"] < 1e-3 and logs["edge"] < 1e-3


def test_hist_width_mismatch_and_bad_weights_are_refused() -> None:
    mask = random_batch()
    with pytest.raises(ValueError, match="hist_dim"):
        SegmentationLoss(LossConfig(hist_dim=32))(full_outputs(mask, dim=64), mask)
    with pytest.raises(ValueError, match="class_weights"):
        SegmentationLoss(LossConfig(class_weights=[1.0, 2.0]))
    with pytest.raises(ValueError, match="combine"):
        LossConfig(combine="max")
    with pytest.raises(ValueError, match="lambda_s"):
        LossConfig(hist_lambda_s=0.0)


def test_loss_parameters_are_the_hist_parameters() -> None:
    names = {n for n, _ in SegmentationLoss(LossConfig()).named_parameters()}
    assert names and all(n.startswith("hist.") for n in names)


# ---------------------------------------------------------------------------------------------
# HIST (eq. 6)


def test_hist_total_is_lambda_s_ce_plus_distribution_loss() -> None:
    torch.manual_seed(0)
    hist = HISTLoss(4, 8, tau=32.0, alpha=0.9, lambda_s=2.5, hidden=16)
    x, labels = torch.randn(10, 8), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    total, ce, d = hist(x, labels)
    assert total.item() == pytest.approx(2.5 * ce.item() + d.item(), rel=1e-6)


def test_hist_distribution_loss_is_small_at_the_class_means() -> None:
    torch.manual_seed(0)
    hist = HISTLoss(4, 8, tau=32.0, alpha=0.9, lambda_s=1.0, hidden=16)
    labels = torch.tensor([0, 1, 2, 3])
    _, _, at_means = hist(hist.means.detach().clone(), labels)
    _, _, shuffled = hist(hist.means.detach()[[1, 2, 3, 0]].clone(), labels)
    assert at_means.item() < 0.05 < shuffled.item()


def test_hgnn_propagation_is_the_normalised_hypergraph_laplacian() -> None:
    incidence = torch.tensor([[1.0, 0.2], [1.0, 0.5], [0.1, 1.0]])
    dv = incidence.sum(1)
    de = incidence.sum(0)
    expected = (
        torch.diag(dv.rsqrt())
        @ incidence
        @ torch.diag(1 / de)
        @ incidence.T
        @ torch.diag(dv.rsqrt())
    )
    got = HISTLoss.propagation(incidence)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got, got.T, atol=1e-6)


def test_hist_learns_to_classify_separable_nodes() -> None:
    torch.manual_seed(0)
    hist = HISTLoss(5, 16, tau=32.0, alpha=0.9, lambda_s=1.0, hidden=32)
    labels = torch.arange(5).repeat(6)
    x = torch.randn(5, 16)[labels] + 0.2 * torch.randn(30, 16)
    optimizer = torch.optim.Adam(hist.parameters(), lr=5e-3)
    first = None
    for _ in range(150):
        optimizer.zero_grad()
        total, ce, _ = hist(x, labels)
        first = first if first is not None else ce.item()
        total.backward()
        optimizer.step()
    assert ce.item() < 0.3 < first


def test_depth_loss_stays_bounded_at_the_generators_near_zero_nose_tip() -> None:
    mask = torch.ones(1, 8, 8, dtype=torch.long)
    relative = torch.full((1, 8, 8), 0.6)
    relative[0, 4, 4] = 1 / 65535  # the nearest point
    depth = (80.0 * 0.6 * torch.ones(1, 1, 8, 8)).requires_grad_()
    loss, logs = SegmentationLoss(LossConfig(depth_floor=0.02))(
        {"logits": perfect_logits(mask), "depth": depth}, mask, relative
    )
    assert logs["depth"] < 1.0  # one pixel off by 48 units: bounded by the floor (1.6 units)
    loss.backward()
    assert torch.isfinite(depth.grad).all()


def test_depth_loss_is_the_mean_over_images_with_depth_of_silog_plus_abs_rel() -> None:
    torch.manual_seed(0)
    relative = torch.rand(3, 6, 6) * 0.9 + 0.05
    relative[0, :2] = 0.0
    relative[2] = 0.0  # this image has no depth: skipped, not averaged in as 0
    pred = 80 * torch.rand(3, 1, 6, 6)
    mask = torch.ones(3, 6, 6, dtype=torch.long)
    config = LossConfig(m_max=80.0, depth_si_lambda=0.85, depth_floor=0.02)
    _, logs = SegmentationLoss(config)(
        {"logits": perfect_logits(mask), "depth": pred}, mask, relative
    )
    expected = []
    for i in range(2):
        valid = relative[i] > 0
        p, t = pred[i, 0][valid], 80 * relative[i][valid]
        g = torch.log(p + 1.6) - torch.log(t + 1.6)
        silog = torch.sqrt((g**2).mean() - 0.85 * g.mean() ** 2)
        expected.append(silog + ((p - t).abs() / t.clamp(min=1.6)).mean())
    assert logs["depth"] == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_loss_config_reads_from_a_params_section() -> None:
    from palsyseg.errors import ConfigError
    from palsyseg.params import from_section

    config = from_section(
        {"class_weights": [1, 2, 2, 3, 3, 2, 4], "combine": "product", "m_max": 80}, LossConfig
    )
    assert config.class_weights == (1.0, 2.0, 2.0, 3.0, 3.0, 2.0, 4.0)
    assert config.combine == "product" and config.m_max == 80.0
    with pytest.raises(ConfigError, match="combine"):
        from_section({"combine": "max"}, LossConfig)
    with pytest.raises(ConfigError, match="unknown key"):
        from_section({"focal_gamma": 2.0}, LossConfig)
