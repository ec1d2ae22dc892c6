"""Promotion gates: may a candidate model become ``challenger``, and later ``champion``?

Pure functions over metric dictionaries (the flat keys of :mod:`palsyseg.metrics`: ``f1_fpp``,
``f1_eye``, ...); no MLflow, no files except :func:`load_policy`, so every rule is unit-tested
on plain numbers. The policy lives in ``mlflow/promotion.yaml`` and is read once at the edge.

Gates (each one a :class:`GateResult`):

``primary_floor``
    the candidate's primary metric (FPP F1 by default) is at least ``min_primary``.
``vs_champion``
    the candidate's primary metric is at least the champion's minus ``champion_tolerance``
    (passes when there is no champion yet).
``class_drop``
    no class metric (per-class F1) falls more than ``max_class_drop`` below the champion's
    (F1 in [0, 1]: 0.05 is five points; passes when there is no champion yet).
``beats_baselines``
    the candidate's primary metric is strictly above every baseline's plus ``baseline_margin``
    (fails when no baseline was evaluated: "beats every baseline" must be shown, not assumed).

A metric that is missing or not a number fails the gate that needs it (never silently passes).

One policy makes champions. A pipeline run may be gated with relaxed thresholds (the demo's
``--gate min_primary=0``); the version records the thresholds and the measurements it was
gated with, and at promotion :func:`production_verdicts` re-decides every gate under the
production policy (``mlflow/promotion.yaml`` at the project root, :func:`load_policy`).
A gate that fails there blocks the promotion unless the production policy lists it in
``reviewer_may_override`` and the reviewer gives a reason for overriding it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from palsyseg.errors import ConfigError
from palsyseg.labels import FOREGROUND_LABELS

DEFAULT_POLICY_PATH = Path("mlflow/promotion.yaml")
GATE_NAMES: tuple[str, ...] = ("primary_floor", "vs_champion", "class_drop", "beats_baselines")
# The policy fields each gate reads; a gate was "relaxed" when one of them was looser.
GATE_FIELDS: dict[str, tuple[str, ...]] = {
    "primary_floor": ("primary_metric", "min_primary"),
    "vs_champion": ("primary_metric", "champion_tolerance"),
    "class_drop": ("max_class_drop", "class_metrics"),
    "beats_baselines": ("primary_metric", "beat_baselines", "baseline_margin"),
}


def _default_class_metrics() -> list[str]:
    return [f"f1_{label.name.lower()}" for label in FOREGROUND_LABELS]


@dataclass(frozen=True)
class PromotionPolicy:
    """The registry's rules, as written in ``mlflow/promotion.yaml``."""

    registered_model: str = "palsyseg"
    primary_metric: str = "f1_fpp"
    min_primary: float = 0.5
    champion_tolerance: float = 0.01
    max_class_drop: float = 0.05
    class_metrics: list[str] = field(default_factory=_default_class_metrics)
    beat_baselines: bool = True
    baseline_margin: float = 0.0
    # At promotion: the version must have been compared with the champion that is current now
    # (a comparison against a champion that has since been replaced proves nothing).
    require_current_champion: bool = True
    # Gates a reviewer may override at promotion, each with its own reason (audited).
    reviewer_may_override: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("min_primary", "champion_tolerance", "max_class_drop", "baseline_margin"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ConfigError(f"promotion policy: {name} must be a finite number, got {value}")
        for name in ("champion_tolerance", "max_class_drop"):
            if getattr(self, name) < 0:
                raise ConfigError(f"promotion policy: {name} must be >= 0")
        if not self.registered_model.strip():
            raise ConfigError("promotion policy: registered_model must not be empty")
        if not self.primary_metric.strip():
            raise ConfigError("promotion policy: primary_metric must not be empty")
        unknown = sorted(set(self.reviewer_may_override) - set(GATE_NAMES))
        if unknown:
            raise ConfigError(
                f"promotion policy: reviewer_may_override names unknown gate(s) "
                f"{', '.join(unknown)} (gates: {', '.join(GATE_NAMES)})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def thresholds(self) -> dict[str, Any]:
        """The fields that decide a gate (what a version records it was gated with)."""
        return {name: getattr(self, name) for name in THRESHOLD_FIELDS}


THRESHOLD_FIELDS: tuple[str, ...] = (
    "primary_metric",
    "min_primary",
    "champion_tolerance",
    "max_class_drop",
    "class_metrics",
    "beat_baselines",
    "baseline_margin",
)


def production_policy_path(project_root: Path | None = None) -> Path:
    """``<project>/mlflow/promotion.yaml``: the same project root the local store is found from
    (:func:`palsyseg.tracking.runs.local_tracking_uri`), whatever the current directory."""
    from palsyseg.runtime import find_project_root

    root = project_root or find_project_root() or Path.cwd()
    return (root / DEFAULT_POLICY_PATH).resolve()


def load_policy(path: str | os.PathLike[str] | None = None) -> PromotionPolicy:
    """Read a promotion policy YAML. ``None`` (or the default relative path
    ``mlflow/promotion.yaml``) means the production policy at the project root.

    A missing file raises :class:`ConfigError`: there are no built-in defaults to fall back on,
    because a registry gated by defaults nobody wrote down is a registry nobody can review.
    Unknown keys or wrong types raise :class:`ConfigError` naming the file and the key.
    """
    from palsyseg.params import load_params

    if path is None or Path(path) == DEFAULT_POLICY_PATH:
        path = production_policy_path()
        if not path.is_file():
            raise ConfigError(
                f"{path}: the production promotion policy is missing (looked for "
                f"{DEFAULT_POLICY_PATH} at the project root); palsyseg does not fall back to "
                "built-in thresholds"
            )
    path = Path(path)
    return policy_from_dict(load_params(path), where=str(path))


def policy_from_dict(data: Mapping[str, Any] | None, *, where: str = "gates") -> PromotionPolicy:
    """Build a policy from a mapping (the pipeline's ``gates`` parameter), refusing unknown keys."""
    from palsyseg.params import from_section

    return from_section(dict(data or {}), PromotionPolicy, where=where)


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict with a one-line human reason."""

    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateReport:
    """All gates for one candidate, in :data:`GATE_NAMES` order.

    ``inputs`` are the measurements the gates read (``{"candidate": {...}, "champion": {...} or
    None, "baselines": {name: {...}}}``, finite numbers only), kept so that the production
    policy can re-decide the gates later (:func:`production_verdicts`).
    """

    results: tuple[GateResult, ...]
    champion: str | None = None  # registry version the candidate was compared with
    inputs: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "passed": self.passed,
            "champion": self.champion,
            "results": [r.to_dict() for r in self.results],
        }
        if self.inputs is not None:
            out["inputs"] = self.inputs
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateReport:
        try:
            results = tuple(
                GateResult(str(r["name"]), bool(r["passed"]), str(r["detail"]))
                for r in data["results"]
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"gate report: malformed ({exc})") from None
        champion = data.get("champion")
        inputs = data.get("inputs")
        return cls(
            results,
            None if champion in (None, "") else str(champion),
            inputs if isinstance(inputs, dict) else None,
        )

    def summary(self) -> str:
        """``"pass"`` or ``"fail: name (detail); ..."`` — one line."""
        if self.passed:
            return "pass"
        return "fail: " + "; ".join(f"{r.name} ({r.detail})" for r in self.failed)


def _value(metrics: Mapping[str, float], key: str) -> float | None:
    value = metrics.get(key)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def check_primary_floor(candidate: Mapping[str, float], policy: PromotionPolicy) -> GateResult:
    """Candidate's primary metric >= ``min_primary``."""
    key = policy.primary_metric
    value = _value(candidate, key)
    if value is None:
        return GateResult("primary_floor", False, f"candidate has no finite {key}")
    ok = value >= policy.min_primary
    return GateResult(
        "primary_floor", ok, f"{key} {value:.4f} {'>=' if ok else '<'} floor {policy.min_primary}"
    )


def check_vs_champion(
    candidate: Mapping[str, float], champion: Mapping[str, float] | None, policy: PromotionPolicy
) -> GateResult:
    """Candidate's primary metric >= champion's minus ``champion_tolerance``."""
    key = policy.primary_metric
    if champion is None:
        return GateResult("vs_champion", True, "no champion yet")
    value, best = _value(candidate, key), _value(champion, key)
    if value is None:
        return GateResult("vs_champion", False, f"candidate has no finite {key}")
    if best is None:
        return GateResult("vs_champion", False, f"champion has no finite {key} to compare with")
    bar = best - policy.champion_tolerance
    ok = value >= bar
    return GateResult(
        "vs_champion",
        ok,
        f"{key} {value:.4f} {'>=' if ok else '<'} champion {best:.4f} - {policy.champion_tolerance}",
    )


def check_class_drop(
    candidate: Mapping[str, float], champion: Mapping[str, float] | None, policy: PromotionPolicy
) -> GateResult:
    """No class metric drops more than ``max_class_drop`` below the champion's.

    A class the champion has no finite value for (e.g. absent from its test split) is skipped;
    a class the candidate lacks while the champion has it fails.
    """
    if champion is None:
        return GateResult("class_drop", True, "no champion yet")
    drops: list[tuple[float, str]] = []
    for key in policy.class_metrics:
        best = _value(champion, key)
        if best is None:
            continue
        value = _value(candidate, key)
        if value is None:
            return GateResult("class_drop", False, f"candidate has no finite {key}")
        drops.append((best - value, key))
    if not drops:
        return GateResult("class_drop", False, "champion has none of the class metrics")
    worst, key = max(drops)
    ok = worst <= policy.max_class_drop + 1e-12
    return GateResult(
        "class_drop",
        ok,
        f"largest drop {key} {worst:+.4f} {'<=' if ok else '>'} {policy.max_class_drop}",
    )


def check_beats_baselines(
    candidate: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]],
    policy: PromotionPolicy,
) -> GateResult:
    """Candidate's primary metric > every baseline's + ``baseline_margin``."""
    if not policy.beat_baselines:
        return GateResult("beats_baselines", True, "not required by the policy")
    key = policy.primary_metric
    if not baselines:
        return GateResult("beats_baselines", False, "no baseline was evaluated")
    value = _value(candidate, key)
    if value is None:
        return GateResult("beats_baselines", False, f"candidate has no finite {key}")
    beaten: list[str] = []
    for name, metrics in sorted(baselines.items()):
        other = _value(metrics, key)
        if other is None:
            return GateResult("beats_baselines", False, f"baseline {name} has no finite {key}")
        if not value > other + policy.baseline_margin:
            return GateResult(
                "beats_baselines",
                False,
                f"{key} {value:.4f} does not beat {name} {other:.4f} + {policy.baseline_margin}",
            )
        beaten.append(f"{name} {other:.4f}")
    return GateResult("beats_baselines", True, f"{key} {value:.4f} > " + ", ".join(beaten))


