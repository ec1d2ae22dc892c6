"""The decision refit (palsyseg.refit): descriptors, the fit itself, and its place in training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from palsyseg import train as train_module
from palsyseg.labels import Label
from palsyseg.losses import fpp_decision_targets
from palsyseg.models import create_model
from palsyseg.models.asymmetry import PartSideFPP
from palsyseg.refit import (
    Descriptors,
    choose_operating_point,
    collect_descriptors,
    epoch_order,
    fit_decision,
)
from palsyseg.train import TrainConfig, read_checkpoint, train_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = {"epochs": 1, "batch_size": 3, "image_size": 32, "device": "cpu", "seed": 3}


def test_epoch_order_draws_one_epoch_of_every_group_first() -> None:
    assert epoch_order(6, 2) == [0, 2, 4, 1, 3, 5]
    assert epoch_order(5, 2) == [0, 2, 4, 1, 3]
    assert epoch_order(3) == [0, 1, 2] == epoch_order(3, 0)


def test_the_decision_read_from_descriptors_swaps_sides_with_them() -> None:
    torch.manual_seed(0)
    block = PartSideFPP(8, (4, 5), 6, geometry=True, outline=True)
    for head in block.shape_side:  # not 0, so the moments count
        torch.nn.init.normal_(head.weight)
    pooled, moments = torch.randn(5, 2, 2, 8), torch.randn(5, 2, 2, 8)
    log_q = block.judge(pooled, moments)
    assert log_q.shape == (5, 2, 2)
    torch.testing.assert_close(block.judge(pooled.flip(2), moments.flip(2)), log_q.flip(-1))
    with pytest.raises(ValueError, match="moments"):
        block.judge(pooled, None)


def _separable(n: int, seed: int) -> Descriptors:
    """Descriptors whose targets a decision can read: part p's half is FPP where its third
    moment (the mean distance from the centre line) exceeds the other half's by more than 1."""
    g = torch.Generator().manual_seed(seed)
    pooled = torch.randn(n, 2, 2, 8, generator=g)
    moments = torch.randn(n, 2, 2, 8, generator=g)
    gap = moments[:, :, 0, 2] - moments[:, :, 1, 2]  # N×P
    targets = torch.stack([gap > 1, gap < -1], dim=-1).float()
    return Descriptors(pooled, moments, targets)


def test_the_fit_learns_a_decision_the_descriptors_hold() -> None:
    torch.manual_seed(0)
    block = PartSideFPP(8, (4, 5), 6, geometry=True, outline=True)
    train, held_out = _separable(2000, 1), _separable(500, 2)

    def accuracy() -> float:
        with torch.no_grad():
            marked = block.judge(held_out.pooled, held_out.moments).exp() > 0.5
        return float((marked == (held_out.targets > 0.5)).all(-1).float().mean())

    untrained = accuracy()
    report = fit_decision(block, train, epochs=30, seed=0)
    assert report["bce_after"] < 0.5 * report["bce_before"]
    learnt = accuracy()
    assert learnt > 0.85 > untrained + 0.2
    # Without a step (lr 0) nothing is learnt: the fit, not the bookkeeping, does it.
    frozen = PartSideFPP(8, (4, 5), 6, geometry=True, outline=True)
    still = fit_decision(frozen, train, epochs=2, lr=0.0, weight_decay=0.0)
    assert still["bce_after"] == pytest.approx(still["bce_before"])


def test_the_operating_point_is_the_items_f1_best_bias() -> None:
    torch.manual_seed(0)
    block = PartSideFPP(8, (4, 5), 6, geometry=True, outline=True)
    data = _separable(400, 3)
    fit_decision(block, data, epochs=10, seed=0)  # decision logits spread over several units
    with torch.no_grad():
        logits = block.decision_logits(block.judge(data.pooled, data.moments))
    # targets the decision gets exactly right at one bias per part, about a third of halves FPP
    quantile = logits.flatten(2).transpose(1, 2).reshape(-1, 2).quantile(2 / 3, dim=0)
    shift = (-quantile * 4).round() / 4  # on the candidates' 0.25 grid
    targets = (logits + shift[None, :, None] > 0).float()
    assert 0.2 < targets.mean() < 0.5 and (shift != 0).all()  # 0 is where the bias starts
    items = Descriptors(data.pooled, data.moments, targets)
    assert choose_operating_point(block, items) == shift.tolist()
    torch.testing.assert_close(block.decision_bias, shift)


