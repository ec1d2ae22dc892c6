"""The registry against a real MLflow server whose artifacts live in SeaweedFS (S3).

What is proven here: a run records what it promises (params, per-epoch metrics, the model
with signature and input example, the checkpoint, plots, environment) and its artifacts land
in S3; registration sets ``challenger`` and never ``champion`` and records the thresholds and
measurements the gates used, so the production policy re-decides them at promotion; promotion
refuses failed gates, unrecorded gates, the trainer as reviewer and stale comparisons; rollback
follows the champion history; racing promotions (threads and processes) leave one champion and
a gap-free, hash-chained audit trail with one entry per successful call; a crash between audit
write and alias move is completed; a dead holder's lock is broken (at once when its process on
this host is gone) and a live one is waited for.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import IMAGE, TinySeg

from palsyseg.errors import GateError
from palsyseg.evaluate import EvaluationReport, Example, ModelEvaluation
from palsyseg.tracking import audit, registry
from palsyseg.tracking.gates import PromotionPolicy, evaluate_gates
from palsyseg.tracking.runs import (
    RunContext,
    client,
    log_evaluation,
    log_network,
    training_run,
)

pytestmark = pytest.mark.integration


def metrics(fpp: float) -> dict[str, float]:
    return {
        "f1_fpp": fpp,
        "f1_skin": 0.9,
        "f1_hair": 0.8,
        "f1_eyebrow": 0.7,
        "f1_eye": 0.7,
        "f1_mouth": 0.75,
        "miou": 0.6,
        "mean_f1": 0.77,
        "pixel_accuracy": 0.93,
    }


def policy_for(name: str, **overrides) -> PromotionPolicy:
    return PromotionPolicy(registered_model=name, min_primary=0.3, **overrides)


def trained_run(tmp_path: Path, trained_by: str, *, with_model: bool = True) -> str:
    """A finished run of a tiny model, as the pipeline's train step leaves it."""
    context = RunContext(
        dataset_uri="data",
        dataset_version="md5:abc123",
        code_version="deadbeef",
        pipeline_run="test-pipeline",
        trained_by=trained_by,
    )
    with training_run(
        model_name="tiny", role="candidate", config={"seed": 7, "epochs": 2}, context=context
    ) as run:
        run.log_epoch(1, {"epoch": 1, "train_loss": 1.5, "val_f1_fpp": 0.2})
        run.log_epoch(2, {"epoch": 2, "train_loss": 1.1, "val_f1_fpp": 0.4, "lr": float("nan")})
        if with_model:
            checkpoint = tmp_path / "best.pt"
            model = TinySeg()
            torch.save({"state_dict": model.state_dict()}, checkpoint)
            log_network(run.run_id, model, checkpoint=checkpoint, image_size=IMAGE)
    return run.run_id


def register(run_id: str, policy: PromotionPolicy, fpp: float, trained_by: str) -> str:
    champion = registry.champion_metrics(policy=policy)
    report = evaluate_gates(
        metrics(fpp),
        champion=None if champion is None else champion[1],
        baselines={"unet_r18": metrics(0.1)},
        policy=policy,
        champion_version=None if champion is None else champion[0],
    )
    context = RunContext(
        dataset_version="md5:abc123", code_version="deadbeef", trained_by=trained_by
    )
    return registry.register_challenger(
        run_id, gate_report=report, metrics=metrics(fpp), context=context, policy=policy
    )


def add_version(
    run_id: str,
    policy: PromotionPolicy,
    *,
    trained_by: str = "alice",
    compared_with: str = "none",
    **extra: str,
) -> str:
    """A version as a passing pipeline run registers it, without logging another model."""
    tags = {
        "trained_by": trained_by,
        "gates.passed": "true",
        "gates.champion": compared_with,
        "gates.policy": json.dumps(policy.thresholds()),
        **{
            f"gate.{g}": "pass"
            for g in ("primary_floor", "vs_champion", "class_drop", "beats_baselines")
        },
        "metric.f1_fpp": "0.5",
        **extra,
    }
    mlflow_client = client()
    if registry.find_model(mlflow_client, policy.registered_model) is None:
        mlflow_client.create_registered_model(policy.registered_model)
    mv = mlflow_client.create_model_version(
        policy.registered_model, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags
    )
    return str(mv.version)


