"""``palsyseg registry ...``: the reviewer's commands.

``list`` and ``history`` show the registry and verify the audit trail on the way (a break is
printed loudly on stderr); ``verify`` exits non-zero on any break, for CI or cron; ``promote``,
``rollback``, ``retire`` and ``repair`` change ``champion``, audited.

Every command reads the production policy, ``mlflow/promotion.yaml`` at the project root (the
root the local store is found from); there is no ``--policy`` or ``--gate`` here, because only
that policy makes champions. On a tracking server with authentication the reviewer is the
authenticated user; ``--reviewer`` is then optional and must name the same person.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from palsyseg.cli import app

registry_app = typer.Typer(
    help="The MLflow model registry: versions, promotion to champion, rollback, audit trail.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")

stdout = Console()
if not stdout.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    stdout = Console(width=160)

TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite mlflow/mlflow.db).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ReviewerOption = Annotated[
    str | None,
    typer.Option(
        "--reviewer",
        help="Your name (not the trainer's). On a server with authentication: the "
        "authenticated user, so it may be left out.",
    ),
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")]


@contextlib.contextmanager
def _server_refusals(tracking_uri: str | None) -> Iterator[None]:
    """A tracking server that refuses (401/403) is a one-line error, not a traceback."""
    from mlflow.exceptions import MlflowException

    from palsyseg.connectivity import check_tracking_store
    from palsyseg.tracking.identity import IdentityError
    from palsyseg.tracking.runs import resolve_tracking_uri

    # Never create a store a mistyped URI names; a server that does not answer fails in seconds.
    check_tracking_store(tracking_uri)
    try:
        yield
    except MlflowException as exc:
        uri = resolve_tracking_uri(tracking_uri)
        if exc.error_code == "UNAUTHENTICATED":
            raise IdentityError(
                f"{uri}: the tracking server requires authentication; set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            ) from None
        if exc.error_code == "PERMISSION_DENIED":
            raise IdentityError(
                f"{uri}: the tracking server refused ({str(exc).splitlines()[0]})"
            ) from None
        raise


def _production() -> Any:
    from palsyseg.tracking.gates import load_policy

    return load_policy()


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


def relaxed_text(version: Any, production: Any) -> str:
    """``min_primary 0.0 (production 0.5), ...`` for a version gated more loosely, else ``""``."""
    from palsyseg.tracking.gates import relaxations

    return ", ".join(str(r) for r in relaxations(version.policy, production))


def gates_text(version: Any, production: Any) -> str:
    """``pass``, ``pass (relaxed: ...)``, ``fail name,...`` or ``none`` (plain text)."""
    if version.gates_passed is None:
        return "none"
    if not version.gates_passed:
        failed = [g for g, verdict in sorted(version.gates.items()) if verdict != "pass"]
        return "fail " + ",".join(failed)
    relaxed = relaxed_text(version, production)
    return f"pass (relaxed: {relaxed})" if relaxed else "pass"


def _override_note(entry: Any) -> str:
    notes = []
    for o in entry.overrides:
        used, production = o.get("used", {}), o.get("production", {})
        changed = [k for k in production if used.get(k) != production[k]] or list(production)
        thresholds = ", ".join(
            f"{k} {json.dumps(used.get(k))} vs production {json.dumps(production[k])}"
            for k in changed
        )
        notes.append(f"override {o.get('gate')} ({thresholds}): {o.get('reason')}")
    return "; ".join(notes)


def _overrides_by_version(entries: list[Any]) -> dict[str, Any]:
    """The latest promotion entry of each version that was promoted over an override."""
    found: dict[str, Any] = {}
    for entry in entries:
        if entry.action == "promote" and entry.to_version:
            if entry.overrides:
                found[entry.to_version] = entry
            else:
                found.pop(entry.to_version, None)
    return found


def versions_table(
    versions: list[Any], policy: Any, champion_history: list[Any], production: Any = None
) -> Table:
    """Versions newest first: aliases, trainer, key metrics, gates (relaxed or overridden)."""
    if production is None:  # the pipeline's table: mark relaxation against production
        from palsyseg.errors import ConfigError

        try:
            production = _production()
        except ConfigError:
            production = policy
    overridden = _overrides_by_version(champion_history)
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
        text = gates_text(v, production)
        color = "green" if text == "pass" else "red" if text.startswith("fail") else "yellow"
        gates = f"[{color}]{escape(text)}[/{color}]"
        if v.version in overridden:
            entry = overridden[v.version]
            gates += (
                f"\n[yellow]promoted over {', '.join(entry.overridden_gates)} "
                f"by {escape(entry.reviewer)} (audit {entry.seq})[/yellow]"
            )
        trainer = v.trained_by + (" ✓" if v.identity == "basic-auth" else "")
        data = v.data_version.split(";")[0].removeprefix("sha256:")
        table.add_row(
            v.version,
            ", ".join(v.aliases),
            escape(trainer),
            v.created.replace("+00:00", "").replace("T", " ")[:16],
            _fmt(v.metrics.get(policy.primary_metric)),
            _fmt(v.metrics.get("mean_f1")),
            gates,
            v.compared_with or "",
            escape(data[:10]),
        )
    table.caption = "vs: the champion version the gates compared with"
    if any(v.identity == "basic-auth" for v in versions):
        table.caption += "; ✓ trainer authenticated by the tracking server"
    if champion_history:
        last = champion_history[-1]
        table.caption += (
            f"; last champion change: {last.action} {_v(last.from_version)} -> "
            f"{_v(last.to_version)} by {last.reviewer}"
        )
    return table


def history_table(entries: list[Any], name: str) -> Table:
    table = Table(title=f"champion history of {name}")
    columns = ("seq", "at (UTC)", "action", "from", "to", "reviewer", "trained by", "reason")
    for column in (*columns, "overrides / repairs"):
        table.add_column(column, justify="right" if column == "seq" else "left")
    for e in entries:
        notes = _override_note(e)
        if e.repaired:
            notes = "repaired: " + "; ".join(e.repaired)
        reviewer = e.reviewer + (" ✓" if e.identity == "basic-auth" else "")
        table.add_row(
            str(e.seq),
            e.at.replace("+00:00", ""),
            e.action,
            _v(e.from_version),
            _v(e.to_version),
            escape(reviewer),
            escape(e.trained_by),
            escape(e.reason),
            f"[yellow]{escape(notes)}[/yellow]" if notes else "",
        )
    if any(e.identity == "basic-auth" for e in entries):
        table.caption = "✓ the tracking server authenticated the reviewer"
    return table


def warn_if_broken(trail: Any, name: str) -> None:
    """Say loudly (stderr) what broke in the audit trail; nothing when it is intact."""
    if trail.ok and not trail.pending:
        return
    err = typer.echo
    if trail.pending:
        last = trail.last
        err(
            f"warning: registry {name}: the last change (audit entry {last.seq}, "
            f"{_v(last.from_version)} -> {_v(last.to_version)}) did not finish; the next "
            "promote/rollback/retire completes it",
            err=True,
        )
    for problem in trail.problems:
        err(f"warning: registry {name}: AUDIT TRAIL BROKEN: {problem}", err=True)
    if trail.problems:
        err(
            f"warning: registry {name}: promote/rollback/retire are refused until a reviewer "
            "records `palsyseg registry repair --reviewer NAME --reason WHY`",
            err=True,
        )


@registry_app.command("list")
def list_(tracking_uri: TrackingOption = None, as_json: JsonOption = False) -> None:
    """Versions with their aliases, key metrics and gate results; newest first."""
    from dataclasses import asdict

    from palsyseg.tracking import registry

    rules = _production()
    with _server_refusals(tracking_uri):
        versions = registry.list_versions(policy=rules, tracking_uri=tracking_uri)
        trail = registry.check_trail(policy=rules, tracking_uri=tracking_uri)
    warn_if_broken(trail, rules.registered_model)
    if as_json:
        rows = [
            {**asdict(v), "gates_text": gates_text(v, rules), "relaxed": relaxed_text(v, rules)}
            for v in versions
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not versions:
        stdout.print(f"registered model {rules.registered_model}: no versions yet")
        return
    stdout.print(versions_table(versions, rules, trail.entries, rules))


def _overrides(values: list[str] | None) -> dict[str, str]:
    from palsyseg.errors import ConfigError

    found: dict[str, str] = {}
    for item in values or []:
        gate, sep, reason = item.partition("=")
        if not sep or not gate.strip():
            raise ConfigError(f"--override {item}: expected GATE=REASON")
        found[gate.strip()] = reason
    return found


@registry_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="Version number to make champion.")],
    reason: ReasonOption,
    reviewer: ReviewerOption = None,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--override",
            help="GATE=REASON: accept a gate the production policy fails, if "
            "mlflow/promotion.yaml lets a reviewer override it; repeatable, audited.",
        ),
    ] = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Move alias champion to VERSION, under the production policy (audited).

    Refused, with every reason at once, unless each gate passes mlflow/promotion.yaml or is
    overridden where the policy allows it, and you did not train the version.
    """
    from palsyseg.tracking import registry

    rules = _production()
    with _server_refusals(tracking_uri):
        entry = registry.promote(
            version,
            reviewer=reviewer,
            reason=reason,
            policy=rules,
            tracking_uri=tracking_uri,
            overrides=_overrides(override),
        )
    stdout.print(
        f"{rules.registered_model} v{entry.to_version} is champion (was "
        f"{_v(entry.from_version)}); audit entry {entry.seq} by {entry.reviewer} "
        f"({entry.identity})"
    )
    if entry.overrides:
        stdout.print(escape(_override_note(entry)))


