"""Evaluate the candidate, the baselines and the registry's champion on one test split.

Every model sees the same images (ARCHITECTURE.md, step 5). For each image each model predicts in
the face frame it was trained in (:mod:`palsyseg.align`, stored in the checkpoint: the crop of
side ``image_size`` fixed by the photo's five points) and its logits are mapped back onto the
photo (pixels outside the crop are background), so models trained at different sizes are scored
on the dataset's own pixels against the stored mask. A checkpoint from before the frame predicts
on the whole photo resized to its ``image_size``, its logits resized back. The palsy findings are
read in the frame, where the face's midline is the crop's centre column. The truth per image is
what the photo shows (its mask holds FPP, and the patient's side if so); per patient, whether
any of their photos shows it. Per model the report holds:

- pixel level: one dataset-level confusion matrix and everything
  :func:`palsyseg.metrics.segmentation_metrics` derives from it (eq. 9–11: ``mean_f1``, ``miou``,
  ``pixel_accuracy``, ``f1_fpp``, per-class precision/recall/F1/IoU);
- image level: :func:`palsyseg.metrics.image_level_metrics` (palsy sensitivity, specificity,
  AUROC, side accuracy) at the palsy threshold the checkpoint chose on *its* validation split;
- patient level: :func:`palsyseg.metrics.patient_level_metrics`, the same findings over each
  patient's whole exam (``patient_*`` keys), at the same threshold;
- ``latency_ms``: mean CPU wall time of one forward pass on one image (batch 1, after a warm-up
  pass, at the checkpoint's ``image_size``, with the process's torch thread count);
- ``params``: the parameter count.

Per image it keeps an :class:`ImageRecord` (the manifest's subgroup columns, the truth, each
model's FPP fraction, side and pixel confusion), from which :mod:`palsyseg.report.subgroups`
derives the subgroup table, and the candidate's ``worst`` images (lowest per-image mean F1)
with their pictures.

:meth:`EvaluationReport.save` writes ``report.json`` (atomic), PNG plots (matplotlib, Agg): a
row-normalised confusion matrix per model, a per-class F1 bar chart comparing the models, an
overlay grid of a few test images (image | truth | each model's prediction) with a legend
naming each label's colour — and ``report.html``, the one-page reviewer's report with its model
card (:mod:`palsyseg.report.html`).
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from palsyseg.atomic import atomic_path, atomic_write_text, json_safe
from palsyseg.errors import ConfigError
from palsyseg.labels import LABEL_NAMES, NUM_CLASSES, PALETTE, Label

log = logging.getLogger(__name__)

REPORT_NAME = "report.json"
REPORT_HTML = "report.html"

# The columns of the comparison table (CLI) in display order: key, header.
SUMMARY_METRICS: tuple[tuple[str, str], ...] = (
    ("mean_f1", "mean F1"),
    ("miou", "mIoU"),
    ("pixel_accuracy", "pix. acc."),
    ("f1_fpp", "FPP F1"),
    ("palsy_sensitivity", "sens."),
    ("palsy_specificity", "spec."),
    ("latency_ms", "ms"),
)


@dataclass
class EvaluateConfig:
    """The ``evaluate`` section of ``params.yaml``: which models the pipeline compares, and how."""

    candidate: str = "palsynet"
    baselines: list[str] = field(default_factory=lambda: ["deeplabv3plus_r34", "unet_r18"])
    latency_images: int = 16
    """Images timed for ``latency_ms`` (after one warm-up pass)."""
    examples: int = 4
    """Test images in the overlay grid."""
    worst: int = 8
    """The candidate's worst test images shown in the HTML report."""

    def __post_init__(self) -> None:
        if self.latency_images < 1 or self.examples < 0 or self.worst < 0:
            raise ValueError("latency_images must be at least 1, examples and worst not negative")


@dataclass
class ModelEvaluation:
    """One model's scores on the test split; ``confusion`` rows are the truth."""

    name: str
    metrics: dict[str, float]
    confusion: np.ndarray
    palsy_score: str = "fpp_fraction"
    """What its palsy threshold is on (:data:`palsyseg.metrics.PALSY_SCORES`)."""


