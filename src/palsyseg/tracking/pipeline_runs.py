"""The pipeline's MLflow run: the parent a reviewer opens, and the summary it shows.

One pipeline run (a Kubeflow job, or the DVC stages on one code and data version) is one MLflow
run with role ``pipeline``, named after the job. The candidate's and the baselines' training
runs are its children (``mlflow.parentRunId``), so the experiment's runs table shows one row
per pipeline run that expands into the models it trained, each with its own metrics. The
parent carries:

- the dataset as an MLflow dataset input (name, source URI, digest = the DVC md5 when DVC
  tracks the data, else the content fingerprint; the full version in its profile), shown in the
  runs table's Dataset column — the training runs carry the same input;
- params: dataset URI and version, git commit; tags: data and code version, job, trainer;
- after evaluation: the champion's test metrics (``test_<key>.champion``), the gate verdicts
  (``gates.passed``, ``gate.<name>``) and its description (``mlflow.note.content``): a Markdown
  summary of candidate vs baselines vs champion, the gates, the data version, the registry
  outcome, a link to the candidate's one-page evaluation report and the overlay of test
  predictions (:class:`PipelineSummary`);
- after registration: the registered version and its alias, in that summary.

Which run is the parent: the training tasks start at the same time and MLflow has no
conditional create, so each task finds the parent by its key (job name, code version, data
version) or creates one, then looks again and keeps the oldest. The evaluate step, which runs
once after every training task, merges any second parent that still slipped through (its
children move to the oldest, it is deleted).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from palsyseg.tracking.runs import (
    DEFAULT_EXPERIMENT,
    EVALUATION_ARTIFACT,
    NOTE_TAG,
    REPORT_TAG,
    RunContext,
    _finite_metrics,
    _log_metrics,
    client,
    configure,
    current_user,
    ensure_experiment,
    log_dataset,
)

log = logging.getLogger(__name__)

PIPELINE_ROLE = "pipeline"
PARENT_TAG = "mlflow.parentRunId"
# The MLflow UI (3.x) shows an experiment as machine learning (runs first) or GenAI (traces
# first) by a toggle kept in the browser; this query parameter picks machine learning.
ML_WORKFLOW_QUERY = "workflowType=machine_learning"
REGISTRY_LINE = "**Registry:**"
_KEY_TAGS = ("pipeline.run", "code.version", "data.version")


# --------------------------------------------------------------------------- links


def experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI; "" when tracking is not a server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs?{ML_WORKFLOW_QUERY}"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI; "" when tracking is not a server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    base = tracking_uri.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{ML_WORKFLOW_QUERY}"


# --------------------------------------------------------------------------- the parent run


def _key(tags: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(tags.get(name, "") for name in _KEY_TAGS)


def _pipeline_runs(
    mlflow_client: Any, experiment_id: str, key: Sequence[str], *, deleted: bool = False
) -> list[Any]:
    """Active (with ``deleted``: also deleted) pipeline runs with ``key``, oldest first (ties
    broken by run id)."""
    from mlflow.entities import ViewType

    query = f"tags.`palsyseg.role` = '{PIPELINE_ROLE}'"
    if "'" not in key[0]:  # job names never hold one; the key is compared below anyway
        query += f" and tags.`pipeline.run` = '{key[0]}'"
    found = mlflow_client.search_runs(
        [experiment_id],
        filter_string=query,
        run_view_type=ViewType.ALL if deleted else ViewType.ACTIVE_ONLY,
        max_results=1000,
    )
    same = [run for run in found if _key(run.data.tags) == tuple(key)]
    return sorted(same, key=lambda run: (run.info.start_time or 0, run.info.run_id))


def open_pipeline_run(
    context: RunContext,
    *,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> str | None:
    """The id of the pipeline run that ``context`` belongs to, created when missing.

    ``None`` when ``context`` names no pipeline run (a model trained on its own has no parent).
    See the module docstring for how concurrent training tasks agree on one parent.
    """
    if not context.pipeline_run:
        return None
    uri = configure(tracking_uri)
    experiment_id = ensure_experiment(experiment, uri)
    mlflow_client = client(uri)
    key = (context.pipeline_run, context.code_version, context.dataset_version)
    found = _pipeline_runs(mlflow_client, experiment_id, key)
    if found:
        return found[0].info.run_id
    tags = {
        **{k: v for k, v in context.tags().items() if v},
        "palsyseg.role": PIPELINE_ROLE,
        "mlflow.user": context.trained_by or current_user(),
        NOTE_TAG: f"Pipeline run `{context.pipeline_run}`: training. The summary (candidate "
        "vs baselines vs champion, gates, data version) appears here after evaluation.",
    }
    run = mlflow_client.create_run(experiment_id, run_name=context.pipeline_run, tags=tags)
    run_id = run.info.run_id
    from mlflow.entities import Param

    params = [Param(k, v) for k, v in sorted(context.params().items())]
    mlflow_client.log_batch(run_id, params=params)
    log_dataset(run_id, context, tracking_uri=uri)
    oldest = _pipeline_runs(mlflow_client, experiment_id, key)[0].info.run_id
    if oldest != run_id:  # another task created one at the same time: use the oldest
        mlflow_client.delete_run(run_id)
        return oldest
    log.info("MLflow pipeline run %s (%s) at %s", run_id, context.pipeline_run, uri)
    return run_id


def end_pipeline_run(run_id: str, status: str, *, tracking_uri: str | None = None) -> None:
    """Mark the pipeline run ``FINISHED`` or ``FAILED``."""
    client(tracking_uri).set_terminated(run_id, status=status)


@dataclass
class PipelineFamily:
    """A pipeline run and its children (the training runs), as MLflow ``Run`` objects."""

    parent: Any
    children: list[Any] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.parent.info.run_id

    def model_runs(self, role: str, names: Sequence[str]) -> dict[str, str]:
        """``{model name: run id}`` of the newest child with ``role`` for each of ``names``."""
        out: dict[str, str] = {}
        newest_first = sorted(self.children, key=lambda r: r.info.start_time or 0, reverse=True)
        for run in newest_first:
            tags = run.data.tags
            name = tags.get("palsyseg.model", "")
            if tags.get("palsyseg.role") == role and name in names and name not in out:
                out[name] = run.info.run_id
        return out


def _children(mlflow_client: Any, experiment_id: str, parent_id: str) -> list[Any]:
    return list(
        mlflow_client.search_runs(
            [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=1000
        )
    )


def pipeline_family(run_id: str, *, tracking_uri: str | None = None) -> PipelineFamily | None:
    """The pipeline run that training run ``run_id`` belongs to, with all its children.

    Parents that concurrent training tasks created for the same key are merged here into the
    oldest active one: the children of every other (a deleted one too: a task may have taken
    a parent just before its creator gave it up) move to it. ``None`` when the run has no
    parent.
    """
    mlflow_client = client(tracking_uri)
    run = mlflow_client.get_run(run_id)
    parent_id = run.data.tags.get(PARENT_TAG)
    if not parent_id:
        return None
    parent = mlflow_client.get_run(parent_id)
    experiment_id = parent.info.experiment_id
    key = _key(parent.data.tags)
    active = _pipeline_runs(mlflow_client, experiment_id, key)
    keep = active[0] if active else parent
    for other in _pipeline_runs(mlflow_client, experiment_id, key, deleted=True):
        if other.info.run_id == keep.info.run_id:
            continue
        moved = _children(mlflow_client, experiment_id, other.info.run_id)
        for child in moved:
            mlflow_client.set_tag(child.info.run_id, PARENT_TAG, keep.info.run_id)
        if other.info.lifecycle_stage == "active":
            mlflow_client.delete_run(other.info.run_id)
        if moved or other.info.lifecycle_stage == "active":
            log.info("merged pipeline run %s into %s", other.info.run_id, keep.info.run_id)
    return PipelineFamily(keep, _children(mlflow_client, experiment_id, keep.info.run_id))


# --------------------------------------------------------------------------- the summary


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return "—"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def _threshold(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return _cell(value)


@dataclass(frozen=True)
class ModelRow:
    """One line of the summary's model table."""

    name: str
    role: str  # candidate, baseline or champion
    metrics: Mapping[str, float]
    link: str = ""  # UI route (``#/...``) of its run or registered version
    label: str = ""  # shown instead of the name (``champion v3``)


