"""Kubeflow component: fetch the dataset and validate it (``palsyseg.pipeline.validate_step``)."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate_dataset_op(
    dataset_uri: str,
    dataset_version: str,
    dvc_rev: str,
    dvc_repo: str,
    dataset: Output[Dataset],
    report: Output[HTML],
) -> None:
    """Fetch ``dataset_uri`` (directory, s3:// prefix or DVC revision) and check the contract.

    ``dataset_version`` is not read here: it is the content fingerprint that keys the cache.
    """
    from palsyseg.pipeline import validate_step
    from palsyseg.runtime import configure_quiet_offline

    configure_quiet_offline()
    summary = validate_step(
        dataset_uri, dataset.path, report=report.path, dvc_rev=dvc_rev, dvc_repo=dvc_repo
    )
    dataset.metadata.update(summary)
