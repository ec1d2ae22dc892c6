"""Reviewing a version for promotion, on values: one policy decides, every reason at once.

:func:`palsyseg.tracking.champion.review` is pure (a version's recorded tags, the reviewer, the
production policy, the overrides asked for); the integration tests prove the same rules reach
the registry and the command line.
"""

from __future__ import annotations

import json

from palsyseg.tracking.champion import review
from palsyseg.tracking.gates import GATE_NAMES, PromotionPolicy, evaluate_gates
from palsyseg.tracking.identity import Identity
from palsyseg.tracking.registry import VersionInfo

PRODUCTION = PromotionPolicy(reviewer_may_override=["beats_baselines"])
RITA = Identity("rita", "declared")


def metrics(fpp: float) -> dict[str, float]:
    return {
        "f1_fpp": fpp,
        "f1_skin": 0.9,
        "f1_hair": 0.8,
        "f1_eyebrow": 0.7,
        "f1_eye": 0.7,
        "f1_mouth": 0.75,
    }


def version(
    fpp: float, baseline: float, *, gated_with: PromotionPolicy, trained_by: str = "alice", **kw
) -> VersionInfo:
    """A version as register_challenger records it after a pipeline run gated ``gated_with``."""
    report = evaluate_gates(
        metrics(fpp), champion=None, baselines={"unet_r18": metrics(baseline)}, policy=gated_with
    )
    assert report.passed
    return VersionInfo(
        version="1",
        run_id="r",
        aliases=("challenger",),
        trained_by=trained_by,
        created="",
        data_version="",
        code_version="",
        metrics=metrics(fpp),
        gates_passed=True,
        gates={r.name: "pass" for r in report.results},
        compared_with="none",
        policy=json.loads(json.dumps(gated_with.thresholds())),
        gate_details={r.name: r.detail for r in report.results},
        inputs=json.loads(json.dumps(report.inputs)),
        **kw,
    )


DEMO = PromotionPolicy(min_primary=0.0, beat_baselines=False)


def test_the_demo_version_is_refused_with_every_reason_and_its_numbers() -> None:
    problems, accepted = review(version(0.08, 0.12, gated_with=DEMO), RITA, PRODUCTION)
    assert accepted == []
    assert problems == [
        "primary_floor fails the production policy: f1_fpp 0.0800 < floor 0.5; it was gated "
        "with min_primary 0.0 (production 0.5)",
        "beats_baselines fails the production policy: f1_fpp 0.0800 does not beat unet_r18 "
        "0.1200 + 0.0; it was gated with beat_baselines false (production true) (a reviewer may "
        "override it: --override beats_baselines=REASON)",
    ]


def test_gates_the_policy_does_not_let_a_reviewer_override_stay_refused() -> None:
    problems, accepted = review(
        version(0.08, 0.12, gated_with=DEMO),
        RITA,
        PRODUCTION,
        {"primary_floor": "demo", "beats_baselines": "4.5x faster than the baseline"},
    )
    assert problems == [
        "primary_floor fails the production policy: f1_fpp 0.0800 < floor 0.5; it was gated "
        "with min_primary 0.0 (production 0.5); mlflow/promotion.yaml does not let a reviewer "
        "override primary_floor"
    ]
    assert [o["gate"] for o in accepted] == ["beats_baselines"]


def test_an_allowed_override_is_accepted_with_both_thresholds_and_its_reason() -> None:
    relaxed = PromotionPolicy(beat_baselines=False)
    problems, accepted = review(
        version(0.61, 0.65, gated_with=relaxed),
        RITA,
        PRODUCTION,
        {"beats_baselines": "  ties unet_r18 at a quarter of the latency "},
    )
    assert problems == []
    assert accepted == [
        {
            "gate": "beats_baselines",
            "reason": "ties unet_r18 at a quarter of the latency",
            "used": {"primary_metric": "f1_fpp", "beat_baselines": False, "baseline_margin": 0.0},
            "production": {
                "primary_metric": "f1_fpp",
                "beat_baselines": True,
                "baseline_margin": 0.0,
            },
            "detail": "f1_fpp 0.6100 does not beat unet_r18 0.6500 + 0.0",
        }
    ]


def test_a_relaxed_version_that_meets_the_production_policy_needs_no_override() -> None:
    problems, accepted = review(version(0.7, 0.5, gated_with=DEMO), RITA, PRODUCTION)
    assert (problems, accepted) == ([], [])
    problems, _ = review(
        version(0.7, 0.5, gated_with=DEMO), RITA, PRODUCTION, {"beats_baselines": "x"}
    )
    assert problems == [
        "--override beats_baselines: the gate passes under the production policy (nothing to "
        "override)"
    ]


def test_overrides_need_a_reason_and_a_real_gate() -> None:
    problems, accepted = review(
        version(0.61, 0.65, gated_with=PromotionPolicy(beat_baselines=False)),
        RITA,
        PRODUCTION,
        {"beats_baselines": " \u200b ", "vibes": "trust me"},
    )
    assert accepted == []
    assert problems[0].startswith("--override vibes: no such gate")
    assert problems[1] == "--override beats_baselines: the override needs its own reason"


def test_the_trainer_may_not_review_however_the_name_is_typed() -> None:
    info = version(0.7, 0.5, gated_with=PRODUCTION, trained_by="alice")
    for typed in ("alice", "Ali\u200bce"):
        from palsyseg.tracking.identity import normalise_name

        problems, _ = review(info, Identity(normalise_name(typed), "declared"), PRODUCTION)
        assert problems == ["reviewer alice trained this model (a different person must review it)"]
    # On a server the registrant may be a service account; the declared trainer counts too.
    info = version(
        0.7, 0.5, gated_with=PRODUCTION, trained_by="kfp-robot", trained_by_declared="alice"
    )
    problems, _ = review(info, Identity("alice", "basic-auth", "alice"), PRODUCTION)
    assert problems == ["reviewer alice trained this model (a different person must review it)"]


def test_versions_without_a_gating_record_are_refused() -> None:
    bare = VersionInfo("2", "r", (), "alice", "", "", "", {}, None)
    assert review(bare, RITA, PRODUCTION)[0] == [
        "no gate results recorded (registered outside the pipeline?)"
    ]
    unknown = VersionInfo(
        "2", "r", (), "alice", "", "", "", {}, True, dict.fromkeys(GATE_NAMES, "pass")
    )
    assert review(unknown, RITA, PRODUCTION)[0] == [
        "the thresholds it was gated with are not recorded"
    ]
    failed = VersionInfo(
        "2", "r", (), "", "", "", "", {}, False,
        {**dict.fromkeys(GATE_NAMES, "pass"), "class_drop": "fail"},
        gate_details={"class_drop": "largest drop f1_eye +0.1000 > 0.05"},
    )  # fmt: skip
    assert review(failed, RITA, PRODUCTION)[0] == [
        "gate class_drop did not pass when registered (largest drop f1_eye +0.1000 > 0.05)",
        "the trainer is not recorded",
    ]
