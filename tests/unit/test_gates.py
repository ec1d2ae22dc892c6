"""Promotion gates on plain numbers: every rule, its boundary and its failure message; the
production policy (found from the project root, never defaults) re-deciding relaxed gates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from palsyseg.errors import ConfigError
from palsyseg.tracking.gates import (
    GATE_NAMES,
    GateReport,
    PromotionPolicy,
    evaluate_gates,
    load_policy,
    policy_from_dict,
    production_policy_path,
    production_verdicts,
    relaxations,
)

POLICY = PromotionPolicy(
    min_primary=0.5,
    champion_tolerance=0.01,
    max_class_drop=0.05,
    class_metrics=["f1_eye", "f1_mouth", "f1_fpp"],
)


def metrics(fpp: float, eye: float = 0.8, mouth: float = 0.8) -> dict[str, float]:
    return {"f1_fpp": fpp, "f1_eye": eye, "f1_mouth": mouth, "miou": 0.5}


def gate(report: GateReport, name: str):
    return next(r for r in report.results if r.name == name)


def test_first_candidate_without_champion_passes_when_above_floor_and_baselines() -> None:
    report = evaluate_gates(
        metrics(0.7), champion=None, baselines={"unet_r18": metrics(0.6)}, policy=POLICY
    )
    assert report.passed, report.summary()
    assert [r.name for r in report.results] == list(GATE_NAMES)
    assert gate(report, "vs_champion").detail == "no champion yet"
    assert report.champion is None
    assert report.summary() == "pass"


@pytest.mark.parametrize(("fpp", "ok"), [(0.5, True), (0.4999, False), (0.9, True)])
def test_primary_floor_is_inclusive(fpp: float, ok: bool) -> None:
    report = evaluate_gates(
        metrics(fpp), champion=None, baselines={"b": metrics(0.1)}, policy=POLICY
    )
    assert gate(report, "primary_floor").passed is ok


@pytest.mark.parametrize(("fpp", "ok"), [(0.69, True), (0.6899, False), (0.75, True)])
def test_vs_champion_allows_the_tolerance_and_no_more(fpp: float, ok: bool) -> None:
    report = evaluate_gates(
        metrics(fpp),
        champion=metrics(0.70),
        baselines={"b": metrics(0.1)},
        policy=POLICY,
        champion_version="3",
    )
    assert gate(report, "vs_champion").passed is ok
    assert report.champion == "3"


def test_class_drop_names_the_worst_class() -> None:
    report = evaluate_gates(
        metrics(0.8, eye=0.70, mouth=0.79),
        champion=metrics(0.8, eye=0.80, mouth=0.80),
        baselines={"b": metrics(0.1)},
        policy=POLICY,
    )
    result = gate(report, "class_drop")
    assert not result.passed
    assert "f1_eye" in result.detail
    assert not report.passed
    assert "class_drop" in report.summary()


def test_class_drop_at_exactly_the_limit_passes() -> None:
    report = evaluate_gates(
        metrics(0.8, eye=0.75),
        champion=metrics(0.8, eye=0.80),
        baselines={"b": metrics(0.1)},
        policy=POLICY,
    )
    assert gate(report, "class_drop").passed


def test_class_drop_skips_classes_the_champion_never_measured() -> None:
    champion = metrics(0.8)
    champion["f1_eye"] = math.nan
    report = evaluate_gates(
        metrics(0.8, eye=0.0), champion=champion, baselines={"b": metrics(0.1)}, policy=POLICY
    )
    assert gate(report, "class_drop").passed


def test_beats_baselines_is_strict_and_names_the_baseline() -> None:
    report = evaluate_gates(
        metrics(0.7),
        champion=None,
        baselines={"deeplabv3plus_r34": metrics(0.6), "unet_r18": metrics(0.7)},
        policy=POLICY,
    )
    result = gate(report, "beats_baselines")
    assert not result.passed
    assert "unet_r18" in result.detail


def test_beats_baselines_with_a_margin() -> None:
    policy = PromotionPolicy(min_primary=0.0, baseline_margin=0.05)
    report = evaluate_gates(
        metrics(0.64), champion=None, baselines={"b": metrics(0.6)}, policy=policy
    )
    assert not gate(report, "beats_baselines").passed
    report = evaluate_gates(
        metrics(0.66), champion=None, baselines={"b": metrics(0.6)}, policy=policy
    )
    assert gate(report, "beats_baselines").passed


def test_no_baselines_fails_unless_the_policy_waives_it() -> None:
    report = evaluate_gates(metrics(0.9), champion=None, baselines={}, policy=POLICY)
    assert not gate(report, "beats_baselines").passed
    waived = PromotionPolicy(beat_baselines=False)
    report = evaluate_gates(metrics(0.9), champion=None, baselines={}, policy=waived)
    assert gate(report, "beats_baselines").passed


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, "x"])
def test_missing_or_non_finite_candidate_metric_fails_every_gate_that_needs_it(bad) -> None:
    candidate = metrics(0.9)
    if bad is None:
        del candidate["f1_fpp"]
    else:
        candidate["f1_fpp"] = bad
    report = evaluate_gates(
        candidate, champion=metrics(0.5), baselines={"b": metrics(0.1)}, policy=POLICY
    )
    for name in ("primary_floor", "vs_champion", "class_drop", "beats_baselines"):
        assert not gate(report, name).passed, name
        assert "f1_fpp" in gate(report, name).detail


def test_report_round_trips_through_a_dict() -> None:
    report = evaluate_gates(
        metrics(0.7),
        champion=metrics(0.9),
        baselines={"b": metrics(0.1)},
        policy=POLICY,
        champion_version="2",
    )
    again = GateReport.from_dict(report.to_dict())
    assert again == report
    assert not again.passed


def test_load_policy_reads_the_committed_file() -> None:
    path = Path(__file__).resolve().parents[2] / "mlflow" / "promotion.yaml"
    policy = load_policy(path)
    assert policy.registered_model == "palsyseg"
    assert policy.primary_metric == "f1_fpp"
    assert "f1_fpp" in policy.class_metrics
    assert policy.reviewer_may_override == ["beats_baselines"]


def test_policy_refuses_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "promotion.yaml"
    path.write_text("min_primary: 0.5\nmax_drop: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"promotion.yaml.*max_drop"):
        load_policy(path)
    with pytest.raises(ConfigError, match="champion_tolerance"):
        policy_from_dict({"champion_tolerance": -0.1})
    with pytest.raises(ConfigError, match="min_primary"):
        policy_from_dict({"min_primary": "high"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "missing.yaml")


def test_relaxations_name_each_looser_threshold_and_ignore_stricter_ones() -> None:
    production = PromotionPolicy()
    demo = PromotionPolicy(min_primary=0.0, beat_baselines=False).thresholds()
    found = relaxations(demo, production)
    assert [(r.gate, r.field) for r in found] == [
        ("primary_floor", "min_primary"),
        ("beats_baselines", "beat_baselines"),
    ]
    assert [str(r) for r in found] == [
        "min_primary 0.0 (production 0.5)",
        "beat_baselines false (production true)",
    ]
    stricter = PromotionPolicy(
        min_primary=0.7, champion_tolerance=0.0, max_class_drop=0.01, baseline_margin=0.1,
        class_metrics=[*production.class_metrics, "f1_extra"],
    ).thresholds()  # fmt: skip
    assert relaxations(stricter, production) == []
    assert relaxations({}, production) == []  # nothing recorded: nothing known to be relaxed
    other_metric = relaxations({"primary_metric": "miou"}, production)
    assert [r.gate for r in other_metric] == ["primary_floor", "vs_champion", "beats_baselines"]
    fewer_classes = relaxations({"class_metrics": ["f1_fpp"]}, production)
    assert [(r.gate, r.field) for r in fewer_classes] == [("class_drop", "class_metrics")]
    assert "registered_model" not in production.thresholds()


def test_the_production_policy_re_decides_gates_from_the_recorded_measurements() -> None:
    relaxed = PromotionPolicy(min_primary=0.0, beat_baselines=False)
    report = evaluate_gates(
        metrics(0.08), champion=None, baselines={"unet_r18": metrics(0.12)}, policy=relaxed
    )
    assert report.passed  # what the demo registers
    assert report.inputs["candidate"]["f1_fpp"] == 0.08
    assert report.inputs["baselines"] == {"unet_r18": metrics(0.12)}
    verdicts = production_verdicts(
        {r.name: "pass" for r in report.results},
        details={r.name: r.detail for r in report.results},
        thresholds=relaxed.thresholds(),
        inputs=report.inputs,
        production=POLICY,
    )
    failed = {r.name: r.detail for r in verdicts if not r.passed}
    assert failed == {
        "primary_floor": "f1_fpp 0.0800 < floor 0.5",
        "beats_baselines": "f1_fpp 0.0800 does not beat unet_r18 0.1200 + 0.0",
    }


def test_without_measurements_a_relaxed_gate_cannot_pass_the_production_policy() -> None:
    recorded = dict.fromkeys(GATE_NAMES, "pass")
    verdicts = production_verdicts(
        recorded,
        details={"vs_champion": "no champion yet"},
        thresholds=PromotionPolicy(min_primary=0.1).thresholds(),
        inputs=None,
        production=POLICY,
    )
    by_name = {r.name: r for r in verdicts}
    assert not by_name["primary_floor"].passed
    assert by_name["primary_floor"].detail == (
        "gated with min_primary 0.1 (production 0.5); its measurements were not recorded, "
        "so it cannot be re-checked"
    )
    assert by_name["vs_champion"].passed and by_name["vs_champion"].detail == "no champion yet"


def test_non_finite_measurements_are_not_kept() -> None:
    candidate = metrics(0.7)
    candidate["f1_eye"] = math.nan
    report = evaluate_gates(candidate, champion=None, baselines={"b": metrics(0.1)}, policy=POLICY)
    assert "f1_eye" not in report.inputs["candidate"]
    assert GateReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_the_production_policy_is_found_from_the_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "promotion.yaml").write_text(
        "registered_model: from-root\nreviewer_may_override: [beats_baselines]\n"
    )
    deep = tmp_path / "src" / "deeper"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert production_policy_path() == tmp_path / "mlflow" / "promotion.yaml"
    assert load_policy().registered_model == "from-root"
    assert load_policy(Path("mlflow/promotion.yaml")).reviewer_may_override == ["beats_baselines"]


def test_a_missing_production_policy_is_an_error_not_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="production promotion policy is missing") as missing:
        load_policy()
    assert str(tmp_path / "mlflow" / "promotion.yaml") in str(missing.value)
    assert "does not fall back" in str(missing.value)


def test_only_real_gates_may_be_overridable() -> None:
    with pytest.raises(ConfigError, match="reviewer_may_override names unknown gate"):
        policy_from_dict({"reviewer_may_override": ["primary_floor", "vibes"]})
