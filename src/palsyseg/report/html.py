"""The one-page evaluation report a reviewer reads: one standalone HTML file.

Everything is inside the file — CSS in a ``<style>`` element, pictures as base64 PNG data
URIs, no script, no link to anything outside — so it opens the same from MLflow's artifact
view, an e-mail attachment or a laptop without a network. In reading order:

1. the candidate against the baselines and the champion on the same test split (pixel,
   image and patient level, latency), and the gates when the pipeline decided them;
2. per-class F1 of every model, and the candidate's row-normalised pixel confusion matrix;
3. the candidate's subgroups (:mod:`palsyseg.report.subgroups`) with their gap to overall;
4. the candidate's worst test images (lowest per-image mean F1): photo | truth | prediction
   overlays under one colour legend;
5. the model card: intended use, what it is not, data and its version, metrics, limitations,
   the largest subgroup gaps.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections import Counter
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from palsyseg.atomic import atomic_write_text
from palsyseg.evaluate import (
    EvaluationReport,
    Example,
    ImageRecord,
    colorize,
    confusion_figure,
    f1_bars_figure,
)
from palsyseg.labels import LABEL_NAMES, PALETTE, Label
from palsyseg.report import DISCLAIMER
from palsyseg.report.subgroups import SubgroupStats, subgroup_table

# The comparison table: metric key, header, higher is better.
COMPARISON: tuple[tuple[str, str, bool], ...] = (
    ("mean_f1", "mean F1", True),
    ("miou", "mIoU", True),
    ("pixel_accuracy", "pixel acc.", True),
    ("f1_fpp", "FPP F1", True),
    ("palsy_accuracy", "palsy-visible acc.", True),
    ("side_accuracy", "side acc.", True),
    ("patient_palsy_auroc", "patient AUROC", True),
    ("patient_side_accuracy", "patient side acc.", True),
    ("latency_ms", "ms / image", False),
)

COLUMN_NAMES = {
    "diagnosis": "diagnosis",
    "pose": "pose",
    "grade": "House–Brackmann grade",
    "beard": "beard",
    "glasses": "glasses",
    "skin_tone": "skin tone (Fitzpatrick)",
}

GAP_FLAG = -0.10
"""A subgroup this far below overall (or further) is flagged in the table and the card."""

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1c1c1c; max-width: 1100px;
       margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.6em;
     border-bottom: 1px solid #ccc; }
.meta { color: #555; } .disclaimer { background: #fff4d6; border-left: 4px solid #e0a800;
        padding: .5em .8em; font-weight: 600; }
table { border-collapse: collapse; margin: .6em 0; } th, td { padding: 3px 8px;
        border-bottom: 1px solid #e3e3e3; text-align: right; } th { background: #f4f4f4; }
td.name, th.name { text-align: left; } tr.candidate td { font-weight: 600; }
td.best { background: #e3f4e3; } td.gap { background: #fbe1e1; color: #8b0000; }
td.pass { color: #176117; } td.fail { color: #8b0000; font-weight: 600; }
.plots img { max-width: 49%; vertical-align: top; }
.legend span { display: inline-block; margin-right: 1em; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #888;
          vertical-align: -2px; margin-right: .3em; }
figure { display: inline-block; margin: .4em .6em .8em 0; vertical-align: top; width: 500px; }
figure img { width: 100%; image-rendering: pixelated; }
figcaption { font-size: 12px; color: #333; }
"""


