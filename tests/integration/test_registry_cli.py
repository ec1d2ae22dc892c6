"""The reviewer's commands on the embedded default store (sqlite under ``mlflow/``, no server).

Proves the default needs no server and lands where promised; the production policy is found
from the project root and never replaced by defaults; a version gated under relaxed thresholds
is listed as such and refused under the production policy with every reason and its numbers,
unless the reviewer overrides what the policy allows (audited, listed); declared names are
normalised; tampering with the audit trail or the alias in MLflow is reported by ``list``,
``history`` and ``verify`` (exit 1) and blocks changes until a repair entry; the first
champion can be retired; racing ``palsyseg registry promote`` processes on one sqlite file
leave one champion and a gap-free audit trail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from palsyseg.tracking import audit, registry
from palsyseg.tracking.gates import GATE_NAMES, PromotionPolicy, evaluate_gates, load_policy
from palsyseg.tracking.runs import (
    RunContext,
    client,
    local_tracking_uri,
    log_json,
    resolve_tracking_uri,
    training_run,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (it has .git) as cwd, with the repo's promotion policy, no tracking URI."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "promotion.yaml").write_text(
        (REPO / "mlflow" / "promotion.yaml").read_text()
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def add_version(policy: PromotionPolicy, trained_by: str, compared_with: str = "none") -> str:
    """A version with passing gate tags on a run without a model (registry logic only)."""
    context = RunContext(dataset_version="sha256:x", code_version="c0ffee", trained_by=trained_by)
    with training_run(
        model_name="tiny", role="candidate", config={"seed": 1}, context=context
    ) as run:
        log_json(run.run_id, {"ok": True}, "note.json")
    mlflow_client = client()
    if registry.find_model(mlflow_client, policy.registered_model) is None:
        mlflow_client.create_registered_model(policy.registered_model)
    tags = {
        "trained_by": trained_by,
        "gates.passed": "true",
        "gates.champion": compared_with,
        "gates.policy": json.dumps(policy.thresholds()),
        "metric.f1_fpp": "0.61",
        **{f"gate.{g}": "pass" for g in GATE_NAMES},
    }
    mv = mlflow_client.create_model_version(
        policy.registered_model, source=f"runs:/{run.run_id}/model", run_id=run.run_id, tags=tags
    )
    return str(mv.version)


def scores(fpp: float) -> dict[str, float]:
    return {"f1_fpp": fpp, "f1_skin": 0.9, "f1_hair": 0.8, "f1_eyebrow": 0.7, "f1_eye": 0.7,
            "f1_mouth": 0.75, "mean_f1": 0.6}  # fmt: skip


def register_gated(fpp: float, baseline: float, gated_with: PromotionPolicy, trainer: str) -> str:
    """A version registered the pipeline's way (register_challenger) after gates decided under
    ``gated_with``; the "model" is a small file, the registry only needs its URI."""
    context = RunContext(dataset_version="sha256:x", code_version="c0ffee", trained_by=trainer)
    with training_run(
        model_name="tiny", role="candidate", config={"seed": 1}, context=context
    ) as run:
        log_json(run.run_id, {"ok": True}, "model.json")
    mlflow_client = client()
    artifacts = mlflow_client.get_run(run.run_id).info.artifact_uri
    mlflow_client.set_tag(run.run_id, "palsyseg.model_uri", f"{artifacts}/model.json")
    report = evaluate_gates(
        scores(fpp), champion=None, baselines={"unet_r18": scores(baseline)}, policy=gated_with
    )
    return registry.register_challenger(
        run.run_id, gate_report=report, metrics=scores(fpp), context=context, policy=gated_with
    )


def test_embedded_default_store_lives_under_mlflow(project: Path) -> None:
    uri = resolve_tracking_uri()
    assert uri == local_tracking_uri() == f"sqlite:///{project / 'mlflow' / 'mlflow.db'}"
    policy = PromotionPolicy()
    add_version(policy, "alice")
    assert (project / "mlflow" / "mlflow.db").is_file()
    notes = list((project / "mlflow" / "artifacts").rglob("note.json"))
    assert len(notes) == 1  # artifacts next to the database, not ./mlruns
    assert not (project / "mlruns").exists()


def test_reviewer_commands(project: Path, cli) -> None:
    policy = load_policy()
    assert "no versions yet" in cli("registry", "list").stdout
    v1 = add_version(policy, "alice")

    listed = cli("registry", "list")
    assert listed.code == 0
    assert "palsyseg" in listed.stdout and "alice" in listed.stdout and "0.6100" in listed.stdout
    assert listed.stderr == ""  # an empty trail is an intact one

    # The trainer, however the name is typed (case, zero-width space), may not review.
    for typed in ("alice", "Ali\u200bce"):
        refused = cli("registry", "promote", v1, "--reviewer", typed, "--reason", "mine")
        assert refused.code == 1
        assert refused.stderr.strip().splitlines() == [
            f"error: palsyseg v{v1}: promotion refused: reviewer alice trained this model "
            "(a different person must review it)"
        ]
    done = cli("registry", "promote", v1, "--reviewer", "bob", "--reason", "first model")
    assert done.code == 0, done.stderr
    assert f"v{v1} is champion" in done.stdout

    none_earlier = cli("registry", "rollback", "--reviewer", "bob", "--reason", "oops")
    assert none_earlier.code == 1
    assert "no earlier champion" in none_earlier.stderr and "registry retire" in none_earlier.stderr

    v2 = add_version(policy, "carol", compared_with=v1)
    assert cli("registry", "promote", v2, "--reviewer", "bob", "--reason", "better").code == 0
    back = cli("registry", "rollback", "--reviewer", "dave", "--reason", "regression on stroke")
    assert back.code == 0, back.stderr
    assert f"v{v2} -> v{v1}" in back.stdout

    # The first champion can be retired, and a rollback brings it back; all audited.
    retired = cli("registry", "retire", "--reviewer", "erin", "--reason", "recall problem")
    assert retired.code == 0, retired.stderr
    assert registry.champion_version() is None
    assert cli("registry", "rollback", "--reviewer", "erin", "--reason", "fixed upstream").code == 0
    assert registry.champion_version() == v1

    history = json.loads(cli("registry", "history", "--json").stdout)
    assert [
        (h["seq"], h["action"], h["from_version"], h["to_version"], h["reviewer"]) for h in history
    ] == [
        (1, "promote", None, v1, "bob"),
        (2, "promote", v1, v2, "bob"),
        (3, "rollback", v2, v1, "dave"),
        (4, "retire", v1, None, "erin"),
        (5, "rollback", None, v1, "erin"),
    ]
    assert all(h["identity"] == "declared" for h in history)
    assert "regression on stroke" in cli("registry", "history").stdout
    versions = {v["version"]: v for v in json.loads(cli("registry", "list", "--json").stdout)}
    assert versions[v1]["aliases"] == ["champion"]
    assert versions[v2]["aliases"] == []
    verified = cli("registry", "verify")
    assert verified.code == 0, verified.stderr
    assert verified.stdout.strip() == (
        f"palsyseg: audit trail intact, 5 entries; champion v{v1} where the trail put it "
        "(audit entry 5)"
    )


def test_the_policy_comes_from_the_project_root_and_never_from_defaults(
    project: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = add_version(load_policy(), "alice")
    deeper = project / "notebooks" / "review"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)  # same store, same policy, from anywhere inside the project
    listed = json.loads(cli("registry", "list", "--json").stdout)
    assert [v["version"] for v in listed] == [v1]
    (project / "mlflow" / "promotion.yaml").unlink()
    for args in (("list",), ("promote", v1, "--reviewer", "bob", "--reason", "x"), ("verify",)):
        missing = cli("registry", *args)
        assert missing.code == 1
        assert missing.stderr.splitlines() == [
            f"error: {project / 'mlflow' / 'promotion.yaml'}: the production promotion policy is "
            "missing (looked for mlflow/promotion.yaml at the project root); palsyseg does not "
            "fall back to built-in thresholds"
        ]
    assert registry.champion_version(policy=PromotionPolicy()) is None


def test_a_relaxed_version_is_shown_refused_with_numbers_or_promoted_over_an_override(
    project: Path, cli
) -> None:
    demo = PromotionPolicy(min_primary=0.0, beat_baselines=False)  # `make demo`'s gates
    v1 = register_gated(0.08, 0.12, demo, "tess")
    listed = cli("registry", "list", "--json")
    assert json.loads(listed.stdout)[0]["gates_text"] == (
        "pass (relaxed: min_primary 0.0 (production 0.5), beat_baselines false (production true))"
    )
    assert "pass (relaxed: min_primary 0.0" in cli("registry", "list").stdout

    refused = cli("registry", "promote", v1, "--reviewer", "rita", "--reason", "demo",
                  "--override", "primary_floor=it is only the demo")  # fmt: skip
    assert refused.code == 1
    assert refused.stderr.splitlines() == [
        f"error: palsyseg v{v1}: promotion refused: primary_floor fails the production policy: "
        "f1_fpp 0.0800 < floor 0.5; it was gated with min_primary 0.0 (production 0.5); "
        "mlflow/promotion.yaml does not let a reviewer override primary_floor",
        f"error: palsyseg v{v1}: promotion refused: beats_baselines fails the production policy: "
        "f1_fpp 0.0800 does not beat unet_r18 0.1200 + 0.0; it was gated with beat_baselines "
        "false (production true) (a reviewer may override it: --override beats_baselines=REASON)",
    ]
    # The old way round the policy is gone.
    old_way = cli("registry", "promote", v1, "--reviewer", "rita", "--reason", "x",
                  "--gate", "min_primary=0")  # fmt: skip
    assert old_way.code != 0 and "No such option: --gate" in old_way.stderr
    assert registry.champion_version() is None

    # Above the floor but tied with a baseline: beats_baselines is the reviewer's call.
    v2 = register_gated(0.61, 0.65, PromotionPolicy(beat_baselines=False), "tess")
    no_reason = cli("registry", "promote", v2, "--reviewer", "rita", "--reason", "fast",
                    "--override", "beats_baselines= ")  # fmt: skip
    assert no_reason.code == 1 and "the override needs its own reason" in no_reason.stderr
    done = cli("registry", "promote", v2, "--reviewer", "rita", "--reason", "ships on CPU",
               "--override", "beats_baselines=ties unet_r18 at a quarter of its latency")  # fmt: skip
    assert done.code == 0, done.stderr
    assert "override beats_baselines (beat_baselines false vs production true)" in done.stdout

    entry = json.loads(cli("registry", "history", "--json").stdout)[-1]
    assert entry["overrides"] == [
        {
            "gate": "beats_baselines",
            "reason": "ties unet_r18 at a quarter of its latency",
            "used": {"primary_metric": "f1_fpp", "beat_baselines": False, "baseline_margin": 0.0},
            "production": {
                "primary_metric": "f1_fpp",
                "beat_baselines": True,
                "baseline_margin": 0.0,
            },
            "detail": "f1_fpp 0.6100 does not beat unet_r18 0.6500 + 0.0",
        }
    ]
    table = cli("registry", "list").stdout
    assert "promoted over beats_baselines by rita (audit 1)" in table
    assert "pass (relaxed: beat_baselines false (production true))" in table
    assert "override beats_baselines" in cli("registry", "history").stdout
    assert cli("registry", "verify").code == 0


def test_tampering_in_mlflow_is_reported_blocks_changes_and_is_repaired(project: Path, cli) -> None:
    policy = load_policy()
    v1 = add_version(policy, "alice")
    v2 = add_version(policy, "alice", compared_with=v1)
    v3 = add_version(policy, "alice", compared_with=v2)
    for version in (v1, v2, v3):
        assert cli("registry", "promote", version, "--reviewer", "bob", "--reason", "ok").code == 0
    assert cli("registry", "verify").code == 0
    mlflow_client = client()

    # Someone moves champion in the MLflow UI.
    mlflow_client.set_registered_model_alias("palsyseg", "champion", v1)
    moved = "alias champion is on v1 but audit.000003 put it on v3: moved outside palsyseg"
    for command in ("list", "history"):
        shown = cli("registry", command)
        assert shown.code == 0
        assert f"warning: registry palsyseg: AUDIT TRAIL BROKEN: {moved}" in shown.stderr
    verify = cli("registry", "verify")
    assert verify.code == 1
    assert verify.stderr.splitlines() == [f"error: registry palsyseg: audit trail: {moved}"]

    # ... and deletes an entry, and edits another.
    mlflow_client.delete_registered_model_tag("palsyseg", "audit.000002")
    entry = json.loads(client().get_registered_model("palsyseg").tags["audit.000001"])
    entry["reviewer"] = "mallory"
    mlflow_client.set_registered_model_tag("palsyseg", "audit.000001", json.dumps(entry))
    report = json.loads(cli("registry", "verify", "--json").stdout)
    assert report["ok"] is False
    assert report["problems"] == [
        "audit.000002 deleted outside palsyseg (the sequence jumps from 1 to 3)",
        moved,
    ]  # entry 1's successor is gone, so its edit is hidden behind the deletion

    v4 = add_version(policy, "alice", compared_with=v3)
    refused = cli("registry", "promote", v4, "--reviewer", "bob", "--reason", "x")
    assert refused.code == 1
    assert (
        f"error: palsyseg v{v4}: promotion refused: the audit trail is broken: {moved}"
        in refused.stderr.splitlines()
    )
    rolled = cli("registry", "rollback", "--reviewer", "bob", "--reason", "x")
    assert rolled.code == 1
    assert "rollback refused, the audit trail is broken" in rolled.stderr
    assert "palsyseg registry repair --reviewer NAME --reason WHY" in rolled.stderr
    assert registry.champion_version() == v1

    repaired = cli("registry", "repair", "--reviewer", "carol", "--reason", "ticket 42: UI slip")  # fmt: skip
    assert repaired.code == 0, repaired.stderr
    assert f"2 break(s) recorded; champion v{v3} (was v1)" in repaired.stdout
    assert registry.champion_version() == v3  # the alias follows the trail, even now
    assert cli("registry", "verify").code == 0
    assert cli("registry", "list").stderr == ""
    last = json.loads(cli("registry", "history", "--json").stdout)[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("repair", v1, v3)
    assert last["repaired"] == report["problems"]
    assert "nothing to repair" in cli("registry", "repair", "--reviewer", "carol", "--reason", "again").stderr  # fmt: skip

    # After the repair: rollback does not cross it, the first champion since can be retired.
    assert "no earlier champion" in cli("registry", "rollback", "--reviewer", "bob", "--reason", "x").stderr  # fmt: skip
    assert cli("registry", "retire", "--reviewer", "bob", "--reason", "pause").code == 0
    assert registry.champion_version() is None
    assert cli("registry", "verify").code == 0

    # Deleting the newest entry (even with the alias put back to match) is caught by the head.
    mlflow_client.delete_registered_model_tag("palsyseg", audit.entry_key(5))
    mlflow_client.set_registered_model_alias("palsyseg", "champion", v3)
    assert json.loads(cli("registry", "verify", "--json").stdout)["problems"] == [
        "audit.000005 deleted outside palsyseg (audit.head names entry 5)"
    ]


def test_racing_promote_commands_on_one_sqlite_file(project: Path) -> None:
    policy_path = project / "mlflow" / "promotion.yaml"
    policy_path.write_text(policy_path.read_text().replace(
        "require_current_champion: true", "require_current_champion: false"
    ))  # fmt: skip
    policy = load_policy()
    assert not policy.require_current_champion
    versions = [add_version(policy, "alice") for _ in range(6)]
    by_process, by_thread = versions[:3], versions[3:]
    # Threads in this process and whole CLI processes, all against the same sqlite file.
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "palsyseg.cli",
                "registry",
                "promote",
                v,
                "--reviewer",
                f"proc-{i}",
                "--reason",
                "race",
            ],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, v in enumerate(by_process)
    ]
    errors: list[Exception] = []

    def promote(version: str, i: int) -> None:
        try:
            registry.promote(version, reviewer=f"thread-{i}", reason="race", policy=policy)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(v, i)) for i, v in enumerate(by_thread)]
    for t in threads:
        t.start()
    outputs = [p.communicate(timeout=240) for p in procs]
    for t in threads:
        t.join(240)
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert errors == []

    entries = registry.history(policy=policy)
    assert [e.seq for e in entries] == list(range(1, 7))
    current = None
    for entry in entries:
        assert entry.from_version == current
        current = entry.to_version
    assert sorted(e.reviewer for e in entries) == sorted(
        [f"proc-{i}" for i in range(3)] + [f"thread-{i}" for i in range(3)]
    )
    assert sorted(e.to_version for e in entries) == sorted(versions)
    assert registry.champion_version(policy=policy) == current