def assert_consistent_trail(policy: PromotionPolicy) -> list[registry.AuditEntry]:
    """Sequence numbers 1..n, each change starts where the previous one ended, alias agrees,
    and the hash chain verifies."""
    trail = registry.check_trail(policy=policy)
    assert trail.ok and not trail.pending, trail.problems
    entries = trail.entries
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    current = None
    for entry in entries:
        assert entry.from_version == current, entries
        current = entry.to_version
    assert registry.champion_version(policy=policy) == (
        registry.champion_stack(entries)[-1] if entries else None
    )
    return entries


# --------------------------------------------------------------------------- runs and registration


def test_run_records_everything_and_registration_sets_only_challenger(
    tracking, model_name: str, tmp_path: Path
) -> None:
    import mlflow.pyfunc

    policy = policy_for(model_name)
    run_id = trained_run(tmp_path, "alice")
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 7, (IMAGE, IMAGE), dtype=np.uint8)
    report = EvaluationReport(
        dataset="data/test",
        candidate="tiny",
        models={
            "tiny": ModelEvaluation("tiny", metrics(0.6), np.eye(7, dtype=np.int64) * 10),
            "unet_r18": ModelEvaluation("unet_r18", metrics(0.1), np.ones((7, 7), np.int64)),
        },
        examples=[
            Example(
                "images/p1.png",
                rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8),
                truth,
                {"tiny": truth, "unet_r18": np.zeros_like(truth)},
            )
        ],
    )
    gates = evaluate_gates(
        metrics(0.6), champion=None, baselines={"unet_r18": metrics(0.1)}, policy=policy
    )
    log_evaluation(run_id, report, gates)
    version = register(run_id, policy, 0.6, "alice")

    mlflow_client = client()
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset_version"] == "md5:abc123"
    assert run.data.params["git_commit"] == "deadbeef"
    assert run.data.params["seed"] == "7"
    assert run.data.tags["trained_by"] == "alice"
    history = mlflow_client.get_metric_history(run_id, "val_f1_fpp")
    assert [(m.step, m.value) for m in history] == [(1, 0.2), (2, 0.4)]
    assert "lr" not in run.data.metrics  # non-finite values are not logged
    assert run.data.metrics["test_f1_fpp"] == 0.6
    assert run.data.metrics["test_f1_fpp.unet_r18"] == 0.1
    assert run.data.tags["gates.passed"] == "true"

    files = {a.path for a in mlflow_client.list_artifacts(run_id, "evaluation")}
    assert {
        "evaluation/confusion_tiny.png",
        "evaluation/confusion_unet_r18.png",
        "evaluation/f1_per_class.png",
        "evaluation/predictions.png",  # overlays of test predictions
        "evaluation/report.json",
        "evaluation/report.html",  # the one-page report, linked from the version
        "evaluation/gates.json",
    } <= files
    assert run.data.tags["palsyseg.report"] == "evaluation/report.html"
    registered = mlflow_client.get_model_version(model_name, version)
    assert registered.tags["report"] == f"runs:/{run_id}/evaluation/report.html"
    assert "artifactPath/evaluation/report.html) · [download](" in registered.description
    assert {a.path for a in mlflow_client.list_artifacts(run_id, "checkpoint")} == {
        "checkpoint/best.pt"
    }
    env = json.loads(
        Path(
            mlflow_client.download_artifacts(run_id, "environment.json", str(tmp_path))
        ).read_text()
    )
    assert env["packages"]["torch"]

    # The model: signature, input example, requirements without local labels, loadable.
    model_dir = Path(
        mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(tmp_path / "m"))
    )
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "signature:" in mlmodel and "saved_input_example_info" in mlmodel
    requirements = (model_dir / "requirements.txt").read_text()
    assert "torch==" in requirements and "+cu" not in requirements
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    out = loaded.predict(np.zeros((2, 3, IMAGE, IMAGE), dtype=np.float32))
    assert np.asarray(out).shape == (2, 7, IMAGE, IMAGE)

    # The artifacts went through the server into the S3 bucket.
    keys = [
        o["Key"]
        for page in tracking.s3.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket="mlflow-artifacts")
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith(f"{run_id}/artifacts/checkpoint/best.pt") for k in keys), keys[:20]

    # The version: alias challenger only, and the tags a reviewer needs.
    info = registry.get_version(version, policy=policy)
    assert info.aliases == ("challenger",)
    assert registry.champion_version(policy=policy) is None
    assert info.trained_by == "alice"
    assert info.data_version == "md5:abc123"
    assert info.code_version == "deadbeef"
    assert info.metrics["f1_fpp"] == pytest.approx(0.6)
    assert info.gates_passed is True
    assert info.gates == {
        g: "pass" for g in ("primary_floor", "vs_champion", "class_drop", "beats_baselines")
    }

    # Registering the same run again keeps its version (the pipeline's register step may rerun).
    assert register(run_id, policy, 0.6, "alice") == version
    assert [v.version for v in registry.list_versions(policy=policy)] == [version]

    # Checkpoint of the champion for re-evaluation: none until a reviewer promotes.
    assert registry.download_champion_checkpoint(tmp_path / "c", policy=policy) is None
    # The policy in force re-decides the gates from what the version recorded: the thresholds
    # it was gated with and the measurements (candidate, baselines) the gates read.
    assert info.policy["min_primary"] == 0.3
    assert info.inputs["candidate"]["f1_fpp"] == 0.6
    assert info.inputs["baselines"]["unet_r18"]["f1_fpp"] == 0.1
    stricter = PromotionPolicy(registered_model=model_name, min_primary=0.7)
    with pytest.raises(GateError) as refused:
        registry.promote(version, reviewer="bob", reason="x", policy=stricter)
    assert refused.value.lines() == [
        f"{model_name} v{version}: promotion refused: primary_floor fails the production "
        "policy: f1_fpp 0.6000 < floor 0.7; it was gated with min_primary 0.3 (production 0.7)"
    ]
    registry.promote(version, reviewer="bob", reason="first model", policy=policy)
    found = registry.download_champion_checkpoint(tmp_path / "c", policy=policy)
    assert found is not None and found[0] == version
    assert torch.load(found[1], weights_only=True)["state_dict"]["head.weight"].shape == (
        7,
        3,
        1,
        1,
    )