@dataclass(frozen=True)
class PipelineSummary:
    """What a reviewer reads first: the Markdown put in the pipeline run's description."""

    job: str
    dataset_uri: str
    dataset_version: str
    code_version: str
    trained_by: str
    models: Sequence[ModelRow]
    gates: Any  # GateReport
    thresholds: Mapping[str, Any]
    relaxed: Sequence[str] = ()  # "min_primary 0.0 (production 0.5)"
    registry: str = ""
    overlay: str = ""  # relative URL of the prediction overlay image
    report: str = ""  # UI route of the candidate's one-page evaluation report
    report_download: str = ""  # relative URL that downloads it
    evaluated: str = ""  # when (UTC, ISO 8601)

    def to_markdown(self) -> str:
        from palsyseg.evaluate import SUMMARY_METRICS

        lines = [
            f"### Pipeline run `{self.job}`",
            "",
            "| what | value |",
            "|---|---|",
            f"| data | `{_cell(self.dataset_uri)}` |",
            f"| data version | `{_cell(self.dataset_version)}` |",
            f"| code version | `{_cell(self.code_version)}` |",
            f"| trained by | {_cell(self.trained_by)} |",
            f"| evaluated | {_cell(self.evaluated or '—')} |",
            "",
            "#### Test split: candidate vs baselines vs champion",
            "",
            "| model | role | " + " | ".join(h for _, h in SUMMARY_METRICS) + " |",
            "|---|---|" + "---:|" * len(SUMMARY_METRICS),
        ]
        for row in self.models:
            label = row.label or row.name
            name = f"[{label}]({row.link})" if row.link else label
            if row.role == "candidate":
                name = f"**{name}**"
            values = " | ".join(_number(row.metrics.get(key)) for key, _ in SUMMARY_METRICS)
            lines.append(f"| {name} | {row.role} | {values} |")
        if self.report:
            lines += [
                "",
                "Everything on one page (subgroups, worst test images, model card): "
                f"[report.html]({self.report})"
                + (f" · [download]({self.report_download})" if self.report_download else ""),
            ]
        verdict = "pass" if self.gates.passed else "FAIL"
        compared = f"champion v{self.gates.champion}" if self.gates.champion else "no champion"
        lines += ["", f"#### Gates: {verdict} (compared with {compared})", ""]
        lines += ["| gate | verdict | why |", "|---|---|---|"]
        for result in self.gates.results:
            mark = "✅ pass" if result.passed else "❌ fail"
            # MLflow cuts a tag at 8000 characters: keep the table well inside that
            why = result.detail if len(result.detail) <= 240 else result.detail[:239] + "…"
            lines.append(f"| {result.name} | {mark} | {_cell(why)} |")
        shown = ", ".join(f"{k} {_threshold(v)}" for k, v in sorted(self.thresholds.items()))
        lines += ["", f"Thresholds: {shown}."]
        if self.relaxed:
            lines.append("Relaxed against the production policy: " + "; ".join(self.relaxed) + ".")
        lines += ["", f"{REGISTRY_LINE} {self.registry}"]
        if self.overlay:
            lines += [
                "",
                "#### Test predictions",
                "",
                "Image, truth, then each model; the colour legend is under the grid.",
                "",
                f"![test predictions]({self.overlay})",
            ]
        return "\n".join(lines) + "\n"


