"""The model registry, reading side: versions, the champion, the audit trail; registering.

Registered model ``palsyseg`` (the policy's ``registered_model``). A pipeline run whose gates
pass registers its candidate as a new version with alias ``challenger`` (:func:`register_challenger`)
and tags for the data version, code version, key metrics, the gate results with the thresholds
and measurements they were decided on, and ``trained_by``; its description links the run's
one-page evaluation report (tag ``report``: ``runs:/<run>/evaluation/report.html``). It never
touches ``champion``.

Who trained it: on an MLflow server with authentication (``--app-name basic-auth``) the user
the server authenticated for the registering client; elsewhere the declared name, normalised
(:mod:`palsyseg.tracking.identity`).

Only a reviewer moves ``champion``, through :mod:`palsyseg.tracking.champion` (promote,
rollback, retire, repair); every move is an entry of the hash-chained audit trail kept in the
registered model's tags (:mod:`palsyseg.tracking.audit`), which :func:`check_trail` verifies
together with the alias. Those functions are also reachable here (``registry.promote``), the
registry's one public face.

Functions take ``policy=None`` to mean the production policy, ``mlflow/promotion.yaml`` at the
project root (:func:`palsyseg.tracking.gates.load_policy`): never built-in defaults.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from palsyseg.errors import GateError, PalsysegError
from palsyseg.tracking import audit
from palsyseg.tracking.audit import AuditEntry as AuditEntry
from palsyseg.tracking.audit import TrailCheck
from palsyseg.tracking.audit import champion_stack as champion_stack
from palsyseg.tracking.gates import GateReport, PromotionPolicy, load_policy
from palsyseg.tracking.identity import authenticated_user, normalise_name
from palsyseg.tracking.lock import LOCK_SUFFIX as LOCK_SUFFIX
from palsyseg.tracking.lock import LockError as LockError
from palsyseg.tracking.lock import find_model
from palsyseg.tracking.lock import promotion_lock as promotion_lock
from palsyseg.tracking.runs import (
    MODEL_ARTIFACT,
    REPORT_TAG,
    RunContext,
    client,
    download_checkpoint,
    resolve_tracking_uri,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
REPORT_VERSION_TAG = "report"  # runs:/<run>/evaluation/report.html, the reviewer's page
# Metrics copied onto a version as tags, so `registry list` needs no run lookups.
KEY_METRICS = (
    "f1_fpp",
    "mean_f1",
    "miou",
    "pixel_accuracy",
    "palsy_sensitivity",
    "palsy_specificity",
)


class RegistryError(PalsysegError):
    """The registry is not in the state an operation needs (missing version, broken trail)."""


@dataclass(frozen=True)
class VersionInfo:
    """A registered version as ``registry list`` shows it."""

    version: str
    run_id: str
    aliases: tuple[str, ...]
    trained_by: str
    created: str
    data_version: str
    code_version: str
    metrics: dict[str, float]
    gates_passed: bool | None
    gates: dict[str, str] = field(default_factory=dict)
    compared_with: str = ""
    policy: dict[str, Any] = field(default_factory=dict)  # thresholds it was gated with
    gate_details: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)  # measurements it was gated on
    identity: str = "declared"  # how trained_by is known: basic-auth or declared
    trained_by_declared: str = ""  # the declared trainer, when it differs from trained_by


# --------------------------------------------------------------------------- reading


def alias_version(mlflow_client: Any, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or ``None``."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def read_trail(mlflow_client: Any, name: str) -> TrailCheck:
    """The audit trail of model ``name`` verified against its ``champion`` alias.

    Tags and alias are two reads; a change landing between them would look like a break, so
    the tags are read again after the alias and the pair retried until both reads agree.
    """
    for _ in range(5):
        model = find_model(mlflow_client, name)
        if model is None:
            return TrailCheck([], {}, None)
        alias = alias_version(mlflow_client, name, CHAMPION)
        again = find_model(mlflow_client, name)
        if again is not None and dict(again.tags or {}) == dict(model.tags or {}):
            break
    return audit.verify(dict(model.tags or {}), alias)


def check_trail(
    *, policy: PromotionPolicy | None = None, tracking_uri: str | None = None
) -> TrailCheck:
    """Verify the champion audit trail: the chain, its head, and where ``champion`` sits."""
    policy = policy or load_policy()
    return read_trail(client(tracking_uri), policy.registered_model)


def history(
    *, policy: PromotionPolicy | None = None, tracking_uri: str | None = None
) -> list[AuditEntry]:
    """Every champion change that parses, oldest first (see :func:`check_trail` for breaks)."""
    return check_trail(policy=policy, tracking_uri=tracking_uri).entries


def champion_version(
    *, policy: PromotionPolicy | None = None, tracking_uri: str | None = None
) -> str | None:
    """The version that holds ``champion``, or ``None``."""
    policy = policy or load_policy()
    mlflow_client = client(tracking_uri)
    if find_model(mlflow_client, policy.registered_model) is None:
        return None
    return alias_version(mlflow_client, policy.registered_model, CHAMPION)


def _version_info(mv: Any) -> VersionInfo:
    tags = dict(mv.tags or {})
    metrics: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith("metric."):
            try:
                metrics[key[len("metric.") :]] = float(value)
            except ValueError:
                continue
    passed = tags.get("gates.passed")
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
        timespec="seconds"
    )
    return VersionInfo(
        version=str(mv.version),
        run_id=mv.run_id or "",
        aliases=tuple(sorted(getattr(mv, "aliases", []) or [])),
        trained_by=tags.get("trained_by", ""),
        created=created,
        data_version=tags.get("data.version", ""),
        code_version=tags.get("code.version", ""),
        metrics=metrics,
        gates_passed=None if passed is None else passed == "true",
        gates={
            k[len("gate.") :]: v
            for k, v in tags.items()
            if k.startswith("gate.") and not k.endswith(".detail")
        },
        compared_with=tags.get("gates.champion", ""),
        policy=_json_tag(tags.get("gates.policy")),
        gate_details={
            k[len("gate.") : -len(".detail")]: v
            for k, v in tags.items()
            if k.startswith("gate.") and k.endswith(".detail")
        },
        inputs=_json_tag(tags.get("gates.inputs")),
        identity=tags.get("trained_by.identity", "declared"),
        trained_by_declared=tags.get("trained_by.declared", ""),
    )


def _json_tag(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def get_version(
    version: str, *, policy: PromotionPolicy | None = None, tracking_uri: str | None = None
) -> VersionInfo:
    """One version; :class:`RegistryError` when it does not exist."""
    from mlflow.exceptions import MlflowException

    policy = policy or load_policy()
    try:
        mv = client(tracking_uri).get_model_version(policy.registered_model, str(version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryError(
                f"registry {policy.registered_model}: version {version} does not exist"
            ) from None
        raise
    return _version_info(mv)


def list_versions(
    *, policy: PromotionPolicy | None = None, tracking_uri: str | None = None
) -> list[VersionInfo]:
    """Every version of the registered model, newest first (empty when it does not exist)."""
    policy = policy or load_policy()
    mlflow_client = client(tracking_uri)
    if find_model(mlflow_client, policy.registered_model) is None:
        return []
    found = mlflow_client.search_model_versions(f"name = '{policy.registered_model}'")
    # search_model_versions does not fill aliases on every store; ask per version.
    infos = [
        _version_info(mlflow_client.get_model_version(policy.registered_model, mv.version))
        for mv in found
    ]
    return sorted(infos, key=lambda v: int(v.version), reverse=True)


def champion_metrics(
    *, policy: PromotionPolicy | None = None, tracking_uri: str | None = None
) -> tuple[str, dict[str, float]] | None:
    """``(version, metrics recorded at its registration)`` of the champion, or ``None``."""
    version = champion_version(policy=policy, tracking_uri=tracking_uri)
    if version is None:
        return None
    return version, get_version(version, policy=policy, tracking_uri=tracking_uri).metrics


def download_champion_checkpoint(
    dest: Any, *, policy: PromotionPolicy | None = None, tracking_uri: str | None = None
) -> tuple[str, Any] | None:
    """``(version, checkpoint path)`` of the champion downloaded into ``dest``, or ``None``.

    The checkpoint is the palsyseg file logged next to the MLflow model, so the champion is
    re-evaluated with ``palsyseg.train.load_checkpoint_model`` on the same test split as the
    candidate.
    """
    from pathlib import Path

    version = champion_version(policy=policy, tracking_uri=tracking_uri)
    if version is None:
        return None
    info = get_version(version, policy=policy, tracking_uri=tracking_uri)
    return version, download_checkpoint(info.run_id, Path(dest), tracking_uri=tracking_uri)


# --------------------------------------------------------------------------- registering


def _trainer_tags(context: RunContext, tracking_uri: str) -> dict[str, str]:
    """``trained_by`` and how it is known: the authenticated registrant on a server with
    authentication (the declared name kept beside it when it differs), else the declared
    name, normalised."""
    declared = normalise_name(context.trained_by or "")
    found = authenticated_user(tracking_uri)
    if found is None:
        return {"trained_by": declared or "unknown", "trained_by.identity": "declared"}
    user = normalise_name(found[0])
    tags = {"trained_by": user, "trained_by.identity": "basic-auth"}
    if declared and declared != user:
        tags["trained_by.declared"] = declared
    return tags


def register_challenger(
    run_id: str,
    *,
    gate_report: GateReport,
    metrics: Mapping[str, float],
    context: RunContext,
    policy: PromotionPolicy | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Register run ``run_id``'s model as a new version with alias ``challenger``; return it.

    ``policy`` is the one the run was gated with (it may be relaxed: the version records its
    thresholds and the gates' measurements, so a reviewer sees it and the production policy
    can re-decide). Refuses (:class:`GateError`) when the gates did not pass. Idempotent per
    run: a run already registered keeps its version, whose tags and alias are refreshed.
    Never touches ``champion``.
    """
    from mlflow.exceptions import MlflowException

    policy = policy or load_policy()
    if not gate_report.passed:
        failed = "; ".join(f"{r.name} ({r.detail})" for r in gate_report.failed)
        raise GateError(f"run {run_id}: not registered, gates failed: {failed}")
    name = policy.registered_model
    uri = resolve_tracking_uri(tracking_uri)
    mlflow_client = client(uri)
    if find_model(mlflow_client, name) is None:
        try:
            mlflow_client.create_registered_model(
                name, description="palsyseg face parsing and facial-paralysis segmentation"
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    tags = {
        **{k: v for k, v in context.tags().items() if v},
        **_trainer_tags(context, uri),
        "run_id": run_id,
        "gates.passed": str(gate_report.passed).lower(),
        "gates.champion": gate_report.champion or "none",
        "gates.summary": gate_report.summary(),
        "gates.policy": json.dumps(policy.thresholds(), sort_keys=True),
    }
    if gate_report.inputs is not None:
        tags["gates.inputs"] = json.dumps(gate_report.inputs, sort_keys=True)
    for result in gate_report.results:
        tags[f"gate.{result.name}"] = "pass" if result.passed else "fail"
        tags[f"gate.{result.name}.detail"] = result.detail[:4000]
    keys = {*KEY_METRICS, policy.primary_metric, *policy.class_metrics}
    for key in sorted(keys):
        value = metrics.get(key)
        if value is not None:
            tags[f"metric.{key}"] = f"{float(value):.6g}"
    run = mlflow_client.get_run(run_id)
    report = run.data.tags.get(REPORT_TAG)
    if report:
        tags[REPORT_VERSION_TAG] = f"runs:/{run_id}/{report}"
    existing = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = str(max(int(mv.version) for mv in existing))
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(name, version, key, value)
        log.info("run %s was already version %s of %s; tags refreshed", run_id, version, name)
    else:
        import mlflow

        # MLflow 3 logs models as "logged models" (models:/m-...); the run records which.
        source = run.data.tags.get("palsyseg.model_uri") or f"runs:/{run_id}/{MODEL_ARTIFACT}"
        mv = mlflow.register_model(source, name, tags=tags)
        version = str(mv.version)
    if report:
        description = report_description(run.info.experiment_id, run_id, report)
        mlflow_client.update_model_version(name, version, description=description)
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registered %s version %s as %s", name, version, CHALLENGER)
    return version


def report_description(experiment_id: str, run_id: str, report: str) -> str:
    """A version's description (Markdown) linking its run's evaluation report ``report``.

    The links are relative to the MLflow UI, as in the pipeline run's summary, so they work
    under whatever host name a reviewer reaches the server by: the run's artifact view shows
    the page; ``get-artifact`` downloads it (MLflow serves artifacts as attachments).
    """
    from urllib.parse import quote

    from palsyseg.report import DISCLAIMER

    view = f"#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{report}"
    download = f"get-artifact?path={quote(report, safe='')}&run_uuid={run_id}"
    return (
        "**Evaluation report** (one page: candidate vs baselines vs champion, per-class F1, "
        f"confusion matrix, subgroups, worst test images, model card): [open]({view}) · "
        f"[download]({download}) · `runs:/{run_id}/{report}`\n\n{DISCLAIMER}\n"
    )


# The reviewer's changes of champion live in palsyseg.tracking.champion, which reads versions
# through this module; they are reachable here too (registry.promote) without an import cycle.
_CHAMPION_CHANGES = frozenset({"promote", "rollback", "retire", "repair"})


def __getattr__(name: str) -> Any:
    if name in _CHAMPION_CHANGES:
        from palsyseg.tracking import champion

        return getattr(champion, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
