"""DVC, for real: the default dataset reproduces offline from a fresh clone, and the data
steward's workflow (synth/import → validate → dvc add → dvc push to S3 → dvc pull elsewhere)
round-trips a dataset through SeaweedFS byte for byte."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    full_env["DVC_SITE_CACHE_DIR"] = str(cwd / ".dvc" / "site-cache")
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_fresh_clone_reproduces_the_pinned_default_dataset(tmp_path: Path) -> None:
    """No DVC cache, no remote: `dvc repro` regenerates data/ and it matches data.dvc exactly."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(REPO), str(clone)], cwd=tmp_path)
    assert not (clone / "data").exists() and not (clone / ".dvc" / "cache").exists()

    run(["dvc", "repro", "split"], cwd=clone)

    # The regenerated dataset is the pinned one: data.dvc (and the lock) are unchanged.
    diff = subprocess.run(
        ["git", "diff", "--stat", "--", "data.dvc"], cwd=clone, capture_output=True, text=True
    )
    assert diff.stdout == "", f"the generator no longer reproduces data.dvc:\n{diff.stdout}"
    status = run(["dvc", "status", "data.dvc"], cwd=clone)
    assert "changed" not in status.stdout, status.stdout
    assert (clone / "data" / "manifest.csv").is_file()
    for split in ("train", "val", "test"):
        assert (clone / "build" / "splits" / split / "manifest.csv").is_file()
    assert (clone / "build" / "reports" / "validation.html").is_file()


def test_steward_workflow_push_and_pull_through_s3(tmp_path: Path, seaweedfs) -> None:
    """synth → validate → dvc add → dvc push (S3 endpointurl) → fresh clone → dvc pull: same bytes."""
    bucket = "steward-data"
    seaweedfs.client().create_bucket(Bucket=bucket)
    creds = {
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }

    origin = tmp_path / "origin"
    origin.mkdir()
    run(["git", "init", "-q"], cwd=origin)
    run(["git", "config", "user.email", "steward@example.org"], cwd=origin)
    run(["git", "config", "user.name", "Data Steward"], cwd=origin)
    run(["dvc", "init", "-q"], cwd=origin)
    run(
        [
            "palsyseg",
            "data",
            "synth",
            "--out",
            "datasets/mini",
            "--patients",
            "3",
            "--size",
            "64",
            "--images-per-patient",
            "2",
            "--seed",
            "5",
        ],
        cwd=origin,
    )
    run(["palsyseg", "data", "validate", "datasets/mini"], cwd=origin)
    run(["dvc", "add", "datasets/mini"], cwd=origin)
    run(["dvc", "remote", "add", "-d", "storage", f"s3://{bucket}/dvc"], cwd=origin)
    run(["dvc", "remote", "modify", "storage", "endpointurl", seaweedfs.endpoint], cwd=origin)
    # Keys go to config.local, which git never sees.
    run(
        ["dvc", "remote", "modify", "--local", "storage", "access_key_id", seaweedfs.access_key],
        cwd=origin,
    )
    run(
        [
            "dvc",
            "remote",
            "modify",
            "--local",
            "storage",
            "secret_access_key",
            seaweedfs.secret_key,
        ],
        cwd=origin,
    )
    run(["dvc", "push"], cwd=origin)
    run(["git", "add", "-A"], cwd=origin)
    run(["git", "commit", "-qm", "Add mini dataset"], cwd=origin)
    assert seaweedfs.secret_key not in (origin / ".dvc" / "config").read_text()

    listed = seaweedfs.client().list_objects_v2(Bucket=bucket, Prefix="dvc/")
    assert listed.get("KeyCount", 0) > 0, "dvc push stored nothing in the bucket"

    colleague = tmp_path / "colleague"
    run(["git", "clone", "-q", str(origin), str(colleague)], cwd=tmp_path)
    assert not (colleague / "datasets" / "mini").exists()
    run(["dvc", "pull"], cwd=colleague, env=creds)
    assert tree_digest(colleague / "datasets" / "mini") == tree_digest(origin / "datasets" / "mini")
    run(["palsyseg", "data", "validate", "datasets/mini"], cwd=colleague)
