"""``palsyseg train`` and ``palsyseg evaluate``: one model on a split; all models on one test split.

Both read their defaults from ``params.yaml`` (``train:`` → :class:`palsyseg.train.TrainConfig`,
``evaluate:`` → :class:`palsyseg.evaluate.EvaluateConfig`); command-line flags override them.
``palsyseg train`` also runs under ``torchrun --nproc_per_node N -m palsyseg.cli train ...``
(DDP; rank 0 prints).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from palsyseg.cli import app

ThreadsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="torch CPU threads (like OMP_NUM_THREADS); 1 is fastest on a shared 2-core box.",
    ),
]

stdout = Console()

DEFAULT_MODELS_DIR = Path("build/models")


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def check_model_flag(flag: str, name: str) -> str:
    """``name`` if it is a registered model; else a :class:`ConfigError` that blames ``flag``
    (not ``params.yaml``, which the flag overrides)."""
    from palsyseg.errors import ConfigError
    from palsyseg.models import list_models

    if name not in list_models():
        raise ConfigError(f"{flag} {name}: unknown model; valid names: {', '.join(list_models())}")
    return name


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@app.command("train")
def train(
    data: Annotated[
        Path, typer.Option("--data", help="Split directory holding train/ and val/ datasets.")
    ],
    model: Annotated[
        str | None,
        typer.Option(help="Model name (palsynet, deeplabv3plus_r34, unet_r18, ...)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run directory for checkpoints (default: build/models/MODEL)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (overrides params).")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Global batch size (overrides params)."),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option("--image-size", min=32, help="Input side in pixels (overrides params)."),
    ] = None,
    stream_patients: Annotated[
        int | None,
        typer.Option(
            "--stream-patients",
            min=0,
            help="Train on N fresh phantom patients per epoch drawn on the fly instead of "
            "SPLIT/train (0: SPLIT/train; overrides params).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")
    ] = False,
    params: Annotated[
        Path, typer.Option(help="params.yaml whose 'train' section gives the defaults.")
    ] = Path("params.yaml"),
    threads: ThreadsOption = None,
) -> None:
    """Train one model on SPLIT/train (or a phantom stream), validate on SPLIT/val, keep best.pt.

    Also keeps last.pt, to resume from. Models run in the canonical face frame."""
    from palsyseg.errors import DatasetError, Problem
    from palsyseg.params import from_section, load_params
    from palsyseg.train import TrainConfig, train_model

    if model is not None:
        check_model_flag("--model", model)
    _set_threads(threads)
    section = dict(load_params(params).get("train") or {})
    section.pop("baselines", None)  # the pipeline's baseline-only fields: not this model's
    flags = {
        "model": model,
        "epochs": epochs,
        "batch_size": batch_size,
        "image_size": image_size,
        "stream_patients": stream_patients,
    }
    section.update({key: value for key, value in flags.items() if value is not None})
    config = from_section(section, TrainConfig, where=f"{params}:train")
    missing = [
        Problem(file=str(data / name), rule="split has no such dataset (run `palsyseg data split`)")
        for name in (("val",) if config.stream_patients else ("train", "val"))
        if not (data / name).is_dir()
    ]
    if missing:
        raise DatasetError(missing)
    out = out or DEFAULT_MODELS_DIR / config.model
    result = train_model(data / "train", data / "val", out, config, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return

    table = Table(title=f"{config.model}: training on {data}")
    for header in ("epoch", "loss", "lr", "mean F1", "mIoU", "FPP F1", "sens.", "spec."):
        table.add_column(header, justify="right")
    shown = result.history[-15:]
    for entry in shown:
        marker = "*" if entry["epoch"] == result.best_epoch else ""
        table.add_row(
            f"{entry['epoch']}{marker}",
            _fmt(entry["train_loss"], 3),
            f"{entry['lr']:.2g}",
            _fmt(entry.get("val_mean_f1"), 3),
            _fmt(entry.get("val_miou"), 3),
            _fmt(entry.get("val_f1_fpp"), 3),
            _fmt(entry.get("val_palsy_sensitivity"), 2),
            _fmt(entry.get("val_palsy_specificity"), 2),
        )
    if len(shown) < len(result.history):
        table.caption = f"last {len(shown)} of {len(result.history)} epochs; "
    else:
        table.caption = ""
    table.caption += (
        "loss: train; the rest on validation (sens./spec.: image-level palsy); "
        "* = best (highest mean F1, then FPP F1)"
    )
    stdout.print(table)
    stdout.print(
        f"best epoch {result.best_epoch}: {result.best_checkpoint} "
        f"(palsy threshold {result.palsy_threshold:.4f}); last: {result.last_checkpoint}"
    )


def _parse_checkpoints(values: list[str]) -> dict[str, Path]:
    from palsyseg.errors import ConfigError

    checkpoints: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--checkpoint {value!r}: expected NAME=PATH")
        if name in checkpoints:
            raise ConfigError(f"--checkpoint {value!r}: the name {name!r} is given twice")
        checkpoints[name] = Path(path)
    return checkpoints


@app.command("evaluate")
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Test dataset directory (e.g. SPLIT/test).")],
    checkpoint: Annotated[
        list[str],
        typer.Option("--checkpoint", help="NAME=PATH of a checkpoint; repeat for every model."),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for report.html, report.json and the plots.")
    ],
    candidate: Annotated[
        str | None,
        typer.Option(help="The model under review (default: params.yaml evaluate.candidate)."),
    ] = None,
    params: Annotated[
        Path, typer.Option(help="params.yaml whose 'evaluate' section gives the defaults.")
    ] = Path("params.yaml"),
    data_version: Annotated[
        str | None,
        typer.Option(
            help="The dataset's version for the report's model card (a DVC revision, a release "
            "name); the test split's content fingerprint is recorded either way."
        ),
    ] = None,
    threads: ThreadsOption = None,
) -> None:
    """Score every checkpoint on the same test split; write report.html (the reviewer's one
    page: comparison, subgroups, worst images, model card), report.json and PNG plots."""
    from palsyseg.evaluate import REPORT_HTML, SUMMARY_METRICS, EvaluateConfig, evaluate_models
    from palsyseg.params import load_section
    from palsyseg.pipeline import code_version

    _set_threads(threads)
    config = load_section("evaluate", EvaluateConfig, params)
    checkpoints = _parse_checkpoints(checkpoint)
    provenance = {"data_uri": str(data), "code_version": code_version()}
    if data_version:
        provenance["data_version"] = data_version
    report = evaluate_models(
        data,
        checkpoints,
        candidate=candidate or config.candidate,
        out_dir=out,
        config=config,
        provenance=provenance,
    )
    table = Table(
        title=f"test split {data}",
        caption="* candidate; sens./spec.: image-level palsy sensitivity/specificity at each "
        "model's validation threshold; ms: CPU forward pass per image, batch 1",
    )
    table.add_column("model", no_wrap=True)
    for _, header in SUMMARY_METRICS:
        table.add_column(header, justify="right")
    for name, evaluation in report.models.items():
        cells = [
            _fmt(evaluation.metrics.get(key), 1 if key == "latency_ms" else 3)
            for key, _ in SUMMARY_METRICS
        ]
        table.add_row(f"{name}*" if name == report.candidate else name, *cells)
    stdout.print(table)
    stdout.print(f"report: {out / REPORT_HTML} (report.json and plots beside it)")