def test_registration_refuses_a_failed_gate(tracking, model_name: str, tmp_path: Path) -> None:
    policy = policy_for(model_name)
    run_id = trained_run(tmp_path, "alice", with_model=False)
    with pytest.raises(GateError, match="gates failed: primary_floor"):
        register(run_id, policy, 0.1, "alice")
    assert registry.list_versions(policy=policy) == []


# --------------------------------------------------------------------------- promotion rules


def test_promotion_rules_and_rollback(tracking, model_name: str, tmp_path: Path) -> None:
    policy = policy_for(model_name)
    run_id = trained_run(tmp_path, "alice", with_model=False)
    v1 = add_version(run_id, policy, trained_by="alice")

    with pytest.raises(GateError, match="reviewer alice trained this model"):
        registry.promote(v1, reviewer="Alice\u200b ", reason="mine", policy=policy)
    with pytest.raises(GateError, match="reason is required"):
        registry.promote(v1, reviewer="bob", reason="  ", policy=policy)
    with pytest.raises(registry.RegistryError, match="version 99 does not exist"):
        registry.promote("99", reviewer="bob", reason="x", policy=policy)
    assert registry.history(policy=policy) == []

    first = registry.promote(v1, reviewer="bob", reason="beats the baselines", policy=policy)
    assert (first.seq, first.action, first.from_version, first.to_version) == (
        1,
        "promote",
        None,
        v1,
    )
    assert (first.reviewer, first.trained_by) == ("bob", "alice")
    assert registry.champion_version(policy=policy) == v1
    with pytest.raises(GateError, match="already champion"):
        registry.promote(v1, reviewer="carol", reason="again", policy=policy)

    # Gates that failed, or were never recorded (a version registered by hand), are refused.
    failed = add_version(
        run_id, policy, compared_with=v1, **{"gates.passed": "false", "gate.class_drop": "fail"}
    )
    with pytest.raises(GateError, match="gate class_drop did not pass when registered"):
        registry.promote(failed, reviewer="bob", reason="x", policy=policy)
    bare = str(
        client()
        .create_model_version(model_name, source=f"runs:/{run_id}/model", run_id=run_id)
        .version
    )
    with pytest.raises(GateError, match="no gate results recorded"):
        registry.promote(bare, reviewer="bob", reason="x", policy=policy)

    # A version compared with no champion (or an older one) is stale now that v1 is champion.
    stale = add_version(run_id, policy, compared_with="none")
    with pytest.raises(GateError, match="compared it with champion none but the champion now is"):
        registry.promote(stale, reviewer="bob", reason="x", policy=policy)
    v2 = add_version(run_id, policy, compared_with=v1, trained_by="dave")
    second = registry.promote(v2, reviewer="alice", reason="better FPP F1", policy=policy)
    assert (second.seq, second.from_version, second.to_version) == (2, v1, v2)
    v3 = add_version(run_id, policy, compared_with=v2)
    registry.promote(v3, reviewer="erin", reason="even better", policy=policy)

    back = registry.rollback(reviewer="frank", reason="v3 misses left-side palsy", policy=policy)
    assert (back.seq, back.action, back.from_version, back.to_version) == (4, "rollback", v3, v2)
    assert registry.champion_version(policy=policy) == v2
    back = registry.rollback(reviewer="frank", reason="v2 too", policy=policy)
    assert (back.from_version, back.to_version) == (v2, v1)
    with pytest.raises(GateError, match="no earlier champion"):
        registry.rollback(reviewer="frank", reason="and v1?", policy=policy)

    entries = assert_consistent_trail(policy)
    assert [(e.action, e.to_version, e.reviewer) for e in entries] == [
        ("promote", v1, "bob"),
        ("promote", v2, "alice"),
        ("promote", v3, "erin"),
        ("rollback", v2, "frank"),
        ("rollback", v1, "frank"),
    ]
    assert all(e.at.endswith("+00:00") for e in entries)
    listed = {v.version: v for v in registry.list_versions(policy=policy)}
    assert listed[v1].aliases == ("champion",)


