"""Kubeflow component: train one model as one MLflow run (``palsyseg.pipeline.train_step``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_model_op(
    splits: Input[Dataset],
    model_name: str,
    role: str,
    epochs: int,
    train_config: dict,
    dataset_uri: str,
    dataset_version: str,
    code_version: str,
    trained_by: str,
    pipeline_run: str,
    tracking_uri: str,
    checkpoint: Output[Model],
) -> None:
    """Train ``model_name`` (role ``candidate`` or ``baseline``); the best checkpoint is the output."""
    from palsyseg.pipeline import train_step
    from palsyseg.runtime import configure_quiet_offline
    from palsyseg.tracking.runs import RunContext

    configure_quiet_offline()
    context = RunContext(dataset_uri, dataset_version, code_version, pipeline_run, trained_by)
    info = train_step(
        splits.path,
        checkpoint.path,
        model=model_name,
        role=role,
        train_config={**train_config, "epochs": epochs},
        context=context,
        tracking_uri=tracking_uri or None,
    )
    checkpoint.metadata.update(info)
