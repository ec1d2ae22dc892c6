"""Process-wide settings that keep palsyseg offline, quiet and free of side effects.

Called by every entry point (the CLI, Kubeflow components, DVC stages via the CLI) *before*
MLflow, DVC or albumentations are imported, because those libraries read these variables at
import time: MLflow would write a telemetry id under ``~/.config``, DVC would send analytics
and create a site cache under ``/var/tmp``, albumentations would call out for updates.
Values the user already set win (``setdefault``).

:func:`configure_bounded_network` is for the command line only: it bounds MLflow's HTTP
retries so an unreachable tracking server fails a command in seconds. Without it MLflow retries
7 times with exponential backoff and a 120 s timeout per attempt (about four minutes of
silence for a server that refuses connections), a patience meant for rate-limited servers.
"""

from __future__ import annotations

import os
from pathlib import Path

QUIET_OFFLINE_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # MLflow draws a bar for every artifact it moves, even a 2 MB checkpoint that `predict`
    # fetches before answering; a tool reading predict's output wants its findings alone
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "HF_HUB_OFFLINE": "1",
    "GIT_PYTHON_REFRESH": "quiet",
    "MPLBACKEND": "Agg",
}


# 3 retries, backoff 0, 2, 4 s (+ up to 0.5 s jitter each): a refused connection fails in
# under 8 s. 30 s per attempt still lets a slow server take a model upload.
BOUNDED_NETWORK_ENV: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` (default: cwd) that holds ``.dvc/`` or ``.git/``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".dvc").is_dir() or (candidate / ".git").exists():
            return candidate
    return None


def configure_quiet_offline(project_root: Path | None = None) -> None:
    """Set the quiet/offline environment; keep DVC's site cache inside the project.

    Touches no disk: the site cache directory is only named here, DVC creates it on use.
    """
    for key, value in QUIET_OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    root = project_root or find_project_root()
    if root is not None:
        os.environ.setdefault("DVC_SITE_CACHE_DIR", str(root / ".dvc" / "site-cache"))


def configure_bounded_network() -> None:
    """Bound MLflow's HTTP retries and timeouts (:data:`BOUNDED_NETWORK_ENV`) unless set.

    Called at the CLI edge; child processes (kfp.local tasks, DVC stages) inherit the values.
    MLflow reads them at each request, so this may run before or after MLflow is imported.
    """
    for key, value in BOUNDED_NETWORK_ENV.items():
        os.environ.setdefault(key, value)
