"""Compile the training pipeline, run it locally with ``kfp.local``, or submit it to a cluster.

:func:`compile_pipeline` writes the IR YAML of ``pipelines/training_pipeline.py``;
:func:`run_local` runs it in this environment (one subprocess per task, caching on) and
collects what it produced (:class:`LocalRun`); :func:`submit` creates a run on a Kubeflow
Pipelines API server. All three take :class:`palsyseg.pipeline.PipelineArguments`; the steps
the tasks call are :mod:`palsyseg.pipeline`'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palsyseg.pipeline import (
    COMPILED_PIPELINE,
    DEFAULT_WORK_DIR,
    PIPELINE_NAME,
    STEP_INFO,
    PipelineArguments,
    PipelineError,
    read_gates,
)


def compile_pipeline(out: str | os.PathLike[str] = COMPILED_PIPELINE) -> Path:
    """Write the pipeline's IR YAML to ``out`` (atomically); returns the path."""
    from kfp import compiler

    from palsyseg.atomic import atomic_path
    from pipelines.training_pipeline import training_pipeline

    out = Path(out)
    with atomic_path(out) as tmp:
        compiler.Compiler().compile(training_pipeline, package_path=str(tmp))
    return out


@dataclass
class LocalRun:
    """What a local run produced."""

    job: str
    root: Path
    seconds: float
    gates: Any  # GateReport
    version: str | None
    candidate_run_id: str
    tracking_uri: str
    pipeline_run_id: str | None = None  # the MLflow parent run of this job's training runs
    mlflow_url: str = ""  # the experiment's runs table (a tracking server only)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "root": str(self.root),
            "seconds": round(self.seconds, 1),
            "gates": self.gates.to_dict(),
            "version": self.version,
            "candidate_run_id": self.candidate_run_id,
            "tracking_uri": self.tracking_uri,
            "pipeline_run_id": self.pipeline_run_id,
            "mlflow_url": self.mlflow_url,
        }


def _task_dir(job_dir: Path, prefix: str) -> Path | None:
    found = sorted(p for p in job_dir.iterdir() if p.is_dir() and p.name.startswith(prefix))
    return found[0] if found else None


def _executor_output(task_dir: Path) -> dict[str, Any]:
    path = task_dir / "executor_output.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _collect_local_run(job_dir: Path, seconds: float, tracking_uri: str) -> LocalRun:
    evaluate = _task_dir(job_dir, "evaluate-models-op")
    if evaluate is None:
        raise PipelineError(f"{job_dir}: the evaluate task left no output")
    gates = read_gates(evaluate / "report")
    # The evaluate step is never cached, so its note names the candidate's run even when the
    # training step came from the cache (a cached task leaves no files in this job's folder).
    info = json.loads((evaluate / "report" / STEP_INFO).read_text(encoding="utf-8"))
    version = None
    register = _task_dir(job_dir, "register-model-op")
    if register is not None:
        value = _executor_output(register).get("parameterValues", {}).get("Output")
        version = None if value is None else str(value)
    from palsyseg.tracking.pipeline_runs import PARENT_TAG, experiment_url
    from palsyseg.tracking.runs import client

    candidate = client(tracking_uri).get_run(info["run_id"])
    return LocalRun(
        job_dir.name,
        job_dir,
        seconds,
        gates,
        version,
        info["run_id"],
        tracking_uri,
        pipeline_run_id=candidate.data.tags.get(PARENT_TAG),
        mlflow_url=experiment_url(tracking_uri, candidate.info.experiment_id),
    )


@contextlib.contextmanager
def _temporary_files_in(parent: Path) -> Iterator[None]:
    """Point ``TMPDIR`` (tasks) and ``tempfile`` (this process) at a fresh folder in ``parent``.

    Every kfp.local run leaves ``kfp-workspace-*`` and component files in the temp folder; the
    folder is this run's own (runs sharing a work dir do not clean up each other's) and is
    removed afterwards.
    """
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when no other run is using it


_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


def _failure_cause(log_text: str) -> str:
    """The last ``SomethingError: message`` line of a task log (the exception that ended it)."""
    for line in reversed(log_text.splitlines()):
        match = _ERROR_LINE.match(line)
        if match:
            return f"{match.group(1)}: {match.group(2).strip()}"
    return ""


