"""The whole pipeline with kfp.local against a real MLflow server and SeaweedFS.

A tiny dataset (9 patients, 64 px, 2 images each) is uploaded to S3; the pipeline downloads
it in its first task, validates, splits, trains the candidate and one baseline for one epoch
at 32 px, evaluates them, and registers a ``challenger``. A reviewer promotes it; a second
run reuses the cached steps (same MLflow training run), evaluates the champion too, and —
under a strict policy — registers nothing. A broken dataset stops the run at validation.

The same run proves the reviewer's MLflow page: a machine-learning experiment, one parent
run per pipeline run holding the candidate's and the baseline's runs with their own metrics
and the dataset input, and a description summarising models, gates, data and registry, whose
overlay image the server serves; and the one-page HTML report, logged on the candidate's run
and linked from the registered version and the summary.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from palsyseg.pipeline import PipelineError, build_arguments
from palsyseg.pipeline_runner import run_local
from palsyseg.storage import fingerprint, upload_directory
from palsyseg.tracking import registry
from palsyseg.tracking.gates import load_policy, policy_from_dict
from palsyseg.tracking.runs import NOTE_TAG, WEIGHTS_TAG, client, download_checkpoint
from palsyseg.train import load_checkpoint_model

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "mlflow" / "promotion.yaml"


def tiny_dataset(root: Path) -> Path:
    from palsyseg.data.synth import SynthConfig, generate_dataset

    generate_dataset(root, SynthConfig(patients=9, seed=3, size=64, images_per_patient=2))
    return root


def write_params(path: Path) -> Path:
    path.write_text(
        "split: {seed: 7, train: 0.6, val: 0.2, test: 0.2}\n"
        "train: {batch_size: 4, image_size: 32, num_workers: 0, decision_refit: 4}\n",
        encoding="utf-8",
    )
    return path


def test_pipeline_end_to_end_on_s3_data_with_a_tracking_server(
    tracking, s3_env, model_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    data = tiny_dataset(tmp_path / "data")
    uri = "s3://palsyseg-datasets/tiny/v1"
    upload_directory(data, uri)
    monkeypatch.setenv("PALSYSEG_USER", "tess-trainer")
    # The code version is part of the cache key; pin it so edits elsewhere in a shared
    # checkout during the test cannot turn the second run's cache hit into a miss.
    monkeypatch.setenv("PALSYSEG_GIT_COMMIT", "0123abc")
    args = build_arguments(
        dataset_uri=uri,
        baselines=["unet_r18"],
        epochs=1,
        # One epoch cannot reach the real FPP floor; the gates' wiring is what is tested.
        gate_overrides={
            "registered_model": model_name,
            "min_primary": 0.0,
            "beat_baselines": False,
        },
        params_path=write_params(tmp_path / "params.yaml"),
        policy_path=POLICY,
        tracking_uri=tracking.uri,
    )
    assert args.dataset_version == fingerprint(data)

    first = run_local(args, work_dir=tmp_path / "kfp")
    assert first.gates.passed, first.gates.summary()
    assert first.version == "1"
    assert first.tracking_uri == tracking.uri
    assert not (tmp_path / "kfp" / "tmp").exists()  # kfp's temp files are cleaned up

    policy = policy_from_dict(args.gates)  # the thresholds the run was gated with
    version = registry.get_version("1", policy=policy)
    assert version.aliases == ("challenger",)
    assert registry.champion_version(policy=policy) is None
    assert version.trained_by == "tess-trainer"
    assert version.data_version == args.dataset_version
    assert version.run_id == first.candidate_run_id
    assert version.gates_passed is True

    mlflow_client = client(tracking.uri)
    run = mlflow_client.get_run(first.candidate_run_id)
    assert run.data.tags["palsyseg.role"] == "candidate"
    assert run.data.tags["palsyseg.model"] == "palsynet"
    assert run.data.params["dataset_uri"] == uri
    assert run.data.params["epochs"] == "1"
    assert run.data.params["image_size"] == "32"
    assert [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "train_loss")] == [1]
    assert "val_f1_fpp" in run.data.metrics
    assert "test_f1_fpp" in run.data.metrics and "test_f1_fpp.unet_r18" in run.data.metrics
    evaluation = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/report.json",
        "evaluation/gates.json",
        "evaluation/confusion_palsynet.png",
        "evaluation/confusion_unet_r18.png",
        "evaluation/f1_per_class.png",
        "evaluation/predictions.png",
        "evaluation/report.html",
    } <= evaluation
    baseline_runs = mlflow_client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`pipeline.run` = '{run.data.tags['pipeline.run']}' "
        "and tags.`palsyseg.role` = 'baseline'",
    )
    assert [r.data.tags["palsyseg.model"] for r in baseline_runs] == ["unet_r18"]
    check_mlflow_page(first, args, tracking.uri, model_name, tmp_path)

    registry.promote("1", reviewer="rita-reviewer", reason="first model", policy=policy)

    # Second run, through the CLI: cached data and training steps, the champion evaluated
    # too, strict gates.
    result = cli(
        "pipeline", "run", "--data", uri, "--baselines", "unet_r18", "--epochs", "1",
        "--params", tmp_path / "params.yaml", "--policy", POLICY, "--tracking-uri", tracking.uri,
        "--gate", f"registered_model={model_name}", "--gate", "beat_baselines=false",
        "--gate", "min_primary=0.99", "--work-dir", tmp_path / "kfp", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    second = json.loads(result.stdout)
    assert second["candidate_run_id"] == first.candidate_run_id  # training came from the cache
    assert second["version"] is None
    gates = second["gates"]
    assert not gates["passed"]
    assert gates["champion"] == "1"
    assert [r["name"] for r in gates["results"] if not r["passed"]] == ["primary_floor"]
    second_root = Path(second["root"])
    report = json.loads((second_root / "evaluate-models-op" / "report" / "report.json").read_text())
    assert set(report["models"]) == {"palsynet", "unet_r18", "champion"}
    page = (second_root / "evaluate-models-op" / "report" / "report.html").read_text()
    assert 'data-model="champion"' in page and "champion v1" in page  # the champion's row
    assert '<h2 id="gates">Gates: FAIL (compared with champion v1)</h2>' in page
    assert [v.version for v in registry.list_versions(policy=policy)] == ["1"]
    assert registry.champion_version(policy=policy) == "1"

    # The re-evaluation lands on the same pipeline run (its training came from the cache):
    # the champion's row and metrics join the summary, the registration stays on record.
    assert second["pipeline_run_id"] == first.pipeline_run_id
    parent = mlflow_client.get_run(first.pipeline_run_id)
    note = parent.data.tags[NOTE_TAG].splitlines()
    champion_row = next(line for line in note if line.startswith("| [champion v1]("))
    assert f"| {report['models']['champion']['metrics']['f1_fpp']:.3f} |" in champion_row
    assert "#### Gates: FAIL (compared with champion v1)" in note
    assert "| primary_floor | ❌ fail |" in "\n".join(note)
    registry_line = next(line for line in note if line.startswith("**Registry:**"))
    assert "registered as [version 1]" in registry_line
    assert "Re-evaluated since: not registered: gates failed (primary_floor)." in registry_line
    assert parent.data.metrics["test_f1_fpp.champion"] == pytest.approx(
        report["models"]["champion"]["metrics"]["f1_fpp"]
    )
    assert parent.data.tags["gates.passed"] == "false"


def check_mlflow_page(first, args, tracking_uri: str, model_name: str, tmp_path: Path) -> None:
    """What a reviewer sees in MLflow after the first run (gates passed, version 1)."""
    mlflow_client = client(tracking_uri)
    candidate = mlflow_client.get_run(first.candidate_run_id)
    experiment_id = candidate.info.experiment_id

    # The experiment opens on its training runs.
    experiment = mlflow_client.get_experiment(experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert first.mlflow_url == (
        f"{tracking_uri}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    )
    with urllib.request.urlopen(first.mlflow_url, timeout=10) as response:
        assert response.status == 200

    # One pipeline run, named after the job, is the parent of the candidate's and baseline's.
    job = candidate.data.tags["pipeline.run"]
    pipelines = mlflow_client.search_runs(
        [experiment_id],
        filter_string=f"tags.`palsyseg.role` = 'pipeline' and tags.`pipeline.run` = '{job}'",
    )
    assert [r.info.run_id for r in pipelines] == [first.pipeline_run_id]
    parent = mlflow_client.get_run(first.pipeline_run_id)
    assert parent.info.run_name == job and parent.info.status == "FINISHED"
    children = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{first.pipeline_run_id}'"
    )
    by_role = {r.data.tags["palsyseg.role"]: r for r in children}
    assert sorted(by_role) == ["baseline", "candidate"] and len(children) == 2
    assert by_role["candidate"].info.run_id == first.candidate_run_id
    baseline = by_role["baseline"]
    assert baseline.data.tags["palsyseg.model"] == "unet_r18"

    # Each run holds its own test metrics; the baseline's are the report's.
    report = json.loads((first.root / "evaluate-models-op" / "report" / "report.json").read_text())
    assert baseline.data.metrics["test_f1_fpp"] == pytest.approx(
        report["models"]["unet_r18"]["metrics"]["f1_fpp"]
    )
    assert not any(key.endswith(".palsynet") for key in baseline.data.metrics)
    # palsynet's decision refit (palsyseg.refit) is on its run; the U-Net has no decision.
    assert candidate.data.metrics["decision_refit_items"] == 4
    assert "decision_refit_kept" in candidate.data.metrics
    assert not any(key.startswith("decision_refit") for key in baseline.data.metrics)
    assert candidate.data.metrics["test_f1_fpp"] == pytest.approx(
        report["models"]["palsynet"]["metrics"]["f1_fpp"]
    )
    baseline_files = {
        a.path for a in mlflow_client.list_artifacts(baseline.info.run_id, "evaluation")
    }
    assert baseline_files == {"evaluation/confusion_unet_r18.png"}

    # The dataset is an input of the pipeline run and of both training runs.
    for run_id in (first.pipeline_run_id, first.candidate_run_id, baseline.info.run_id):
        (used,) = mlflow_client.get_run(run_id).inputs.dataset_inputs
        assert used.dataset.name == "v1"
        assert used.dataset.source_type == "s3"
        assert json.loads(used.dataset.source) == {"uri": args.dataset_uri}
        assert used.dataset.digest == args.dataset_version.removeprefix("sha256:")[:32]

    # The description: models, gates, data version, registry outcome, the overlay image.
    note = parent.data.tags[NOTE_TAG]
    lines = note.splitlines()
    runs = f"#/experiments/{experiment_id}/runs"
    assert any(
        line.startswith(f"| **[palsynet]({runs}/{first.candidate_run_id})** | candidate |")
        for line in lines
    ), note
    assert any(
        line.startswith(f"| [unet_r18]({runs}/{baseline.info.run_id}) | baseline |")
        for line in lines
    ), note
    assert f"| data version | `{args.dataset_version}` |" in lines
    assert "#### Gates: pass (compared with no champion)" in lines
    assert "| primary_floor | ✅ pass |" in note
    production = load_policy(POLICY)
    assert f"min_primary 0.0 (production {production.min_primary})" in note
    assert (
        f"**Registry:** registered as [version 1](#/models/{model_name}/versions/1) "
        f"of `{model_name}`, alias `challenger`."
    ) in lines
    overlay = re.search(r"!\[test predictions\]\((get-artifact\?[^)]+)\)", note)
    assert overlay is not None, note
    with urllib.request.urlopen(f"{tracking_uri}/{overlay.group(1)}", timeout=10) as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"

    # The version carries the checkpoint's weights digest when the checkpoint records one.
    checkpoint = download_checkpoint(first.candidate_run_id, tmp_path / "candidate")
    weights = load_checkpoint_model(checkpoint)[1].get("weights_sha256")
    assert candidate.data.tags.get(WEIGHTS_TAG) == weights
    version = mlflow_client.get_model_version(model_name, "1")
    assert version.tags.get("weights_sha256") == weights

    # The one-page report: logged on the candidate's run, linked from the version (tag and
    # description) and from the summary; the server hands out the page itself.
    page_path = "evaluation/report.html"
    assert candidate.data.tags.get("palsyseg.report") == page_path
    assert version.tags.get("report") == f"runs:/{first.candidate_run_id}/{page_path}"
    view = f"{runs}/{first.candidate_run_id}/artifactPath/{page_path}"
    assert f"[open]({view})" in version.description
    assert "not a medical device; a clinician decides" in version.description
    assert f"[report.html]({view})" in note
    download = re.search(r"\[download\]\((get-artifact\?[^)]+)\)", version.description)
    assert download is not None, version.description
    with urllib.request.urlopen(f"{tracking_uri}/{download.group(1)}", timeout=10) as response:
        page = response.read().decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for text in (
        'data-model="palsynet"',
        'data-model="unet_r18"',
        '<h2 id="gates">Gates: pass (compared with no champion)</h2>',
        'id="subgroups"',
        'id="legend"',
        "not a medical device",
        args.dataset_version,
    ):
        assert text in page, text


def test_a_broken_dataset_stops_the_pipeline_at_validation(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data")
    manifest = data / "manifest.csv"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    lines[1] = (
        lines[1].replace("healthy", "flu").replace("bells_palsy", "flu").replace("stroke", "flu")
    )
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = build_arguments(
        dataset_uri=str(data),
        baselines=["unet_r18"],
        epochs=1,
        params_path=write_params(tmp_path / "params.yaml"),
        policy_path=POLICY,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    log = tmp_path / "pipeline.log"
    with pytest.raises(PipelineError) as failed:
        run_local(args, work_dir=tmp_path / "kfp", log_path=log)
    lines = failed.value.lines()
    assert lines[0] == "pipeline palsyseg-training failed in task 'validate-dataset-op'"
    assert lines[1].startswith("DatasetError: ") and "flu" in lines[1], lines
    assert lines[2] == f"task logs: {log}"
    assert "flu" in log.read_text()
    assert not list((tmp_path / "kfp" / "runs").glob("*/split-dataset-op"))
