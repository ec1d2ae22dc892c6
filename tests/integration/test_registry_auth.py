"""Identities that mean something: the registry on an MLflow server with basic-auth.

A real ``mlflow server --app-name basic-auth`` (its own sqlite stores, local artifacts, one
start for this module) with an admin and four users: alice trains and registers (she creates
the registered model, so MLflow gives her MANAGE on it), bob is granted MANAGE by the admin,
dave EDIT, carol keeps the default READ. Proven here:

- the trainer recorded on the version is the authenticated registrant, whatever name the run
  declared (kept beside it, and refused as a reviewer too: a pipeline may register under a
  service account); the trainer cannot promote (not even by typing another reviewer's name);
- a user without MANAGE cannot move aliases: MLflow refuses READ (403), palsyseg refuses READ
  and EDIT before touching anything;
- another user with MANAGE can promote, and the audit entry records the authenticated names;
- an alias moved by an EDIT user straight through MLflow is caught by the trail check;
- the command line turns each refusal (and missing credentials) into one line and exit 1.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from palsyseg.errors import GateError
from palsyseg.tracking import registry
from palsyseg.tracking.gates import PromotionPolicy, evaluate_gates
from palsyseg.tracking.identity import IdentityError
from palsyseg.tracking.runs import RunContext, client, log_json, training_run

pytestmark = pytest.mark.integration

ADMIN = "admin"
USERS = ("alice", "bob", "carol", "dave")


def password(user: str) -> str:
    return f"{user}-password-0123"  # basic-auth wants >= 12 characters


@dataclass(frozen=True)
class AuthServer:
    uri: str


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """``mlflow server --app-name basic-auth`` on 127.0.0.1, users created by the admin."""
    root = tmp_path_factory.mktemp("mlflow-basic-auth")
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each request otherwise re-hashes the password (PBKDF2): ~0.4 s on a busy 2-core box.
        "auth_cache_ttl_seconds = 600\n",
        encoding="utf-8",
    )
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password(ADMIN),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "TMPDIR": str(root),
    }
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [
        str(mlflow), "server", "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "server.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"basic-auth MLflow server did not start:\n{tail}", pytrace=False)
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{uri}/health", timeout=2) as response,
            ):
                if response.status == 200:
                    break
            time.sleep(0.3)
        from mlflow.server.auth.client import AuthServiceClient

        with acting_as(ADMIN):
            admin = AuthServiceClient(uri)
            for user in USERS:
                admin.create_user(user, password(user))
        yield AuthServer(uri)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@contextlib.contextmanager
def acting_as(user: str | None) -> Iterator[None]:
    """MLflow clients in this process authenticate as ``user`` (``None``: no credentials)."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    for key in keys:
        os.environ.pop(key, None)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password(user)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def grant(uri: str, user: str, model: str, permission: str) -> None:
    from mlflow.server.auth.client import AuthServiceClient

    with acting_as(ADMIN):
        AuthServiceClient(uri).grant_user_permission(user, "registered_model", model, permission)


def register(uri: str, policy: PromotionPolicy, *, declared_trainer: str) -> str:
    """As the current user: a run (declaring ``declared_trainer``), a logged model without
    weights, gates passed under ``policy``, registered the pipeline's way."""
    from mlflow.entities import LoggedModelStatus

    context = RunContext(dataset_version="sha256:x", code_version="c0ffee",
                         trained_by=declared_trainer)  # fmt: skip
    with training_run(model_name="tiny", role="candidate", config={"seed": 1}, context=context,
                      tracking_uri=uri) as run:  # fmt: skip
        log_json(run.run_id, {"ok": True}, "note.json", tracking_uri=uri)
    mlflow_client = client(uri)
    experiment = mlflow_client.get_run(run.run_id).info.experiment_id
    logged = mlflow_client.create_logged_model(experiment, name="model", source_run_id=run.run_id)
    mlflow_client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    mlflow_client.set_tag(run.run_id, "palsyseg.model_uri", f"models:/{logged.model_id}")
    scores = {"f1_fpp": 0.7, "f1_skin": 0.9, "f1_hair": 0.8, "f1_eyebrow": 0.7, "f1_eye": 0.7,
              "f1_mouth": 0.75}  # fmt: skip
    report = evaluate_gates(scores, champion=None, baselines={"unet_r18": {"f1_fpp": 0.2}},
                            policy=policy)  # fmt: skip
    return registry.register_challenger(run.run_id, gate_report=report, metrics=scores,
                                        context=context, policy=policy, tracking_uri=uri)  # fmt: skip


