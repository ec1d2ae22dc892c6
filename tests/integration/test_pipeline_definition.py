"""The Kubeflow pipeline without a cluster: compiled structure, committed YAML in sync,
component wiring, argument building and ``submit`` against a stand-in KFP API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import yaml

from palsyseg.errors import ConfigError, DatasetError
from palsyseg.pipeline import (
    GATES_FILE,
    IMAGE_PRETRAINED,
    PipelineArguments,
    build_arguments,
    train_config_for,
)
from palsyseg.pipeline_runner import compile_pipeline, submit
from palsyseg.tracking.gates import GateReport, GateResult

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "pipelines" / "training_pipeline.yaml"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    path = compile_pipeline(tmp_path_factory.mktemp("compiled") / "pipeline.yaml")
    spec, platform = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return spec, platform


def test_committed_yaml_is_what_the_code_compiles_to(tmp_path: Path) -> None:
    # A fresh interpreter without PALSYSEG_IMAGE: the committed copy uses the default image.
    env = {k: v for k, v in os.environ.items() if k != "PALSYSEG_IMAGE"}
    out = tmp_path / "fresh.yaml"
    subprocess.run(
        [sys.executable, "-m", "palsyseg.cli", "pipeline", "compile", "--out", str(out)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    assert out.read_text() == COMMITTED.read_text(), (
        "pipelines/training_pipeline.yaml is stale: run `palsyseg pipeline compile`"
    )


def test_pipeline_structure(compiled) -> None:
    spec, platform = compiled
    assert spec["pipelineInfo"]["name"] == "palsyseg-training"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {
        "dataset_uri",
        "dvc_rev",
        "candidate_model",
        "baseline_models",
        "epochs",
        "gates",
        "tracking_uri",
    } <= set(params)
    assert params["baseline_models"]["defaultValue"] == ["deeplabv3plus_r34", "unet_r18"]

    tasks = spec["root"]["dag"]["tasks"]
    loop_name = next(n for n in tasks if n.startswith("for-loop-"))
    condition_name = next(n for n in tasks if n.startswith("condition-"))
    assert set(tasks) == {
        "validate-dataset-op",
        "split-dataset-op",
        "train-model-op",
        loop_name,
        "evaluate-models-op",
        "check-gates-op",
        condition_name,
    }
    deps = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert deps["split-dataset-op"] == {"validate-dataset-op"}
    assert deps["train-model-op"] == {"split-dataset-op"}
    assert deps["evaluate-models-op"] == {loop_name, "split-dataset-op", "train-model-op"}
    assert deps["check-gates-op"] == {"evaluate-models-op"}

    # Baselines fan out over the list parameter; the gate condition guards registration.
    loop = tasks[loop_name]
    assert (
        loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--baseline_models"
    )
    loop_tasks = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(loop_tasks) == {"train-model-op-2"}
    condition = tasks[condition_name]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--check-gates-op-Output'] == true"
    )
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"register-model-op"}

    # Never cached: steps whose hidden input is the registry's champion.
    for name in ("evaluate-models-op", "check-gates-op"):
        assert tasks[name]["cachingOptions"] == {}, name
    assert inner["register-model-op"]["cachingOptions"] == {}
    assert tasks["train-model-op"]["cachingOptions"] == {"enableCache": True}

    executors = spec["deploymentSpec"]["executors"]
    for name in ("exec-train-model-op", "exec-train-model-op-2"):
        resources = executors[name]["container"]["resources"]["accelerator"]
        assert resources["resourceType"] == "nvidia.com/gpu"
        assert resources["resourceCount"] == "1"
    assert "resources" not in executors["exec-evaluate-models-op"]["container"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {"palsyseg:0.1.0"}
    # No pip install at run time: the image holds palsyseg and kfp.
    assert all("pip install" not in " ".join(e["container"]["command"]) for e in executors.values())

    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {
        "exec-validate-dataset-op",
        "exec-train-model-op",
        "exec-train-model-op-2",
        "exec-evaluate-models-op",
        "exec-register-model-op",
    } <= set(kube)
    for executor in kube.values():
        (secret,) = executor["secretAsEnv"]
        assert secret["secretName"] == "palsyseg-s3"
        assert {m["envVar"] for m in secret["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
        }


def test_component_bodies_only_call_palsyseg(compiled) -> None:
    spec, _ = compiled
    for name, executor in spec["deploymentSpec"]["executors"].items():
        source = executor["container"]["command"][-1]
        assert "from palsyseg" in source, name
        assert "configure_quiet_offline()" in source, name


def test_gate_component_reads_the_verdict(tmp_path: Path) -> None:
    from components.evaluate import check_gates_op

    def report(passed: bool) -> SimpleNamespace:
        folder = tmp_path / str(passed)
        folder.mkdir()
        gates = GateReport((GateResult("primary_floor", passed, "x"),))
        (folder / GATES_FILE).write_text(json.dumps(gates.to_dict()))
        return SimpleNamespace(path=str(folder))

    assert check_gates_op.python_func(report=report(True)) is True
    assert check_gates_op.python_func(report=report(False)) is False


def _project(tmp_path: Path, params_text: str) -> tuple[Path, Path]:
    """An empty dataset directory and a params.yaml holding ``params_text``."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.csv").write_text("image,mask\n")
    params = tmp_path / "params.yaml"
    params.write_text(params_text)
    return data, params


