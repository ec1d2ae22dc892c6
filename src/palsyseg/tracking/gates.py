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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def thresholds(self) -> dict[str, Any]:
        """The fields that decide a gate (what a version records it was gated with)."""
        return {name: getattr(self, name) for name in THRESHOLD_FIELDS}

    def differences(self, recorded: Mapping[str, Any]) -> list[str]:
        """``"min_primary 0.0 -> 0.5"`` for each threshold ``recorded`` sets differently."""
        changed = []
        for name, value in self.thresholds().items():
            if name in recorded and recorded[name] != value:
                changed.append(f"{name} {recorded[name]!r} -> {value!r}")
        return changed


THRESHOLD_FIELDS: tuple[str, ...] = (
    "primary_metric",
    "min_primary",
    "champion_tolerance",
    "max_class_drop",
    "class_metrics",
    "beat_baselines",
    "baseline_margin",
)


def load_policy(path: str | os.PathLike[str] = DEFAULT_POLICY_PATH) -> PromotionPolicy:
    """Read a promotion policy YAML; a missing default file gives the built-in defaults.

    Unknown keys or wrong types raise :class:`ConfigError` naming the file and the key.
    """
    from palsyseg.params import load_params

    path = Path(path)
    if not path.is_file() and path == DEFAULT_POLICY_PATH:
        return PromotionPolicy()
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
    """All gates for one candidate, in :data:`GATE_NAMES` order."""

    results: tuple[GateResult, ...]
    champion: str | None = None  # registry version the candidate was compared with

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "champion": self.champion,
            "results": [r.to_dict() for r in self.results],
        }

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
        return cls(results, None if champion in (None, "") else str(champion))

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
    return GateReport(results, champion_version if champion is not None else None)
