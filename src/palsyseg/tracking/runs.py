"""MLflow runs: where tracking goes, what a training run records, how models are logged.

Where: ``MLFLOW_TRACKING_URI`` when set (a server, whose artifact store may be S3), else the
embedded default, a sqlite store ``mlflow/mlflow.db`` in the project with artifacts in
``mlflow/artifacts/`` (no server needed; ``mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db``
shows it). Both behave the same to the rest of palsyseg.

The experiment ``palsyseg`` is created as a machine-learning experiment (tag
``mlflow.experimentKind`` = ``custom_model_development``) with a description saying where to
look. What a training run records (one run per trained model):

- params: the flattened training config (seed included), the dataset URI and version (DVC md5,
  revision or content fingerprint), the git commit;
- tags: role (candidate / baseline), model name, trainer, pipeline run, environment summary;
  in a pipeline, ``mlflow.parentRunId``: the pipeline's run
  (:mod:`palsyseg.tracking.pipeline_runs`);
- the dataset as an MLflow dataset input (source URI, digest = DVC md5 or content
  fingerprint), which the UI shows in the runs table's Dataset column;
- metrics per epoch (``train_loss``, ``lr``, ``val_*``, step = epoch);
- artifacts: ``environment.json``; the model (``mlflow.pytorch``, pickled :class:`LogitsOnly`
  with a signature, an input example, pinned requirements without ``+cu`` local labels, and
  the palsyseg source as ``code_paths``), the *finding* model under ``finding/`` (photos in,
  ``palsyseg predict``'s findings out, :mod:`palsyseg.predict.serving`; tag
  ``palsyseg.model_uri`` names it, so it is what the registry registers and serves) and the
  palsyseg checkpoint under ``checkpoint/`` so
  the registry's champion can be re-evaluated with ``palsyseg.train.load_checkpoint_model``;
  the checkpoint's ``weights_sha256`` (when it records one) as tag ``palsyseg.weights_sha256``
  on the run and the logged model;
- after evaluation: ``test_*`` metrics, the report with its confusion-matrix, per-class-F1
  and prediction-overlay plots (drawn by :mod:`palsyseg.evaluate`), the reviewer's one-page
  ``evaluation/report.html`` (its artifact path in tag ``palsyseg.report``, which the registry
  links from the version) and the gate results on the candidate's run; each baseline's own
  ``test_*`` metrics on the baseline's run.

Functions take a ``run_id`` rather than relying on MLflow's active run, because the pipeline's
steps are separate processes that resume the same run.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from palsyseg.runtime import find_project_root

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "palsyseg"
LOCAL_STORE = Path("mlflow") / "mlflow.db"
MODEL_ARTIFACT = "model"
CHECKPOINT_ARTIFACT = "checkpoint"
EVALUATION_ARTIFACT = "evaluation"
REPORT_TAG = "palsyseg.report"  # artifact path of the run's one-page HTML evaluation report
NOTE_TAG = "mlflow.note.content"  # a run's or an experiment's description (Markdown)
DATASET_CONTEXT_TAG = "mlflow.data.context"
_DIGEST_MAX = 36  # MLflow's limit on a dataset digest
# A unique-key violation as sqlite, PostgreSQL and MySQL word it.
_LOST_INSERT = re.compile(r"UNIQUE constraint|duplicate key|Duplicate entry", re.IGNORECASE)
WEIGHTS_TAG = "palsyseg.weights_sha256"
# What the MLflow UI reads to show an experiment as machine learning (runs) rather than GenAI
# (traces). MLflow 3.17's UI decides by a per-browser toggle instead and only older and newer
# UIs read the tag; links palsyseg prints add ?workflowType=machine_learning for 3.17.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
EXPERIMENT_NOTE = (
    "palsyseg training runs. Each pipeline run is a parent run named after its job; expand it "
    "to see the candidate's and the baselines' runs, each with its own metrics. The parent's "
    "description holds the summary: candidate vs baselines vs champion on the test split, the "
    "promotion gates, the data version and what was registered."
)
# Packages the logged model needs to load and run; versions are read from this environment.
MODEL_REQUIREMENTS = (
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "timm",
    "numpy",
    "pyyaml",
)
_ENV_PACKAGES = (
    *MODEL_REQUIREMENTS,
    "mlflow",
    "kfp",
    "dvc",
    "albumentations",
    "opencv-python-headless",
    "scikit-learn",
    "palsyseg",
)


# --------------------------------------------------------------------------- where


def local_tracking_uri(project_root: Path | None = None) -> str:
    """``sqlite:///<project>/mlflow/mlflow.db`` (absolute, so every process agrees)."""
    root = project_root or find_project_root() or Path.cwd()
    return f"sqlite:///{(root / LOCAL_STORE).resolve()}"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The URI given, else ``MLFLOW_TRACKING_URI``, else :func:`local_tracking_uri`."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri()


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow's tracking and registry at one URI; create the sqlite file's folder."""
    import mlflow

    # MLflow prints "View run ... at URL" on stdout when a run ends; palsyseg's stdout is
    # for its own tables and JSON.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = resolve_tracking_uri(tracking_uri)
    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client(tracking_uri: str | None = None) -> Any:
    """An ``MlflowClient`` on :func:`configure`'s URI."""
    from mlflow import MlflowClient

    uri = configure(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None) -> str:
    """The experiment's id, creating it (race-safe) when missing.

    A new experiment is a machine-learning one (:data:`EXPERIMENT_KIND`) with a description
    (:data:`EXPERIMENT_NOTE`); an existing one without a kind is given it, one with a kind
    someone chose keeps it. With the sqlite store, artifacts go next to the database
    (``mlflow/artifacts``) instead of MLflow's default ``./mlruns`` relative to whatever the
    current directory happens to be.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(tracking_uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
            _set_experiment_kind(mlflow_client, experiment.experiment_id)
        return experiment.experiment_id
    db = _sqlite_path(resolve_tracking_uri(tracking_uri))
    location = (db.parent / "artifacts").resolve().as_uri() if db is not None else None
    tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, NOTE_TAG: EXPERIMENT_NOTE}
    try:
        return mlflow_client.create_experiment(name, artifact_location=location, tags=tags)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow_client.get_experiment_by_name(name).experiment_id


def _set_experiment_kind(mlflow_client: Any, experiment_id: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    except MlflowException as exc:
        if exc.error_code != "PERMISSION_DENIED":
            raise
        # Another user's experiment on a server with authentication: its kind is theirs.
        log.info("experiment %s: no permission to set its kind (%s)", experiment_id, exc.message)


# --------------------------------------------------------------------------- what


def current_user() -> str:
    """The person a run is attributed to: ``PALSYSEG_USER``, else the OS user."""
    user = os.environ.get("PALSYSEG_USER", "").strip()
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def git_commit(project_root: Path | None = None) -> str:
    """``<sha>`` or ``<sha>-dirty`` of the project checkout; ``PALSYSEG_GIT_COMMIT`` in images."""
    if os.environ.get("PALSYSEG_GIT_COMMIT"):
        return os.environ["PALSYSEG_GIT_COMMIT"]
    root = project_root or find_project_root()
    if root is None or not (root / ".git").exists():
        return "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--"], cwd=root, capture_output=True
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


@dataclass(frozen=True)
class RunContext:
    """Where a run's inputs came from; recorded on every run and on registered versions."""

    dataset_uri: str = ""
    dataset_version: str = ""  # DVC md5, git/DVC revision or content fingerprint
    code_version: str = ""  # git commit
    pipeline_run: str = ""
    trained_by: str = ""

    def params(self) -> dict[str, str]:
        return {
            "dataset_uri": self.dataset_uri,
            "dataset_version": self.dataset_version,
            "git_commit": self.code_version,
        }

    def tags(self) -> dict[str, str]:
        return {
            "data.uri": self.dataset_uri,
            "data.version": self.dataset_version,
            "code.version": self.code_version,
            "pipeline.run": self.pipeline_run,
            "trained_by": self.trained_by,
        }

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def dataset_digest(dataset_version: str) -> str:
    """The short data identity MLflow shows as a dataset's digest (at most 36 characters).

    The DVC md5 when the version carries one (``...;dvc-md5:<md5>``), the git commit of a DVC
    revision (``dvc:<commit>:<path>``), else the first 32 hex digits of the content
    fingerprint (``sha256:<hex>``).
    """
    md5 = re.search(r"dvc-md5:([^;]+)", dataset_version)
    if md5:
        return md5.group(1)[:_DIGEST_MAX]
    if dataset_version.startswith("dvc:"):
        return dataset_version.split(":")[1][:32]
    if dataset_version.startswith("sha256:"):
        return dataset_version[len("sha256:") :][:32]
    return dataset_version[:_DIGEST_MAX] or "unknown"


