"""The reviewer's changes of ``champion``: promote, roll back, retire, repair — all audited.

One policy makes champions: :func:`promote` re-decides the version's gates under the production
policy (``mlflow/promotion.yaml`` at the project root) from the thresholds and measurements the
version recorded, whatever thresholds its pipeline run used. A gate that fails there blocks
the promotion, unless the policy lists it in ``reviewer_may_override`` and the reviewer gives
that override its own reason; the override (gate, threshold used, production threshold, why)
goes into the audit entry. A refusal names every reason at once, with the numbers.

Identities (:mod:`palsyseg.tracking.identity`): on a server with authentication the reviewer
is the authenticated user and needs MANAGE on the registered model; the trainer is who the
version records (the authenticated registrant, and the declared name beside it). Locally both
are declared names, normalised. Nobody reviews a model they trained.

Every change runs under the promotion lock (:mod:`palsyseg.tracking.lock`), reads and verifies
the audit trail (:mod:`palsyseg.tracking.audit`), finishes a change a crash left half-done,
refuses to build on a broken trail (only :func:`repair` may), then writes the entry, moves the
alias, writes the head, and reads everything back. The trail is the truth and the alias
follows it: even a repair puts ``champion`` back where the trail says, so the only way to a
new champion is :func:`promote`, under the policy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from palsyseg.errors import GateError, Problem
from palsyseg.tracking import audit, identity
from palsyseg.tracking.audit import AuditEntry, TrailCheck
from palsyseg.tracking.gates import (
    GATE_FIELDS,
    GATE_NAMES,
    PromotionPolicy,
    load_policy,
    production_verdicts,
    relaxations,
)
from palsyseg.tracking.lock import promotion_lock
from palsyseg.tracking.registry import (
    CHAMPION,
    RegistryError,
    VersionInfo,
    alias_version,
    find_model,
    get_version,
    read_trail,
)
from palsyseg.tracking.runs import client, resolve_tracking_uri

log = logging.getLogger(__name__)

MAX_REASON = 1000
REPAIR_HINT = "palsyseg registry repair --reviewer NAME --reason WHY"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _reason(reason: str, flag: str = "--reason") -> str:
    reason = identity.visible_text(reason)
    if not reason:
        raise GateError(f"{flag}: a reason is required for the audit trail")
    return reason[:MAX_REASON]


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


# --------------------------------------------------------------------------- reviewing a version


def review(
    info: VersionInfo,
    reviewer: identity.Identity,
    production: PromotionPolicy,
    overrides: Mapping[str, str] | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """``(reasons to refuse, overrides accepted)`` for ``reviewer`` making ``info`` champion
    under ``production``; pure, so every rule is tested on values."""
    overrides = {g.strip(): r for g, r in (overrides or {}).items()}
    problems: list[str] = []
    accepted: list[dict[str, Any]] = []
    for gate in sorted(set(overrides) - set(GATE_NAMES)):
        problems.append(f"--override {gate}: no such gate (gates: {', '.join(GATE_NAMES)})")

    recorded = {g: info.gates.get(g) for g in GATE_NAMES}
    if info.gates_passed is None or not info.gates:
        problems.append("no gate results recorded (registered outside the pipeline?)")
    elif info.gates_passed is not True or any(v != "pass" for v in recorded.values()):
        for gate, verdict in recorded.items():
            if verdict != "pass":
                detail = info.gate_details.get(gate) or "not recorded"
                problems.append(f"gate {gate} did not pass when registered ({detail})")
    elif not info.policy:
        problems.append("the thresholds it was gated with are not recorded")
    else:
        relaxed = relaxations(info.policy, production)
        verdicts = production_verdicts(
            info.gates,
            details=info.gate_details,
            thresholds=info.policy,
            inputs=info.inputs or None,
            production=production,
        )
        for result in verdicts:
            gate = result.name
            why = overrides.get(gate)
            if result.passed:
                if gate in overrides:
                    problems.append(
                        f"--override {gate}: the gate passes under the production policy "
                        "(nothing to override)"
                    )
                continue
            loose = [str(r) for r in relaxed if r.gate == gate]
            gated = f"; it was gated with {', '.join(loose)}" if loose else ""
            failing = f"{gate} fails the production policy: {result.detail}{gated}"
            if why is None:
                hint = (
                    f" (a reviewer may override it: --override {gate}=REASON)"
                    if gate in production.reviewer_may_override
                    else ""
                )
                problems.append(failing + hint)
            elif gate not in production.reviewer_may_override:
                problems.append(
                    f"{failing}; mlflow/promotion.yaml does not let a reviewer override {gate}"
                )
            elif not identity.visible_text(why):
                problems.append(f"--override {gate}: the override needs its own reason")
            else:
                fields = GATE_FIELDS[gate]
                accepted.append(
                    {
                        "gate": gate,
                        "reason": identity.visible_text(why)[:MAX_REASON],
                        "used": {f: info.policy.get(f) for f in fields},
                        "production": {f: getattr(production, f) for f in fields},
                        "detail": result.detail,
                    }
                )

    if not info.trained_by or info.trained_by == "unknown":
        problems.append("the trainer is not recorded")
    elif identity.same_person(reviewer.name, info.trained_by) or identity.same_person(
        reviewer.name, info.trained_by_declared
    ):
        problems.append(
            f"reviewer {reviewer.name} trained this model (a different person must review it)"
        )
    return problems, accepted


def _stale(info: VersionInfo, current: str | None, production: PromotionPolicy) -> list[str]:
    if info.version == current:
        return [f"already {CHAMPION}"]
    compared = info.compared_with if info.compared_with not in ("", "none") else None
    if production.require_current_champion and compared != current:
        return [
            f"its gates compared it with champion {_v(compared)} but the champion now is "
            f"{_v(current)} (re-run the pipeline)"
        ]
    return []


def _broken(trail: TrailCheck) -> list[str]:
    return [f"the audit trail is broken: {p}" for p in trail.problems]


def _refuse(subject: str, verb: str, problems: list[str]) -> GateError:
    return GateError([Problem(subject, f"{verb} refused: {p}") for p in problems])


# --------------------------------------------------------------------------- writing the trail


def _settle(mlflow_client: Any, name: str, action: str, *, repairing: bool = False) -> TrailCheck:
    """The verified trail inside the lock, after finishing a change a crash left half-done.

    Refuses (:class:`RegistryError`, one line per break) when the trail is broken, unless
    ``repairing``.
    """
    trail = read_trail(mlflow_client, name)
    if trail.pending and trail.last is not None:
        last = trail.last
        log.warning("finishing the change of audit entry %d (-> %s)", last.seq, _v(last.to_version))
        _point_champion(mlflow_client, name, last.to_version)
        mlflow_client.set_registered_model_tag(
            name, audit.HEAD_KEY, audit.head_value(last.seq, trail.raw[last.seq])
        )
        trail = read_trail(mlflow_client, name)
    if trail.problems and not repairing:
        raise RegistryError(
            [Problem(f"registry {name}", f"{action} refused, the audit trail is broken: {p}")
             for p in trail.problems]
            + [Problem(f"registry {name}", f"a reviewer records a repair entry first: {REPAIR_HINT}")]
        )  # fmt: skip
    return trail


def _point_champion(mlflow_client: Any, name: str, version: str | None) -> None:
    if version is not None:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    elif alias_version(mlflow_client, name, CHAMPION) is not None:
        mlflow_client.delete_registered_model_alias(name, CHAMPION)


def _record(mlflow_client: Any, name: str, entry: AuditEntry) -> AuditEntry:
    """Write the entry, move the alias, write the head, read all back (inside the lock)."""
    key = audit.entry_key(entry.seq)
    model = find_model(mlflow_client, name)
    if model is not None and key in (model.tags or {}):
        raise RegistryError(f"registry {name}: audit entry {key} already exists")
    text = entry.to_json()
    mlflow_client.set_registered_model_tag(name, key, text)
    _point_champion(mlflow_client, name, entry.to_version)
    mlflow_client.set_registered_model_tag(name, audit.HEAD_KEY, audit.head_value(entry.seq, text))
    trail = read_trail(mlflow_client, name)
    if trail.problems or trail.pending or trail.last != entry:
        raise RegistryError(
            f"registry {name}: the audit trail changed during the {entry.action} "
            f"({'; '.join(trail.problems) or 'entry not read back'})"
        )
    return entry


def _acting(
    reviewer: str | None, uri: str, name: str, action: str
) -> tuple[identity.Identity, list[str]]:
    who = identity.resolve(reviewer, uri)
    refusal = identity.require_manage(who, uri, name, action)
    return who, [refusal] if refusal else []


def _exists(version: str, policy: PromotionPolicy, uri: str) -> bool:
    try:
        get_version(version, policy=policy, tracking_uri=uri)
    except RegistryError:
        return False
    return True


# --------------------------------------------------------------------------- the changes


def promote(
    version: str,
    *,
    reviewer: str | None,
    reason: str,
    policy: PromotionPolicy | None = None,
    tracking_uri: str | None = None,
    overrides: Mapping[str, str] | None = None,
    lock_timeout: float = 60.0,
) -> AuditEntry:
    """Move ``champion`` to ``version`` for ``reviewer``; return the audit entry written.

    ``policy`` is the policy in force (default, and the only one the CLI uses: the production
    policy file). ``overrides`` maps a gate to the reviewer's reason for overriding it.
    Refuses with :class:`GateError`, naming every reason at once (see :func:`review`, plus:
    the reviewer lacks MANAGE, the trail is broken, the version already is champion, or it was
    compared with another champion than the current one under ``require_current_champion``).
    """
    production = policy or load_policy()
    name = production.registered_model
    reason = _reason(reason)
    uri = resolve_tracking_uri(tracking_uri)
    version = str(version).strip().lstrip("v")
    who, problems = _acting(reviewer, uri, name, "promote")
    info = get_version(version, policy=production, tracking_uri=uri)
    found, accepted = review(info, who, production, overrides)
    problems += found
    mlflow_client = client(uri)
    trail = read_trail(mlflow_client, name)  # a first look, to list every reason at once
    problems += _broken(trail) or _stale(info, trail.expected, production)
    if problems:
        raise _refuse(f"{name} v{version}", "promotion", problems)
    with promotion_lock(mlflow_client, name, holder=who.name, timeout=lock_timeout):
        trail = _settle(mlflow_client, name, "promotion")
        current = trail.expected
        stale = _stale(info, current, production)
        if stale:
            raise _refuse(f"{name} v{version}", "promotion", stale)
        entry = AuditEntry(
            seq=trail.next_seq(),
            action="promote",
            from_version=current,
            to_version=version,
            reviewer=who.name,
            reason=reason,
            at=_now(),
            trained_by=info.trained_by,
            identity=who.mode,
            overrides=tuple(accepted),
            prev_hash=trail.next_prev_hash(),
        )
        _record(mlflow_client, name, entry)
    log.info("%s v%s is %s (from %s), by %s", name, version, CHAMPION, current, who.name)
    return entry


def rollback(
    *,
    reviewer: str | None,
    reason: str,
    policy: PromotionPolicy | None = None,
    tracking_uri: str | None = None,
    lock_timeout: float = 60.0,
) -> AuditEntry:
    """Return ``champion`` to the one before it (audited); refuse when there is none."""
    return _step_back("rollback", reviewer, reason, policy, tracking_uri, lock_timeout)


def retire(
    *,
    reviewer: str | None,
    reason: str,
    policy: PromotionPolicy | None = None,
    tracking_uri: str | None = None,
    lock_timeout: float = 60.0,
) -> AuditEntry:
    """Leave no champion (audited: champion -> none); a later rollback restores it."""
    return _step_back("retire", reviewer, reason, policy, tracking_uri, lock_timeout)


def _step_back(
    action: str,
    reviewer: str | None,
    reason: str,
    policy: PromotionPolicy | None,
    tracking_uri: str | None,
    lock_timeout: float,
) -> AuditEntry:
    production = policy or load_policy()
    name = production.registered_model
    reason = _reason(reason)
    uri = resolve_tracking_uri(tracking_uri)
    mlflow_client = client(uri)
    if find_model(mlflow_client, name) is None:
        raise RegistryError(f"registry {name}: does not exist")
    who, problems = _acting(reviewer, uri, name, action)
    if problems:
        raise _refuse(f"registry {name}", action, problems)
    with promotion_lock(mlflow_client, name, holder=who.name, timeout=lock_timeout):
        trail = _settle(mlflow_client, name, action)
        stack = audit.champion_stack(trail.entries)
        current = stack[-1] if stack else None
        if action == "retire":
            if current is None:
                raise GateError(f"registry {name}: there is no champion to retire")
            target = None
        else:
            if len(stack) < 2:
                raise GateError(
                    f"registry {name}: no earlier champion to roll back to (to leave no "
                    "champion: palsyseg registry retire)"
                )
            target = stack[-2]
        trained_by = ""
        if target is not None:
            trained_by = get_version(target, policy=production, tracking_uri=uri).trained_by
        entry = AuditEntry(
            seq=trail.next_seq(),
            action=action,
            from_version=current,
            to_version=target,
            reviewer=who.name,
            reason=reason,
            at=_now(),
            trained_by=trained_by,
            identity=who.mode,
            prev_hash=trail.next_prev_hash(),
        )
        _record(mlflow_client, name, entry)
    log.info("%s %s: champion %s -> %s, by %s", name, action, _v(current), _v(target), who.name)
    return entry


def repair(
    *,
    reviewer: str | None,
    reason: str,
    policy: PromotionPolicy | None = None,
    tracking_uri: str | None = None,
    lock_timeout: float = 60.0,
) -> AuditEntry | None:
    """Mend a broken trail: the entry lists every break, puts ``champion`` back where the trail
    says (the alias follows the trail; only promote, under the policy, picks a new champion)
    and seals every earlier entry, so the breaks are recorded and later edits still caught.

    Returns ``None`` when there was nothing to repair except a change a crash left half-done,
    which is finished instead; refuses (:class:`RegistryError`) when the trail is intact.
    """
    production = policy or load_policy()
    name = production.registered_model
    reason = _reason(reason)
    uri = resolve_tracking_uri(tracking_uri)
    mlflow_client = client(uri)
    if find_model(mlflow_client, name) is None:
        raise RegistryError(f"registry {name}: does not exist")
    who, problems = _acting(reviewer, uri, name, "repair")
    if problems:
        raise _refuse(f"registry {name}", "repair", problems)
    with promotion_lock(mlflow_client, name, holder=who.name, timeout=lock_timeout):
        before = read_trail(mlflow_client, name)
        trail = _settle(mlflow_client, name, "repair", repairing=True)
        if trail.ok:
            if before.pending:
                return None
            raise RegistryError(f"registry {name}: the audit trail is intact; nothing to repair")
        breaks = list(trail.problems)
        target = trail.expected
        if target is not None and not _exists(target, production, uri):
            breaks.append(f"v{target}, where the trail puts champion, no longer exists")
            target = None
        entry = AuditEntry(
            seq=trail.next_seq(),
            action="repair",
            from_version=trail.alias,
            to_version=target,
            reviewer=who.name,
            reason=reason,
            at=_now(),
            identity=who.mode,
            repaired=tuple(breaks),
            prev_hash=audit.sealed_digest(trail.raw),
        )
        _record(mlflow_client, name, entry)
    log.info("%s audit trail repaired by %s: %s", name, who.name, "; ".join(entry.repaired))
    return entry
