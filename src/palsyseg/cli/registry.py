"""``palsyseg registry ...``: the reviewer's commands (list, promote, rollback, history)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from palsyseg.cli import app

registry_app = typer.Typer(
    help="The MLflow model registry: versions, promotion to champion, rollback, audit trail.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")

stdout = Console()
if not stdout.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    stdout = Console(width=120)

PolicyOption = Annotated[
    Path, typer.Option("--policy", help="Promotion policy (gates, registered model name).")
]
TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite mlflow/mlflow.db].",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DEFAULT_POLICY = Path("mlflow/promotion.yaml")


def _policy(path: Path, overrides: list[str] | None = None) -> Any:
    from palsyseg.tracking.gates import load_policy, policy_from_dict

    policy = load_policy(path)
    if not overrides:
        return policy
    from palsyseg.cli.pipeline import _pairs

    return policy_from_dict({**policy.to_dict(), **_pairs(overrides, "--gate")})


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def versions_table(versions: list[Any], policy: Any, champion_history: list[Any]) -> Table:
    """Versions newest first: aliases, trainer, key metrics, gates, data version."""
    table = Table(title=f"registered model {policy.registered_model}")
    table.add_column("ver", justify="right")
    table.add_column("aliases")
    table.add_column("trained by")
    table.add_column("created (UTC)")
    table.add_column(policy.primary_metric, justify="right")
    table.add_column("mean F1", justify="right")
    table.add_column("gates")
    table.add_column("vs", justify="right")
    table.add_column("data")
    for v in versions:
        if v.gates_passed is None:
            gates = "none"
        elif v.gates_passed:
            gates = "[green]pass[/green]"
        else:
            failed = [g for g, verdict in sorted(v.gates.items()) if verdict != "pass"]
            gates = "[red]fail[/red] " + ",".join(failed)
        data = v.data_version.split(";")[0].removeprefix("sha256:")
        table.add_row(
            v.version,
            ", ".join(v.aliases),
            v.trained_by,
            v.created.replace("+00:00", "").replace("T", " ")[:16],
            _fmt(v.metrics.get(policy.primary_metric)),
            _fmt(v.metrics.get("mean_f1")),
            gates,
            v.compared_with or "",
            data[:10],
        )
    table.caption = "vs: the champion version the gates compared with"
    if champion_history:
        last = champion_history[-1]
        table.caption += (
            f"; last champion change: {last.action} v{last.from_version or '-'} -> "
            f"v{last.to_version} by {last.reviewer}"
        )
    return table


def history_table(entries: list[Any], name: str) -> Table:
    table = Table(title=f"champion history of {name}")
    for column in ("seq", "at (UTC)", "action", "from", "to", "reviewer", "trained by", "reason"):
        table.add_column(column, justify="right" if column == "seq" else "left")
    for e in entries:
        table.add_row(
            str(e.seq),
            e.at.replace("+00:00", ""),
            e.action,
            f"v{e.from_version}" if e.from_version else "-",
            f"v{e.to_version}",
            e.reviewer,
            e.trained_by,
            e.reason,
        )
    return table


@registry_app.command("list")
def list_(
    policy: PolicyOption = DEFAULT_POLICY,
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Versions with their aliases, key metrics and gate results; newest first."""
    from dataclasses import asdict

    from palsyseg.tracking import registry

    rules = _policy(policy)
    versions = registry.list_versions(policy=rules, tracking_uri=tracking_uri)
    entries = registry.history(policy=rules, tracking_uri=tracking_uri)
    if as_json:
        typer.echo(json.dumps([asdict(v) for v in versions], indent=2))
        return
    if not versions:
        stdout.print(f"registered model {rules.registered_model}: no versions yet")
        return
    stdout.print(versions_table(versions, rules, entries))


@registry_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="Version number to make champion.")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Your name (not the trainer's).")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")],
    policy: PolicyOption = DEFAULT_POLICY,
    gate: Annotated[
        list[str] | None,
        typer.Option(
            "--gate", help="Policy field KEY=VALUE the version was gated with; repeatable."
        ),
    ] = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Move alias champion to VERSION; refused if a gate failed or you trained it."""
    from palsyseg.tracking import registry

    rules = _policy(policy, gate)
    entry = registry.promote(
        version, reviewer=reviewer, reason=reason, policy=rules, tracking_uri=tracking_uri
    )
    stdout.print(
        f"{rules.registered_model} v{entry.to_version} is champion "
        f"(was {('v' + entry.from_version) if entry.from_version else 'none'}); "
        f"audit entry {entry.seq} by {entry.reviewer}"
    )


@registry_app.command("rollback")
def rollback(
    reviewer: Annotated[str, typer.Option("--reviewer", help="Your name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")],
    policy: PolicyOption = DEFAULT_POLICY,
    tracking_uri: TrackingOption = None,
) -> None:
    """Return champion to the previous champion (audited)."""
    from palsyseg.tracking import registry

    rules = _policy(policy)
    entry = registry.rollback(
        reviewer=reviewer, reason=reason, policy=rules, tracking_uri=tracking_uri
    )
    stdout.print(
        f"{rules.registered_model} rolled back: champion v{entry.from_version} -> "
        f"v{entry.to_version}; audit entry {entry.seq} by {entry.reviewer}"
    )


@registry_app.command("history")
def history(
    policy: PolicyOption = DEFAULT_POLICY,
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every change of champion: who, when, from which version to which, why."""
    from dataclasses import asdict

    from palsyseg.tracking import registry

    rules = _policy(policy)
    entries = registry.history(policy=rules, tracking_uri=tracking_uri)
    if as_json:
        typer.echo(json.dumps([asdict(e) for e in entries], indent=2))
        return
    if not entries:
        stdout.print(f"registered model {rules.registered_model}: no champion yet")
        return
    stdout.print(history_table(entries, rules.registered_model))
