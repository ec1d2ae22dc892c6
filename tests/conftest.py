"""Shared test fixtures: the quiet/offline environment and an in-process CLI runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from palsyseg.runtime import configure_quiet_offline

configure_quiet_offline()


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """Run ``palsyseg ARGS...`` in-process through the real entry point; return code and output."""

    def run(*args: object) -> CliResult:
        from palsyseg.cli import main

        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def one_thread() -> None:
    """One torch intra-op thread for the test: on a shared 2-core machine more threads spin
    against each other. Folders and modules that train or run networks use it for every test."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def tracking_uri_restored() -> None:
    """``mlflow.set_tracking_uri`` writes MLFLOW_TRACKING_URI into the environment; a test's
    server, stopped at its end, must not become the next test's default."""
    import os

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(autouse=True, scope="session")
def face_point_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """dlib's face points are cached per image; tests keep that cache out of the home folder."""
    import os

    previous = os.environ.get("PALSYSEG_CACHE_DIR")
    os.environ["PALSYSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("palsyseg-cache"))
    yield
    if previous is None:
        os.environ.pop("PALSYSEG_CACHE_DIR", None)
    else:
        os.environ["PALSYSEG_CACHE_DIR"] = previous