def dataset_input(dataset_uri: str, dataset_version: str, *, context: str = "training") -> Any:
    """The MLflow ``DatasetInput`` for the data a run used.

    Source: the S3 prefix (type ``s3``), the local directory (``local``) or, for a DVC revision,
    the path in the repository at that commit (``dvc``); profile: the full dataset version.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    path = dataset_uri.rstrip("/")
    if dataset_version.startswith("dvc:"):
        source_type = "dvc"
        source = {"uri": dataset_uri, "rev": dataset_version.split(":")[1]}
    else:
        source_type = "s3" if dataset_uri.startswith("s3://") else "local"
        source = {"uri": dataset_uri}
    name = PurePosixPath(path.split("://", 1)[-1]).name or "dataset"
    dataset = Dataset(
        name=name,
        digest=dataset_digest(dataset_version),
        source_type=source_type,
        source=json.dumps(source),
        profile=json.dumps({"dataset_version": dataset_version}),
    )
    return DatasetInput(dataset, tags=[InputTag(DATASET_CONTEXT_TAG, context)])


def log_dataset(run_id: str, context: RunContext, *, tracking_uri: str | None = None) -> None:
    """Record ``context``'s dataset as the run's dataset input (nothing when it has no URI).

    MLflow's SQL store adds a dataset to the experiment by look-then-insert, so runs logging
    the same dataset at the same moment (the pipeline's training tasks) can lose the insert
    to each other; the loser tries again and then finds it.
    """
    from mlflow.exceptions import MlflowException

    if not context.dataset_uri:
        return
    entity = dataset_input(context.dataset_uri, context.dataset_version)
    mlflow_client = client(tracking_uri)
    for attempt in range(5):
        try:
            mlflow_client.log_inputs(run_id, datasets=[entity])
            return
        except MlflowException as exc:
            if attempt == 4 or not _LOST_INSERT.search(str(exc)):
                raise
            time.sleep(0.05 * (attempt + 1))


def flatten_params(config: Any, prefix: str = "") -> dict[str, str]:
    """A nested config (dataclass or mapping) as ``{"loss.ce_weight": "1.0", ...}``."""
    if is_dataclass(config) and not isinstance(config, type):
        config = asdict(config)
    flat: dict[str, str] = {}
    if isinstance(config, Mapping):
        for key, value in config.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping) or (is_dataclass(value) and not isinstance(value, type)):
                flat.update(flatten_params(value, f"{name}."))
            else:
                flat[name] = str(value)[:6000]
    return flat


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def strip_local_label(version: str) -> str:
    """``2.14.1+cu130`` -> ``2.14.1``: a local build label no index can install."""
    return version.split("+", 1)[0]


def model_requirements() -> list[str]:
    """Pinned pip requirements of the logged model, read from this environment."""
    pins = []
    for package in MODEL_REQUIREMENTS:
        version = _version(package)
        if version is not None:
            pins.append(f"{package}=={strip_local_label(version)}")
    return pins


def environment_info() -> dict[str, Any]:
    """Python, platform, accelerator and package versions of the process doing the work."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": {p: _version(p) for p in _ENV_PACKAGES},
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
            info["cuda_version"] = torch.version.cuda
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return info


# --------------------------------------------------------------------------- training runs


def _finite_metrics(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[f"{prefix}{key}"] = float(value)
    return out


def _log_metrics(mlflow_client: Any, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, value, now, step) for key, value in metrics.items()]
    for start in range(0, len(batch), 900):  # MLflow caps a batch at 1000 metrics
        mlflow_client.log_batch(run_id, metrics=batch[start : start + 900])


class TrainingRun:
    """One MLflow run for one trained model; see :func:`training_run`."""

    def __init__(self, run_id: str, tracking_uri: str) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self._client = client(tracking_uri)

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Per-epoch metrics (step = epoch); the ``epoch`` key itself and non-finite values are skipped.

        Shaped to be ``palsyseg.train.train_model``'s ``on_epoch_end`` callback.
        """
        values = _finite_metrics({k: v for k, v in metrics.items() if k != "epoch"})
        if values:
            _log_metrics(self._client, self.run_id, values, step=int(epoch))

    def log_history(self, history: Sequence[Mapping[str, float]]) -> None:
        """Log a whole ``TrainResult.history`` (when the callback was not used)."""
        for row in history:
            self.log_epoch(int(row.get("epoch", 0)), row)

    def log_result(self, result: Any, *, input_example: Any = None) -> str:
        """Record a ``TrainResult``: best epoch, best validation metrics, model and checkpoint."""
        summary = {"best_epoch": result.best_epoch, "palsy_threshold": result.palsy_threshold}
        _log_metrics(self._client, self.run_id, _finite_metrics(summary), step=result.best_epoch)
        _log_metrics(
            self._client,
            self.run_id,
            _finite_metrics(result.best_val_metrics, prefix="best_val_"),
            step=result.best_epoch,
        )
        refit = getattr(result, "decision_refit", None)
        if refit:  # palsyseg.refit: what it did, and validation before it
            numbers = {k: float(v) for k, v in refit.items() if isinstance(v, int | float)}
            numbers.update(
                {
                    f"val_before_{k}": v
                    for k, v in refit.get("val_before", {}).items()
                    if v is not None
                }
            )
            _log_metrics(
                self._client,
                self.run_id,
                _finite_metrics(numbers, prefix="decision_refit_"),
                step=result.best_epoch,
            )
        return log_model(
            self.run_id,
            Path(result.best_checkpoint),
            tracking_uri=self.tracking_uri,
            input_example=input_example,
        )


@contextlib.contextmanager
def training_run(
    *,
    model_name: str,
    role: str,
    config: Any,
    context: RunContext,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    parent_run_id: str | None = None,
) -> Iterator[TrainingRun]:
    """Open a run for training ``model_name``; it ends FINISHED, or FAILED if the block raises.

    ``role`` is ``candidate`` or ``baseline``. ``config`` (a ``TrainConfig`` or mapping) is
    logged flattened as params next to the dataset and code versions; the dataset is the run's
    dataset input. With ``parent_run_id`` (the pipeline's run) the run is its child.
    """
    uri = configure(tracking_uri)
    experiment_id = ensure_experiment(experiment, uri)
    mlflow_client = client(uri)
    tags = {
        **{k: v for k, v in context.tags().items() if v},
        "palsyseg.role": role,
        "palsyseg.model": model_name,
        "mlflow.user": context.trained_by or current_user(),
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = mlflow_client.create_run(experiment_id, run_name=f"{role}-{model_name}", tags=tags)
    run_id = run.info.run_id
    params = {**flatten_params(config), **context.params(), "model": model_name}
    from mlflow.entities import Param

    batch = [Param(k, v) for k, v in sorted(params.items())]
    for start in range(0, len(batch), 90):  # MLflow caps a batch at 100 params
        mlflow_client.log_batch(run_id, params=batch[start : start + 90])
    log_json(run_id, environment_info(), "environment.json", tracking_uri=uri)
    log_dataset(run_id, context, tracking_uri=uri)
    log.info("MLflow run %s (%s %s) at %s", run_id, role, model_name, uri)
    try:
        yield TrainingRun(run_id, uri)
    except BaseException:
        mlflow_client.set_terminated(run_id, status="FAILED")
        raise
    mlflow_client.set_terminated(run_id, status="FINISHED")


def log_json(
    run_id: str, data: Any, artifact_file: str, *, tracking_uri: str | None = None
) -> None:
    """Write ``data`` as pretty JSON to the run's artifacts at ``artifact_file``."""
    client(tracking_uri).log_text(run_id, json.dumps(data, indent=2, sort_keys=True), artifact_file)


def log_model(
    run_id: str,
    checkpoint: Path,
    *,
    tracking_uri: str | None = None,
    input_example: Any = None,
) -> str:
    """Log a palsyseg checkpoint: its network as an MLflow model, and the file itself.

    The network is ``palsyseg.train.load_checkpoint_model(checkpoint)``; see
    :func:`log_network`. The checkpoint's ``weights_sha256``, when its metadata has one, is
    tagged on the run and the logged model. Returns the model URI (``runs:/<run_id>/model``).

    The run's ``palsyseg.model_uri`` (what the registry registers) then names the *finding*
    model logged next to it (:func:`palsyseg.predict.serving.log_finding_model`, under
    ``finding/``): photos in, ``palsyseg predict``'s findings out, so a registered version
    serves what users have. The logits network stays in the run under ``model/``.
    """
    from palsyseg.predict.serving import log_finding_model
    from palsyseg.train import load_checkpoint_model

    model, meta = load_checkpoint_model(Path(checkpoint), map_location="cpu")
    weights = meta.get("weights_sha256")
    uri = log_network(
        run_id,
        model,
        checkpoint=Path(checkpoint),
        image_size=int(meta.get("image_size", 64)),
        model_name=str(meta.get("model_name", "")),
        tracking_uri=tracking_uri,
        input_example=input_example,
        weights_sha256=str(weights) if weights else None,
    )
    finding = log_finding_model(run_id, Path(checkpoint), tracking_uri=tracking_uri)
    client(tracking_uri).set_tag(run_id, "palsyseg.model_uri", finding)
    return uri


def log_network(
    run_id: str,
    model: Any,
    *,
    checkpoint: Path,
    image_size: int,
    model_name: str = "",
    tracking_uri: str | None = None,
    input_example: Any = None,
    weights_sha256: str | None = None,
) -> str:
    """Log ``model`` as an MLflow PyTorch model and ``checkpoint`` under ``checkpoint/``.

    The logged model is :class:`~palsyseg.tracking.logged_model.LogitsOnly` around ``model``,
    pickled, with a signature inferred from ``input_example`` (default: one zero image of
    ``image_size``, i.e. the ImageNet mean) and its output, pinned requirements without local
    version labels, and the palsyseg package as ``code_paths`` so it loads without palsyseg
    installed. The run gets tags ``palsyseg.checkpoint`` (artifact path) and
    ``palsyseg.model_uri``; with ``weights_sha256`` (the checkpoint's weights digest) the run
    and the logged model get tag ``palsyseg.weights_sha256``.
    """
    import mlflow.pytorch  # binds `mlflow` too
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    import palsyseg
    from palsyseg.labels import NUM_CLASSES
    from palsyseg.tracking.logged_model import LogitsOnly

    uri = configure(tracking_uri)
    wrapped = LogitsOnly(model).eval()
    if input_example is None:
        input_example = np.zeros((1, 3, image_size, image_size), dtype=np.float32)
    input_example = np.asarray(input_example, dtype=np.float32)
    with torch.no_grad():
        output = wrapped(torch.from_numpy(input_example)).numpy()
    signature = infer_signature(input_example, output)
    package_dir = Path(palsyseg.__file__).parent
    model_tags = {WEIGHTS_TAG: weights_sha256} if weights_sha256 else None
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            wrapped,
            name=MODEL_ARTIFACT,
            serialization_format="pickle",
            signature=signature,
            input_example=input_example,
            pip_requirements=model_requirements(),
            code_paths=[str(package_dir)],
            metadata={"palsyseg_model": model_name, "num_classes": NUM_CLASSES},
            tags=model_tags,
        )
    mlflow_client = client(uri)
    mlflow_client.log_artifact(run_id, str(checkpoint), CHECKPOINT_ARTIFACT)
    mlflow_client.set_tag(
        run_id, "palsyseg.checkpoint", f"{CHECKPOINT_ARTIFACT}/{Path(checkpoint).name}"
    )
    mlflow_client.set_tag(run_id, "palsyseg.model_uri", info.model_uri)
    if weights_sha256:
        mlflow_client.set_tag(run_id, WEIGHTS_TAG, weights_sha256)
    return f"runs:/{run_id}/{MODEL_ARTIFACT}"


def download_checkpoint(run_id: str, dest: Path, *, tracking_uri: str | None = None) -> Path:
    """Fetch a run's palsyseg checkpoint into ``dest``; returns the checkpoint file's path."""
    from mlflow.exceptions import MlflowException

    from palsyseg.errors import PalsysegError

    mlflow_client = client(tracking_uri)
    run = mlflow_client.get_run(run_id)
    artifact = run.data.tags.get("palsyseg.checkpoint")
    if not artifact:
        raise PalsysegError(f"run {run_id}: has no palsyseg checkpoint (tag palsyseg.checkpoint)")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow_client.download_artifacts(run_id, artifact, str(dest))
    except MlflowException as exc:
        raise PalsysegError(f"run {run_id}: cannot download {artifact} ({exc.message})") from None
    return Path(local)


# --------------------------------------------------------------------------- evaluation


def log_evaluation(
    run_id: str,
    report: Any,
    gate_report: Any = None,
    *,
    report_dir: Path | None = None,
    tracking_uri: str | None = None,
    model_runs: Mapping[str, str] | None = None,
) -> None:
    """Record a ``palsyseg.evaluate.EvaluationReport`` on the candidate's run.

    Metrics: the candidate's as ``test_<key>``, every other model's as ``test_<key>.<name>``
    (baselines, ``champion``). Artifacts under ``evaluation/``: what ``report.save`` writes
    (``report.json``, a confusion matrix per model, the per-class-F1 comparison, the overlay
    grid of test predictions, ``report.html``) — taken from ``report_dir`` when the caller
    already saved it there — and ``gates.json``. Tags: ``gates.passed`` and ``gate.<name>`` =
    pass / fail; :data:`REPORT_TAG` = ``evaluation/report.html`` when the page was logged.

    ``model_runs`` maps other models (baselines) to their own training runs: each gets its
    metrics as ``test_<key>`` there too, with its confusion matrix when ``report_dir`` has it.
    """
    import tempfile

    mlflow_client = client(tracking_uri)
    candidate = report.candidate
    metrics: dict[str, float] = {}
    for name, evaluation in report.models.items():
        suffix = "" if name == candidate else f".{name}"
        metrics.update(
            {f"test_{k}{suffix}": v for k, v in _finite_metrics(evaluation.metrics).items()}
        )
    _log_metrics(mlflow_client, run_id, metrics, step=0)
    for name, own_run in (model_runs or {}).items():
        if name not in report.models or own_run == run_id:
            continue
        own = _finite_metrics(report.models[name].metrics)
        _log_metrics(mlflow_client, own_run, {f"test_{k}": v for k, v in own.items()}, step=0)
        plot = Path(report_dir or "") / f"confusion_{name}.png"
        if report_dir is not None and plot.is_file():
            mlflow_client.log_artifact(own_run, str(plot), EVALUATION_ARTIFACT)
    from palsyseg.evaluate import REPORT_HTML

    if report_dir is not None:
        mlflow_client.log_artifacts(run_id, str(report_dir), EVALUATION_ARTIFACT)
        has_page = (Path(report_dir) / REPORT_HTML).is_file()
    else:
        with tempfile.TemporaryDirectory(prefix="palsyseg-report-") as tmp:
            report.save(tmp)
            mlflow_client.log_artifacts(run_id, tmp, EVALUATION_ARTIFACT)
        has_page = True
    if has_page:
        mlflow_client.set_tag(run_id, REPORT_TAG, f"{EVALUATION_ARTIFACT}/{REPORT_HTML}")
    if gate_report is not None:
        log_json(
            run_id,
            gate_report.to_dict(),
            f"{EVALUATION_ARTIFACT}/gates.json",
            tracking_uri=tracking_uri,
        )
        mlflow_client.set_tag(run_id, "gates.passed", str(gate_report.passed).lower())
        for result in gate_report.results:
            mlflow_client.set_tag(
                run_id, f"gate.{result.name}", "pass" if result.passed else "fail"
            )