@dataclass
class Example:
    """One test image with its truth and every model's prediction, for the overlay grid."""

    image: str
    rgb: np.ndarray
    truth: np.ndarray
    predictions: dict[str, np.ndarray]


@dataclass
class ImageRecord:
    """One test image: its subgroup attributes, its truth and every model's findings on it.

    ``attributes`` holds the manifest's subgroup columns this row fills (``diagnosis``,
    ``pose``, ``grade``, ``beard``, ``glasses``, ``skin_tone``; as text).
    ``confusion[name]`` is the model's pixel confusion matrix on this image alone (the
    dataset's matrix is their sum).
    """

    image: str
    patient_id: str
    attributes: dict[str, str]
    true_palsy: bool
    true_side: str
    fpp_fraction: dict[str, float] = field(default_factory=dict)
    palsy_score: dict[str, float] = field(default_factory=dict)
    """What the model's palsy threshold applies to: the FPP fraction, or the part-side decision
    (:data:`palsyseg.metrics.PALSY_SCORES`; the checkpoint's ``palsy_score``)."""
    pred_side: dict[str, str] = field(default_factory=dict)
    confusion: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def mean_f1(self, model: str) -> float:
        """The model's mean F1 (eq. 9) on this image; 1 when neither truth nor prediction holds
        a face class (nothing to get wrong)."""
        from palsyseg.metrics import segmentation_metrics

        value = segmentation_metrics(self.confusion[model])["mean_f1"]
        return value if math.isfinite(value) else 1.0


