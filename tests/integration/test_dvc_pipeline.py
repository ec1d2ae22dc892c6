"""DVC runs the same steps as the Kubeflow pipeline: ``dvc repro`` trains, evaluates and
registers; ``dvc metrics show`` / ``dvc plots show`` read what they declared; ``dvc exp run -S``
re-runs only what a changed parameter touches.

A throw-away DVC project holds this repo's ``dvc.yaml`` and sources with tiny settings
(9 patients at 64 px, one epoch at 32 px, one baseline) and the embedded MLflow store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

TINY_PARAMS = """\
dataset: build/synth
synth: {patients: 9, seed: 3, size: 64, images_per_patient: 2}
split: {seed: 7, train: 0.6, val: 0.2, test: 0.2}
train: {epochs: 1, batch_size: 4, image_size: 32, num_workers: 0}
evaluate: {candidate: palsynet, baselines: [unet_r18], latency_images: 2, examples: 2}
"""


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    shutil.copytree(REPO / "src" / "palsyseg", root / "src" / "palsyseg")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "mlflow").mkdir()
    policy = (REPO / "mlflow" / "promotion.yaml").read_text()
    # One epoch cannot reach the real floor; the stage wiring is what is tested here.
    policy = policy.replace("min_primary: 0.5", "min_primary: 0.0").replace(
        "beat_baselines: true", "beat_baselines: false"
    )
    (root / "mlflow" / "promotion.yaml").write_text(policy)
    (root / "params.yaml").write_text(TINY_PARAMS)
    (root / ".gitignore").write_text("/build/\n/mlflow/mlflow.db\n/mlflow/artifacts/\n")
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_SITE_CACHE_DIR": str(root / ".dvc" / "site-cache"),
        "DVC_NO_ANALYTICS": "1",
        "PALSYSEG_USER": "tess-trainer",
        "OMP_NUM_THREADS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "tiny project"], root, env)
    return root, env


def test_dvc_repro_metrics_plots_and_experiments(project) -> None:
    from palsyseg.tracking import registry
    from palsyseg.tracking.gates import PromotionPolicy

    root, env = project
    run(["dvc", "repro"], root, env)

    outcome = json.loads((root / "build" / "registration.json").read_text())
    assert outcome["registered"] is True and outcome["version"] == "1", outcome
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    version = registry.get_version("1", policy=PromotionPolicy(), tracking_uri=uri)
    assert version.aliases == ("challenger",)
    assert version.trained_by == "tess-trainer"
    assert (
        version.run_id == json.loads((root / "build/models/candidate.json").read_text())["run_id"]
    )
    history = json.loads((root / "build/models/candidate.history.json").read_text())
    assert [row["epoch"] for row in history] == [1]

    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], root, env).stdout)
    shown = json.dumps(metrics)
    assert '"f1_fpp"' in shown and '"gates_passed": true' in shown

    run(["dvc", "plots", "show", "--out", "plots"], root, env)
    page = (root / "plots" / "index.html").read_text()
    assert "per_class_f1.json" in page and "candidate.history.json" in page

    # A changed evaluate parameter re-runs evaluate and register only, as a DVC experiment.
    result = run(["dvc", "exp", "run", "-S", "evaluate.examples=1"], root, env)
    assert "train-candidate" not in result.stdout.replace(
        "Stage 'train-candidate' didn't change", ""
    )
    assert "Running stage 'evaluate'" in result.stdout
    experiments = json.loads(run(["dvc", "exp", "show", "--json"], root, env).stdout)
    assert "examples" in json.dumps(experiments)
    # The same training run is registered once: still version 1.
    outcome = json.loads((root / "build" / "registration.json").read_text())
    assert outcome["version"] == "1"


def test_a_dataset_at_a_dvc_revision_is_fetched_and_versioned(project, tmp_path: Path) -> None:
    from palsyseg.pipeline import dataset_version
    from palsyseg.storage import fingerprint, materialize_dataset

    root, env = project
    run(["dvc", "repro", "synth"], root, env)
    run(["git", "add", "dvc.lock"], root, env)
    run(["git", "commit", "-q", "-m", "dataset v1"], root, env)
    commit = run(["git", "rev-parse", "HEAD"], root, env).stdout.strip()
    v1 = fingerprint(root / "build" / "synth")
    # The workspace moves on; the revision still names the committed dataset.
    (root / "params.yaml").write_text(TINY_PARAMS.replace("seed: 3", "seed: 4"))
    run(["dvc", "repro", "synth"], root, env)
    assert fingerprint(root / "build" / "synth") != v1

    old = materialize_dataset("build/synth", tmp_path / "at-v1", dvc_rev=commit, dvc_repo=str(root))
    assert fingerprint(old) == v1
    assert (old / "manifest.csv").is_file()
    assert dataset_version("build/synth", dvc_rev="HEAD", dvc_repo=str(root)) == (
        f"dvc:{commit}:build/synth"
    )