@registry_app.command("rollback")
def rollback(
    reason: ReasonOption, reviewer: ReviewerOption = None, tracking_uri: TrackingOption = None
) -> None:
    """Return champion to the previous champion (audited)."""
    from palsyseg.tracking import registry

    rules = _production()
    with _server_refusals(tracking_uri):
        entry = registry.rollback(
            reviewer=reviewer, reason=reason, policy=rules, tracking_uri=tracking_uri
        )
    stdout.print(
        f"{rules.registered_model} rolled back: champion {_v(entry.from_version)} -> "
        f"{_v(entry.to_version)}; audit entry {entry.seq} by {entry.reviewer}"
    )


@registry_app.command("retire")
def retire(
    reason: ReasonOption, reviewer: ReviewerOption = None, tracking_uri: TrackingOption = None
) -> None:
    """Leave no champion (audited: champion -> none); `rollback` restores it."""
    from palsyseg.tracking import registry

    rules = _production()
    with _server_refusals(tracking_uri):
        entry = registry.retire(
            reviewer=reviewer, reason=reason, policy=rules, tracking_uri=tracking_uri
        )
    stdout.print(
        f"{rules.registered_model}: champion {_v(entry.from_version)} retired, no champion now; "
        f"audit entry {entry.seq} by {entry.reviewer}"
    )