@dataclass
class EvaluationReport:
    """All models on one test split; ``candidate`` names the model under review.

    ``provenance`` says where the numbers come from, for the report's model card:
    ``test_version`` (the test split's content fingerprint, always), and where the caller knows
    them ``data_uri``, ``data_version`` (the whole dataset's fingerprint or DVC revision),
    ``code_version``, ``pipeline_run``, ``champion_version``. ``gates`` is the
    :class:`~palsyseg.tracking.gates.GateReport` when the pipeline decided them.
    """

    dataset: str
    candidate: str
    models: dict[str, ModelEvaluation]
    checkpoints: dict[str, str] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list, repr=False)
    images: list[ImageRecord] = field(default_factory=list, repr=False)
    worst: list[Example] = field(default_factory=list, repr=False)
    provenance: dict[str, str] = field(default_factory=dict)
    gates: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become ``null``); ``subgroups`` is the candidate's
        subgroup table (:func:`palsyseg.report.subgroups.subgroup_table`)."""
        from palsyseg.report.subgroups import subgroup_table

        return json_safe(
            {
                "dataset": self.dataset,
                "candidate": self.candidate,
                "provenance": dict(self.provenance),
                "label_names": list(LABEL_NAMES),
                "models": {
                    name: {
                        "checkpoint": self.checkpoints.get(name),
                        "metrics": dict(evaluation.metrics),
                        "palsy_score": evaluation.palsy_score,
                        "confusion": evaluation.confusion.astype(int).tolist(),
                    }
                    for name, evaluation in self.models.items()
                },
                "subgroups": [row.to_dict() for row in subgroup_table(self.images, self.candidate)],
            }
        )

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``report.json``, the PNG plots and ``report.html`` into ``out_dir``; return
        ``{name: path}``."""
        from palsyseg.report.html import write_report

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"report": out_dir / REPORT_NAME}
        atomic_write_text(paths["report"], json.dumps(self.to_dict(), indent=2) + "\n")
        for name, evaluation in self.models.items():
            key = f"confusion_{_file_safe(name)}"
            paths[key] = _plot_confusion(evaluation, out_dir / f"{key}.png")
        paths["f1_per_class"] = _plot_f1_bars(self, out_dir / "f1_per_class.png")
        if self.examples:
            paths["predictions"] = _plot_examples(self, out_dir / "predictions.png")
        paths["html"] = write_report(self, out_dir / REPORT_HTML)
        return paths


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def evaluate_models(
    test_dir: str | os.PathLike[str],
    checkpoints: Mapping[str, str | os.PathLike[str]],
    *,
    candidate: str,
    out_dir: str | os.PathLike[str] | None = None,
    config: EvaluateConfig | None = None,
    provenance: Mapping[str, str] | None = None,
) -> EvaluationReport:
    """Score every checkpoint on ``test_dir`` (a contract dataset); see the module docstring.

    ``checkpoints`` maps a display name (``palsynet``, ``unet_r18``, ``champion``) to a
    checkpoint written by :func:`palsyseg.train.train_model`. All checkpoints are loaded before
    any image is read, so a bad one fails fast (:class:`~palsyseg.train.CheckpointError`).
    ``provenance`` is recorded on the report (see :class:`EvaluationReport`); the test split's
    fingerprint is added. With ``out_dir`` the report, plots and HTML page are saved there.
    Runs on CPU.
    """
    import torch
    import torch.nn.functional as F

    from palsyseg.align import FaceFrame, logits_to_photo
    from palsyseg.checkpoint import palsy_score
    from palsyseg.data.manifest import read_manifest
    from palsyseg.data.torch_dataset import (
        fallback_points,
        load_sample,
        model_input,
        normalize_image,
        row_points,
        shows_palsy,
        to_frame,
        visible_side,
    )
    from palsyseg.metrics import (
        ConfusionMatrix,
        decision_findings,
        image_level_metrics,
        palsy_findings,
        patient_level_metrics,
    )
    from palsyseg.metrics import segmentation_metrics as seg_metrics
    from palsyseg.models.fuse import fold_batchnorm
    from palsyseg.progress import track
    from palsyseg.report.subgroups import row_attributes
    from palsyseg.storage import fingerprint
    from palsyseg.train import load_checkpoint_model

    config = config or EvaluateConfig()
    if not checkpoints:
        raise ConfigError("evaluate: no checkpoints given (NAME=PATH)")
    if candidate not in checkpoints:
        raise ConfigError(
            f"evaluate: candidate {candidate!r} is not among the checkpoints ({', '.join(checkpoints)})"
        )
    test_dir = Path(test_dir)
    rows = read_manifest(test_dir)
    loaded = {name: load_checkpoint_model(path, "cpu") for name, path in checkpoints.items()}
    params = {
        name: sum(p.numel() for p in model.parameters()) for name, (model, _) in loaded.items()
    }
    for model, _ in loaded.values():  # inference only, as predict runs them (models/fuse.py)
        fold_batchnorm(model)
    frames = {
        name: FaceFrame.from_dict(meta["frame"]) if meta.get("frame") else None
        for name, (_, meta) in loaded.items()
    }
    points = row_points(test_dir, rows) if any(frames.values()) else []
    score_kinds = {name: palsy_score(meta) for name, (_, meta) in loaded.items()}

    confusion = {name: ConfusionMatrix(NUM_CLASSES) for name in loaded}
    # what each model's threshold is on: FPP fractions, or the decision's q (score_kinds)
    palsy_scores: dict[str, list[float]] = {name: [] for name in loaded}
    pred_sides: dict[str, list[str]] = {name: [] for name in loaded}
    latencies: dict[str, list[float]] = {name: [] for name in loaded}
    true_palsy: list[bool] = []
    true_sides: list[str] = []
    patient_ids: list[str] = []
    example_rows = set(
        np.linspace(0, len(rows) - 1, min(config.examples, len(rows))).round().astype(int).tolist()
        if config.examples
        else []
    )
    examples: list[Example] = []
    images: list[ImageRecord] = []
    # the candidate's config.worst lowest-scoring images so far, keyed (-mean F1, -index): the
    # heap's top is the best of them, the one a worse image replaces (ties keep the earlier)
    worst: list[tuple[float, int, Example]] = []

    with torch.inference_mode():
        for index, row in enumerate(track(rows, f"evaluating {len(loaded)} model(s)")):
            sample = load_sample(test_dir, row)
            height, width = sample.mask.shape
            true_palsy.append(shows_palsy(sample.mask))
            true_sides.append(visible_side(sample.mask, row.affected_side))
            patient_ids.append(row.patient_id)
            record = ImageRecord(
                row.image, row.patient_id, row_attributes(row), true_palsy[-1], true_sides[-1]
            )
            predictions: dict[str, np.ndarray] = {}
            for name, (model, meta) in loaded.items():
                frame = frames[name]
                if frame is not None:
                    face = points[index] or fallback_points(height, width)
                    crop, _, _, matrix = to_frame(sample, face, frame)
                    x = normalize_image(crop).unsqueeze(0)
                else:
                    x = model_input(sample.image, int(meta["image_size"]))
                if index == 0:
                    model(x)  # warm-up: allocator and kernel selection are not latency
                started = time.perf_counter()
                out = model(x)
                elapsed = time.perf_counter() - started
                logits = out["logits"]
                if index < config.latency_images:
                    latencies[name].append(elapsed)
                if frame is not None:
                    # Findings in the frame (the midline is known there); pixels scored on
                    # the photo's own grid, after mapping the scores back.
                    framed = logits.argmax(dim=1)[0].numpy()
                    fraction, side = palsy_findings(framed, midline=(frame.size - 1) / 2)
                    logits = logits_to_photo(logits, matrix, (height, width))
                else:
                    logits = F.interpolate(
                        logits, size=(height, width), mode="bilinear", align_corners=False
                    )
                pred = logits.argmax(dim=1)[0].numpy().astype(np.uint8)
                on_image = ConfusionMatrix(NUM_CLASSES)
                on_image.update(pred, sample.mask)
                confusion[name].merge(on_image)
                if frame is None:
                    fraction, side = palsy_findings(pred)
                score = fraction
                if score_kinds[name] == "decision":  # the threshold is on the part-side decision
                    score, side = decision_findings(out["fpp_decision_log_q"][0])
                palsy_scores[name].append(score)
                pred_sides[name].append(side)
                predictions[name] = pred
                record.fpp_fraction[name] = fraction
                record.palsy_score[name] = score
                record.pred_side[name] = side
                record.confusion[name] = on_image.matrix
            images.append(record)
            if index in example_rows:
                examples.append(Example(row.image, sample.image, sample.mask, predictions))
            if config.worst:
                shown = {candidate: predictions[candidate]}
                entry = (
                    -record.mean_f1(candidate),
                    -index,
                    Example(row.image, sample.image, sample.mask, shown),
                )
                if len(worst) < config.worst:
                    heapq.heappush(worst, entry)
                else:
                    heapq.heappushpop(worst, entry)

    models: dict[str, ModelEvaluation] = {}
    for name, (_, meta) in loaded.items():
        threshold = float(meta.get("palsy_threshold", 0.0))
        metrics = seg_metrics(confusion[name].matrix)
        metrics.update(
            image_level_metrics(
                palsy_scores[name], true_palsy, pred_sides[name], true_sides, threshold
            )
        )
        metrics.update(
            patient_level_metrics(
                patient_ids,
                palsy_scores[name],
                true_palsy,
                pred_sides[name],
                true_sides,
                threshold,
            )
        )
        metrics["palsy_threshold"] = threshold
        metrics["latency_ms"] = 1000.0 * float(np.mean(latencies[name]))
        metrics["params"] = float(params[name])  # the trained network's, before folding
        models[name] = ModelEvaluation(
            name, metrics, confusion[name].matrix.copy(), palsy_score=score_kinds[name]
        )
        log.info(
            "%s on %s: mean F1 %.4f, mIoU %.4f, FPP F1 %.4f, %.1f ms/image",
            name,
            test_dir,
            metrics["mean_f1"],
            metrics["miou"],
            metrics["f1_fpp"],
            metrics["latency_ms"],
        )
    report = EvaluationReport(
        dataset=str(test_dir),
        candidate=candidate,
        models=models,
        checkpoints={name: str(path) for name, path in checkpoints.items()},
        examples=examples,
        images=images,
        worst=[example for *_, example in sorted(worst, reverse=True)],
        provenance={**dict(provenance or {}), "test_version": fingerprint(test_dir)},
    )
    if out_dir is not None:
        report.save(out_dir)
    return report


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib's object API on an Agg canvas: no pyplot global state, no display)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def _plot_confusion(evaluation: ModelEvaluation, path: Path) -> Path:
    return _save_figure(confusion_figure(evaluation), path)


