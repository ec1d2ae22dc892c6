"""``--model`` resolves registry aliases, version numbers and runs to the run's checkpoint.

A local sqlite MLflow store in ``tmp_path`` holds one run with a palsyseg checkpoint logged as
:func:`palsyseg.tracking.runs.log_network` logs it (``checkpoint/best.pt``, tag
``palsyseg.checkpoint``), registered as version 1 of ``palsyseg`` with alias ``champion``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def registry(tmp_path: Path, tiny_checkpoint: Path) -> tuple[str, str]:
    """``(tracking URI, run id)`` of a store whose champion is the tiny checkpoint."""
    from palsyseg.tracking.runs import CHECKPOINT_ARTIFACT, client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_client = client(uri)
    experiment = mlflow_client.create_experiment(
        "palsyseg", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    run_id = mlflow_client.create_run(experiment).info.run_id
    mlflow_client.log_artifact(run_id, str(tiny_checkpoint), CHECKPOINT_ARTIFACT)
    mlflow_client.set_tag(run_id, "palsyseg.checkpoint", f"{CHECKPOINT_ARTIFACT}/best.pt")
    mlflow_client.create_registered_model("palsyseg")
    version = mlflow_client.create_model_version("palsyseg", f"runs:/{run_id}/model", run_id=run_id)
    mlflow_client.set_registered_model_alias("palsyseg", "champion", version.version)
    return uri, run_id


def test_registry_uris_and_runs_load_the_registered_checkpoint(
    cli, registry, photos, tiny_checkpoint
) -> None:
    uri, run_id = registry
    for model, version in (
        (None, "1"),  # the default: models:/palsyseg@champion
        ("models:/palsyseg/1", "1"),
        (f"runs:/{run_id}/model", None),
    ):
        flags = ("--model", model) if model else ()
        result = cli("predict", photos["astronaut"], *flags, "--tracking-uri", uri, "--json")
        assert result.code == 0, (model, result.stderr)
        described = json.loads(result.stdout)["model"]
        assert described["uri"] == (model or "models:/palsyseg@champion")
        assert described["version"] == version and described["run_id"] == run_id
        assert described["palsy_threshold"] == 0.01  # carried by the checkpoint

    from palsyseg.checkpoint import read_checkpoint

    weights = read_checkpoint(tiny_checkpoint)["metadata"]["weights_sha256"]
    assert described["weights_sha256"] == weights

    for model, says in (
        ("models:/palsyseg@challenger", "has no alias 'challenger'"),
        ("models:/palsyseg/7", "has no version 7"),
    ):
        result = cli("predict", photos["astronaut"], "--model", model, "--tracking-uri", uri)
        assert result.code == 1
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {model}: registered model 'palsyseg' {says}"), line


def test_without_a_champion_the_error_says_how_to_get_one(cli, registry, photos) -> None:
    """After ``make demo`` the registry holds a challenger, never a champion (only the promotion
    policy makes one): the default --model names both ways forward on one line."""
    from palsyseg.tracking.runs import client

    uri, _ = registry
    client(uri).delete_registered_model_alias("palsyseg", "champion")
    result = cli("predict", photos["astronaut"], "--tracking-uri", uri)
    assert result.code == 1
    [line] = result.stderr.strip().splitlines()
    assert "has no alias 'champion'" in line
    assert "palsyseg registry promote VERSION" in line
    assert "--model models:/palsyseg@challenger" in line