# --------------------------------------------------------------------------- concurrency


def _race(calls) -> tuple[list, list]:
    barrier = threading.Barrier(len(calls))
    successes, failures = [], []
    lock = threading.Lock()

    def run(call):
        barrier.wait()
        try:
            result = call()
        except Exception as exc:
            with lock:
                failures.append(exc)
        else:
            with lock:
                successes.append(result)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return successes, failures


def test_racing_promotions_each_land_once_in_a_gap_free_trail(
    tracking, model_name: str, tmp_path: Path
) -> None:
    # Without the "compared with the current champion" rule every promotion may succeed, one
    # after the other: the trail must chain them without a lost or duplicated entry.
    policy = policy_for(model_name, require_current_champion=False)
    run_id = trained_run(tmp_path, "alice", with_model=False)
    versions = [add_version(run_id, policy) for _ in range(6)]
    calls = [
        (
            lambda v=v, i=i: registry.promote(
                v, reviewer=f"reviewer-{i}", reason="race", policy=policy
            )
        )
        for i, v in enumerate(versions)
    ]
    successes, failures = _race(calls)
    assert failures == []
    entries = assert_consistent_trail(policy)
    assert sorted(entries, key=lambda e: e.seq) == sorted(successes, key=lambda e: e.seq)
    assert sorted(e.to_version for e in entries) == sorted(versions)
    assert registry.champion_version(policy=policy) == entries[-1].to_version
    holders = [v for v in registry.list_versions(policy=policy) if "champion" in v.aliases]
    assert len(holders) == 1
    assert registry.find_model(client(), f"{model_name}{registry.LOCK_SUFFIX}") is None


