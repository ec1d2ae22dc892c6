"""The palsyseg training pipeline (Kubeflow Pipelines v2).

validate -> split -> train candidate + baselines (``dsl.ParallelFor``) -> evaluate (candidate vs
baselines vs the registry's champion) -> ``dsl.If`` gates pass -> register as ``challenger``.

Wiring only: every task is a component from ``components/`` calling ``palsyseg``. Compile with
``palsyseg pipeline compile``, run locally with ``palsyseg pipeline run``, submit to a cluster
with ``palsyseg pipeline submit --host URL`` (they fill the parameters from ``params.yaml``,
``mlflow/promotion.yaml`` and the flags; see ``palsyseg.pipeline.PipelineArguments``).

On a cluster: training tasks ask for one NVIDIA GPU; every task reads its S3 keys and endpoint
from the Kubernetes secret ``palsyseg-s3`` (see ``mlflow/README.md``); evaluate, the gate check
and register are never cached because the registry's champion is an input kfp cannot see.
"""

from kfp import dsl, kubernetes

from components.evaluate import check_gates_op, evaluate_models_op
from components.register import register_model_op
from components.split import split_dataset_op
from components.train import train_model_op
from components.validate import validate_dataset_op

S3_SECRET = "palsyseg-s3"
S3_SECRET_KEYS = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
}


def _with_s3(task: dsl.PipelineTask) -> dsl.PipelineTask:
    return kubernetes.use_secret_as_env(
        task, secret_name=S3_SECRET, secret_key_to_env=dict(S3_SECRET_KEYS)
    )


def _with_gpu(task: dsl.PipelineTask) -> dsl.PipelineTask:
    return task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)


@dsl.pipeline(
    name="palsyseg-training",
    description="Validate, split, train PalsyNet and baselines, evaluate against the champion, "
    "register a challenger when the promotion gates pass.",
)
def training_pipeline(
    dataset_uri: str = "data",
    dataset_version: str = "",
    dvc_rev: str = "",
    dvc_repo: str = "",
    candidate_model: str = "palsynet",
    baseline_models: list = ["deeplabv3plus_r34", "unet_r18"],  # noqa: B006  (kfp default)
    epochs: int = 300,
    train_config: dict = {},  # noqa: B006
    split_config: dict = {},  # noqa: B006
    gates: dict = {},  # noqa: B006
    tracking_uri: str = "",
    code_version: str = "",
    trained_by: str = "",
) -> None:
    """Parameters: the dataset (directory, ``s3://`` URI or a path at DVC revision ``dvc_rev``)
    and its version (cache key), the candidate and baseline model names, epochs and other
    ``TrainConfig`` fields, split ratios, the promotion gates, the MLflow tracking URI (empty:
    ``MLFLOW_TRACKING_URI`` of the task), the code version and the trainer's name."""
    validate = validate_dataset_op(
        dataset_uri=dataset_uri, dataset_version=dataset_version, dvc_rev=dvc_rev, dvc_repo=dvc_repo
    ).set_display_name("validate dataset")
    _with_s3(validate)

    split = split_dataset_op(
        dataset=validate.outputs["dataset"], split_config=split_config
    ).set_display_name("split by patient")

    train_args = dict(
        splits=split.outputs["splits"],
        epochs=epochs,
        train_config=train_config,
        dataset_uri=dataset_uri,
        dataset_version=dataset_version,
        code_version=code_version,
        trained_by=trained_by,
        pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        tracking_uri=tracking_uri,
    )
    candidate = train_model_op(
        model_name=candidate_model, role="candidate", **train_args
    ).set_display_name("train candidate")
    _with_s3(_with_gpu(candidate))

    with dsl.ParallelFor(baseline_models, name="baselines") as baseline_model:
        baseline = train_model_op(
            model_name=baseline_model, role="baseline", **train_args
        ).set_display_name("train baseline")
        _with_s3(_with_gpu(baseline))

    evaluate = evaluate_models_op(
        splits=split.outputs["splits"],
        candidate=candidate.outputs["checkpoint"],
        baselines=dsl.Collected(baseline.outputs["checkpoint"]),
        gates=gates,
        tracking_uri=tracking_uri,
    ).set_display_name("evaluate vs baselines and champion")
    evaluate.set_caching_options(False)
    _with_s3(evaluate)

    verdict = check_gates_op(report=evaluate.outputs["report"]).set_display_name("gates")
    verdict.set_caching_options(False)

    with dsl.If(verdict.output == True, name="gates-passed"):  # noqa: E712  (kfp condition)
        register = register_model_op(
            candidate=candidate.outputs["checkpoint"],
            report=evaluate.outputs["report"],
            gates=gates,
            tracking_uri=tracking_uri,
        ).set_display_name("register challenger")
        register.set_caching_options(False)
        _with_s3(register)