def _finite_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
    if metrics is None:
        return None
    return {k: v for k in sorted(metrics) if (v := _value(metrics, k)) is not None}


def evaluate_gates(
    candidate: Mapping[str, float],
    *,
    champion: Mapping[str, float] | None,
    baselines: Mapping[str, Mapping[str, float]],
    policy: PromotionPolicy,
    champion_version: str | None = None,
) -> GateReport:
    """Every gate for one candidate; ``champion`` is ``None`` when the registry has none yet."""
    results = (
        check_primary_floor(candidate, policy),
        check_vs_champion(candidate, champion, policy),
        check_class_drop(candidate, champion, policy),
        check_beats_baselines(candidate, baselines, policy),
    )
    inputs = {
        "candidate": _finite_metrics(candidate),
        "champion": _finite_metrics(champion),
        "baselines": {name: _finite_metrics(m) for name, m in sorted(baselines.items())},
    }
    return GateReport(results, champion_version if champion is not None else None, inputs)


# --------------------------------------------------------------------------- the production policy


@dataclass(frozen=True)
class Relaxation:
    """One policy field a version was gated with more loosely than the production policy."""

    gate: str
    field: str
    used: Any
    production: Any

    def __str__(self) -> str:
        return f"{self.field} {_show(self.used)} (production {_show(self.production)})"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _looser(name: str, used: Any, production: PromotionPolicy) -> bool:
    """Whether threshold ``name`` at ``used`` lets through something ``production`` would not."""
    wanted = getattr(production, name)
    try:
        if name == "min_primary":
            return float(used) < wanted
        if name in ("champion_tolerance", "max_class_drop"):
            return float(used) > wanted
        if name == "baseline_margin":
            return production.beat_baselines and float(used) < wanted
        if name == "beat_baselines":
            return wanted and used is not True
        if name == "class_metrics":
            return not set(wanted) <= set(used)
    except (TypeError, ValueError):
        return True  # a recorded value that is not even the right type proves nothing
    return used != wanted  # primary_metric: another metric is not comparable