def test_descriptors_are_what_the_network_reads_and_stop_at_the_limit() -> None:
    torch.manual_seed(0)
    model = create_model("palsynet").eval()
    masks = torch.full((3, 32, 32), int(Label.SKIN))
    masks[:, 8:10, 4:28] = Label.EYE
    masks[:, 22:24, 4:28] = Label.MOUTH
    masks[0, 22:24, 4:16] = Label.FPP
    batch = {"image": torch.randn(3, 3, 32, 32), "mask": masks}
    data = collect_descriptors(model, [batch, batch], torch.device("cpu"), limit=5)
    assert len(data) == 5
    assert data.pooled.shape[:3] == (5, 2, 2) and data.moments.shape[:3] == (5, 2, 2)
    with torch.no_grad():
        out = model(batch["image"])
        torch.testing.assert_close(model.part_side.judge(data.pooled[:3], data.moments[:3]),
                                   out["fpp_side_log_q"])  # fmt: skip
    expected = fpp_decision_targets(masks, (4, 5), 6)
    torch.testing.assert_close(data.targets[:3], expected)
    torch.testing.assert_close(data.targets[3:], expected[:2])
    assert data.targets[0, 1].tolist() == [1.0, 0.0]  # the left mouth half


def _nan_equal(metrics: dict[str, float]) -> dict[str, object]:
    return {k: "nan" if v != v else v for k, v in metrics.items()}  # NaN != NaN


def _part_side(state: dict[str, torch.Tensor], inside: bool) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("part_side.") == inside}


def test_training_ends_with_the_refit_recorded_in_best_and_not_repeated_on_resume(
    split: Path, tmp_path: Path
) -> None:
    plain = train_model(split / "train", split / "val", tmp_path / "plain", TrainConfig(**TINY))
    config = TrainConfig(**TINY, decision_refit=1000)
    result = train_model(split / "train", split / "val", tmp_path / "refit", config)
    best = read_checkpoint(result.best_checkpoint)
    report = best["metadata"]["decision_refit"]
    assert result.decision_refit == report
    train_items = sum(1 for _ in (split / "train" / "images").rglob("*.jpg"))
    assert report["items"] == train_items  # all that one epoch trained on, not 1000
    assert report["bce_after"] < report["bce_before"]
    assert set(report["val_after"]) >= {"mean_f1", "f1_fpp"}
    bias = best["model_state"]["part_side.decision_bias"].tolist()
    assert best["metadata"]["val_metrics"]["fpp_decision_bias_eye"] == bias[0]  # scored at it
    if report["kept"]:  # the refit's items chose the point best.pt holds (the default)
        assert report["operating_point"]["chosen_on"] == "items"
        assert report["operating_point"]["bias"] == bias
    # The network is untouched; only the decision block can differ from the run without it.
    before = read_checkpoint(plain.best_checkpoint)["model_state"]
    for key, value in _part_side(before, inside=False).items():
        if key not in ("class_offsets",):
            torch.testing.assert_close(best["model_state"][key], value, msg=key)
    if report["kept"]:
        assert any(
            not torch.equal(best["model_state"][k], v)
            for k, v in _part_side(before, inside=True).items()
            if k != "part_side.decision_bias"
        )
        assert result.best_val_metrics["mean_f1"] == pytest.approx(
            best["metadata"]["val_metrics"]["mean_f1"]
        )
    again = train_model(split / "train", split / "val", tmp_path / "refit", config, resume=True)
    assert read_checkpoint(again.best_checkpoint)["metadata"]["decision_refit"] == report
    assert again.decision_refit == report
    assert _nan_equal(again.best_val_metrics) == _nan_equal(result.best_val_metrics)


def test_a_refit_that_validation_rejects_leaves_the_trained_decision(
    split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = train_model(split / "train", split / "val", tmp_path / "plain", TrainConfig(**TINY))
    real = train_module.validate
    calls = []

    def worse_after_the_refit(*args, **kwargs):  # the second validation is the refit's
        metrics, threshold = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            metrics = {**metrics, "mean_f1": -1.0}
        return metrics, threshold

    monkeypatch.setattr(train_module, "validate", worse_after_the_refit)
    config = TrainConfig(**TINY, decision_refit=4)
    result = train_model(split / "train", split / "val", tmp_path / "refit", config)
    best = read_checkpoint(result.best_checkpoint)
    assert len(calls) == 2 and best["metadata"]["decision_refit"]["kept"] is False
    assert best["metadata"]["decision_refit"]["items"] == 4
    expected = read_checkpoint(plain.best_checkpoint)
    for key, value in expected["model_state"].items():
        torch.testing.assert_close(best["model_state"][key], value, msg=key)
    assert _nan_equal(best["metadata"]["val_metrics"]) == _nan_equal(
        expected["metadata"]["val_metrics"]
    )
    assert _nan_equal(result.best_val_metrics) == _nan_equal(expected["metadata"]["val_metrics"])


def test_models_without_the_decision_and_runs_without_refit_skip_it(
    split: Path, tmp_path: Path
) -> None:
    result = train_model(
        split / "train",
        split / "val",
        tmp_path / "unet",
        TrainConfig(**{**TINY, "model": "unet_r18"}, decision_refit=10),
    )
    assert "decision_refit" not in read_checkpoint(result.best_checkpoint)["metadata"]
    with pytest.raises(ValueError, match="decision_refit"):
        TrainConfig(decision_refit=-1)
