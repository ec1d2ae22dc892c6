"""Real servers for the integration tests: SeaweedFS (S3) and an MLflow tracking server.

Both run on 127.0.0.1 on free ports, once per test session, in their own process group, and
are always stopped afterwards (SIGTERM to the group, SIGKILL after a grace period), with the
unix sockets SeaweedFS leaves in /tmp removed. A server that does not come up fails the
tests that need it with the tail of its log; it never silently skips them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ACCESS_KEY = "palsyseg-test"
SECRET_KEY = "palsyseg-test-secret"
MLFLOW_BUCKET = "mlflow-artifacts"
VENV_BIN = Path(sys.executable).parent


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(rng: random.Random, *, with_grpc: bool = False) -> int:
    """A free TCP port; ``with_grpc`` also needs port+10000 free (SeaweedFS' gRPC offset)."""
    for _ in range(500):
        port = rng.randint(20000, 55000)
        if _bindable(port) and (not with_grpc or _bindable(port + 10000)):
            return port
    raise RuntimeError("no free port found")


@dataclass
class ServerProcess:
    """A server in its own process group, with its log file, that :meth:`stop` always ends."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Children that outlived the leader (same group) get the same treatment.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for step in self.cleanup:
            with contextlib.suppress(OSError):
                step()


def start_server(
    name: str, cmd: list[str], env: dict[str, str], log_path: Path, ready: Callable[[], bool]
) -> ServerProcess:
    """Start ``cmd`` and wait until ``ready()``; stop it and fail with its log if it never is."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = ServerProcess(name, proc, log_path)
    atexit.register(server.stop)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if ready():
            return server
        time.sleep(0.3)
    server.stop()
    pytest.fail(f"{name} did not start ({' '.join(cmd)}):\n{server.log_tail()}", pytrace=False)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """The variables boto3, DVC and MLflow read to reach this store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )


@dataclass(frozen=True)
class MlflowServer:
    uri: str
    artifacts_destination: str
    s3: S3Server


def _executable(name: str) -> str:
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[dev]')", pytrace=False)
    return found


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``weed mini`` on free ports with S3 enabled; the key pair is its admin identity."""
    rng = random.Random()
    root = tmp_path_factory.mktemp("seaweedfs")
    data = root / "data"
    data.mkdir()
    ports = {
        part: free_port(rng, with_grpc=True)
        for part in ("master", "volume", "filer", "s3", "admin")
    }
    cmd = [
        _executable("weed"),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{part}.port={port}" for part, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    s3 = S3Server(f"http://127.0.0.1:{ports['s3']}", ACCESS_KEY, SECRET_KEY)
    client = s3.client()

    def ready() -> bool:
        try:
            client.list_buckets()
        except Exception:
            return False
        return True

    server = start_server("SeaweedFS", cmd, env, root / "weed.log", ready)

    # weed puts its gRPC sockets in /tmp whatever TMPDIR says; remove exactly ours at stop.
    def remove_sockets() -> None:
        for port in ports.values():
            for number in (port, port + 10000):
                for sock in Path("/tmp").glob(f"seaweedfs-*-{number}.sock"):
                    sock.unlink(missing_ok=True)

    server.cleanup.append(remove_sockets)
    try:
        yield s3
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(
    seaweedfs: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """``mlflow server --workers 1`` on a sqlite store with artifacts proxied to SeaweedFS."""
    from palsyseg.storage import ensure_bucket

    root = tmp_path_factory.mktemp("mlflow-server")
    ensure_bucket(MLFLOW_BUCKET, client=seaweedfs.client())
    port = free_port(random.Random())
    destination = f"s3://{MLFLOW_BUCKET}/artifacts"
    cmd = [
        _executable("mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        destination,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {
        **os.environ,
        **seaweedfs.env(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # The job runner forks several huey consumers a test does not need.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "TMPDIR": str(root),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    server = start_server("MLflow server", cmd, env, root / "mlflow.log", ready)
    try:
        yield MlflowServer(uri, destination, seaweedfs)
    finally:
        server.stop()


@pytest.fixture
def s3_env(seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """This test's process talks to SeaweedFS through the standard AWS variables."""
    for key, value in seaweedfs.env().items():
        monkeypatch.setenv(key, value)
    return seaweedfs


@pytest.fixture
def tracking(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowServer:
    """MLflow calls in this test go to the real server (the client needs no S3 keys)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    import mlflow

    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_registry_uri(mlflow_server.uri)
    return mlflow_server


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    """A registered-model name of this test's own, so tests sharing a server never collide."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"palsyseg-{stem}-{random.Random().randrange(16**6):06x}"
