"""``palsyseg pipeline ...``: the MLOps engineer's commands (compile, run, submit, step).

``run`` and ``submit`` take their defaults from ``params.yaml`` (``dataset``, ``split``,
``train``, ``evaluate``) and ``mlflow/promotion.yaml``; flags override them. ``step`` runs one
pipeline step by hand, as the DVC stages do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from palsyseg.cli import app

pipeline_app = typer.Typer(
    help="The Kubeflow training pipeline: compile to YAML, run locally, submit to a KFP host.",
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")
step_app = typer.Typer(
    help="Run one pipeline step (what the DVC stages call).", no_args_is_help=True
)
pipeline_app.add_typer(step_app, name="step")

stdout = Console()
if not stdout.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    stdout = Console(width=120)

DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Dataset directory or s3:// URI (default: params.yaml 'dataset', else data).",
    ),
]
DvcRevOption = Annotated[
    str, typer.Option("--dvc-rev", help="Take --data as a path at this git/DVC revision.")
]
DvcRepoOption = Annotated[
    str, typer.Option("--dvc-repo", help="DVC project (URL or directory) for --dvc-rev.")
]
CandidateOption = Annotated[
    str | None,
    typer.Option("--candidate", help="Candidate model (default: params.yaml evaluate.candidate)."),
]
BaselinesOption = Annotated[
    str | None,
    typer.Option(
        "--baselines",
        help="Comma-separated baseline models (default: params.yaml evaluate.baselines).",
    ),
]
EpochsOption = Annotated[int | None, typer.Option("--epochs", min=1, help="Training epochs.")]
ImageSizeOption = Annotated[
    int | None, typer.Option("--image-size", min=32, help="Training input side in pixels.")
]
BatchOption = Annotated[int | None, typer.Option("--batch-size", min=1, help="Batch size.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Other TrainConfig field, KEY=VALUE (YAML value); repeatable."),
]
GateOption = Annotated[
    list[str] | None,
    typer.Option("--gate", help="Override a promotion-policy field, KEY=VALUE; repeatable."),
]
ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read.")]
PolicyOption = Annotated[Path, typer.Option("--policy", help="Promotion policy YAML.")]
TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite mlflow/mlflow.db).",
    ),
]


def _pairs(values: list[str] | None, flag: str) -> dict[str, Any]:
    """``["a=1", "b=[x, y]"]`` -> ``{"a": 1, "b": ["x", "y"]}`` (values parsed as YAML)."""
    import yaml

    from palsyseg.errors import ConfigError

    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{flag} {item}: value is not valid YAML") from None
    return out


def _check_model_flags(candidate: str | None, baselines: str | None) -> None:
    """A mistyped model name is the flag's fault: say so before any server is contacted."""
    from palsyseg.cli.train import check_model_flag

    if candidate is not None:
        check_model_flag("--candidate", candidate)
    for name in (baselines or "").split(","):
        if name.strip():
            check_model_flag("--baselines", name.strip())


def _arguments(
    data: str | None,
    dvc_rev: str,
    dvc_repo: str,
    candidate: str | None,
    baselines: str | None,
    epochs: int | None,
    image_size: int | None,
    batch_size: int | None,
    settings: list[str] | None,
    gate: list[str] | None,
    params: Path,
    policy: Path,
    tracking_uri: str | None,
    *,
    resolve_dataset_version: bool = True,
    local: bool = True,
) -> Any:
    from palsyseg.pipeline import build_arguments

    _check_model_flags(candidate, baselines)
    overrides = _pairs(settings, "--set")
    if image_size is not None:
        overrides["image_size"] = image_size
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    return build_arguments(
        dataset_uri=data,
        dvc_rev=dvc_rev,
        dvc_repo=dvc_repo,
        candidate=candidate,
        baselines=None
        if baselines is None
        else [b.strip() for b in baselines.split(",") if b.strip()],
        epochs=epochs,
        train_overrides=overrides,
        gate_overrides=_pairs(gate, "--gate"),
        params_path=params,
        policy_path=policy,
        tracking_uri=tracking_uri or "",
        resolve_dataset_version=resolve_dataset_version,
        local=local,
    )


@pipeline_app.command("compile")
def compile_(
    out: Annotated[Path, typer.Option("--out", help="Where to write the pipeline IR YAML.")] = Path(
        "pipelines/training_pipeline.yaml"
    ),
) -> None:
    """Compile the Kubeflow pipeline to IR YAML (upload it in the KFP UI or use submit)."""
    from palsyseg.pipeline_runner import compile_pipeline

    path = compile_pipeline(out)
    stdout.print(f"wrote {path}")