def with_registry_line(note: str, text: str) -> str:
    """``note`` with its registry line replaced by ``text`` (appended when it has none)."""
    line = f"{REGISTRY_LINE} {text}"
    pattern = re.compile(rf"^{re.escape(REGISTRY_LINE)}.*$", re.MULTILINE)
    if pattern.search(note):
        return pattern.sub(lambda _: line, note, count=1)
    return note.rstrip("\n") + f"\n\n{line}\n"


def _relaxed(thresholds: Mapping[str, Any]) -> list[str]:
    """The thresholds looser than the production policy ("" entries when it cannot be read)."""
    from palsyseg.errors import PalsysegError
    from palsyseg.tracking.gates import load_policy, relaxations

    try:
        production = load_policy()
    except (PalsysegError, OSError) as exc:  # a task image without the project's policy file
        log.info("production policy not readable here (%s); relaxations not listed", exc)
        return []
    return [str(r) for r in relaxations(thresholds, production)]


def record_evaluation(
    family: PipelineFamily,
    report: Any,
    gate_report: Any,
    *,
    candidate_run_id: str,
    policy: Any,
    champion_run_id: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Put the evaluation on the pipeline run: champion metrics, gate tags, the summary.

    ``report`` is the ``EvaluationReport``, ``gate_report`` the ``GateReport`` and ``policy``
    the ``PromotionPolicy`` the gates used. The pipeline run ends ``FINISHED``. Returns the
    summary's Markdown.
    """
    mlflow_client = client(tracking_uri)
    parent = family.parent
    experiment_id = parent.info.experiment_id
    candidate = report.candidate
    names = [n for n in report.models if n not in (candidate, "champion")]
    baseline_runs = family.model_runs("baseline", names)
    rows = [
        ModelRow(
            candidate,
            "candidate",
            report.models[candidate].metrics,
            f"#/experiments/{experiment_id}/runs/{candidate_run_id}",
        )
    ]
    for name in names:
        run = baseline_runs.get(name)
        link = f"#/experiments/{experiment_id}/runs/{run}" if run else ""
        rows.append(ModelRow(name, "baseline", report.models[name].metrics, link))
    if "champion" in report.models:
        version = gate_report.champion or "?"
        model = quote(policy.registered_model, safe="")
        rows.append(
            ModelRow(
                "champion",
                "champion",
                report.models["champion"].metrics,
                f"#/models/{model}/versions/{version}",
                label=f"champion v{version}",
            )
        )
        champion = _finite_metrics(report.models["champion"].metrics)
        _log_metrics(
            mlflow_client,
            family.run_id,
            {f"test_{k}.champion": v for k, v in champion.items()},
            step=0,
        )
    tags = parent.data.tags
    if gate_report.passed:
        registry = "gates passed; the register step makes the candidate a `challenger`."
    else:
        failed = ", ".join(r.name for r in gate_report.failed)
        registry = f"not registered: gates failed ({failed})."
    if tags.get("registered.version"):  # a re-evaluation (a cached rerun) keeps what happened
        registry = f"{_registered(tags['registered.version'], policy.registered_model)} " + (
            f"Re-evaluated since: {registry}"
        )
    thresholds = policy.thresholds()
    overlay = ""
    page = mlflow_client.get_run(candidate_run_id).data.tags.get(REPORT_TAG, "")
    report_view = report_download = ""
    if page:
        report_view = f"#/experiments/{experiment_id}/runs/{candidate_run_id}/artifactPath/{page}"
        report_download = f"get-artifact?path={quote(page, safe='')}&run_uuid={candidate_run_id}"
    if report.examples:  # report.save drew the overlay grid
        path = quote(f"{EVALUATION_ARTIFACT}/predictions.png", safe="")
        overlay = f"get-artifact?path={path}&run_uuid={candidate_run_id}"
    summary = PipelineSummary(
        job=tags.get("pipeline.run", ""),
        dataset_uri=tags.get("data.uri", ""),
        dataset_version=tags.get("data.version", ""),
        code_version=tags.get("code.version", ""),
        trained_by=tags.get("trained_by", ""),
        models=rows,
        gates=gate_report,
        thresholds=thresholds,
        relaxed=_relaxed(thresholds),
        registry=registry,
        overlay=overlay,
        report=report_view,
        report_download=report_download,
        evaluated=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    markdown = summary.to_markdown()
    mlflow_client.set_tag(family.run_id, NOTE_TAG, markdown)
    mlflow_client.set_tag(family.run_id, "gates.passed", str(gate_report.passed).lower())
    mlflow_client.set_tag(family.run_id, "gates.champion", gate_report.champion or "none")
    for result in gate_report.results:
        mlflow_client.set_tag(
            family.run_id, f"gate.{result.name}", "pass" if result.passed else "fail"
        )
    mlflow_client.set_tag(family.run_id, "palsyseg.candidate_run", candidate_run_id)
    end_pipeline_run(family.run_id, "FINISHED", tracking_uri=tracking_uri)
    return markdown


def _registered(version: str, registered_model: str) -> str:
    link = f"#/models/{quote(registered_model, safe='')}/versions/{version}"
    return f"registered as [version {version}]({link}) of `{registered_model}`, alias `challenger`."


def record_registration(
    run_id: str, version: str, registered_model: str, *, tracking_uri: str | None = None
) -> None:
    """Write "registered as version N" into the summary of run ``run_id``'s pipeline run."""
    mlflow_client = client(tracking_uri)
    parent_id = mlflow_client.get_run(run_id).data.tags.get(PARENT_TAG)
    if not parent_id:
        return
    parent = mlflow_client.get_run(parent_id)
    text = _registered(version, registered_model)
    note = with_registry_line(parent.data.tags.get(NOTE_TAG, ""), text)
    mlflow_client.set_tag(parent_id, NOTE_TAG, note)
    mlflow_client.set_tag(parent_id, "registered.version", str(version))
