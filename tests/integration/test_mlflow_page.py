"""The reviewer's MLflow page, piece by piece, against a real MLflow server.

What is proven here (the whole page from a real pipeline run is in ``test_pipeline_run.py``):
palsyseg's experiment is a machine-learning one; training tasks racing to open their pipeline's
run end with one parent holding every child; the data is a dataset input with the DVC md5 or
the content fingerprint as its digest; the summary is a Markdown table whose registry line the
register step rewrites; the checkpoint's weights digest reaches the logged model and the
registered version when the checkpoint has one, and nothing breaks when it has none.
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
import torch
from tiny_model import IMAGE, TinySeg

from palsyseg.pipeline import register_step
from palsyseg.tracking.gates import GateReport, GateResult
from palsyseg.tracking.pipeline_runs import (
    PARENT_TAG,
    ModelRow,
    PipelineSummary,
    open_pipeline_run,
    pipeline_family,
    with_registry_line,
)
from palsyseg.tracking.runs import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    WEIGHTS_TAG,
    RunContext,
    client,
    dataset_digest,
    dataset_input,
    ensure_experiment,
    log_network,
    training_run,
)

pytestmark = pytest.mark.integration


def unique(stem: str) -> str:
    return f"{stem}-{random.Random().randrange(16**8):08x}"


# --------------------------------------------------------------------------- the experiment


def test_the_experiment_is_created_as_machine_learning_and_an_old_one_is_given_the_kind(
    tracking,
) -> None:
    mlflow_client = client()
    new = mlflow_client.get_experiment(ensure_experiment(unique("palsyseg-new")))
    assert new.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    assert "parent run" in new.tags[NOTE_TAG]  # the experiment's description says where to look

    old_name = unique("palsyseg-old")
    old_id = mlflow_client.create_experiment(old_name)  # made before palsyseg set a kind
    assert ensure_experiment(old_name) == old_id
    assert mlflow_client.get_experiment(old_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    chosen = unique("palsyseg-genai")
    chosen_id = mlflow_client.create_experiment(
        chosen, tags={EXPERIMENT_KIND_TAG: "genai_development"}
    )
    ensure_experiment(chosen)  # someone's explicit choice stays
    assert mlflow_client.get_experiment(chosen_id).tags[EXPERIMENT_KIND_TAG] == "genai_development"


# --------------------------------------------------------------------------- the parent run


def context_for(job: str, **changes: str) -> RunContext:
    values = {
        "dataset_uri": "s3://palsyseg-datasets/tiny/v1",
        "dataset_version": "sha256:" + "ab" * 32,
        "code_version": "0123abc",
        "pipeline_run": job,
        "trained_by": "tess-trainer",
        **changes,
    }
    return RunContext(**values)


def test_racing_training_tasks_end_with_one_parent_holding_every_child(tracking) -> None:
    experiment = unique("palsyseg-race")
    context = context_for(unique("palsyseg-training"))
    tasks = 6
    barrier = threading.Barrier(tasks)
    parents: list[str | None] = [None] * tasks
    errors: list[BaseException] = []

    def task(i: int) -> None:
        try:
            barrier.wait()
            parents[i] = open_pipeline_run(context, experiment=experiment)
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=task, args=(i,)) for i in range(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert all(parents)

    mlflow_client = client()
    experiment_id = mlflow_client.get_experiment_by_name(experiment).experiment_id
    children = [
        mlflow_client.create_run(
            experiment_id,
            run_name=f"baseline-m{i}",
            tags={PARENT_TAG: parent, "palsyseg.role": "baseline", "palsyseg.model": f"m{i}"},
        ).info.run_id
        for i, parent in enumerate(parents)
    ]
    # A parent another task created at the same instant, with a child of its own: the kind
    # of leftover the look-again step cannot rule out, which the evaluate step merges.
    stray = mlflow_client.create_run(
        experiment_id,
        run_name=context.pipeline_run,
        tags={**{k: v for k, v in context.tags().items() if v}, "palsyseg.role": "pipeline"},
    ).info.run_id
    children.append(
        mlflow_client.create_run(
            experiment_id,
            run_name="candidate-palsynet",
            tags={PARENT_TAG: stray, "palsyseg.role": "candidate", "palsyseg.model": "palsynet"},
        ).info.run_id
    )

    # A parent a task took just before its creator gave it up (deleted it) for an older one.
    given_up = mlflow_client.create_run(
        experiment_id,
        run_name=context.pipeline_run,
        tags={**{k: v for k, v in context.tags().items() if v}, "palsyseg.role": "pipeline"},
    ).info.run_id
    children.append(
        mlflow_client.create_run(
            experiment_id,
            run_name="baseline-late",
            tags={PARENT_TAG: given_up, "palsyseg.role": "baseline", "palsyseg.model": "late"},
        ).info.run_id
    )
    mlflow_client.delete_run(given_up)

    family = pipeline_family(children[-2])
    assert family is not None
    active = mlflow_client.search_runs(
        [experiment_id], filter_string="tags.`palsyseg.role` = 'pipeline'"
    )
    assert [r.info.run_id for r in active] == [family.run_id]
    assert family.parent.info.run_name == context.pipeline_run
    assert sorted(r.info.run_id for r in family.children) == sorted(children)
    for child in children:
        assert mlflow_client.get_run(child).data.tags[PARENT_TAG] == family.run_id
    assert mlflow_client.get_run(stray).info.lifecycle_stage == "deleted"
    assert family.model_runs("baseline", ["m0", "m3", "nope"]) == {
        "m0": children[0],
        "m3": children[3],
    }

    # Another job, or the same job name on other code or data, is another pipeline run.
    other = open_pipeline_run(context_for(context.pipeline_run, code_version="fedcba9"),
                              experiment=experiment)  # fmt: skip
    assert other != family.run_id
    assert open_pipeline_run(context_for(""), experiment=experiment) is None


def test_a_pipeline_run_holds_its_dataset_params_and_tags(tracking) -> None:
    experiment = unique("palsyseg-parent")
    context = context_for(unique("palsyseg-training"))
    run = client().get_run(open_pipeline_run(context, experiment=experiment))
    assert run.info.run_name == context.pipeline_run
    assert run.data.tags["palsyseg.role"] == "pipeline"
    assert run.data.tags["data.version"] == context.dataset_version
    assert run.data.tags["mlflow.user"] == "tess-trainer"
    assert run.data.params == {
        "dataset_uri": context.dataset_uri,
        "dataset_version": context.dataset_version,
        "git_commit": "0123abc",
    }
    (used,) = run.inputs.dataset_inputs
    assert used.dataset.name == "v1"
    assert used.dataset.digest == "ab" * 16
    assert used.dataset.source_type == "s3"
    assert json.loads(used.dataset.source) == {"uri": context.dataset_uri}
    assert json.loads(used.dataset.profile) == {"dataset_version": context.dataset_version}
    assert {t.key: t.value for t in used.tags} == {"mlflow.data.context": "training"}


def test_the_dataset_digest_is_the_dvc_md5_else_the_revision_else_the_fingerprint() -> None:
    md5 = "0f343b0931126a20f133d67c2b018a3b.dir"
    assert dataset_digest(f"sha256:{'cd' * 32};dvc-md5:{md5}") == md5
    assert dataset_digest(f"dvc:{'1' * 40}:data") == "1" * 32
    assert dataset_digest("sha256:" + "ef" * 32) == "ef" * 16
    assert all(
        len(dataset_digest(v)) <= 36 for v in ("x" * 80, "sha256:" + "0" * 64, "dvc:" + "a" * 60)
    )
    dvc = dataset_input("data", f"dvc:{'1' * 40}:data").dataset
    assert (dvc.source_type, json.loads(dvc.source)) == ("dvc", {"uri": "data", "rev": "1" * 40})
    local = dataset_input("/srv/faces/v2/", "sha256:" + "ef" * 32).dataset
    assert (local.name, local.source_type) == ("v2", "local")


# --------------------------------------------------------------------------- the summary


def test_the_summary_is_a_markdown_table_whose_registry_line_registration_rewrites() -> None:
    gates = GateReport(
        (
            GateResult("primary_floor", True, "f1_fpp 0.62 >= 0.5"),
            GateResult("vs_champion", False, "f1_fpp 0.62 < champion 0.70 | tolerance 0.01"),
        ),
        champion="3",
    )
    summary = PipelineSummary(
        job="palsyseg-training-20261102",
        dataset_uri="s3://palsyseg-datasets/tiny/v1",
        dataset_version="sha256:abc;dvc-md5:def",
        code_version="0123abc",
        trained_by="tess-trainer",
        models=[
            ModelRow("palsynet", "candidate", {"f1_fpp": 0.62, "latency_ms": 12.345}, "#/r/1"),
            ModelRow("unet_r18", "baseline", {"f1_fpp": 0.41, "mean_f1": float("nan")}),
            ModelRow("champion", "champion", {"f1_fpp": 0.7}, "#/m/3", label="champion v3"),
        ],
        gates=gates,
        thresholds={"min_primary": 0.5, "beat_baselines": False},
        relaxed=["beat_baselines false (production true)"],
        registry="not registered: gates failed (vs_champion).",
        overlay="get-artifact?path=evaluation%2Fpredictions.png&run_uuid=r1",
    )
    note = summary.to_markdown()
    lines = note.splitlines()
    header = "| model | role | mean F1 | mIoU | pix. acc. | FPP F1 | sens. | spec. | ms |"
    assert header in lines
    assert "| **[palsynet](#/r/1)** | candidate | — | — | — | 0.620 | — | — | 12.3 |" in lines
    assert "| unet_r18 | baseline | — | — | — | 0.410 | — | — | — |" in lines
    assert "| [champion v3](#/m/3) | champion | — | — | — | 0.700 | — | — | — |" in lines
    assert "#### Gates: FAIL (compared with champion v3)" in lines
    assert "| vs_champion | ❌ fail | f1_fpp 0.62 < champion 0.70 \\| tolerance 0.01 |" in lines
    assert "| data version | `sha256:abc;dvc-md5:def` |" in lines
    assert "Relaxed against the production policy: beat_baselines false (production true)." in lines
    assert (
        "![test predictions](get-artifact?path=evaluation%2Fpredictions.png&run_uuid=r1)" in lines
    )
    assert "**Registry:** not registered: gates failed (vs_champion)." in lines

    registered = with_registry_line(note, "registered as version 4.")
    assert "**Registry:** registered as version 4." in registered.splitlines()
    assert "not registered" not in registered
    assert registered.count("**Registry:**") == 1
    assert with_registry_line("no summary yet", "v1").endswith("\n\n**Registry:** v1\n")


# --------------------------------------------------------------------------- the weights digest


def registered_version(tmp_path: Path, model_name: str, weights: str | None) -> tuple[str, str]:
    """A tiny model logged with (or without) a weights digest and registered by the pipeline's
    register step; returns (run id, version)."""
    context = RunContext("data", "md5:abc", "deadbeef", "", "tess-trainer")
    with training_run(
        model_name="tiny", role="candidate", config={"seed": 1}, context=context
    ) as run:
        checkpoint = tmp_path / "best.pt"
        model = TinySeg()
        torch.save({"state_dict": model.state_dict()}, checkpoint)
        log_network(
            run.run_id, model, checkpoint=checkpoint, image_size=IMAGE, weights_sha256=weights
        )
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    gates = GateReport((GateResult("primary_floor", True, "f1_fpp 0.6 >= 0.0"),))
    (report_dir / "gates.json").write_text(json.dumps(gates.to_dict()))
    (report_dir / "report.json").write_text(
        json.dumps({"candidate": "tiny", "models": {"tiny": {"metrics": {"f1_fpp": 0.6}}}})
    )
    policy = {"registered_model": model_name, "min_primary": 0.0, "beat_baselines": False}
    return run.run_id, register_step(run.run_id, report_dir, gates=policy)


def test_the_weights_digest_reaches_the_logged_model_and_the_registered_version(
    tracking, model_name: str, tmp_path: Path
) -> None:
    digest = "5f" * 32
    run_id, version = registered_version(tmp_path, model_name, digest)
    mlflow_client = client()
    run = mlflow_client.get_run(run_id)
    assert run.data.tags[WEIGHTS_TAG] == digest
    model_id = run.data.tags["palsyseg.model_uri"].removeprefix("models:/")
    assert mlflow_client.get_logged_model(model_id).tags[WEIGHTS_TAG] == digest
    assert mlflow_client.get_model_version(model_name, version).tags["weights_sha256"] == digest


def test_a_checkpoint_without_a_weights_digest_registers_without_the_tag(
    tracking, model_name: str, tmp_path: Path
) -> None:
    run_id, version = registered_version(tmp_path, model_name, None)
    mlflow_client = client()
    assert WEIGHTS_TAG not in mlflow_client.get_run(run_id).data.tags
    tags = mlflow_client.get_model_version(model_name, version).tags
    assert "weights_sha256" not in tags
    assert tags["gates.passed"] == "true"
