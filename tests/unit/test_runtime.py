"""The quiet/offline environment names variables the libraries actually read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from palsyseg.runtime import QUIET_OFFLINE_ENV, configure_quiet_offline


def test_mlflow_reads_the_quiet_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mlflow.environment_variables import (
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR,
        MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT,
    )

    for key in (*QUIET_OFFLINE_ENV, "DVC_SITE_CACHE_DIR"):
        monkeypatch.delenv(key, raising=False)
    assert MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get()  # MLflow's own default: a bar per artifact
    configure_quiet_offline(tmp_path)
    assert not MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get()  # predict answers without a bar
    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get()
    assert os.environ["DVC_SITE_CACHE_DIR"] == str(tmp_path / ".dvc" / "site-cache")


def test_a_value_the_user_set_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    configure_quiet_offline(tmp_path)
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
