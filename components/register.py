"""Kubeflow component: register the candidate as ``challenger`` (``palsyseg.pipeline.register_step``)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_model_op(
    candidate: Input[Model], report: Input[Artifact], gates: dict, tracking_uri: str
) -> str:
    """A new version of the registered model with alias ``challenger``; returns its number."""
    from palsyseg.pipeline import register_step
    from palsyseg.runtime import configure_quiet_offline

    configure_quiet_offline()
    return register_step(
        candidate.metadata["run_id"], report.path, gates=gates, tracking_uri=tracking_uri or None
    )
