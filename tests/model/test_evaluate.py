"""Evaluation: every checkpoint on the same test pixels, its own threshold, report and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from palsyseg.align import FaceFrame, frame_transform, logits_to_photo, warp_image
from palsyseg.data.face_points import points_for_row
from palsyseg.data.manifest import read_manifest
from palsyseg.data.torch_dataset import load_sample, model_input, normalize_image
from palsyseg.errors import ConfigError
from palsyseg.evaluate import EvaluateConfig, colorize, evaluate_models
from palsyseg.labels import LABEL_NAMES, PALETTE, Label
from palsyseg.train import CheckpointError, TrainConfig, load_checkpoint_model, train_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny split and two checkpoints trained at *different* input sizes."""
    from palsyseg.data.synth import SynthConfig, generate_dataset
    from palsyseg.split import SplitConfig, split_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval")
    generate_dataset(root / "data", SynthConfig(patients=6, seed=2, size=64, images_per_patient=2))
    split_dataset(root / "data", root / "split", SplitConfig(seed=2))
    common = {"epochs": 1, "batch_size": 3, "device": "cpu"}
    train_model(
        root / "split/train",
        root / "split/val",
        root / "palsynet",
        TrainConfig(model="palsynet", image_size=32, **common),
    )
    train_model(
        root / "split/train",
        root / "split/val",
        root / "unet",
        TrainConfig(model="unet_r18", image_size=48, **common),
    )
    torch.set_num_threads(threads)
    return {
        "test": root / "split/test",
        "palsynet": root / "palsynet/best.pt",
        "unet_r18": root / "unet/best.pt",
    }


