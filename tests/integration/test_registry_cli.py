"""The reviewer's commands on the embedded default store (sqlite under ``mlflow/``, no server).

Proves the default needs no server and lands where promised, the CLI's refusals are one
clear line with exit 1, and racing ``palsyseg registry promote`` processes on one sqlite file
leave one champion and a gap-free audit trail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from palsyseg.tracking import registry
from palsyseg.tracking.gates import GATE_NAMES, PromotionPolicy
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
    if registry._get_model(mlflow_client, policy.registered_model) is None:
        mlflow_client.create_registered_model(policy.registered_model)
    tags = {
        "trained_by": trained_by,
        "gates.passed": "true",
        "gates.champion": compared_with,
        "metric.f1_fpp": "0.61",
        **{f"gate.{g}": "pass" for g in GATE_NAMES},
    }
    mv = mlflow_client.create_model_version(
        policy.registered_model, source=f"runs:/{run.run_id}/model", run_id=run.run_id, tags=tags
    )
    return str(mv.version)


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
    policy = PromotionPolicy()
    assert "no versions yet" in cli("registry", "list").stdout
    v1 = add_version(policy, "alice")

    listed = cli("registry", "list")
    assert listed.code == 0
    assert "palsyseg" in listed.stdout and "alice" in listed.stdout and "0.6100" in listed.stdout

    refused = cli("registry", "promote", v1, "--reviewer", "alice", "--reason", "mine")
    assert refused.code == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: palsyseg v{v1}: promotion refused, reviewer alice trained this model "
        "(a different person must review it)"
    ]
    done = cli("registry", "promote", v1, "--reviewer", "bob", "--reason", "first model")
    assert done.code == 0, done.stderr
    assert f"v{v1} is champion" in done.stdout

    none_earlier = cli("registry", "rollback", "--reviewer", "bob", "--reason", "oops")
    assert none_earlier.code == 1
    assert "no earlier champion" in none_earlier.stderr

    v2 = add_version(policy, "carol", compared_with=v1)
    assert cli("registry", "promote", v2, "--reviewer", "bob", "--reason", "better").code == 0
    back = cli("registry", "rollback", "--reviewer", "dave", "--reason", "regression on stroke")
    assert back.code == 0, back.stderr
    assert f"v{v2} -> v{v1}" in back.stdout

    history = json.loads(cli("registry", "history", "--json").stdout)
    assert [
        (h["seq"], h["action"], h["from_version"], h["to_version"], h["reviewer"]) for h in history
    ] == [
        (1, "promote", None, v1, "bob"),
        (2, "promote", v1, v2, "bob"),
        (3, "rollback", v2, v1, "dave"),
    ]
    assert "regression on stroke" in cli("registry", "history").stdout
    versions = {v["version"]: v for v in json.loads(cli("registry", "list", "--json").stdout)}
    assert versions[v1]["aliases"] == ["champion"]
    assert versions[v2]["aliases"] == []


def test_racing_promote_commands_on_one_sqlite_file(project: Path) -> None:
    policy_path = project / "mlflow" / "promotion.yaml"
    policy_path.write_text(policy_path.read_text().replace(
        "require_current_champion: true", "require_current_champion: false"
    ))  # fmt: skip
    policy = PromotionPolicy(require_current_champion=False)
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