def test_racing_promotions_compared_with_the_same_champion_let_exactly_one_win(
    tracking, model_name: str, tmp_path: Path
) -> None:
    policy = policy_for(model_name)
    run_id = trained_run(tmp_path, "alice", with_model=False)
    versions = [add_version(run_id, policy, compared_with="none") for _ in range(5)]
    calls = [
        (
            lambda v=v, i=i: registry.promote(
                v, reviewer=f"reviewer-{i}", reason="race", policy=policy
            )
        )
        for i, v in enumerate(versions)
    ]
    successes, failures = _race(calls)
    assert len(successes) == 1, failures
    assert len(failures) == 4 and all(isinstance(f, GateError) for f in failures)
    entries = assert_consistent_trail(policy)
    assert entries == successes
    assert registry.champion_version(policy=policy) == successes[0].to_version


def _promote_in_process(uri: str, name: str, version: str, reviewer: str, barrier, results) -> None:
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri
    from palsyseg.tracking import registry as reg
    from palsyseg.tracking.gates import PromotionPolicy as Policy

    policy = Policy(registered_model=name, min_primary=0.3, require_current_champion=False)
    reg.client(uri)  # import and connect before the start line
    barrier.wait()
    try:
        entry = reg.promote(
            version, reviewer=reviewer, reason="process race", policy=policy, tracking_uri=uri
        )
        results.put(("ok", entry.seq, entry.to_version))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", type(exc).__name__, str(exc)))


