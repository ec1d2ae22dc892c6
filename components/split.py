"""Kubeflow component: patient-grouped train/val/test split (``palsyseg.pipeline.split_step``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def split_dataset_op(dataset: Input[Dataset], split_config: dict, splits: Output[Dataset]) -> None:
    """Write ``splits/{train,val,test}`` from the validated dataset."""
    from palsyseg.pipeline import split_step
    from palsyseg.runtime import configure_quiet_offline

    configure_quiet_offline()
    summary = split_step(dataset.path, splits.path, split_config)
    splits.metadata["totals"] = summary["totals"]