def gates_table(gates: Any) -> Table:
    table = Table(
        title="promotion gates", caption=f"compared with champion: {gates.champion or 'none'}"
    )
    table.add_column("gate")
    table.add_column("verdict")
    table.add_column("detail")
    for result in gates.results:
        verdict = "[green]pass[/green]" if result.passed else "[red]fail[/red]"
        table.add_row(result.name, verdict, result.detail)
    return table


def _mlflow_ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith("sqlite:///"):
        return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000"
    return f"open {tracking_uri}"


@pipeline_app.command("run")
def run(
    data: DataOption = None,
    dvc_rev: DvcRevOption = "",
    dvc_repo: DvcRepoOption = "",
    candidate: CandidateOption = None,
    baselines: BaselinesOption = None,
    epochs: EpochsOption = None,
    image_size: ImageSizeOption = None,
    batch_size: BatchOption = None,
    settings: SetOption = None,
    gate: GateOption = None,
    params: ParamsOption = Path("params.yaml"),
    policy: PolicyOption = Path("mlflow/promotion.yaml"),
    tracking_uri: TrackingOption = None,
    work_dir: Annotated[
        Path, typer.Option("--work-dir", help="kfp.local outputs, cache and temp files.")
    ] = Path("build/kfp"),
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse cached steps.")] = True,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="torch CPU threads per task (OMP_NUM_THREADS); 1 suits a busy 2-core box.",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Stream the task logs to stderr.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Run the whole pipeline locally with kfp.local (no cluster, no Docker).

    Before any step runs, the MLflow tracking store is checked (a server must answer within
    seconds), and so are an S3 dataset and MLFLOW_S3_ENDPOINT_URL when they are used.
    """
    import contextlib
    import time

    from palsyseg.connectivity import check_s3_endpoint, check_tracking_store
    from palsyseg.pipeline_runner import run_local
    from palsyseg.tracking import registry
    from palsyseg.tracking.gates import policy_from_dict

    _check_model_flags(candidate, baselines)
    check_tracking_store(tracking_uri, create=True)
    # An s3:// dataset is fingerprinted here, through the storage layer's bounded S3 client.
    arguments = _arguments(
        data, dvc_rev, dvc_repo, candidate, baselines, epochs, image_size, batch_size,
        settings, gate, params, policy, tracking_uri,
    )  # fmt: skip
    check_s3_endpoint()
    if threads is not None:  # read by torch in every task process
        os.environ["OMP_NUM_THREADS"] = str(threads)
    log_path = None if verbose else work_dir / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}.log"
    stderr = Console(stderr=True)
    stderr.print(
        f"running {arguments.candidate_model} vs {', '.join(arguments.baseline_models)} on "
        f"{arguments.dataset_uri} ({arguments.epochs} epochs) with kfp.local"
        + (f"; task logs: {log_path}" if log_path else "")
    )
    status = (
        contextlib.nullcontext()
        if verbose
        else stderr.status("pipeline running: validate, split, train, evaluate, register ...")
    )
    with status:
        result = run_local(arguments, work_dir=work_dir, caching=cache, log_path=log_path)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    stdout.print(gates_table(result.gates))
    rules = policy_from_dict(arguments.gates)
    if result.version is not None:
        stdout.print(
            f"registered {rules.registered_model} v{result.version} as challenger "
            f"(MLflow run {result.candidate_run_id}) in {result.seconds:.0f} s"
        )
    else:
        stdout.print(f"gates failed: not registered (pipeline took {result.seconds:.0f} s)")
    from palsyseg.cli.registry import versions_table

    versions = registry.list_versions(policy=rules, tracking_uri=result.tracking_uri)
    if versions:
        entries = registry.history(policy=rules, tracking_uri=result.tracking_uri)
        stdout.print(versions_table(versions, rules, entries))
    stdout.print(f"look at the run: {_mlflow_ui_command(result.tracking_uri)}")


@pipeline_app.command("submit")
def submit(
    host: Annotated[
        str, typer.Option("--host", help="KFP API server, e.g. http://localhost:8080.")
    ],
    data: DataOption = None,
    dvc_rev: DvcRevOption = "",
    dvc_repo: DvcRepoOption = "",
    candidate: CandidateOption = None,
    baselines: BaselinesOption = None,
    epochs: EpochsOption = None,
    image_size: ImageSizeOption = None,
    batch_size: BatchOption = None,
    settings: SetOption = None,
    gate: GateOption = None,
    params: ParamsOption = Path("params.yaml"),
    policy: PolicyOption = Path("mlflow/promotion.yaml"),
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow URI the cluster's tasks use (default: $MLFLOW_TRACKING_URI).",
        ),
    ] = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment name.")] = "palsyseg",
    run_name: Annotated[str | None, typer.Option("--run-name", help="KFP run name.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubeflow namespace (multi-user).")] = None,
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Let KFP reuse cached steps.")
    ] = True,
    package: Annotated[
        Path | None,
        typer.Option("--package", help="Submit this compiled YAML instead of compiling."),
    ] = None,
) -> None:
    """Create a run on a Kubeflow Pipelines API server (bearer token from $KF_PIPELINES_TOKEN)."""
    from palsyseg.errors import ConfigError
    from palsyseg.pipeline_runner import submit as submit_run

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri or uri.startswith("sqlite:"):
        raise ConfigError(
            "--tracking-uri: a cluster run needs an MLflow server URI (http://...), "
            "not the local sqlite store"
        )
    arguments = _arguments(
        data, dvc_rev, dvc_repo, candidate, baselines, epochs, image_size, batch_size,
        settings, gate, params, policy, uri, resolve_dataset_version=False, local=False,
    )  # fmt: skip
    from palsyseg.pipeline import dataset_version

    if not arguments.dataset_uri.startswith("s3://") and not dvc_rev:
        raise ConfigError(
            f"--data {arguments.dataset_uri}: a cluster cannot read this machine's files; "
            "upload the dataset to S3 or give --dvc-rev with --dvc-repo URL"
        )
    arguments.dataset_version = dataset_version(
        arguments.dataset_uri, dvc_rev=dvc_rev, dvc_repo=dvc_repo
    )
    result = submit_run(
        arguments,
        host=host,
        experiment=experiment,
        run_name=run_name,
        namespace=namespace,
        token=os.environ.get("KF_PIPELINES_TOKEN") or None,
        caching=cache,
        package=package,
    )
    stdout.print(f"submitted run {result['run_id']}: {result['url']}")


# --------------------------------------------------------------------------- steps (DVC)
#
# The DVC stages' layout: build/models/candidate.pt and build/models/baselines/<name>.pt, each
# with <file>.json (model name, MLflow run id) and <file>.history.json (per-epoch metrics);
# build/evaluation/ holds the report, gates.json, metrics.json and per_class_f1.json.

CANDIDATE_FILE = "candidate.pt"
BASELINES_DIR = "baselines"


def _info(checkpoint: Path) -> dict[str, Any]:
    from palsyseg.errors import ConfigError

    path = checkpoint.with_suffix(".json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: no train-step record ({exc}); run the train step first"
        ) from None


@step_app.command("train")
def step_train(
    splits: Annotated[Path, typer.Option("--splits", help="Split directory (train/, val/).")],
    model: Annotated[str, typer.Option("--model", help="Model name.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write.")],
    role: Annotated[str, typer.Option("--role", help="candidate or baseline.")] = "candidate",
    data: Annotated[
        str, typer.Option("--data", help="Dataset the split came from (recorded).")
    ] = "data",
    params: ParamsOption = Path("params.yaml"),
    tracking_uri: TrackingOption = None,
) -> None:
    """Train one model as one MLflow run; OUT, OUT.json (run id), OUT.history.json."""
    from palsyseg.atomic import atomic_write_text
    from palsyseg.cli.train import check_model_flag
    from palsyseg.connectivity import check_tracking_store
    from palsyseg.params import load_params
    from palsyseg.pipeline import code_version, dataset_version, train_step
    from palsyseg.tracking.runs import RunContext, current_user

    check_model_flag("--model", model)
    check_tracking_store(tracking_uri, create=True)
    train = dict(load_params(params).get("train") or {})
    train.pop("model", None)
    context = RunContext(
        dataset_uri=data,
        dataset_version=dataset_version(data),
        code_version=code_version(),
        pipeline_run="dvc",
        trained_by=current_user(),
    )
    info = train_step(
        splits,
        out,
        model=model,
        role=role,
        train_config=train,
        context=context,
        tracking_uri=tracking_uri,
        history_out=out.with_suffix(".history.json"),
    )
    atomic_write_text(out.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
    stdout.print(f"trained {model}: {out} (MLflow run {info['run_id']})")


@step_app.command("evaluate")
def step_evaluate(
    splits: Annotated[Path, typer.Option("--splits", help="Split directory (test/).")],
    models: Annotated[
        Path, typer.Option("--models", help="Train-step outputs: candidate.pt, baselines/NAME.pt.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Report directory.")],
    params: ParamsOption = Path("params.yaml"),
    policy: PolicyOption = Path("mlflow/promotion.yaml"),
    tracking_uri: TrackingOption = None,
) -> None:
    """Candidate vs the baselines named in params 'evaluate' vs the champion; decide the gates.

    Writes the reviewer's one-page ``OUT/report.html`` (logged on the candidate's run). Also
    writes ``OUT/metrics.json`` (the candidate's test metrics and the verdict, for
    ``dvc metrics``) and ``OUT/per_class_f1.json`` (every model's F1 per class, for ``dvc plots``).
    """
    from palsyseg.atomic import atomic_write_text
    from palsyseg.connectivity import check_tracking_store
    from palsyseg.errors import ConfigError
    from palsyseg.evaluate import REPORT_HTML
    from palsyseg.labels import LABEL_NAMES
    from palsyseg.params import load_params
    from palsyseg.pipeline import REPORT_FILE, evaluate_step
    from palsyseg.tracking.gates import GateReport, load_policy

    check_tracking_store(tracking_uri)  # the train step's runs must be there already
    names = list((load_params(params).get("evaluate") or {}).get("baselines") or [])
    if not names:
        raise ConfigError(f"{params}: evaluate.baselines lists no baseline")
    candidate = models / CANDIDATE_FILE
    record = _info(candidate)
    baselines = [
        (_info(p)["model_name"], p) for p in (models / BASELINES_DIR / f"{n}.pt" for n in names)
    ]
    result = evaluate_step(
        splits,
        out,
        candidate=(record["model_name"], candidate, record["run_id"]),
        baselines=baselines,
        gates=load_policy(policy).to_dict(),
        tracking_uri=tracking_uri,
    )
    metrics = {k: v for k, v in result["metrics"].items() if isinstance(v, int | float)}
    metrics["gates_passed"] = result["passed"]
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    report = json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))
    rows = [
        {"model": name, "class": label, "f1": entry["metrics"].get(f"f1_{label}")}
        for name, entry in report["models"].items()
        for label in LABEL_NAMES
    ]
    atomic_write_text(out / "per_class_f1.json", json.dumps(rows, indent=1) + "\n")
    stdout.print(gates_table(GateReport.from_dict(result["gates"])))
    stdout.print(f"report: {out / REPORT_HTML}")


@step_app.command("register")
def step_register(
    models: Annotated[Path, typer.Option("--models", help="Train-step outputs (candidate.pt).")],
    report: Annotated[Path, typer.Option("--report", help="Evaluate step's report directory.")],
    out: Annotated[Path, typer.Option("--out", help="Write the outcome (JSON) here.")],
    policy: PolicyOption = Path("mlflow/promotion.yaml"),
    tracking_uri: TrackingOption = None,
) -> None:
    """Register the candidate as challenger when its gates passed.

    Failed gates are not an error here (the Kubeflow pipeline skips the step instead): the
    outcome file says ``"registered": false`` and why.
    """
    from palsyseg.atomic import atomic_write_text
    from palsyseg.connectivity import check_tracking_store
    from palsyseg.pipeline import read_gates, register_step
    from palsyseg.tracking.gates import load_policy

    check_tracking_store(tracking_uri)  # the train step's runs must be there already
    run_id = _info(models / CANDIDATE_FILE)["run_id"]
    gates = read_gates(report)
    outcome: dict[str, Any] = {"run_id": run_id, "gates": gates.summary(), "registered": False}
    if gates.passed:
        version = register_step(
            run_id, report, gates=load_policy(policy).to_dict(), tracking_uri=tracking_uri
        )
        outcome.update(registered=True, version=version)
        stdout.print(f"registered v{version} as challenger")
    else:
        stdout.print(f"not registered: {gates.summary()}")
    atomic_write_text(out, json.dumps(outcome, indent=2) + "\n")