# --------------------------------------------------------------------------- pictures


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _encode_rgb(rgb: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The photo with every non-background label painted over it in its palette colour."""
    painted = rgb.astype(np.float32)
    colours = colorize(mask).astype(np.float32)
    face = mask != Label.BACKGROUND
    painted[face] = (1 - alpha) * painted[face] + alpha * colours[face]
    return painted.round().astype(np.uint8)


def overlay_strip(example: Example, model: str, max_height: int = 256) -> np.ndarray:
    """Photo | truth overlay | prediction overlay, side by side with a white gap; a photo taller
    than ``max_height`` is shrunk first (labels by nearest neighbour), so eight 1-megapixel
    photos keep the page at a few megabytes."""
    import cv2

    rgb = np.asarray(example.rgb, dtype=np.uint8)
    truth, pred = example.truth, example.predictions[model]
    height, width = truth.shape
    if height > max_height:
        size = (max(1, round(width * max_height / height)), max_height)
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        truth = cv2.resize(truth, size, interpolation=cv2.INTER_NEAREST)
        pred = cv2.resize(pred, size, interpolation=cv2.INTER_NEAREST)
    gap = np.full((rgb.shape[0], max(2, rgb.shape[1] // 32), 3), 255, dtype=np.uint8)
    panels = [rgb, gap, overlay(rgb, truth), gap, overlay(rgb, pred)]
    return np.concatenate(panels, axis=1)


# --------------------------------------------------------------------------- text helpers


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _percent(value: Any) -> str:
    number = _number(100 * value if isinstance(value, int | float) else value, 1)
    return number if number == "—" else f"{number} %"


def _signed(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:+.3f}"


def _role(report: EvaluationReport, name: str) -> str:
    if name == report.candidate:
        return "candidate"
    return "champion" if name == "champion" else "baseline"


def _label(report: EvaluationReport, name: str) -> str:
    version = report.provenance.get("champion_version")
    return f"champion v{version}" if name == "champion" and version else name


def _legend() -> str:
    items = "".join(
        f'<span><i class="swatch" style="background: rgb{PALETTE[label]}"></i>'
        f"{escape(LABEL_NAMES[label])}</span>"
        for label in Label
    )
    return f'<p class="legend" id="legend">Colours: {items}</p>'


# --------------------------------------------------------------------------- sections


def _comparison(report: EvaluationReport) -> str:
    names = list(report.models)
    best: dict[str, float] = {}
    for key, _, higher in COMPARISON:
        values = [report.models[n].metrics.get(key, math.nan) for n in names]
        finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
        if len(set(finite)) > 1:  # a tie everywhere marks nothing
            best[key] = max(finite) if higher else min(finite)
    head = "".join(f"<th>{escape(header)}</th>" for _, header, _ in COMPARISON)
    rows = []
    for name in names:
        metrics = report.models[name].metrics
        cells = []
        for key, _, _ in COMPARISON:
            value = metrics.get(key, math.nan)
            mark = ' class="best"' if key in best and value == best[key] else ""
            cells.append(f"<td{mark}>{_number(value, 1 if key == 'latency_ms' else 3)}</td>")
        role = _role(report, name)
        rows.append(
            f'<tr class="{role}" data-model="{escape(name)}"><td class="name">'
            f'{escape(_label(report, name))}</td><td class="name">{role}</td>'
            f"<td>{_number(metrics.get('params', math.nan) / 1e6, 2)}</td>{''.join(cells)}</tr>"
        )
    return (
        '<h2 id="comparison">Candidate vs baselines vs champion</h2>'
        '<table><tr><th class="name">model</th><th class="name">role</th><th>params (M)</th>'
        f"{head}</tr>{''.join(rows)}</table>"
        '<p class="meta">Pixel metrics (F1, IoU, accuracy; eq. 9–11) over all test pixels; '
        "palsy-visible accuracy: the photo shows palsy (its mask holds FPP) vs the model's FPP "
        "area above its own validation threshold; side accuracy over the photos that show "
        "palsy; patient columns over each patient's whole exam; ms: CPU forward pass, batch 1. "
        "Green: best in the column.</p>"
    )


def _gates(report: EvaluationReport) -> str:
    gates = report.gates
    if gates is None:
        return ""
    compared = f"champion v{gates.champion}" if gates.champion else "no champion"
    rows = "".join(
        f'<tr><td class="name">{escape(r.name)}</td>'
        f'<td class="{"pass" if r.passed else "fail"}">{"pass" if r.passed else "FAIL"}</td>'
        f'<td class="name">{escape(r.detail)}</td></tr>'
        for r in gates.results
    )
    verdict = "pass" if gates.passed else "FAIL"
    return (
        f'<h2 id="gates">Gates: {verdict} (compared with {escape(compared)})</h2>'
        f'<table><tr><th class="name">gate</th><th>verdict</th><th class="name">why</th></tr>'
        f"{rows}</table>"
    )


def _plots(report: EvaluationReport) -> str:
    bars = _png_data_uri(_figure_png(f1_bars_figure(report)))
    matrix = _png_data_uri(_figure_png(confusion_figure(report.models[report.candidate])))
    return (
        '<h2 id="per-class">Per-class F1 and the candidate\'s confusion matrix</h2>'
        f'<div class="plots"><img alt="per-class F1 of every model" src="{bars}">'
        f'<img alt="confusion matrix of {escape(report.candidate)}, rows normalised" '
        f'src="{matrix}"></div>'
    )


def _subgroups(table: list[SubgroupStats], report: EvaluationReport) -> str:
    if not table:
        return '<h2 id="subgroups">Subgroups</h2><p>No per-image records in this report.</p>'
    from palsyseg.report.subgroups import group_metrics

    f1_all, side_all = group_metrics(report.images, report.candidate)
    palsy_all = sum(r.true_side != "none" for r in report.images)
    patients = len({r.patient_id for r in report.images})

    def gap_cell(value: float) -> str:
        flagged = math.isfinite(value) and value <= GAP_FLAG
        return f"<td{' class=gap' if flagged else ''}>{_signed(value)}</td>"

    rows = [
        f'<tr class="overall"><td class="name">all</td><td class="name">all</td>'
        f"<td>{len(report.images)}</td><td>{patients}</td><td>{palsy_all}</td>"
        f"<td>{_number(f1_all)}</td><td></td><td>{_number(side_all)}</td><td></td></tr>"
    ]
    for row in table:
        rows.append(
            f'<tr data-column="{escape(row.column)}" data-value="{escape(row.value)}">'
            f'<td class="name">{escape(COLUMN_NAMES.get(row.column, row.column))}</td>'
            f'<td class="name">{escape(row.value)}</td><td>{row.images}</td>'
            f"<td>{row.patients}</td><td>{row.palsy_images}</td>"
            f"<td>{_number(row.f1_fpp)}</td>{gap_cell(row.f1_fpp_gap)}"
            f"<td>{_number(row.side_accuracy)}</td>{gap_cell(row.side_accuracy_gap)}</tr>"
        )
    return (
        f'<h2 id="subgroups">Subgroups ({escape(report.candidate)})</h2>'
        '<table><tr><th class="name">column</th><th class="name">value</th><th>images</th>'
        "<th>patients</th><th>palsy photos</th><th>FPP F1</th><th>gap</th>"
        "<th>side acc.</th><th>gap</th></tr>" + "".join(rows) + "</table>"
        '<p class="meta">FPP F1 over the subgroup\'s pixels; side accuracy over its photos that '
        f"show palsy (n = palsy photos); gap = subgroup minus all; red: {GAP_FLAG:+.2f} or "
        "worse. Small subgroups are noisy: read the gap with its n.</p>"
    )


def _finding(record: ImageRecord, model: str, threshold: float, decision: bool) -> str:
    """The image's finding; ``decision``: the threshold is on the part-side decision's q."""
    fraction = record.fpp_fraction[model]
    score = record.palsy_score.get(model, fraction)
    area = f"FPP {100 * fraction:.1f} % of the face"
    if decision:
        area = f"decision q {score:.2f}; {area}"
    if score > threshold:
        return f"palsy, {record.pred_side[model]} side ({area})"
    return f"no palsy ({area})"


def _worst(report: EvaluationReport) -> str:
    model = report.candidate
    records = {r.image: r for r in report.images}
    threshold = float(report.models[model].metrics.get("palsy_threshold", 0.0))
    decision = report.models[model].palsy_score == "decision"
    figures = []
    for rank, example in enumerate(report.worst, start=1):
        picture = _png_data_uri(_encode_rgb(overlay_strip(example, model)))
        caption = f"#{rank} {escape(example.image)}"
        record = records.get(example.image)
        if record is not None:
            attributes = ", ".join(f"{k} {v}" for k, v in record.attributes.items())
            truth = f"palsy, {record.true_side} side" if record.true_palsy else "no palsy"
            caption += (
                f"<br>patient {escape(record.patient_id)}; {escape(attributes)}"
                f"<br>mean F1 {record.mean_f1(model):.3f}; truth: {escape(truth)}; "
                f"predicted: {escape(_finding(record, model, threshold, decision))}"
            )
        figures.append(
            f'<figure class="worst"><img alt="photo, truth, prediction of '
            f'{escape(example.image)}" src="{picture}"><figcaption>{caption}</figcaption></figure>'
        )
    body = "".join(figures) or "<p>No test images.</p>"
    return (
        f'<h2 id="worst">The {len(report.worst)} worst test images ({escape(model)})</h2>'
        "<p>Ranked by the candidate's mean F1 on the photo (eq. 9 over the face classes in "
        "truth or prediction). Each: photo | truth | prediction, labels painted over the "
        f"photo.</p>{_legend()}{body}"
    )


def _presence_rule(report: EvaluationReport) -> str:
    """When the candidate calls palsy present, in words (its threshold's score)."""
    evaluation = report.models[report.candidate]
    threshold = evaluation.metrics.get("palsy_threshold")
    if evaluation.palsy_score == "decision":
        return (
            "palsy present when its per-part, per-side FPP decision is surer than "
            f"{_number(threshold, 2)} for some eye or mouth half (chosen on validation)"
        )
    return (
        f"palsy present when the FPP area exceeds {_percent(threshold)} of the face "
        "(chosen on validation)"
    )


def _model_card(report: EvaluationReport, table: list[SubgroupStats]) -> str:
    model = report.candidate
    metrics = report.models[model].metrics
    p = report.provenance
    records = report.images
    diagnoses = Counter(r.attributes.get("diagnosis", "?") for r in records)
    mix = ", ".join(f"{n} {escape(d)}" for d, n in sorted(diagnoses.items()))
    palsy = sum(r.true_palsy for r in records)
    checkpoint = report.checkpoints.get(model, "")
    data_lines = [
        f"<li>test split <code>{escape(report.dataset)}</code>, content fingerprint "
        f"<code>{escape(p.get('test_version', '—'))}</code>: {len(records)} photos of "
        f"{len({r.patient_id for r in records})} patients ({mix}); {palsy} photos show palsy"
        "</li>"
    ]
    if p.get("data_version") or p.get("data_uri", report.dataset) != report.dataset:
        trained = (
            " (the candidate trained on its train split; patients never cross splits)"
            if p.get("pipeline_run")
            else ""
        )
        data_lines.append(
            f"<li>dataset <code>{escape(p.get('data_uri', '—'))}</code>, version "
            f"<code>{escape(p.get('data_version', 'not recorded'))}</code>{trained}</li>"
        )
    if p.get("code_version"):
        data_lines.append(f"<li>code version <code>{escape(p['code_version'])}</code></li>")
    if p.get("pipeline_run"):
        data_lines.append(f"<li>pipeline run <code>{escape(p['pipeline_run'])}</code></li>")
    numbers = ", ".join(
        f"{header} {_number(metrics.get(key), 1 if key == 'latency_ms' else 3)}"
        for key, header, _ in COMPARISON
    )
    gaps = []
    for key, what in (("f1_fpp_gap", "FPP F1"), ("side_accuracy_gap", "side accuracy")):
        ranked = sorted(
            (r for r in table if math.isfinite(getattr(r, key))), key=lambda r: getattr(r, key)
        )
        gaps += [
            f"<li>{escape(COLUMN_NAMES.get(r.column, r.column))} {escape(r.value)}: {what} "
            f"{_signed(getattr(r, key))} against all ({r.images} photos, "
            f"{r.palsy_images} showing palsy)</li>"
            for r in ranked[:3]
            if getattr(r, key) <= GAP_FLAG
        ]
    gap_text = (
        f"<ul>{''.join(gaps)}</ul>"
        if gaps
        else f"<p>No subgroup falls {abs(GAP_FLAG):.2f} or more below the whole split.</p>"
    )
    return f"""<h2 id="model-card">Model card: {escape(model)}</h2>
<p class="disclaimer">{escape(DISCLAIMER)}</p>
<h3>Model</h3>
<p>{escape(model)}: face parsing into background, skin, hair, eyebrow, eye, mouth and FPP
(facial-paralysis possibility: the weak side's eye or mouth where the photo shows the weakness),
{_number(metrics.get("params", math.nan) / 1e6, 2)} M parameters; {_presence_rule(report)}.
Checkpoint <code>{escape(os.path.basename(checkpoint) or "—")}</code>.</p>
<h3>Intended use</h3>
<p>Research on facial-palsy segmentation, and a screening aid that marks, on a frontal photo of
a face in a clinical exam pose, the eye or mouth of the side that looks weak, for a clinician to
look at. It does not diagnose, does not tell stroke from Bell's palsy, and must not delay
emergency stroke care: a normal result does not rule out a stroke.</p>
<h3>Data</h3>
<ul>{"".join(data_lines)}</ul>
<h3>Metrics on this test split</h3>
<p>{numbers}.</p>
<h3>Limitations</h3>
<ul>
<li>The numbers hold for this test split only. On generated phantom faces (the default
dataset) they say nothing about real clinical photos.</li>
<li>FPP marks what a photo shows: House–Brackmann grade II–IV faces look symmetric at rest,
so one photo can miss a palsy the whole exam shows (see the patient columns).</li>
<li>Side accuracy counts only photos that show palsy, whatever the palsy threshold says.</li>
<li>Faces are framed from five landmarks; a photo without a detectable face is framed whole
and scored poorly. Profile views, occlusions and children are outside what was tested.</li>
<li>Latency is measured on this machine's CPU and is a comparison between models, not a
service level.</li>
</ul>
<h3>Subgroup gaps</h3>
{gap_text}
"""


# --------------------------------------------------------------------------- the page


def render_report(report: EvaluationReport) -> str:
    """The report as one standalone HTML document (see the module docstring)."""
    table = subgroup_table(report.images, report.candidate)
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    version = report.provenance.get("data_version") or report.provenance.get("test_version", "")
    title = f"palsyseg evaluation: {report.candidate}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="meta">Test split <code>{escape(report.dataset)}</code>; data version
<code>{escape(version or "—")}</code>; generated {generated}.</p>
<p class="disclaimer">{escape(DISCLAIMER)}</p>
{_comparison(report)}
{_gates(report)}
{_plots(report)}
{_subgroups(table, report)}
{_worst(report)}
{_model_card(report, table)}
</body></html>
"""


def write_report(report: EvaluationReport, path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_report` to ``path`` atomically; return the path."""
    path = Path(path)
    atomic_write_text(path, render_report(report))
    return path