def test_arguments_come_from_params_policy_and_flags(tmp_path: Path) -> None:
    data, params = _project(
        tmp_path,
        "dataset: data\nsplit: {seed: 3}\ntrain: {epochs: 4, batch_size: 8, image_size: 96}\n"
        "evaluate: {candidate: palsynet, baselines: [unet_r18]}\n",
    )
    policy = tmp_path / "promotion.yaml"
    policy.write_text("min_primary: 0.4\n")
    args = build_arguments(
        dataset_uri=str(data),
        epochs=2,
        train_overrides={"image_size": 64},
        gate_overrides={"beat_baselines": False},
        params_path=params,
        policy_path=policy,
    )
    assert args.candidate_model == "palsynet"
    assert args.baseline_models == ["unet_r18"]
    assert args.epochs == 2
    assert args.train_config == {"batch_size": 8, "image_size": 64}
    assert args.split_config == {"seed": 3}
    assert args.gates["min_primary"] == 0.4
    assert args.gates["beat_baselines"] is False
    assert args.dataset_version.startswith("sha256:")
    assert args.trained_by

    with pytest.raises(DatasetError, match="does not exist"):
        build_arguments(
            dataset_uri=str(tmp_path / "missing"), params_path=params, policy_path=policy
        )
    for bad, message in (
        ({"baselines": []}, "at least one baseline"),
        ({"baselines": ["palsynet"]}, "is the candidate itself"),
        ({"baselines": ["nope"]}, "unknown model"),
        ({"candidate": "unet_r18", "baselines": ["unet_r18", "x"]}, "unknown model"),
    ):
        with pytest.raises(ConfigError, match=message):
            build_arguments(dataset_uri=str(data), params_path=params, policy_path=policy, **bad)
    with pytest.raises(ConfigError, match="unknown key"):
        build_arguments(
            dataset_uri=str(data), params_path=params, policy_path=policy, gate_overrides={"x": 1}
        )


def test_a_warm_start_path_is_made_absolute_and_a_missing_one_refused_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, params = _project(tmp_path, "dataset: data\ntrain: {epochs: 1}\n")
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "net.pt").write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)  # the components run elsewhere: relative to where it is asked
    overrides = {"init_weights": "pretrained/net.pt", "baselines": {"init_weights": ""}}
    args = build_arguments(
        dataset_uri=str(data),
        train_overrides=overrides,
        params_path=params,
        policy_path=Path(__file__).parents[2] / "mlflow" / "promotion.yaml",
    )
    assert args.train_config["init_weights"] == str(tmp_path / "pretrained" / "net.pt")
    assert args.train_config["baselines"] == {"init_weights": ""}
    with pytest.raises(ConfigError, match=r"train\.init_weights: pretrained/nope\.pt: .*not exist"):
        build_arguments(
            dataset_uri=str(data),
            train_overrides={"init_weights": "pretrained/nope.pt"},
            params_path=params,
            policy_path=Path(__file__).parents[2] / "mlflow" / "promotion.yaml",
        )
    # A cluster run reads the file inside its image: kept as given, never a local path.
    in_image = f"{IMAGE_PRETRAINED}/palsynet-phantom-128.pt"
    cluster = build_arguments(
        dataset_uri=str(data),
        train_overrides={"init_weights": in_image},
        params_path=params,
        policy_path=Path(__file__).parents[2] / "mlflow" / "promotion.yaml",
        local=False,
    )
    assert cluster.train_config["init_weights"] == in_image
    with pytest.raises(ConfigError, match="a cluster cannot read this machine's files"):
        build_arguments(
            dataset_uri=str(data),
            train_overrides={"init_weights": "pretrained/net.pt"},
            params_path=params,
            policy_path=Path(__file__).parents[2] / "mlflow" / "promotion.yaml",
            local=False,
        )
    dockerfile = (Path(__file__).parents[2] / "Dockerfile").read_text()
    assert "COPY pretrained pretrained" in dockerfile and "WORKDIR /opt/palsyseg" in dockerfile