def confusion_figure(evaluation: ModelEvaluation) -> Any:
    """The model's pixel confusion matrix, rows normalised to sum to 1, numbers in the cells."""
    matrix = evaluation.confusion.astype(np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    figure = _figure(6.0, 5.2)
    axes = figure.add_subplot()
    image = axes.imshow(normalised, vmin=0.0, vmax=1.0, cmap="Blues")
    ticks = range(len(LABEL_NAMES))
    axes.set_xticks(ticks, LABEL_NAMES, rotation=45, ha="right")
    axes.set_yticks(ticks, LABEL_NAMES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true (rows sum to 1)")
    axes.set_title(f"{evaluation.name}: confusion matrix")
    for (row, col), value in np.ndenumerate(normalised):
        if totals[row, 0] > 0:
            colour = "white" if value > 0.6 else "black"
            axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axes, shrink=0.8)
    return figure


def _plot_f1_bars(report: EvaluationReport, path: Path) -> Path:
    return _save_figure(f1_bars_figure(report), path)


def f1_bars_figure(report: EvaluationReport) -> Any:
    """Per-class F1 (eq. 9) of every model side by side, one group of bars per face class."""
    names = list(report.models)
    classes = list(LABEL_NAMES[1:])  # the paper's tables compare the face classes
    width = 0.8 / max(len(names), 1)
    figure = _figure(8.0, 4.0)
    axes = figure.add_subplot()
    positions = np.arange(len(classes))
    for i, name in enumerate(names):
        values = [report.models[name].metrics.get(f"f1_{c}", math.nan) for c in classes]
        values = [0.0 if not math.isfinite(v) else v for v in values]
        label = f"{name} (candidate)" if name == report.candidate else name
        axes.bar(positions + (i - (len(names) - 1) / 2) * width, values, width, label=label)
    axes.set_xticks(positions, classes)
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel("F1 (eq. 9)")
    axes.set_title("per-class F1 on the test split")
    axes.legend(fontsize=8)
    return figure


def colorize(mask: np.ndarray) -> np.ndarray:
    """A label map as an RGB image in :data:`palsyseg.labels.PALETTE` colours."""
    lut = np.array([PALETTE[Label(v)] for v in range(NUM_CLASSES)], dtype=np.uint8)
    return lut[np.clip(mask, 0, NUM_CLASSES - 1)]


def legend_handles() -> list[Any]:
    """One colour patch per label, named as :data:`palsyseg.labels.LABEL_NAMES` and coloured as
    :data:`palsyseg.labels.PALETTE` (what :func:`colorize` paints), for overlay legends."""
    from matplotlib.patches import Patch

    return [
        Patch(
            facecolor=tuple(channel / 255.0 for channel in PALETTE[label]),
            edgecolor="0.5",
            label=LABEL_NAMES[label],
        )
        for label in Label
    ]


def _examples_figure(report: EvaluationReport) -> Any:
    """The overlay grid (image | truth | each model's prediction) with a colour legend below."""
    names = list(report.models)
    columns = 2 + len(names)
    rows = len(report.examples)
    figure = _figure(2.0 * columns, 2.1 * rows + 0.5)
    for r, example in enumerate(report.examples):
        panels = [("image", example.rgb), ("truth", colorize(example.truth))]
        panels += [(name, colorize(example.predictions[name])) for name in names]
        for c, (title, picture) in enumerate(panels):
            axes = figure.add_subplot(rows, columns, r * columns + c + 1)
            axes.imshow(picture)
            axes.set_xticks([])
            axes.set_yticks([])
            if r == 0:
                axes.set_title(title, fontsize=9)
            if c == 0:
                axes.set_ylabel(Path(example.image).name, fontsize=7)
    figure.legend(
        handles=legend_handles(),
        loc="outside lower center",
        # one row when the grid is wide enough (4 columns: 8 inches), else two
        ncols=NUM_CLASSES if columns >= 4 else (NUM_CLASSES + 1) // 2,
        fontsize=8,
        frameon=False,
    )
    return figure


def _plot_examples(report: EvaluationReport, path: Path) -> Path:
    return _save_figure(_examples_figure(report), path)