def relaxations(recorded: Mapping[str, Any], production: PromotionPolicy) -> list[Relaxation]:
    """Each (gate, field) that ``recorded`` thresholds set looser than ``production``.

    Stricter thresholds are not relaxations (passing a higher floor passes the lower one);
    a field ``recorded`` does not name is not known to be relaxed.
    """
    found = []
    for gate in GATE_NAMES:
        for name in GATE_FIELDS[gate]:
            if name in recorded and _looser(name, recorded[name], production):
                found.append(Relaxation(gate, name, recorded[name], getattr(production, name)))
    return found


def production_verdicts(
    recorded: Mapping[str, str],
    *,
    details: Mapping[str, str],
    thresholds: Mapping[str, Any],
    inputs: Mapping[str, Any] | None,
    production: PromotionPolicy,
) -> list[GateResult]:
    """Every gate re-decided under ``production``.

    With the measurements recorded at gating (``inputs``) the gates are simply evaluated again.
    Without them (versions registered before palsyseg kept them), a gate keeps its recorded
    verdict when it was gated at least as strictly as ``production``, and fails otherwise:
    a looser threshold that cannot be re-checked proves nothing.
    """
    if inputs and isinstance(inputs.get("candidate"), Mapping):
        return list(
            evaluate_gates(
                inputs["candidate"],
                champion=inputs.get("champion"),
                baselines=inputs.get("baselines") or {},
                policy=production,
            ).results
        )
    relaxed = relaxations(thresholds, production)
    results = []
    for gate in GATE_NAMES:
        loose = [r for r in relaxed if r.gate == gate]
        if loose:
            results.append(
                GateResult(
                    gate,
                    False,
                    f"gated with {', '.join(map(str, loose))}; its measurements were not "
                    "recorded, so it cannot be re-checked",
                )
            )
        else:
            results.append(
                GateResult(gate, recorded.get(gate) == "pass", details.get(gate, "not recorded"))
            )
    return results
