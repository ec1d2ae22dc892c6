"""Importing palsyseg (every module, plus components/ and pipelines/) touches no disk and no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import importlib, pkgutil, socket, sys

def refuse(*args, **kwargs):
    raise RuntimeError(f"network access during import: {args!r}")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import palsyseg, components, pipelines
names = []
for package in (palsyseg, components, pipelines):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
print(len(names))
"""


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_importing_every_module_writes_nothing_and_opens_no_connection(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "DVC_", "NO_ALBUMENTATIONS", "PYTHONDONTWRITE"))
    }
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.strip().splitlines()[-1]) > 20  # really imported the modules
    assert _tree(home) == set(), f"import wrote under HOME: {_tree(home)}"
    assert _tree(work) == set(), f"import wrote in the working directory: {_tree(work)}"
