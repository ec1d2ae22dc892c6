"""Process-wide settings that keep palsyseg offline, quiet and free of side effects.

Called by every entry point (the CLI, Kubeflow components, DVC stages via the CLI) *before*
MLflow, DVC or albumentations are imported, because those libraries read these variables at
import time: MLflow would write a telemetry id under ``~/.config``, DVC would send analytics
and create a site cache under ``/var/tmp``, albumentations would call out for updates.
Values the user already set win (``setdefault``).
"""

from __future__ import annotations

import os
from pathlib import Path

QUIET_OFFLINE_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "HF_HUB_OFFLINE": "1",
    "GIT_PYTHON_REFRESH": "quiet",
    "MPLBACKEND": "Agg",
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