def test_racing_promotions_from_separate_processes(
    tracking, model_name: str, tmp_path: Path
) -> None:
    policy = policy_for(model_name, require_current_champion=False)
    run_id = trained_run(tmp_path, "alice", with_model=False)
    versions = [add_version(run_id, policy) for _ in range(3)]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(versions)), ctx.Queue()
    procs = [
        ctx.Process(
            target=_promote_in_process,
            args=(tracking.uri, model_name, v, f"reviewer-{i}", barrier, results),
        )
        for i, v in enumerate(versions)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(30)
    assert all(o[0] == "ok" for o in outcomes), outcomes
    entries = assert_consistent_trail(policy)
    assert sorted((e.seq, e.to_version) for e in entries) == sorted((o[1], o[2]) for o in outcomes)


# --------------------------------------------------------------------------- recovery


def test_half_done_promotion_is_completed_and_foreign_alias_moves_are_refused(
    tracking, model_name: str, tmp_path: Path
) -> None:
    policy = policy_for(model_name, require_current_champion=False)
    run_id = trained_run(tmp_path, "alice", with_model=False)
    v1, v2, v3 = (add_version(run_id, policy) for _ in range(3))
    registry.promote(v1, reviewer="bob", reason="first", policy=policy)
    # A promoter died after writing entry 2 but before moving the alias and the head.
    trail = registry.check_trail(policy=policy)
    entry = registry.AuditEntry(
        trail.next_seq(), "promote", v1, v2, "bob", "crashed", "2026-11-30T10:00:00+00:00",
        "alice", prev_hash=trail.next_prev_hash(),
    )  # fmt: skip
    client().set_registered_model_tag(model_name, audit.entry_key(2), entry.to_json())
    assert registry.champion_version(policy=policy) == v1
    pending = registry.check_trail(policy=policy)
    assert pending.ok and pending.pending
    third = registry.promote(v3, reviewer="carol", reason="after the crash", policy=policy)
    assert (third.seq, third.from_version) == (3, v2)
    assert_consistent_trail(policy)

    # Someone moves the alias by hand in MLflow: palsyseg refuses to build on it.
    client().set_registered_model_alias(model_name, "champion", v1)
    with pytest.raises(GateError, match="moved outside palsyseg"):
        registry.promote(v2, reviewer="bob", reason="x", policy=policy)
    with pytest.raises(registry.RegistryError, match="the audit trail is broken"):
        registry.rollback(reviewer="bob", reason="x", policy=policy)


def test_dead_holders_lock_is_broken_and_a_live_one_is_waited_for(
    tracking, model_name: str, tmp_path: Path
) -> None:
    import subprocess
    import sys
    import time

    from palsyseg.tracking import lock as promotion_lock

    policy = policy_for(model_name, require_current_champion=False)
    run_id = trained_run(tmp_path, "alice", with_model=False)
    v1, v2, v3 = (add_version(run_id, policy) for _ in range(3))
    lock = f"{model_name}{registry.LOCK_SUFFIX}"
    client().create_registered_model(
        lock, tags={"holder": "ghost", "acquired_at": str(time.time() - 3600)}
    )
    registry.promote(v1, reviewer="bob", reason="lock was stale", policy=policy)
    assert registry.find_model(client(), lock) is None

    # A holder on this host whose process ended a moment ago: broken at once, not after 120 s.
    dead = {**promotion_lock.holder_tags("ghost:1"), "pid": str(_ended_pid()), "pid_start": ""}
    client().create_registered_model(lock, tags=dead)
    started = time.monotonic()
    registry.promote(v2, reviewer="bob", reason="holder died", policy=policy, lock_timeout=5)
    assert time.monotonic() - started < 5
    assert registry.find_model(client(), lock) is None

    # A live holder on this host is waited for (and the wait times out here).
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            tags = {**promotion_lock.holder_tags("busy:1"), "pid": str(alive.pid)}
            tags["pid_start"] = promotion_lock.process_start(alive.pid)
            client().create_registered_model(lock, tags=tags)
            with pytest.raises(registry.LockError, match="another promotion holds the lock"):
                registry.promote(v3, reviewer="bob", reason="busy", policy=policy, lock_timeout=1)
        finally:
            alive.kill()
    assert registry.champion_version(policy=policy) == v2
    client().delete_registered_model(lock)


def _ended_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_lock_create_answered_not_found_is_contention_not_failure(
    tracking, model_name: str
) -> None:
    """MLflow's SQL store reads a duplicate back to report it; if the holder released the lock
    in between, the create fails with RESOURCE_DOES_NOT_EXIST (seen in CI, racing promotions).
    That answer means "try again", not "give up"."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    real = client()
    lock = f"{model_name}{registry.LOCK_SUFFIX}"
    calls = []

    class ReleasedInBetween:
        def __getattr__(self, attr):
            return getattr(real, attr)

        def create_registered_model(self, name, **kwargs):
            calls.append(name)
            if len(calls) == 1:
                raise MlflowException(
                    f"Registered Model with name={name} not found", RESOURCE_DOES_NOT_EXIST
                )
            return real.create_registered_model(name, **kwargs)

    with registry.promotion_lock(ReleasedInBetween(), model_name, holder="bob", timeout=5):
        assert registry.find_model(real, lock) is not None
    assert calls == [lock, lock]
    assert registry.find_model(real, lock) is None

    class Broken(ReleasedInBetween):
        def create_registered_model(self, name, **kwargs):
            raise MlflowException("permission denied")

    with (
        pytest.raises(MlflowException, match="permission denied"),
        registry.promotion_lock(Broken(), model_name, holder="bob", timeout=5),
    ):
        pass
