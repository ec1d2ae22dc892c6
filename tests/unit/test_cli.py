"""The command line's face: help that shows defaults and flags as flags, errors as one line.

The network failures themselves (closed ports, HTTP errors, missing stores) are proved on real
sockets in ``tests/integration/test_failures.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from palsyseg.errors import DatasetError


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich would otherwise wrap the help into 80 columns


def all_commands() -> list[list[str]]:
    import typer

    from palsyseg.cli import _register_commands, app

    _register_commands()
    found: list[list[str]] = [[]]

    def walk(command, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            found.append([*path, name])
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_help_shows_defaults_and_flags_take_no_value(cli, wide: None) -> None:
    commands = all_commands()
    assert ["pipeline", "run"] in commands and ["registry", "list"] in commands
    for command in commands:
        result = cli(*command, "--help")
        assert result.code == 0, (command, result.stderr)
        assert "<bool>" not in result.stdout, command  # --force, --json: flags, not values
    run = cli("pipeline", "run", "--help").stdout
    assert "(default: params.yaml 'dataset', else data)" in run  # not eaten as rich markup
    assert "(default: params.yaml evaluate.candidate)" in run
    assert "(default: $MLFLOW_TRACKING_URI, else sqlite mlflow/mlflow.db)" in run
    assert "[default: params.yaml]" in run and "[default: build/kfp]" in run
    assert "--debug" in cli("--help").stdout


def test_a_mistyped_model_flag_is_blamed_on_the_flag(cli, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  model: palsynet\n  epochs: 1\n")
    for command in (
        ("train", "--data", tmp_path, "--model", "palsynte", "--params", params),
        ("pipeline", "step", "train", "--splits", tmp_path, "--model", "palsynte",
         "--out", tmp_path / "o.pt", "--params", params),
        ("pipeline", "run", "--candidate", "palsynte", "--params", params),
        ("pipeline", "run", "--baselines", "unet_r18,palsynte", "--params", params),
    ):  # fmt: skip
        result = cli(*command)
        assert result.code == 1
        (line,) = result.stderr.strip().splitlines()
        flag = next(a for a in command if str(a) in ("--model", "--candidate", "--baselines"))
        assert line.startswith(f"error: {flag} palsynte: unknown model; valid names: palsynet")
        assert "params.yaml" not in line

    # the same typo in params.yaml is params.yaml's
    params.write_text("train:\n  model: palsynte\n")
    result = cli("train", "--data", tmp_path, "--params", params)
    assert result.code == 1 and f"error: {params}:train: unknown model 'palsynte'" in result.stderr


def test_debug_shows_the_traceback_instead_of_the_line(cli, tmp_path: Path) -> None:
    plain = cli("data", "validate", tmp_path / "nowhere")
    assert plain.code == 1
    assert plain.stderr == f"error: {tmp_path / 'nowhere'}: dataset directory does not exist\n"
    with pytest.raises(DatasetError, match="dataset directory does not exist"):
        cli("--debug", "data", "validate", tmp_path / "nowhere")


def test_an_unexpected_error_is_one_line_with_a_hint(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import palsyseg.data.synth

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("patients")

    monkeypatch.setattr(palsyseg.data.synth, "generate_dataset", broken)
    result = cli("data", "synth", "--out", tmp_path / "out")
    assert result.code == 1
    assert result.stderr == (
        "error: unexpected KeyError: 'patients' (rerun as `palsyseg --debug ...` for the "
        "traceback)\n"
    )
    monkeypatch.setenv("PALSYSEG_DEBUG", "1")
    with pytest.raises(KeyError):
        cli("data", "synth", "--out", tmp_path / "out")


def test_mlflow_retries_are_bounded_unless_the_user_chose(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from palsyseg.runtime import BOUNDED_NETWORK_ENV

    for name in BOUNDED_NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # the user's own choice
    assert cli("--help").code == 0
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"


def test_mlflow_and_s3_errors_are_described_in_one_line() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    from mlflow.exceptions import MlflowException, RestException

    from palsyseg.connectivity import describe_error

    denied = RestException({"error_code": "PERMISSION_DENIED", "message": "no\nsecond line"})
    line = describe_error(denied)
    assert "(HTTP 403)" in line and "PERMISSION_DENIED: no" in line and "\n" not in line
    assert line.endswith("ask the server's administrator for the permission")
    assert describe_error(
        RestException({"error_code": "UNAUTHENTICATED", "message": "who?"})
    ).endswith("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    assert "(HTTP 500)" in describe_error(
        MlflowException("API request to endpoint /x failed with error code 500 != 200")
    )
    forbidden = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
         "ResponseMetadata": {"HTTPStatusCode": 403}},
        "ListObjectsV2",
    )  # fmt: skip
    assert describe_error(forbidden).endswith(
        "ListObjectsV2 failed (HTTP 403 AccessDenied); check the S3 keys "
        "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and their rights"
    )
    assert "no S3 credentials" in describe_error(NoCredentialsError())
    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b")
    refused.__context__ = ConnectionRefusedError(111, "Connection refused")
    assert "connection refused" in describe_error(refused)
    assert describe_error(ValueError("not ours")) is None
