"""Kubeflow components: evaluate every model on the test split, then read the gate verdict.

``check_gates_op`` is separate because ``dsl.If`` needs a task with one boolean output.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_models_op(
    splits: Input[Dataset],
    candidate: Input[Model],
    baselines: Input[list[Model]],
    gates: dict,
    tracking_uri: str,
    report: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Candidate vs baselines vs the registry's champion; report, plots and gates.json."""
    from palsyseg.pipeline import evaluate_step
    from palsyseg.runtime import configure_quiet_offline

    configure_quiet_offline()
    result = evaluate_step(
        splits.path,
        report.path,
        candidate=(candidate.metadata["model_name"], candidate.path, candidate.metadata["run_id"]),
        baselines=[(b.metadata["model_name"], b.path) for b in baselines],
        gates=gates,
        tracking_uri=tracking_uri or None,
    )
    report.metadata["gates_passed"] = result["passed"]
    for key in ("f1_fpp", "mean_f1", "miou", "pixel_accuracy"):
        if key in result["metrics"]:
            metrics.log_metric(key, result["metrics"][key])


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_gates_op(report: Input[Artifact]) -> bool:
    """True when every promotion gate passed (``palsyseg.pipeline.gates_passed``)."""
    from palsyseg.pipeline import gates_passed
    from palsyseg.runtime import configure_quiet_offline

    configure_quiet_offline()
    return gates_passed(report.path)
