"""``palsyseg predict``: findings for photos, or one patient finding for one person's exam.

A thin face on :mod:`palsyseg.predict`. Each photo that fails (unreadable, too large, no face)
is one ``error: FILE: RULE`` line on stderr; the other photos go on, and the command exits 1
at the end. With ``--json`` stdout holds one JSON object per photo (JSON Lines) and, with
``--exam``, one more object ``{"exam": ...}``; without it, a table. Progress goes to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from palsyseg.cli import app

stdout = Console()
if not stdout.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
    stdout = Console(width=160)


def _problem_lines(exc: Exception) -> list[str]:
    from palsyseg.errors import PalsysegError

    if isinstance(exc, PalsysegError):
        return exc.lines()
    return [str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__]


def _emit_error(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)


def _table(rows: list[dict[str, Any]], exam: dict[str, Any] | None) -> None:
    table = Table(title="palsyseg predict (research and screening aid, not a medical device)")
    for header in ("photo", "face box", "palsy", "side", "parts", "FPP / threshold", "p", "files"):
        table.add_column(header)
    for row in rows:
        palsy = row["palsy"]
        outputs = row.get("outputs") or {}
        table.add_row(
            row["image"],
            " ".join(str(v) for v in row["face"]["box"]),
            "[red]shown[/red]" if palsy["present"] else "not shown",
            palsy["affected_side"],
            "+".join(palsy["parts"]) or "–",
            f"{palsy['fpp_fraction']:.4f} / {palsy['threshold']:.4f}",
            f"{palsy['probability']:.2f}",
            Path(outputs["overlay"]).name if outputs else "(no --out)",
        )
    stdout.print(table)
    if exam is not None:
        palsy, pattern = exam["palsy"], exam["pattern"]
        verdict = (
            f"palsy shown, patient's {palsy['affected_side']} side"
            if palsy["present"]
            else "no palsy shown"
        )
        stdout.print(
            f"exam of {len(exam['photos'])} photo(s): {verdict} (score {palsy['score']:.4f}, "
            f"threshold {palsy['threshold']:.4f}); pattern: {pattern['hint']} — {pattern['text']}"
        )
        for warning in exam["warnings"]:
            stdout.print(f"[yellow]warning:[/yellow] {warning}")
        stdout.print(exam["notice"])


@app.command("predict")
def predict(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGE_OR_DIR",
            help="Photos (JPEG, PNG) or folders of them (searched recursively).",
            show_default=False,
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID, or a checkpoint file.",
        ),
    ] = "models:/palsyseg@champion",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for <stem>_mask.png and <stem>_overlay.png (default: write no files).",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per photo instead of a table.")
    ] = False,
    exam: Annotated[
        bool,
        typer.Option(
            "--exam",
            help="The photos are one person's exam: add one patient finding with a pattern hint.",
        ),
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="CPU threads for torch and OpenCV (default: their own)."),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow tracking URI for models:/ and runs:/ (default: $MLFLOW_TRACKING_URI, "
            "else sqlite mlflow/mlflow.db).",
        ),
    ] = None,
) -> None:
    """Findings for photos: face, mask, palsy (side, parts), measures, class areas.

    Research and screening aid, not a medical device: a clinician decides.
    """
    from palsyseg.errors import PalsysegError
    from palsyseg.predict import find_photos, output_stems
    from palsyseg.predict.exam import exam_finding
    from palsyseg.predict.model import load_predict_model
    from palsyseg.predict.outputs import write_outputs
    from palsyseg.predict.photo import Predictor
    from palsyseg.progress import progress_bar

    photos, problems = find_photos(inputs, skip=out)
    failed: list[str] = []
    for problem in problems:
        _emit_error(str(problem))
        failed.append(problem.file)
    if not photos:
        raise SystemExit(1)
    if threads is not None:
        import cv2
        import torch

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)

    loaded = load_predict_model(model, tracking_uri=tracking_uri)
    described = loaded.describe()
    predictor = Predictor(loaded)
    findings = []
    rows: list[dict[str, Any]] = []
    with progress_bar(transient=True) as bar:
        task = bar.add_task("predicting", total=len(photos), visible=len(photos) > 1)
        for photo, stem in zip(photos, output_stems(photos), strict=True):
            try:
                finding = predictor.predict(photo)
            except (PalsysegError, ValueError, OSError) as exc:  # no face, unreadable, too large
                for line in _problem_lines(exc):
                    _emit_error(line if line.startswith(str(photo)) else f"{photo}: {line}")
                failed.append(str(photo))
                bar.advance(task)
                continue
            document = finding.to_dict(described)
            if out is not None:
                paths = write_outputs(finding, out, stem)
                document["outputs"] = {k: str(v) for k, v in paths.items()}
            finding.photo = None  # the exam keeps findings; not their pixels
            findings.append(finding)
            if json_output:
                print(json.dumps(document), flush=True)
            else:
                rows.append(document)
            bar.advance(task)

    exam_document = None
    if exam:
        exam_document = exam_finding(
            findings, threshold=loaded.palsy_threshold, model=described, failed=failed
        )
        if json_output:
            print(json.dumps(exam_document), flush=True)
    if not json_output:
        _table(rows, exam_document["exam"] if exam_document else None)
    if failed:
        raise SystemExit(1)
