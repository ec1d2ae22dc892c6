"""The model registry, reviewer side: register a challenger, promote, roll back, audit.

Registered model ``palsyseg`` (the policy's ``registered_model``). A pipeline run whose gates
pass registers its candidate as a new version with alias ``challenger`` and tags for the data
version, code version, key metrics, gate results and ``trained_by``; it never touches
``champion``. Only a reviewer moves ``champion``:

- :func:`promote` refuses when a recorded gate failed, when the reviewer trained the model,
  and (policy ``require_current_champion``) when the version was compared with a champion
  that is no longer current;
- :func:`rollback` returns ``champion`` to the one before it.

The audit trail. Every champion change is an entry ``{seq, action, from, to, reviewer, reason,
at, trained_by}`` stored as a tag ``audit.<seq>`` (zero-padded, JSON) on the registered model
itself, so the history of champions lives in the registry and is listed by :func:`history`.
The entry is the truth and the alias follows it: a promotion writes entry ``n+1`` and then
moves the alias; if a crash falls between the two, the next promotion finds the alias one
step behind the trail and completes the move first.

Concurrency. MLflow has no transactions or conditional writes, but creating a registered
model is atomic (its name is the table's primary key; a second create fails with
``RESOURCE_ALREADY_EXISTS``). Every change of ``champion`` runs while holding a lock that is a
registered model named ``<model>.promotion-lock``, created to acquire and deleted to release,
tagged with its holder and time; a lock older than ``stale_after`` seconds (a holder that
died) is broken. Inside the lock the state is read, checked, written and read back, so two
promotions racing leave one champion and an audit trail with consecutive sequence numbers,
one entry per successful call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from palsyseg.errors import GateError, PalsysegError
from palsyseg.tracking.gates import GATE_NAMES, GateReport, PromotionPolicy
from palsyseg.tracking.runs import MODEL_ARTIFACT, RunContext, client, download_checkpoint

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
AUDIT_PREFIX = "audit."
LOCK_SUFFIX = ".promotion-lock"
MAX_REASON = 1000
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
    """The registry is not in the state an operation needs (missing version, busy lock, ...)."""


@dataclass(frozen=True)
class AuditEntry:
    """One change of ``champion``."""

    seq: int
    action: str  # "promote" | "rollback"
    from_version: str | None
    to_version: str
    reviewer: str
    reason: str
    at: str  # ISO 8601, UTC
    trained_by: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, key: str = "") -> AuditEntry:
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"audit tag {key}: malformed entry ({exc})") from None


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


def _audit_key(seq: int) -> str:
    return f"{AUDIT_PREFIX}{seq:06d}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _same_person(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


# --------------------------------------------------------------------------- reading


def _get_model(mlflow_client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _audit_from_tags(tags: Mapping[str, str]) -> list[AuditEntry]:
    entries = [
        AuditEntry.from_json(value, key=key)
        for key, value in tags.items()
        if key.startswith(AUDIT_PREFIX)
    ]
    entries.sort(key=lambda e: e.seq)
    return entries


def history(
    *, policy: PromotionPolicy | None = None, tracking_uri: str | None = None
) -> list[AuditEntry]:
    """Every champion change, oldest first."""
    policy = policy or PromotionPolicy()
    model = _get_model(client(tracking_uri), policy.registered_model)
    return [] if model is None else _audit_from_tags(model.tags)


def champion_stack(entries: list[AuditEntry]) -> list[str]:
    """The champions in force, oldest first: a promotion pushes, a rollback pops."""
    stack: list[str] = []
    for entry in entries:
        if entry.action == "promote":
            stack.append(entry.to_version)
        elif entry.action == "rollback" and stack:
            stack.pop()
    return stack


def _alias_version(mlflow_client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def champion_version(
    *, policy: PromotionPolicy | None = None, tracking_uri: str | None = None
) -> str | None:
    """The version that holds ``champion``, or ``None``."""
    policy = policy or PromotionPolicy()
    mlflow_client = client(tracking_uri)
    if _get_model(mlflow_client, policy.registered_model) is None:
        return None
    return _alias_version(mlflow_client, policy.registered_model, CHAMPION)


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

    policy = policy or PromotionPolicy()
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
    policy = policy or PromotionPolicy()
    mlflow_client = client(tracking_uri)
    if _get_model(mlflow_client, policy.registered_model) is None:
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

    Refuses (:class:`GateError`) when the gates did not pass. Idempotent per run: a run
    already registered keeps its version, whose tags and alias are refreshed. Never touches
    ``champion``.
    """
    from mlflow.exceptions import MlflowException

    policy = policy or PromotionPolicy()
    if not gate_report.passed:
        failed = "; ".join(f"{r.name} ({r.detail})" for r in gate_report.failed)
        raise GateError(f"run {run_id}: not registered, gates failed: {failed}")
    name = policy.registered_model
    mlflow_client = client(tracking_uri)
    if _get_model(mlflow_client, name) is None:
        try:
            mlflow_client.create_registered_model(
                name, description="palsyseg face parsing and facial-paralysis segmentation"
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    tags = {
        **{k: v for k, v in context.tags().items() if v},
        "trained_by": context.trained_by or "unknown",
        "run_id": run_id,
        "gates.passed": str(gate_report.passed).lower(),
        "gates.champion": gate_report.champion or "none",
        "gates.summary": gate_report.summary(),
        "gates.policy": json.dumps(policy.thresholds(), sort_keys=True),
    }
    for result in gate_report.results:
        tags[f"gate.{result.name}"] = "pass" if result.passed else "fail"
        tags[f"gate.{result.name}.detail"] = result.detail[:4000]
    keys = {*KEY_METRICS, policy.primary_metric, *policy.class_metrics}
    for key in sorted(keys):
        value = metrics.get(key)
        if value is not None:
            tags[f"metric.{key}"] = f"{float(value):.6g}"
    existing = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = str(max(int(mv.version) for mv in existing))
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(name, version, key, value)
        log.info("run %s was already version %s of %s; tags refreshed", run_id, version, name)
    else:
        import mlflow

        # MLflow 3 logs models as "logged models" (models:/m-...); the run records which.
        run_tags = mlflow_client.get_run(run_id).data.tags
        source = run_tags.get("palsyseg.model_uri") or f"runs:/{run_id}/{MODEL_ARTIFACT}"
        mv = mlflow.register_model(source, name, tags=tags)
        version = str(mv.version)
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registered %s version %s as %s", name, version, CHALLENGER)
    return version


# --------------------------------------------------------------------------- the lock


def _lock_contended(exc: Exception) -> bool:
    """Whether a failed lock create means "someone else holds or just released it".

    Besides ``RESOURCE_ALREADY_EXISTS`` (and sqlite's "database is locked"), MLflow's SQL
    store answers a duplicate create by reading the existing model back; when its holder
    deletes it between the failed insert and that read, the create fails with
    ``RESOURCE_DOES_NOT_EXIST`` naming the lock. All three mean: try again.
    """
    code = getattr(exc, "error_code", None)
    return code in {"RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"} or "locked" in str(exc)


@contextlib.contextmanager
def promotion_lock(
    mlflow_client: Any,
    name: str,
    *,
    holder: str,
    timeout: float = 60.0,
    stale_after: float = 120.0,
) -> Iterator[str]:
    """Hold the registry-wide lock of model ``name`` (see the module docstring)."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    token = f"{holder}:{uuid.uuid4().hex}"
    deadline = time.monotonic() + timeout
    rng = random.Random()
    while True:
        try:
            mlflow_client.create_registered_model(
                lock,
                tags={"holder": token, "acquired_at": f"{time.time():.3f}"},
                description=f"palsyseg promotion lock for {name}; held by {holder}",
            )
            break
        except MlflowException as exc:
            if not _lock_contended(exc):
                raise
        current = _get_model(mlflow_client, lock)
        if current is not None:
            tags = current.tags or {}
            if tags.get("holder") == token:  # our create succeeded, its reply was lost
                break
            age = time.time() - float(tags.get("acquired_at", time.time()))
            if age > stale_after:
                log.warning(
                    "breaking stale promotion lock of %s held by %s", name, tags.get("holder")
                )
                with contextlib.suppress(MlflowException):
                    mlflow_client.delete_registered_model(lock)
                continue
        if time.monotonic() > deadline:
            raise RegistryError(
                f"registry {name}: another promotion holds the lock ({lock}); try again"
            )
        time.sleep(rng.uniform(0.02, 0.15))
    try:
        yield token
    finally:
        current = _get_model(mlflow_client, lock)
        if current is not None and (current.tags or {}).get("holder") == token:
            mlflow_client.delete_registered_model(lock)


# --------------------------------------------------------------------------- champion changes


def _settle_champion(mlflow_client: Any, name: str, entries: list[AuditEntry]) -> str | None:
    """The champion per the audit trail, after completing a move a crash left half-done.

    Raises :class:`RegistryError` when the alias was moved outside palsyseg.
    """
    alias = _alias_version(mlflow_client, name, CHAMPION)
    stack = champion_stack(entries)
    expected = stack[-1] if stack else None
    if alias == expected:
        return expected
    last = entries[-1] if entries else None
    if last is not None and alias == last.from_version:
        log.warning("completing champion move of audit entry %d (v%s)", last.seq, last.to_version)
        _point_champion(mlflow_client, name, expected)
        return expected
    raise RegistryError(
        f"registry {name}: alias {CHAMPION} is on version {alias or 'none'} but the audit trail "
        f"says {expected or 'none'}; it was moved outside palsyseg (put it back with MLflow)"
    )


def _point_champion(mlflow_client: Any, name: str, version: str | None) -> None:
    if version is None:
        mlflow_client.delete_registered_model_alias(name, CHAMPION)
    else:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)


def _record_change(
    mlflow_client: Any, name: str, entry: AuditEntry, *, previous: list[AuditEntry]
) -> AuditEntry:
    """Write the entry, move the alias, read both back (inside the lock)."""
    key = _audit_key(entry.seq)
    model = _get_model(mlflow_client, name)
    if model is not None and key in (model.tags or {}):
        raise RegistryError(f"registry {name}: audit entry {key} already exists")
    mlflow_client.set_registered_model_tag(name, key, entry.to_json())
    _point_champion(mlflow_client, name, entry.to_version)
    model = _get_model(mlflow_client, name)
    written = _audit_from_tags(model.tags)
    if written[-1] != entry or written[:-1] != previous:
        raise RegistryError(f"registry {name}: audit trail changed during the promotion")
    if _alias_version(mlflow_client, name, CHAMPION) != entry.to_version:
        raise RegistryError(f"registry {name}: {CHAMPION} did not move to v{entry.to_version}")
    return entry


def _check_text(reviewer: str, reason: str) -> tuple[str, str]:
    reviewer, reason = reviewer.strip(), reason.strip()
    if not reviewer:
        raise GateError("--reviewer: a reviewer name is required")
    if not reason:
        raise GateError("--reason: a reason is required for the audit trail")
    return reviewer, reason[:MAX_REASON]


def promote(
    version: str,
    *,
    reviewer: str,
    reason: str,
    policy: PromotionPolicy | None = None,
    tracking_uri: str | None = None,
    lock_timeout: float = 60.0,
) -> AuditEntry:
    """Move ``champion`` to ``version`` for ``reviewer``; return the audit entry written.

    Refuses with :class:`GateError` when: a recorded gate failed (or none were recorded), the
    version was gated with other thresholds than ``policy``'s, the reviewer is the version's
    ``trained_by``, the version already is champion, or (policy ``require_current_champion``)
    the version's gates compared it with another champion than the current one.
    """
    policy = policy or PromotionPolicy()
    reviewer, reason = _check_text(reviewer, reason)
    name = policy.registered_model
    version = str(version).lstrip("v")
    info = get_version(version, policy=policy, tracking_uri=tracking_uri)
    if info.gates_passed is not True:
        failed = [g for g, verdict in sorted(info.gates.items()) if verdict != "pass"]
        what = ", ".join(failed) if failed else "no gate results recorded"
        raise GateError(f"{name} v{version}: promotion refused, gates failed: {what}")
    missing = [g for g in GATE_NAMES if info.gates.get(g) != "pass"]
    if missing:
        raise GateError(
            f"{name} v{version}: promotion refused, gates not passed: {', '.join(missing)}"
        )
    changed = policy.differences(info.policy)
    if changed:
        raise GateError(
            f"{name} v{version}: promotion refused, it was gated under another policy "
            f"({'; '.join(changed)}); re-run the pipeline, or promote under the policy it "
            "was gated with if you accept it (--gate KEY=VALUE)"
        )
    if not info.trained_by or info.trained_by == "unknown":
        raise GateError(f"{name} v{version}: promotion refused, the trainer is not recorded")
    if _same_person(reviewer, info.trained_by):
        raise GateError(
            f"{name} v{version}: promotion refused, reviewer {reviewer} trained this model "
            "(a different person must review it)"
        )
    mlflow_client = client(tracking_uri)
    with promotion_lock(mlflow_client, name, holder=reviewer, timeout=lock_timeout):
        entries = _audit_from_tags(_get_model(mlflow_client, name).tags)
        current = _settle_champion(mlflow_client, name, entries)
        if current == version:
            raise GateError(f"{name} v{version}: already {CHAMPION}")
        compared = info.compared_with or "none"
        if policy.require_current_champion and compared != (current or "none"):
            raise GateError(
                f"{name} v{version}: promotion refused, its gates compared it with champion "
                f"{compared} but the champion now is {current or 'none'} (re-run the pipeline)"
            )
        entry = AuditEntry(
            seq=(entries[-1].seq + 1) if entries else 1,
            action="promote",
            from_version=current,
            to_version=version,
            reviewer=reviewer,
            reason=reason,
            at=_now(),
            trained_by=info.trained_by,
        )
        _record_change(mlflow_client, name, entry, previous=entries)
    log.info("%s v%s is %s (from %s), by %s", name, version, CHAMPION, current, reviewer)
    return entry


def rollback(
    *,
    reviewer: str,
    reason: str,
    policy: PromotionPolicy | None = None,
    tracking_uri: str | None = None,
    lock_timeout: float = 60.0,
) -> AuditEntry:
    """Return ``champion`` to the previous champion (audited); refuse when there is none."""
    policy = policy or PromotionPolicy()
    reviewer, reason = _check_text(reviewer, reason)
    name = policy.registered_model
    mlflow_client = client(tracking_uri)
    if _get_model(mlflow_client, name) is None:
        raise RegistryError(f"registry {name}: does not exist")
    with promotion_lock(mlflow_client, name, holder=reviewer, timeout=lock_timeout):
        entries = _audit_from_tags(_get_model(mlflow_client, name).tags)
        current = _settle_champion(mlflow_client, name, entries)
        stack = champion_stack(entries)
        if len(stack) < 2:
            raise GateError(f"registry {name}: no earlier champion to roll back to")
        target = stack[-2]
        info = get_version(target, policy=policy, tracking_uri=tracking_uri)
        entry = AuditEntry(
            seq=entries[-1].seq + 1,
            action="rollback",
            from_version=current,
            to_version=target,
            reviewer=reviewer,
            reason=reason,
            at=_now(),
            trained_by=info.trained_by,
        )
        _record_change(mlflow_client, name, entry, previous=entries)
    log.info("%s rolled back to v%s (from v%s), by %s", name, target, current, reviewer)
    return entry