@registry_app.command("repair")
def repair(
    reason: ReasonOption, reviewer: ReviewerOption = None, tracking_uri: TrackingOption = None
) -> None:
    """Mend a broken audit trail (audited); champion goes back where the trail says.

    The repair entry lists what was broken and seals everything before it; promote, rollback
    and retire work again afterwards.
    """
    from palsyseg.tracking import registry

    rules = _production()
    with _server_refusals(tracking_uri):
        entry = registry.repair(
            reviewer=reviewer, reason=reason, policy=rules, tracking_uri=tracking_uri
        )
    if entry is None:
        stdout.print(f"{rules.registered_model}: finished an interrupted change; nothing broken")
        return
    stdout.print(
        f"{rules.registered_model}: audit trail repaired by {entry.reviewer} (audit entry "
        f"{entry.seq}); {len(entry.repaired)} break(s) recorded; champion "
        f"{_v(entry.to_version)} (was {_v(entry.from_version)})"
    )


@registry_app.command("verify")
def verify(tracking_uri: TrackingOption = None, as_json: JsonOption = False) -> None:
    """Check the audit trail (hash chain, head, where champion sits); exit 1 on any break.

    For CI or cron: the exit code is the verdict.
    """
    from palsyseg.tracking import registry

    rules = _production()
    name = rules.registered_model
    with _server_refusals(tracking_uri):
        trail = registry.check_trail(policy=rules, tracking_uri=tracking_uri)
    broken = list(trail.problems)
    if trail.pending:
        last = trail.last
        broken.append(
            f"the last change (audit entry {last.seq}, {_v(last.from_version)} -> "
            f"{_v(last.to_version)}) did not finish (the next change, or `registry repair`, "
            "completes it)"
        )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "registered_model": name,
                    "ok": not broken,
                    "entries": len(trail.raw),
                    "champion": trail.alias,
                    "expected_champion": trail.expected,
                    "problems": broken,
                },
                indent=2,
            )
        )
    elif not broken:
        last = f" (audit entry {trail.last.seq})" if trail.last else ""
        count = f"{len(trail.raw)} entr{'y' if len(trail.raw) == 1 else 'ies'}"
        stdout.print(
            f"{name}: audit trail intact, {count}; champion {_v(trail.alias)} where the trail "
            f"put it{last}"
        )
    if broken:
        from palsyseg.errors import Problem
        from palsyseg.tracking.registry import RegistryError

        raise RegistryError([Problem(f"registry {name}", f"audit trail: {p}") for p in broken])


@registry_app.command("history")
def history(tracking_uri: TrackingOption = None, as_json: JsonOption = False) -> None:
    """Every change of champion: who, when, from which version to which, why, overrides."""
    from dataclasses import asdict

    from palsyseg.tracking import registry

    rules = _production()
    with _server_refusals(tracking_uri):
        trail = registry.check_trail(policy=rules, tracking_uri=tracking_uri)
    warn_if_broken(trail, rules.registered_model)
    if as_json:
        typer.echo(json.dumps([asdict(e) for e in trail.entries], indent=2))
        return
    if not trail.entries:
        stdout.print(f"registered model {rules.registered_model}: no champion yet")
        return
    stdout.print(history_table(trail.entries, rules.registered_model))