def run_local(
    arguments: PipelineArguments,
    *,
    work_dir: str | os.PathLike[str] = DEFAULT_WORK_DIR,
    caching: bool = True,
    log_path: str | os.PathLike[str] | None = None,
) -> LocalRun:
    """Run the pipeline with ``kfp.local`` (SubprocessRunner, this interpreter, no Docker).

    Task outputs go to ``work_dir/runs/<job>/``, the step cache to ``work_dir/cache``; kfp's
    temporary files go to a folder in ``work_dir/tmp``, removed afterwards. kfp's task logs go
    to ``log_path`` (default: stderr). MLflow: ``arguments.tracking_uri`` or the embedded
    default. A failing task raises :class:`PipelineError` naming the task and the error that
    stopped it.
    """
    from kfp import local

    from palsyseg.tracking.runs import ensure_experiment, resolve_tracking_uri
    from pipelines.training_pipeline import training_pipeline

    arguments.check()
    tracking_uri = resolve_tracking_uri(arguments.tracking_uri or None)
    # Create the store (a new sqlite file is migrated on first use) and the experiment here,
    # once: kfp.local runs the ParallelFor's training tasks at the same time.
    ensure_experiment(tracking_uri=tracking_uri)
    arguments = PipelineArguments(**{**arguments.to_dict(), "tracking_uri": tracking_uri})
    work_dir = Path(work_dir).resolve()
    root, cache = work_dir / "runs", work_dir / "cache"
    for folder in (root, cache):
        folder.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if log_path is not None:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            sink = stack.enter_context(Path(log_path).open("w", encoding="utf-8"))
        else:
            sink = sys.stderr
        # kfp.local prints task logs on stdout; palsyseg's stdout is for its own result.
        stack.enter_context(contextlib.redirect_stdout(sink))
        stack.enter_context(_temporary_files_in(work_dir / "tmp"))
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
        warnings.filterwarnings("ignore", message=".*non-Python base image")
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(root),
            enable_caching=caching,
            cache_root=str(cache),
            raise_on_error=True,
        )
        try:
            training_pipeline(**arguments.to_dict())
        except RuntimeError as exc:
            failure = exc
        else:
            failure = None
    if failure is not None:
        where = re.sub(r"\x1b\[[0-9;]*m", "", str(failure)).split("Inner task failed: ")[-1]
        cause = ""
        if log_path is not None:
            cause = _failure_cause(Path(log_path).read_text(encoding="utf-8", errors="replace"))
        lines = [f"pipeline {PIPELINE_NAME} failed in task {where.rstrip('.')}"]
        if cause:
            lines.append(cause)
        if log_path is not None:
            lines.append(f"task logs: {log_path}")
        raise PipelineError("\n".join(lines))
    seconds = time.perf_counter() - started
    new = sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise PipelineError(f"{root}: the local run left no output directory")
    return _collect_local_run(new[-1], seconds, tracking_uri)


def submit(
    arguments: PipelineArguments,
    *,
    host: str,
    experiment: str = "palsyseg",
    run_name: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    caching: bool = True,
    package: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Create a run of the compiled pipeline on the Kubeflow Pipelines API server at ``host``.

    Compiles to a temporary package unless ``package`` is given. ``token`` is a bearer token
    (``KF_PIPELINES_TOKEN``) for servers behind auth. Returns ``{"run_id", "url"}``.
    """
    import kfp

    arguments.check()
    with tempfile.TemporaryDirectory(prefix="palsyseg-submit-") as tmp:
        path = Path(package) if package else compile_pipeline(Path(tmp) / "pipeline.yaml")
        # kfp.Client prints links on stdout; palsyseg's stdout is for its own result.
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This client only works with")
            client = kfp.Client(host=host, namespace=namespace, existing_token=token)
            result = client.create_run_from_pipeline_package(
                str(path),
                arguments=arguments.to_dict(),
                run_name=run_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}",
                experiment_name=experiment,
                namespace=namespace,
                enable_caching=caching,
            )
    run_id = str(result.run_id)
    return {"run_id": run_id, "url": f"{host.rstrip('/')}/#/runs/details/{run_id}"}