def test_report_scores_every_model_on_the_same_pixels(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    checkpoints = {"palsynet": runs["palsynet"], "unet_r18": runs["unet_r18"]}
    report = evaluate_models(runs["test"], checkpoints, candidate="palsynet")
    assert report.candidate == "palsynet" and list(report.models) == ["palsynet", "unet_r18"]

    rows = read_manifest(runs["test"])
    pixels = sum(load_sample(runs["test"], row).mask.size for row in rows)
    for name, evaluation in report.models.items():
        assert evaluation.confusion.shape == (7, 7)
        assert evaluation.confusion.sum() == pixels  # stored resolution, whatever the input size
        metrics = evaluation.metrics
        for key in (
            "mean_f1",
            "miou",
            "pixel_accuracy",
            "f1_fpp",
            "palsy_sensitivity",
            "palsy_specificity",
            "palsy_auroc",
            "side_accuracy",
            "patient_palsy_sensitivity",
            "patient_palsy_auroc",
            "patient_side_accuracy",
            "latency_ms",
            "params",
        ):
            assert key in metrics, key
        assert metrics["latency_ms"] > 0
        assert metrics["patient_num_patients"] == len({row.patient_id for row in rows})
        _, meta = load_checkpoint_model(checkpoints[name])
        assert metrics["palsy_threshold"] == meta["palsy_threshold"]  # its own validation threshold

    # an independent recomputation of one model's confusion matrix: the face frame from the
    # generator's landmarks, the model in it, its scores mapped back onto the photo's pixels
    model, meta = load_checkpoint_model(runs["unet_r18"])
    frame = FaceFrame.from_dict(meta["frame"])
    assert frame.size == meta["image_size"]
    expected = np.zeros((7, 7), np.int64)
    with torch.inference_mode():
        for row in rows:
            sample = load_sample(runs["test"], row)
            points = points_for_row(runs["test"], row)
            matrix = frame_transform(points, frame)
            crop = warp_image(sample.image, matrix, frame.size, interpolation="linear")
            logits = model(normalize_image(crop).unsqueeze(0))["logits"]
            logits = logits_to_photo(logits, matrix, sample.mask.shape)
            pred = logits.argmax(1)[0].numpy()
            np.add.at(expected, (sample.mask.astype(int), pred), 1)
    np.testing.assert_array_equal(report.models["unet_r18"].confusion, expected)
    accuracy = np.trace(expected) / expected.sum()
    assert report.models["unet_r18"].metrics["pixel_accuracy"] == pytest.approx(accuracy)


def test_palsynet_is_judged_by_its_fpp_decision_and_a_baseline_by_its_fpp_area(
    runs: dict[str, Path],
) -> None:
    checkpoints = {"palsynet": runs["palsynet"], "unet_r18": runs["unet_r18"]}
    report = evaluate_models(runs["test"], checkpoints, candidate="palsynet")
    assert report.models["palsynet"].palsy_score == "decision"
    assert report.models["unet_r18"].palsy_score == "fpp_fraction"
    assert report.to_dict()["models"]["palsynet"]["palsy_score"] == "decision"
    model, meta = load_checkpoint_model(runs["palsynet"])
    assert meta["palsy_score"] == "decision"
    frame = FaceFrame.from_dict(meta["frame"])
    rows = {row.image: row for row in read_manifest(runs["test"])}
    for record in report.images:
        assert record.palsy_score["unet_r18"] == record.fpp_fraction["unet_r18"]
        # independently: the largest q of the decision, on the half the side names
        row = rows[record.image]
        sample = load_sample(runs["test"], row)
        matrix = frame_transform(points_for_row(runs["test"], row), frame)
        crop = warp_image(sample.image, matrix, frame.size, interpolation="linear")
        with torch.inference_mode():
            q = model(normalize_image(crop).unsqueeze(0))["fpp_decision_log_q"][0].exp()
        assert record.palsy_score["palsynet"] == pytest.approx(float(q.max()), abs=1e-6)
        half = int(q.max(dim=0).values.argmax())  # 0: the image's left = the patient's right
        assert record.pred_side["palsynet"] == ("right" if half == 0 else "left")
    scores = [r.palsy_score["palsynet"] for r in report.images]
    threshold = report.models["palsynet"].metrics["palsy_threshold"]
    truth = [r.true_palsy for r in report.images]
    sensitivity = sum(s > threshold and t for s, t in zip(scores, truth, strict=True))
    if any(truth):
        assert report.models["palsynet"].metrics["palsy_sensitivity"] == pytest.approx(
            sensitivity / sum(truth)
        )


def test_a_checkpoint_from_before_the_frame_predicts_on_the_whole_photo(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    checkpoint = torch.load(runs["unet_r18"], map_location="cpu", weights_only=True)
    del checkpoint["metadata"]["frame"]
    legacy = tmp_path / "legacy.pt"
    torch.save(checkpoint, legacy)
    report = evaluate_models(runs["test"], {"old": legacy}, candidate="old")

    model, meta = load_checkpoint_model(legacy)
    assert "frame" not in meta
    expected = np.zeros((7, 7), np.int64)
    with torch.inference_mode():
        for row in read_manifest(runs["test"]):
            sample = load_sample(runs["test"], row)
            logits = model(model_input(sample.image, meta["image_size"]))["logits"]
            logits = F.interpolate(
                logits, size=sample.mask.shape, mode="bilinear", align_corners=False
            )
            np.add.at(expected, (sample.mask.astype(int), logits.argmax(1)[0].numpy()), 1)
    np.testing.assert_array_equal(report.models["old"].confusion, expected)


def test_save_writes_report_json_and_plots(runs: dict[str, Path], tmp_path: Path) -> None:
    checkpoints = {"palsynet": runs["palsynet"], "champion": runs["unet_r18"]}
    report = evaluate_models(
        runs["test"],
        checkpoints,
        candidate="palsynet",
        out_dir=tmp_path / "out",
        config=EvaluateConfig(examples=2, latency_images=2),
    )
    paths = report.save(tmp_path / "again")  # saving is repeatable, also into a fresh directory
    for out in (tmp_path / "out", tmp_path / "again"):
        files = sorted(p.name for p in out.iterdir())
        assert files == [
            "confusion_champion.png",
            "confusion_palsynet.png",
            "f1_per_class.png",
            "predictions.png",
            "report.html",
            "report.json",
        ]
    data = json.loads(paths["report"].read_text())
    assert data["candidate"] == "palsynet" and data["label_names"] == list(LABEL_NAMES)
    assert data["models"]["champion"]["checkpoint"] == str(runs["unet_r18"])
    assert np.array_equal(
        np.array(data["models"]["palsynet"]["confusion"]), report.models["palsynet"].confusion
    )
    for name, value in data["models"]["palsynet"]["metrics"].items():
        original = report.models["palsynet"].metrics[name]
        assert value == original or (value is None and math.isnan(original))

    grid = cv2.imread(str(paths["predictions"]))
    assert grid is not None and grid.shape[1] > grid.shape[0] > 200  # 2 rows × 4 columns
    for key in ("confusion_palsynet", "confusion_champion", "f1_per_class"):
        picture = cv2.imread(str(paths[key]))
        assert picture is not None and picture.std() > 10  # a drawn plot, not a blank canvas
    assert len(report.examples) == 2


def test_colorize_uses_the_palette() -> None:
    mask = np.array([[0, 6], [4, 5]], np.uint8)
    rgb = colorize(mask)
    assert tuple(rgb[0, 1]) == PALETTE[Label.FPP] and tuple(rgb[1, 0]) == PALETTE[Label.EYE]


def test_unknown_candidate_and_bad_checkpoint_fail_before_any_work(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="candidate 'palsy' is not among the checkpoints"):
        evaluate_models(runs["test"], {"palsynet": runs["palsynet"]}, candidate="palsy")
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError, match=r"broken\.pt"):
        evaluate_models(
            runs["test"],
            {"palsynet": runs["palsynet"], "champion": tmp_path / "broken.pt"},
            candidate="palsynet",
            out_dir=tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


def test_cli_evaluate_prints_the_comparison_table(
    runs: dict[str, Path], tmp_path: Path, cli
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("evaluate:\n  candidate: palsynet\n  latency_images: 2\n  examples: 1\n")
    result = cli(
        "evaluate",
        "--data",
        runs["test"],
        "--checkpoint",
        f"palsynet={runs['palsynet']}",
        "--checkpoint",
        f"unet_r18={runs['unet_r18']}",
        "--out",
        tmp_path / "eval",
        "--params",
        params,
    )
    assert result.code == 0, result.stderr
    for text in ("palsynet*", "unet_r18", "mIoU", "FPP F1", "CPU forward pass"):
        assert text in result.stdout
    unet_row = next(line for line in result.stdout.splitlines() if "unet_r18" in line)
    miou = json.loads((tmp_path / "eval" / "report.json").read_text())["models"]["unet_r18"][
        "metrics"
    ]["miou"]
    assert f"{miou:.3f}" in unet_row
    assert (tmp_path / "eval" / "report.json").is_file()
    assert (tmp_path / "eval" / "report.html").is_file()  # the reviewer's page
    assert f"report: {tmp_path / 'eval' / 'report.html'}" in " ".join(result.stdout.split())

    bad = cli(
        "evaluate",
        "--data",
        runs["test"],
        "--checkpoint",
        "no-equals-sign",
        "--out",
        tmp_path / "x",
    )
    assert bad.code == 1 and "expected NAME=PATH" in bad.stderr


def test_the_overlay_grid_names_every_label_colour_in_a_legend(tmp_path: Path) -> None:
    from matplotlib.image import imread

    from palsyseg.evaluate import EvaluationReport, Example, ModelEvaluation, _examples_figure

    # Truth and predictions are all background on a grey photo: any other palette colour in
    # the saved picture can only be the legend's.
    background = np.zeros((16, 16), dtype=np.uint8)
    report = EvaluationReport(
        dataset="test",
        candidate="palsynet",
        models={
            name: ModelEvaluation(name, {}, np.eye(7, dtype=np.int64))
            for name in ("palsynet", "unet_r18")
        },
        examples=[
            Example(
                "images/p1.png",
                np.full((16, 16, 3), 128, dtype=np.uint8),
                background,
                {"palsynet": background, "unet_r18": background},
            )
        ],
    )
    (legend,) = _examples_figure(report).legends
    assert [text.get_text() for text in legend.get_texts()] == list(LABEL_NAMES)
    colours = [tuple(round(c * 255) for c in p.get_facecolor()[:3]) for p in legend.get_patches()]
    assert colours == [PALETTE[label] for label in Label]

    picture = imread(report.save(tmp_path)["predictions"])[..., :3]
    drawn = {tuple(rgb) for rgb in (picture * 255).round().astype(int).reshape(-1, 3).tolist()}
    for label in Label:
        assert PALETTE[label] in drawn, LABEL_NAMES[label]