def test_baseline_only_fields_apply_to_the_baselines_and_are_checked_up_front(
    tmp_path: Path,
) -> None:
    train = {"image_size": 64, "stream_patients": 40, "baselines": {"stream_patients": 0}}
    candidate = train_config_for("palsynet", train)
    baseline = train_config_for("unet_r18", {**train, "epochs": 3}, role="baseline")
    assert candidate.stream_patients == 40 and candidate.model == "palsynet"
    assert baseline.stream_patients == 0 and baseline.image_size == 64 and baseline.epochs == 3
    with pytest.raises(ConfigError, match=r"train\.baselines: unknown key"):
        train_config_for("unet_r18", {"baselines": {"nope": 1}}, role="baseline")
    with pytest.raises(ConfigError, match="must be a mapping"):
        train_config_for("unet_r18", {"baselines": 3}, role="baseline")
    data, params = _project(
        tmp_path, "train: {epochs: 1}\nevaluate: {candidate: palsynet, baselines: [unet_r18]}\n"
    )
    with pytest.raises(ConfigError, match=r"train\.baselines: unknown key"):  # before any task runs
        build_arguments(
            dataset_uri=str(data),
            params_path=params,
            policy_path=REPO / "mlflow" / "promotion.yaml",
            train_overrides={"baselines": {"nope": 1}},
            resolve_dataset_version=False,
        )


# --------------------------------------------------------------------------- submit


class FakeKfp(BaseHTTPRequestHandler):
    """Answers the few KFP v2beta1 REST calls ``kfp.Client`` makes to create a run."""

    requests: ClassVar[list[tuple[str, str, dict]]] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, {}))
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._reply({"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiments": [], "total_size": 0})
        else:
            self._reply({})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.requests.append(("POST", self.path, body))
        if self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        elif self.path.startswith("/apis/v2beta1/runs"):
            self._reply(
                {
                    "run_id": "run-42",
                    "display_name": body.get("display_name"),
                    "experiment_id": "exp-1",
                }
            )
        else:
            self._reply({})

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


def test_submit_creates_a_run_with_the_compiled_spec_and_arguments() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeKfp.requests = []
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        args = PipelineArguments(
            dataset_uri="s3://datasets/faces/v3",
            dataset_version="sha256:abc",
            baseline_models=["unet_r18"],
            epochs=50,
            gates={"min_primary": 0.6},
            tracking_uri="http://mlflow.example:5000",
            trained_by="alice",
        )
        result = submit(args, host=host, experiment="palsyseg-test", run_name="nightly")
    finally:
        server.shutdown()
        server.server_close()
    assert result == {"run_id": "run-42", "url": f"{host}/#/runs/details/run-42"}
    posts = {
        path.split("?")[0]: body for method, path, body in FakeKfp.requests if method == "POST"
    }
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "palsyseg-test"
    run = posts["/apis/v2beta1/runs"]
    assert run["display_name"] == "nightly"
    assert run["experiment_id"] == "exp-1"
    # The IR and the Kubernetes platform spec (GPU, secrets) travel together.
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "palsyseg-training"
    assert "kubernetes" in run["pipeline_spec"]["platform_spec"]["platforms"]
    parameters = run["runtime_config"]["parameters"]
    assert parameters["dataset_uri"] == "s3://datasets/faces/v3"
    assert parameters["baseline_models"] == ["unet_r18"]
    assert parameters["epochs"] == 50
    assert parameters["gates"] == {"min_primary": 0.6}
    assert parameters["trained_by"] == "alice"


def test_submit_cli_refuses_what_a_cluster_cannot_use(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = cli("pipeline", "submit", "--host", "http://127.0.0.1:9", "--data", str(tmp_path))
    assert result.code == 1
    assert "needs an MLflow server URI" in result.stderr
    data = tmp_path / "data"
    data.mkdir()
    result = cli(
        "pipeline", "submit", "--host", "http://127.0.0.1:9", "--data", str(data),
        "--tracking-uri", "http://mlflow:5000",
        "--params", str(REPO / "params.yaml"), "--policy", str(REPO / "mlflow" / "promotion.yaml"),
    )  # fmt: skip
    assert result.code == 1
    assert "cannot read this machine's files" in result.stderr
