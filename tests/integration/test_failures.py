"""Failures that explain themselves: unreachable MLflow and S3, HTTP errors, stores that do not exist.

Real sockets on 127.0.0.1: a closed port (connection refused), a port that accepts and never
answers, and small HTTP servers that answer what a failing or foreign server would. Every
command must fail with one ``error:`` line naming what failed and what to do, within 15 s,
and create nothing.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BOUND_S = 15.0


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@contextlib.contextmanager
def http_server(status_of: dict[str, int], default: int) -> Iterator[str]:
    """An HTTP server answering ``status_of[path]`` (else ``default``) with a short body."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            status = status_of.get(self.path.split("?")[0], default)
            body = b"OK" if status == 200 else b"<html>nope</html>"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project (it has .git) as cwd, with the repo's params and policy, no tracking URI."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "mlflow").mkdir()
    shutil.copy(REPO / "mlflow" / "promotion.yaml", tmp_path / "mlflow" / "promotion.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "manifest.csv").write_text("image\n")
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def one_error_line(result, started: float) -> str:
    assert time.monotonic() - started < BOUND_S
    assert result.code == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


REGISTRY_COMMANDS = [
    ("registry", "list"),
    ("registry", "history"),
    ("registry", "verify"),
    ("registry", "promote", "1", "--reviewer", "bob", "--reason", "r"),
    ("registry", "rollback", "--reviewer", "bob", "--reason", "r"),
    ("registry", "retire", "--reviewer", "bob", "--reason", "r"),
    ("registry", "repair", "--reviewer", "bob", "--reason", "r"),
]


def test_every_registry_command_names_an_unreachable_server_in_one_line(
    project: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    for command in REGISTRY_COMMANDS:
        started = time.monotonic()
        line = one_error_line(cli(*command), started)
        assert line == (
            f"error: MLflow tracking server http://127.0.0.1:{port}: unreachable (connection "
            "refused); start it, or point MLFLOW_TRACKING_URI at a running one"
        ), command
    started = time.monotonic()
    line = one_error_line(
        cli("registry", "list", "--tracking-uri", f"http://127.0.0.1:{port}"), started
    )
    assert "point --tracking-uri at a running one" in line


def test_pipeline_run_checks_the_server_before_any_step(project: Path, cli) -> None:
    port = closed_port()
    started = time.monotonic()
    line = one_error_line(
        cli("pipeline", "run", "--data", "dataset", "--tracking-uri", f"http://127.0.0.1:{port}",
            "--work-dir", project / "kfp"),
        started,
    )  # fmt: skip
    assert f"http://127.0.0.1:{port}: unreachable (connection refused)" in line
    assert not (project / "kfp").exists()  # nothing ran, nothing was written
    started = time.monotonic()
    line = one_error_line(
        cli("pipeline", "step", "train", "--splits", "s", "--model", "palsynet", "--out", "o.pt",
            "--tracking-uri", f"http://127.0.0.1:{port}"),
        started,
    )  # fmt: skip
    assert "unreachable (connection refused)" in line


def test_a_server_that_never_answers_is_given_up_on_in_seconds(project: Path, cli) -> None:
    with silent_server() as port:
        started = time.monotonic()
        line = one_error_line(
            cli("registry", "list", "--tracking-uri", f"http://127.0.0.1:{port}"), started
        )
    assert f"http://127.0.0.1:{port}: unreachable (no answer in time)" in line


def test_http_errors_name_the_status_and_what_to_do(project: Path, cli) -> None:
    # Up, but failing: /health answers 503.
    with http_server({}, 503) as uri:
        started = time.monotonic()
        line = one_error_line(cli("registry", "list", "--tracking-uri", uri), started)
    assert line == (
        f"error: MLflow tracking server {uri}: /health answered HTTP 503 Service Unavailable; "
        "the server is up but failing (see its log)"
    )
    # Up and healthy, but not MLflow (or another version): the API answers 404.
    with http_server({"/health": 200}, 404) as uri:
        started = time.monotonic()
        line = one_error_line(cli("registry", "list", "--tracking-uri", uri), started)
    assert line.startswith(f"error: MLflow {uri} (HTTP 404): ")
    assert line.endswith("is this URI an MLflow tracking server of a compatible version?")


def test_registry_commands_never_create_a_store(
    project: Path, cli, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = project / "mlflow" / "mlfow.db"  # a typo of mlflow.db
    line = one_error_line(
        cli("registry", "list", "--tracking-uri", f"sqlite:///{missing}"), time.monotonic()
    )
    assert line == (
        f"error: --tracking-uri sqlite:///{missing}: no MLflow store at {missing} (no such "
        "file, and this command does not create one); check the path, or run `palsyseg "
        "pipeline run` to make the store"
    )
    assert not missing.exists()
    deeper = project / "nowhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{deeper}")
    line = one_error_line(cli("registry", "history"), time.monotonic())
    assert line.startswith(f"error: MLFLOW_TRACKING_URI sqlite:///{deeper}: no MLflow store")
    assert not (project / "nowhere").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    line = one_error_line(cli("registry", "list", "--tracking-uri", "mlflow"), time.monotonic())
    assert line == (
        f"error: --tracking-uri mlflow: a plain path is not a tracking URI; use "
        f"sqlite:///{project / 'mlflow' / 'mlflow.db'} for a local store, or http://HOST:PORT "
        "for a tracking server"
    )
    notes = project / "notes.db"
    notes.write_text("not a database\n")
    line = one_error_line(
        cli("registry", "list", "--tracking-uri", f"sqlite:///{notes}"), time.monotonic()
    )
    assert line.endswith(f"{notes} is not an SQLite database (is it the right file?)")
    line = one_error_line(
        cli("registry", "list", "--tracking-uri", f"file://{project / 'runs'}"), time.monotonic()
    )
    assert "no MLflow store at" in line and not (project / "runs").exists()

    # Outside any project (no .git, no .dvc) the default store would be a stray
    # ./mlflow/mlflow.db: refused too. Inside one, it is the project's own and made on first use.
    elsewhere = tmp_path_factory.mktemp("not-a-project")
    (elsewhere / "mlflow").mkdir()
    shutil.copy(REPO / "mlflow" / "promotion.yaml", elsewhere / "mlflow" / "promotion.yaml")
    monkeypatch.chdir(elsewhere)
    line = one_error_line(cli("registry", "list"), time.monotonic())
    assert line.startswith("error: the default store sqlite:///") and "no MLflow store" in line
    assert [p.name for p in (elsewhere / "mlflow").iterdir()] == ["promotion.yaml"]


def test_s3_that_cannot_be_reached_is_one_line_before_any_step(
    project: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    line = one_error_line(
        cli("pipeline", "run", "--data", "s3://datasets/faces", "--work-dir", project / "kfp"),
        started,
    )
    assert line == (
        f"error: s3://datasets/faces: read marker failed (S3 endpoint http://127.0.0.1:{port}: "
        "connection refused); start it, or fix AWS_ENDPOINT_URL"
    )
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    line = one_error_line(
        cli("pipeline", "run", "--data", "dataset", "--work-dir", project / "kfp"), started
    )
    assert line == (
        f"error: S3 endpoint http://127.0.0.1:{port}: unreachable (connection refused); start "
        "it, or fix MLFLOW_S3_ENDPOINT_URL"
    )
    assert not (project / "kfp").exists()


@pytest.mark.slow
def test_mlflow_retries_are_bounded_when_a_server_dies_after_the_check(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No probe here: MLflow's own client against a closed port, with the CLI's bounds."""
    from palsyseg.connectivity import describe_error
    from palsyseg.runtime import BOUNDED_NETWORK_ENV, configure_bounded_network
    from palsyseg.tracking import registry
    from palsyseg.tracking.gates import load_policy

    for name in BOUNDED_NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)
    configure_bounded_network()
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        registry.list_versions(policy=load_policy(), tracking_uri=uri)
    assert time.monotonic() - started < BOUND_S
    assert describe_error(info.value) == (
        f"MLflow tracking server {uri}: unreachable (connection refused, after 3 retries); "
        "start it, or point --tracking-uri / MLFLOW_TRACKING_URI at a running one"
    )


def test_a_real_process_prints_one_line_and_a_traceback_only_with_debug(project: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    for name in ("PALSYSEG_DEBUG", *[k for k in env if k.startswith("MLFLOW_HTTP_REQUEST")]):
        env.pop(name, None)
    command = [sys.executable, "-m", "palsyseg.cli"]
    started = time.monotonic()
    done = subprocess.run(
        [*command, "registry", "list"], env=env, capture_output=True, text=True, check=False
    )
    assert time.monotonic() - started < BOUND_S
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "unreachable" in done.stderr
    debug = subprocess.run(
        [*command, "--debug", "registry", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "ConnectivityError" in debug.stderr


def test_a_running_tracking_server_and_s3_endpoint_pass_the_checks(
    tracking, s3_env, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    from palsyseg.connectivity import check_s3_endpoint, check_tracking_store

    assert check_tracking_store() == tracking.uri  # MLFLOW_TRACKING_URI, /health answers 200
    assert check_tracking_store(tracking.uri, create=False) == tracking.uri
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_env.endpoint)
    assert check_s3_endpoint() == s3_env.endpoint  # S3 answers an anonymous GET with 403: up
    listed = cli("registry", "list")
    assert listed.code == 0 and listed.stderr == "", listed.stderr
