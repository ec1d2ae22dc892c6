"""``palsyseg data ...``: the data steward's commands (synth, validate, split, import, sheet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from palsyseg.cli import app

data_app = typer.Typer(
    help="Create, check, split and import labeled face datasets.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

stdout = Console()


@data_app.command("synth")
def synth(
    out: Annotated[
        Path, typer.Option("--out", help="Output dataset directory (must be empty unless --force).")
    ],
    patients: Annotated[int, typer.Option(min=1, help="Number of synthetic patients.")] = 24,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives identical files.")
    ] = 0,
    size: Annotated[int, typer.Option(min=64, max=2048, help="Image side in pixels.")] = 250,
    images_per_patient: Annotated[
        int, typer.Option(min=1, help="Images (exam poses) per patient.")
    ] = 5,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty output directory.")
    ] = False,
) -> None:
    """Write a synthetic labeled dataset of phantom faces with and without facial palsy."""
    from palsyseg.data.synth import SynthConfig, generate_dataset

    config = SynthConfig(
        patients=patients, seed=seed, size=size, images_per_patient=images_per_patient
    )
    summary = generate_dataset(out, config, force=force)
    stdout.print(summary.table())


@data_app.command("validate")
def validate(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory with manifest.csv.")],
    report: Annotated[
        Path | None, typer.Option("--report", help="Write an HTML report here.")
    ] = None,
) -> None:
    """Check a dataset against the contract; exit 1 with one line per broken rule."""
    from palsyseg.errors import DatasetError
    from palsyseg.validate import validate_dataset

    result = validate_dataset(dataset, report=report)
    if report is not None:
        # On stderr so it shows next to the error lines when the check fails.
        Console(stderr=True).print(
            f"report: {report}", markup=False, highlight=False, soft_wrap=True
        )
    if not result.ok:
        raise DatasetError(result.problems)
    stdout.print(result.summary())


@data_app.command("split")
def split(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory with manifest.csv.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for train/, val/, test/.")],
    params: Annotated[
        Path, typer.Option(help="params.yaml with a 'split' section (seed, ratios).")
    ] = Path("params.yaml"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty output directory.")
    ] = False,
) -> None:
    """Patient-grouped, diagnosis-stratified train/val/test split with a leakage check."""
    from palsyseg.params import load_section
    from palsyseg.split import SplitConfig, split_dataset

    config = load_section("split", SplitConfig, params)
    summary = split_dataset(dataset, out, config, force=force)
    stdout.print(summary.table())


@data_app.command("import")
def import_(
    format: Annotated[str, typer.Argument(help="celebamask-hq, lapa or helen.")],
    src: Annotated[Path, typer.Argument(help="Root of the public dataset as distributed.")],
    out: Annotated[Path, typer.Option("--out", help="Output dataset directory.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty output directory.")
    ] = False,
) -> None:
    """Convert a public face-parsing dataset into the palsyseg contract (faces are healthy)."""
    from palsyseg.data.importers import import_dataset

    summary = import_dataset(format, src, out, force=force)
    stdout.print(summary.table())


@data_app.command("sheet")
def sheet(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory with manifest.csv.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    count: Annotated[int, typer.Option(min=1, help="Number of images on the sheet.")] = 12,
) -> None:
    """Write a contact sheet: images with their label masks and overlays side by side."""
    from palsyseg.data.sheet import contact_sheet

    path = contact_sheet(dataset, out, count=count)
    stdout.print(f"wrote {path}")
