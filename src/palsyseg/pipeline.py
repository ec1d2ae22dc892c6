"""The training pipeline's steps as plain functions, and the arguments a run is given.

The steps are what every face of the pipeline calls — the Kubeflow components in
``components/``, the DVC stages (through ``palsyseg pipeline step ...``) and the tests — so a
step behaves the same wherever it runs:

=============  =====================================================================
validate       fetch the dataset (local directory, ``s3://`` prefix or DVC revision) and
               check it against the contract; a broken rule fails the run
split          patient-grouped, diagnosis-stratified train/val/test datasets
train          one model, logged to MLflow as one run (per-epoch metrics, model, checkpoint),
               a child of the pipeline's own run
evaluate       candidate, baselines and the registry's champion on the same test split,
               report logged on the candidate's run, each baseline's metrics on its run,
               promotion gates decided, the summary put on the pipeline's run
register       the candidate becomes version *n* with alias ``challenger`` (gates passed)
=============  =====================================================================

In MLflow a pipeline run is one parent run (named after the job) whose children are the
candidate's and the baselines' training runs; its description is the reviewer's summary
(:mod:`palsyseg.tracking.pipeline_runs`).

The pipeline definition is ``pipelines/training_pipeline.py``; compiling, running it locally
with ``kfp.local`` and submitting it to a cluster live in :mod:`palsyseg.pipeline_runner`,
with :class:`PipelineArguments` (built here by :func:`build_arguments`) as their input. Cache
keys include the dataset's content fingerprint and the code version, so changed
data or code never reuses a cached step; evaluate, gate and register are never cached (the
registry's champion is an input kfp cannot see).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from palsyseg.errors import ConfigError, DatasetError, PalsysegError
from palsyseg.runtime import find_project_root

log = logging.getLogger(__name__)

PIPELINE_NAME = "palsyseg-training"
COMPILED_PIPELINE = Path("pipelines/training_pipeline.yaml")
DEFAULT_WORK_DIR = Path("build/kfp")
GATES_FILE = "gates.json"
REPORT_FILE = "report.json"
STEP_INFO = "step.json"


class PipelineError(PalsysegError):
    """A pipeline run failed (the failing task's log is above this line)."""


# --------------------------------------------------------------------------- versions


def code_root() -> Path | None:
    """The checkout palsyseg runs from (an editable install), else the project around cwd."""
    import palsyseg

    package_root = Path(palsyseg.__file__).resolve().parents[2]
    if (package_root / ".git").exists():
        return package_root
    return find_project_root()


def code_version(project_root: Path | None = None) -> str:
    """The git commit; a dirty tree adds ``+<hash of the sources>`` so edits change it."""
    from palsyseg.tracking.runs import git_commit

    root = project_root or code_root()
    commit = git_commit(root)
    if not commit.endswith("-dirty") or root is None:
        return commit
    digest = hashlib.sha256()
    for folder in ("src/palsyseg", "components", "pipelines"):
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{commit}+{digest.hexdigest()[:12]}"


def dvc_md5(dataset: str, project_root: Path | None = None) -> str:
    """The md5 DVC records for ``dataset`` in ``<dataset>.dvc`` or ``dvc.lock``; "" if none."""
    import yaml

    root = project_root or find_project_root()
    if root is None or dataset.startswith("s3://"):
        return ""
    try:
        rel = Path(dataset).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return ""
    dvc_file = root / f"{rel}.dvc"
    if dvc_file.is_file():
        data = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
        for out in data.get("outs", []):
            if out.get("path") in (Path(rel).name, rel) and out.get("md5"):
                return str(out["md5"])
    lock = root / "dvc.lock"
    if lock.is_file():
        data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
        for stage in (data.get("stages") or {}).values():
            for out in stage.get("outs", []):
                if out.get("path") == rel and out.get("md5"):
                    return str(out["md5"])
    return ""


def dataset_version(dataset_uri: str, *, dvc_rev: str = "", dvc_repo: str = "") -> str:
    """The identity of the data a run trains on.

    ``dvc:<commit>`` for a DVC revision (resolved to a commit when the repo is local),
    otherwise the content fingerprint (``sha256:...``) of the directory or S3 prefix, with
    the DVC md5 when DVC tracks the directory (``sha256:...;dvc-md5:...``).
    """
    from palsyseg.storage import fingerprint

    if dvc_rev:
        repo = Path(dvc_repo) if dvc_repo else find_project_root()
        if repo is not None and (repo / ".git").exists():
            done = subprocess.run(
                ["git", "rev-parse", "--verify", f"{dvc_rev}^{{commit}}"],
                cwd=repo,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise ConfigError(f"--dvc-rev {dvc_rev}: not a git revision of {repo}")
            return f"dvc:{done.stdout.strip()}:{dataset_uri}"
        return f"dvc:{dvc_rev}:{dataset_uri}"
    version = fingerprint(dataset_uri)
    md5 = dvc_md5(dataset_uri)
    return f"{version};dvc-md5:{md5}" if md5 else version


# --------------------------------------------------------------------------- steps


def _write_info(out_dir: Path, info: Mapping[str, Any]) -> None:
    from palsyseg.atomic import atomic_write_text

    atomic_write_text(out_dir / STEP_INFO, json.dumps(info, indent=2, sort_keys=True) + "\n")


def validate_step(
    dataset_uri: str,
    out_dir: str | os.PathLike[str],
    *,
    report: str | os.PathLike[str] | None = None,
    dvc_rev: str = "",
    dvc_repo: str = "",
) -> dict[str, Any]:
    """Fetch the dataset into ``out_dir`` and validate it; a broken rule raises DatasetError.

    ``out_dir`` then holds the validated dataset (and ``report`` the HTML validation report,
    written pass or fail); returns the validation summary with the dataset's fingerprint.
    """
    from palsyseg.storage import fingerprint, materialize_dataset
    from palsyseg.validate import validate_dataset

    out_dir = Path(out_dir)
    materialize_dataset(dataset_uri, out_dir, dvc_rev=dvc_rev, dvc_repo=dvc_repo, force=True)
    result = validate_dataset(out_dir, report=report)
    if not result.ok:
        raise DatasetError(result.problems)
    log.info("validated %s: %d images of %d patients", dataset_uri, result.rows, result.patients)
    return {
        "dataset_uri": dataset_uri,
        "fingerprint": fingerprint(out_dir),
        "rows": result.rows,
        "patients": result.patients,
    }


def _restore_ints(section: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """Undo what a pipeline's ``dict`` parameter does to numbers (protobuf Struct: 7 -> 7.0).

    Integral floats become ints where ``cls`` (a dataclass, nested ones too) declares ``int``.
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in section.items():
        hint = hints.get(key) if key in fields else None
        if hint is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = _restore_ints(value, hint)
        out[key] = value
    return out


def split_step(
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    split_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Split a validated dataset into ``out_dir/{train,val,test}``; returns the split summary."""
    from palsyseg.params import from_section
    from palsyseg.split import SplitConfig, split_dataset

    section = _restore_ints(dict(split_config or {}), SplitConfig)
    config = from_section(section, SplitConfig, where="split")
    return split_dataset(dataset_dir, out_dir, config, force=True).to_dict()


def train_config_for(
    model: str, overrides: Mapping[str, Any] | None = None, *, role: str = "candidate"
) -> Any:
    """``TrainConfig`` from ``overrides`` (the ``train:`` section and flags) for ``model``.

    A ``baselines`` mapping inside ``overrides`` holds fields that differ for the baselines
    (``role="baseline"``), applied on top of the rest (a field replaces the whole value, a
    ``loss`` mapping included); the candidate ignores it. The demo uses it to train the
    baselines on the written split while the candidate trains on the phantom stream; the
    MLflow training run of every model records its own configuration.
    """
    from palsyseg.params import from_section
    from palsyseg.train import TrainConfig

    section = dict(overrides or {})
    for_baselines = section.pop("baselines", None) or {}
    if not isinstance(for_baselines, Mapping):
        raise ConfigError(
            f"train.baselines must be a mapping of TrainConfig fields, got {for_baselines!r}"
        )
    if role == "baseline":
        section.update(for_baselines)
    section = _restore_ints({**section, "model": model}, TrainConfig)
    where = "train.baselines" if role == "baseline" and for_baselines else "train"
    return from_section(section, TrainConfig, where=where)


def _input_example(val_dir: Path, config: Any) -> Any:
    """One real validation image, as the network takes it (1×3×S×S, normalised, in the face
    frame the model was trained in)."""
    from palsyseg.data.manifest import read_manifest
    from palsyseg.data.torch_dataset import (
        fallback_points,
        load_sample,
        model_input,
        normalize_image,
        row_points,
        to_frame,
    )
    from palsyseg.train import frame_of

    rows = read_manifest(val_dir)[:1]
    sample = load_sample(val_dir, rows[0])
    frame = frame_of(config)
    if frame is None:
        return model_input(sample.image, config.image_size).numpy()
    points = row_points(val_dir, rows)[0] or fallback_points(*sample.mask.shape)
    crop, _, _, _ = to_frame(sample, points, frame)
    return normalize_image(crop).unsqueeze(0).numpy()


def train_step(
    splits_dir: str | os.PathLike[str],
    checkpoint_out: str | os.PathLike[str],
    *,
    model: str,
    role: str,
    train_config: Mapping[str, Any] | None = None,
    context: Any = None,
    tracking_uri: str | None = None,
    history_out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``splits_dir/train`` (validating on ``val``) as one MLflow run.

    The run is a child of the pipeline's run (found or created from ``context``'s pipeline
    run, code and data version; see :mod:`palsyseg.tracking.pipeline_runs`), which is marked
    FAILED when training fails. The best checkpoint is copied to ``checkpoint_out`` (a file)
    and, with ``history_out``, the per-epoch history to that JSON file; returns ``run_id``,
    ``model_name``, ``role``, ``best_epoch`` and the best validation FPP F1.
    """
    from palsyseg.atomic import atomic_path, atomic_write_json
    from palsyseg.tracking.pipeline_runs import end_pipeline_run, open_pipeline_run
    from palsyseg.tracking.runs import RunContext, training_run
    from palsyseg.train import train_model

    splits = Path(splits_dir)
    config = train_config_for(model, train_config, role=role)
    context = context or RunContext()
    # kfp.local resolves the job-name placeholder inside a ParallelFor as
    # "<job>/for-loop-N-iteration-M"; every run of one pipeline run carries the job's name.
    context = dataclasses.replace(context, pipeline_run=context.pipeline_run.split("/")[0])
    parent = open_pipeline_run(context, tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory(prefix=f"palsyseg-train-{model}-") as tmp:
        try:
            with training_run(
                model_name=model,
                role=role,
                config=config,
                context=context,
                tracking_uri=tracking_uri,
                parent_run_id=parent,
            ) as run:
                result = train_model(
                    splits / "train",
                    splits / "val",
                    Path(tmp) / "run",
                    config,
                    on_epoch_end=run.log_epoch,
                )
                run.log_result(result, input_example=_input_example(splits / "val", config))
        except BaseException:
            if parent is not None:
                end_pipeline_run(parent, "FAILED", tracking_uri=tracking_uri)
            raise
        with atomic_path(checkpoint_out) as target:
            shutil.copyfile(result.best_checkpoint, target)
    if history_out is not None:
        atomic_write_json(history_out, result.history, indent=1)
    return {
        "run_id": run.run_id,
        "model_name": model,
        "role": role,
        "best_epoch": result.best_epoch,
        "best_val_f1_fpp": float(result.best_val_metrics.get("f1_fpp", float("nan"))),
    }


def evaluate_step(
    splits_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    candidate: tuple[str, str | os.PathLike[str], str],
    baselines: Sequence[tuple[str, str | os.PathLike[str]]],
    gates: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Evaluate candidate, baselines and the champion on ``splits_dir/test``; decide the gates.

    ``candidate`` is ``(model name, checkpoint, MLflow run id)``; ``baselines`` are
    ``(model name, checkpoint)``. The registry's champion (if any) is downloaded and scored as
    ``champion``. ``out_dir`` receives the evaluation report and plots, ``report.html`` (the
    reviewer's page, with the gates and the data, code and champion versions the candidate's run
    records) and ``gates.json``; everything is logged on the candidate's run, each baseline's
    own metrics on its run, and the summary on the pipeline's run
    (:func:`palsyseg.tracking.pipeline_runs.record_evaluation`).
    Returns ``{"passed", "gates", "metrics", "run_id", "pipeline_run_id"}``.
    """
    from palsyseg.atomic import atomic_write_text
    from palsyseg.evaluate import evaluate_models
    from palsyseg.tracking import registry
    from palsyseg.tracking.gates import evaluate_gates, policy_from_dict
    from palsyseg.tracking.pipeline_runs import pipeline_family, record_evaluation
    from palsyseg.tracking.runs import client, log_evaluation

    policy = policy_from_dict(gates)
    name, checkpoint, run_id = candidate
    names = [b[0] for b in baselines]
    if name in names or "champion" in (name, *names) or len(set(names)) != len(names):
        raise ConfigError(
            f"evaluate: model names must be distinct and not 'champion' "
            f"(candidate {name}, baselines {', '.join(names)})"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tags = client(tracking_uri).get_run(run_id).data.tags
    provenance = {
        "data_uri": tags.get("data.uri", ""),
        "data_version": tags.get("data.version", ""),
        "code_version": tags.get("code.version", ""),
        "pipeline_run": tags.get("pipeline.run", ""),
    }
    with tempfile.TemporaryDirectory(prefix="palsyseg-champion-") as tmp:
        champion = registry.download_champion_checkpoint(
            tmp, policy=policy, tracking_uri=tracking_uri
        )
        checkpoints = {name: Path(checkpoint), **{n: Path(c) for n, c in baselines}}
        if champion is not None:
            checkpoints["champion"] = champion[1]
            provenance["champion_version"] = str(champion[0])
        report = evaluate_models(
            Path(splits_dir) / "test",
            checkpoints,
            candidate=name,
            provenance={k: v for k, v in provenance.items() if v},
        )
    gate_report = evaluate_gates(
        report.models[name].metrics,
        champion=report.models["champion"].metrics if champion is not None else None,
        baselines={n: report.models[n].metrics for n, _ in baselines},
        policy=policy,
        champion_version=champion[0] if champion is not None else None,
    )
    report.gates = gate_report  # the reviewer's page shows them beside the numbers
    report.save(out_dir)
    atomic_write_text(out_dir / GATES_FILE, json.dumps(gate_report.to_dict(), indent=2) + "\n")
    _write_info(out_dir, {"candidate": name, "run_id": run_id, "passed": gate_report.passed})
    family = pipeline_family(run_id, tracking_uri=tracking_uri)
    log_evaluation(
        run_id,
        report,
        gate_report,
        report_dir=out_dir,
        tracking_uri=tracking_uri,
        model_runs=family.model_runs("baseline", names) if family is not None else None,
    )
    if family is not None:
        record_evaluation(
            family,
            report,
            gate_report,
            candidate_run_id=run_id,
            policy=policy,
            tracking_uri=tracking_uri,
        )
    log.info("gates for %s (run %s): %s", name, run_id, gate_report.summary())
    return {
        "passed": gate_report.passed,
        "gates": gate_report.to_dict(),
        "metrics": dict(report.models[name].metrics),
        "run_id": run_id,
        "pipeline_run_id": family.run_id if family is not None else None,
    }


def read_gates(report_dir: str | os.PathLike[str]) -> Any:
    """The :class:`~palsyseg.tracking.gates.GateReport` an evaluate step wrote."""
    from palsyseg.tracking.gates import GateReport

    path = Path(report_dir) / GATES_FILE
    try:
        return GateReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot read the gate results ({exc})") from None


def gates_passed(report_dir: str | os.PathLike[str]) -> bool:
    """Whether every gate passed (the pipeline's ``dsl.If`` condition)."""
    report = read_gates(report_dir)
    log.info("gates: %s", report.summary())
    return report.passed


def register_step(
    run_id: str,
    report_dir: str | os.PathLike[str],
    *,
    gates: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Register the candidate's run as ``challenger`` with its gate results; return the version.

    Data version, code version, trainer and pipeline run come from the run's own tags, so
    the version records what the run really used; so does the checkpoint's weights digest
    (tag ``weights_sha256``, when the checkpoint recorded one). The pipeline run's summary
    then names the version.
    """
    from palsyseg.tracking import registry
    from palsyseg.tracking.gates import policy_from_dict
    from palsyseg.tracking.pipeline_runs import record_registration
    from palsyseg.tracking.runs import WEIGHTS_TAG, RunContext, client

    policy = policy_from_dict(gates)
    gate_report = read_gates(report_dir)
    report = json.loads((Path(report_dir) / REPORT_FILE).read_text(encoding="utf-8"))
    candidate = report["candidate"]
    metrics = {
        k: float(v)
        for k, v in report["models"][candidate]["metrics"].items()
        if isinstance(v, int | float)
    }
    mlflow_client = client(tracking_uri)
    tags = mlflow_client.get_run(run_id).data.tags
    context = RunContext(
        dataset_uri=tags.get("data.uri", ""),
        dataset_version=tags.get("data.version", ""),
        code_version=tags.get("code.version", ""),
        pipeline_run=tags.get("pipeline.run", ""),
        trained_by=tags.get("trained_by", ""),
    )
    version = registry.register_challenger(
        run_id,
        gate_report=gate_report,
        metrics=metrics,
        context=context,
        policy=policy,
        tracking_uri=tracking_uri,
    )
    weights = tags.get(WEIGHTS_TAG)
    if weights:
        mlflow_client.set_model_version_tag(
            policy.registered_model, version, "weights_sha256", weights
        )
    record_registration(run_id, version, policy.registered_model, tracking_uri=tracking_uri)
    return version


# --------------------------------------------------------------------------- arguments


@dataclass
class PipelineArguments:
    """The pipeline's parameters, as ``pipelines/training_pipeline.py`` declares them."""

    dataset_uri: str = "data"
    dataset_version: str = ""
    dvc_rev: str = ""
    dvc_repo: str = ""
    candidate_model: str = "palsynet"
    baseline_models: list[str] = field(default_factory=lambda: ["deeplabv3plus_r34", "unet_r18"])
    epochs: int = 300
    train_config: dict[str, Any] = field(default_factory=dict)
    split_config: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    tracking_uri: str = ""
    code_version: str = ""
    trained_by: str = ""

    def check(self) -> None:
        """Refuse what would only fail later inside a task."""
        from palsyseg.models import list_models

        valid = list_models()
        unknown = [m for m in (self.candidate_model, *self.baseline_models) if m not in valid]
        if unknown:
            raise ConfigError(
                f"unknown model(s) {', '.join(unknown)}; valid names: {', '.join(valid)}"
            )
        if not self.baseline_models:
            raise ConfigError("baselines: at least one baseline is needed (gate beats_baselines)")
        if self.candidate_model in self.baseline_models:
            raise ConfigError(f"baselines: {self.candidate_model} is the candidate itself")
        if len(set(self.baseline_models)) != len(self.baseline_models):
            raise ConfigError("baselines: a model is listed twice")
        if self.epochs < 1:
            raise ConfigError(f"epochs: must be at least 1, got {self.epochs}")
        train = {**self.train_config, "epochs": self.epochs}
        train_config_for(self.candidate_model, train)
        for baseline in self.baseline_models:
            train_config_for(baseline, train, role="baseline")
        from palsyseg.tracking.gates import policy_from_dict

        policy_from_dict(self.gates)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


IMAGE_PRETRAINED = "/opt/palsyseg/pretrained"
"""Where the image (Dockerfile) holds ``pretrained/``: a cluster run's ``init_weights`` lives there."""


def _resolve_init_weights(section: dict[str, Any], where: str, *, local: bool) -> None:
    """Check a ``train`` section's ``init_weights``. For a run on this machine, make the path
    absolute (the components run in other directories) and refuse one that does not exist;
    for a cluster run, which cannot read this machine's files, require a path inside the image
    (absolute, e.g. under :data:`IMAGE_PRETRAINED`)."""
    value = section.get("init_weights")
    if not value:
        return
    if not local:
        if not Path(str(value)).is_absolute():
            raise ConfigError(
                f"{where}.init_weights: {value}: a cluster cannot read this machine's files; "
                f"give a path inside the image (e.g. {IMAGE_PRETRAINED}/palsynet-phantom-128.pt)"
            )
        return
    path = Path(str(value)).resolve()
    if not path.is_file():
        raise ConfigError(f"{where}.init_weights: {value}: checkpoint file does not exist")
    section["init_weights"] = str(path)


def build_arguments(
    *,
    dataset_uri: str | None = None,
    dvc_rev: str = "",
    dvc_repo: str = "",
    candidate: str | None = None,
    baselines: Sequence[str] | None = None,
    epochs: int | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    gate_overrides: Mapping[str, Any] | None = None,
    params_path: str | os.PathLike[str] = "params.yaml",
    policy_path: str | os.PathLike[str] = "mlflow/promotion.yaml",
    tracking_uri: str = "",
    resolve_dataset_version: bool = True,
    local: bool = True,
) -> PipelineArguments:
    """The pipeline's arguments from ``params.yaml`` (``dataset``, ``split``, ``train``,
    ``evaluate`` sections), the promotion policy file and explicit overrides.

    The dataset version, code version and trainer are resolved here, on the submitting
    machine, because they are what the run will be recorded with. ``local`` says the run is on
    this machine (``pipeline run``), not a cluster (``pipeline submit``): it decides how a
    warm start's ``init_weights`` path is checked.
    """
    from palsyseg.params import load_params
    from palsyseg.tracking.gates import load_policy
    from palsyseg.tracking.runs import current_user

    params = load_params(params_path)
    evaluate = dict(params.get("evaluate") or {})
    train = dict(params.get("train") or {})
    train.pop("model", None)
    train.update(dict(train_overrides or {}))
    config_epochs = train.pop("epochs", None)
    _resolve_init_weights(train, "train", local=local)
    if isinstance(train.get("baselines"), Mapping):
        train["baselines"] = dict(train["baselines"])
        _resolve_init_weights(train["baselines"], "train.baselines", local=local)
    policy = load_policy(policy_path).to_dict()
    policy.update(dict(gate_overrides or {}))
    args = PipelineArguments(
        dataset_uri=str(dataset_uri or params.get("dataset") or "data"),
        dvc_rev=dvc_rev,
        dvc_repo=dvc_repo,
        candidate_model=candidate or evaluate.get("candidate") or "palsynet",
        baseline_models=list(
            baselines
            if baselines is not None
            else evaluate.get("baselines", PipelineArguments().baseline_models)
        ),
        epochs=int(epochs or config_epochs or PipelineArguments().epochs),
        train_config=train,
        split_config=dict(params.get("split") or {}),
        gates=policy,
        tracking_uri=tracking_uri,
        code_version=code_version(),
        trained_by=current_user(),
    )
    if not args.dataset_uri.startswith("s3://") and not dvc_rev:
        args.dataset_uri = str(Path(args.dataset_uri).resolve())
        if not Path(args.dataset_uri).is_dir():
            raise DatasetError(
                f"{args.dataset_uri}: dataset directory does not exist "
                "(make one with `palsyseg data synth --out data`)"
            )
    args.check()
    if resolve_dataset_version:
        args.dataset_version = dataset_version(args.dataset_uri, dvc_rev=dvc_rev, dvc_repo=dvc_repo)
    return args