def test_trainer_and_reviewer_are_the_authenticated_users(
    auth_server: AuthServer, model_name: str
) -> None:
    from mlflow.exceptions import MlflowException

    uri = auth_server.uri
    policy = PromotionPolicy(registered_model=model_name)
    with acting_as("alice"):
        version = register(uri, policy, declared_trainer="tess")  # alice says tess trained it
        info = registry.get_version(version, policy=policy, tracking_uri=uri)
    assert (info.trained_by, info.identity, info.trained_by_declared) == (
        "alice",
        "basic-auth",
        "tess",
    )

    # The trainer cannot promote: not as herself (she has MANAGE, as the model's creator) ...
    with acting_as("alice"), pytest.raises(GateError) as refused:
        registry.promote(version, reviewer=None, reason="mine", policy=policy, tracking_uri=uri)
    assert refused.value.lines() == [
        f"{model_name} v{version}: promotion refused: reviewer alice trained this model (a "
        "different person must review it)"
    ]
    # ... nor by typing someone else's name: the server says who she is.
    with acting_as("alice"), pytest.raises(IdentityError, match="authenticated as alice"):
        registry.promote(version, reviewer="bob", reason="x", policy=policy, tracking_uri=uri)

    # Without MANAGE nobody moves champion: MLflow refuses READ, palsyseg refuses READ and EDIT.
    grant(uri, "dave", model_name, "EDIT")
    for user, permission in (("carol", "READ"), ("dave", "EDIT")):
        with acting_as(user), pytest.raises(GateError) as refused:
            registry.promote(version, reviewer=None, reason="x", policy=policy, tracking_uri=uri)
        assert refused.value.lines() == [
            f"{model_name} v{version}: promotion refused: {user} has {permission} on registered "
            f"model {model_name}; to promote needs MANAGE (an MLflow admin grants it)"
        ]
    with acting_as("carol"), pytest.raises(MlflowException) as denied:
        client(uri).set_registered_model_alias(model_name, "champion", version)
    assert denied.value.error_code == "PERMISSION_DENIED"
    with acting_as("carol"):
        assert registry.champion_version(policy=policy, tracking_uri=uri) is None

    # Another user with MANAGE can; the audit entry names the authenticated people.
    grant(uri, "bob", model_name, "MANAGE")
    with acting_as("bob"):
        entry = registry.promote(
            version, reviewer="Bob", reason="reviewed", policy=policy, tracking_uri=uri
        )
        assert (entry.reviewer, entry.trained_by, entry.identity) == ("bob", "alice", "basic-auth")
        assert registry.check_trail(policy=policy, tracking_uri=uri).ok
        assert registry.champion_version(policy=policy, tracking_uri=uri) == version

    # MLflow lets EDIT move an alias (not delete it); palsyseg's trail check catches the move.
    with acting_as("alice"):
        second = register(uri, policy, declared_trainer="alice")
    with acting_as("dave"):
        client(uri).set_registered_model_alias(model_name, "champion", second)
        with pytest.raises(MlflowException) as denied:
            client(uri).delete_registered_model_alias(model_name, "champion")
    assert denied.value.error_code == "PERMISSION_DENIED"
    with acting_as("bob"):
        assert registry.check_trail(policy=policy, tracking_uri=uri).problems == [
            f"alias champion is on v{second} but audit.000001 put it on v{version}: moved "
            "outside palsyseg"
        ]
        with pytest.raises(GateError, match="the audit trail is broken: alias champion"):
            registry.promote(second, reviewer=None, reason="x", policy=policy, tracking_uri=uri)


def test_the_command_line_speaks_one_line_per_refusal(
    auth_server: AuthServer, model_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    uri = auth_server.uri
    (tmp_path / ".git").mkdir()
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "promotion.yaml").write_text(f"registered_model: {model_name}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with acting_as("alice"):
        version = register(uri, PromotionPolicy(registered_model=model_name),
                           declared_trainer="alice")  # fmt: skip
    with acting_as("carol"):
        refused = cli("registry", "promote", version, "--reason", "x")
    assert refused.code == 1
    assert refused.stderr.splitlines() == [
        f"error: {model_name} v{version}: promotion refused: carol has READ on registered model "
        f"{model_name}; to promote needs MANAGE (an MLflow admin grants it)"
    ]
    with acting_as(None):
        anonymous = cli("registry", "promote", version, "--reason", "x")
        listed = cli("registry", "list")
    assert anonymous.code == 1
    assert anonymous.stderr.splitlines() == [
        f"error: {uri}: the tracking server requires authentication; set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    ]
    assert listed.code == 1
    assert listed.stderr.splitlines() == anonymous.stderr.splitlines()
    grant(uri, "bob", model_name, "MANAGE")
    with acting_as("bob"):
        done = cli("registry", "promote", version, "--reason", "reviewed")
        history = cli("registry", "history")
    assert done.code == 0, done.stderr
    assert "audit entry 1 by bob (basic-auth)" in done.stdout
    assert "bob ✓" in history.stdout
