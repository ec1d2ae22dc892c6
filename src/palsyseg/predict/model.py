"""Which network ``predict`` runs: a registry alias or version, a run, or a checkpoint file.

``--model`` takes

- ``models:/NAME@ALIAS`` (default ``models:/palsyseg@champion``) or ``models:/NAME/VERSION``:
  a registered version; its run's palsyseg checkpoint (the file logged under ``checkpoint/``
  next to the MLflow model, :func:`palsyseg.tracking.runs.download_checkpoint`) is fetched;
- ``runs:/RUN_ID`` (anything after the run id is ignored): that run's checkpoint;
- a local path to a checkpoint (``best.pt``).

The checkpoint is what training wrote: the weights (SHA-256 checked), the face frame the model
was trained in, and the palsy threshold chosen on its validation split. ``predict`` uses that
very frame and the training input normalisation
(:func:`palsyseg.data.torch_dataset.normalize_image`, ImageNet mean and standard deviation), so a
photo reaches the network as training images did. A downloaded checkpoint is loaded into memory
from a temporary folder and the file removed; nothing is cached.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palsyseg.align import FaceFrame
from palsyseg.errors import PalsysegError

log = logging.getLogger(__name__)

DEFAULT_MODEL_URI = "models:/palsyseg@champion"
DEFAULT_PALSY_THRESHOLD = 0.0
"""Used only for a checkpoint that stores no ``palsy_threshold`` (palsyseg always writes one):
any FPP pixel then means "present", as :mod:`palsyseg.evaluate` scores such a checkpoint."""
NORMALISATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": "1/255"}
"""What :func:`palsyseg.data.torch_dataset.normalize_image` does to a uint8 RGB crop."""

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")
_RUN = re.compile(r"^runs:/(?P<run_id>[0-9a-zA-Z]+)(?:/.*)?$")


class ModelNotFoundError(PalsysegError):
    """``--model`` names nothing that can be loaded."""


@dataclass
class PredictModel:
    """A loaded network with what ``predict`` needs to run it as it was trained.

    ``network`` (eval mode, as :func:`palsyseg.checkpoint.load_checkpoint_model` returns it) is
    only run from here on, so its BatchNorms are folded into the convolutions before them, in
    place (:mod:`palsyseg.models.fuse`: the same logits, one operator fewer per block).
    """

    network: Any
    metadata: dict[str, Any]
    uri: str
    name: str
    version: str | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        from palsyseg.models.fuse import fold_batchnorm

        fold_batchnorm(self.network)

    @property
    def frame(self) -> FaceFrame | None:
        """The training face frame; ``None`` for a checkpoint from before the frame existed."""
        frame = self.metadata.get("frame")
        return FaceFrame.from_dict(frame) if frame else None

    @property
    def image_size(self) -> int:
        return int(self.metadata.get("image_size", 0))

    @property
    def palsy_threshold(self) -> float:
        value = self.metadata.get("palsy_threshold")
        return DEFAULT_PALSY_THRESHOLD if value is None else float(value)

    @property
    def palsy_score(self) -> str:
        """What ``palsy_threshold`` is on (:func:`palsyseg.checkpoint.palsy_score`)."""
        from palsyseg.checkpoint import palsy_score

        return palsy_score(self.metadata)

    @property
    def threshold_source(self) -> str:
        return "checkpoint" if self.metadata.get("palsy_threshold") is not None else "default"

    def describe(self) -> dict[str, Any]:
        """The ``model`` object of a finding: which network, from where, run how."""
        frame = self.frame
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "run_id": self.run_id,
            "architecture": self.metadata.get("model_name"),
            "weights_sha256": self.metadata.get("weights_sha256"),
            "epoch": self.metadata.get("epoch"),
            "palsy_threshold": self.palsy_threshold,
            "palsy_score": self.palsy_score,
            "threshold_source": self.threshold_source,
            "frame": frame.to_dict() if frame else None,
            "image_size": self.image_size,
            "normalisation": NORMALISATION,
        }


def _registered_run(
    uri: str, name: str, alias: str | None, version: str | None, tracking: str | None
) -> tuple[str, str]:
    """``(version, run_id)`` of a registered version named by alias or number."""
    from mlflow.exceptions import MlflowException

    from palsyseg.connectivity import check_tracking_store
    from palsyseg.tracking.runs import client

    store = check_tracking_store(tracking)
    mlflow_client = client(tracking)
    try:
        if alias is not None:
            found = mlflow_client.get_model_version_by_alias(name, alias)
        else:
            found = mlflow_client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            what = f"alias {alias!r}" if alias is not None else f"version {version}"
            hint = (
                "a reviewer makes one with `palsyseg registry promote VERSION`; `make demo` "
                f"registers a challenger: try --model models:/{name}@challenger"
                if alias == "champion"
                else "`palsyseg registry list` shows the versions"
            )
            raise ModelNotFoundError(
                f"{uri}: registered model {name!r} has no {what} in {store} "
                f"({hint}; or pass --model PATH/TO/best.pt)"
            ) from None
        raise
    if not found.run_id:
        raise ModelNotFoundError(f"{uri}: version {found.version} names no run to fetch it from")
    return str(found.version), str(found.run_id)


def load_predict_model(
    uri: str = DEFAULT_MODEL_URI, *, tracking_uri: str | None = None
) -> PredictModel:
    """Resolve ``uri`` (module docstring), fetch its checkpoint if remote, load it on CPU.

    Raises :class:`ModelNotFoundError` for an unknown registered version or a path that does not
    exist, :class:`palsyseg.checkpoint.CheckpointError` for a file that is not an intact
    palsyseg checkpoint, and the tracking layer's one-line errors for an unreachable store.
    """
    from palsyseg.checkpoint import load_checkpoint_model

    registered, run = _REGISTERED.match(uri), _RUN.match(uri)
    if registered is None and run is None:
        if uri.startswith(("models:/", "runs:/")):
            raise ModelNotFoundError(
                f"{uri}: not a model URI palsyseg reads (models:/NAME@ALIAS, models:/NAME/VERSION, "
                "runs:/RUN_ID, or a checkpoint path)"
            )
        path = Path(uri).expanduser()
        if not path.exists():
            raise ModelNotFoundError(
                f"{uri}: no such checkpoint file (and not a models:/ or runs:/ URI)"
            )
        network, metadata = load_checkpoint_model(path, "cpu")
        return PredictModel(network, metadata, uri=str(path), name=path.name)

    from palsyseg.tracking.runs import download_checkpoint

    version, name = None, None
    if registered is not None:
        name = registered["name"]
        version, run_id = _registered_run(
            uri, name, registered["alias"], registered["version"], tracking_uri
        )
    else:
        from palsyseg.connectivity import check_tracking_store

        check_tracking_store(tracking_uri)
        run_id = run["run_id"]  # type: ignore[index]
    with tempfile.TemporaryDirectory(prefix="palsyseg-model-") as folder:
        checkpoint = download_checkpoint(run_id, Path(folder), tracking_uri=tracking_uri)
        network, metadata = load_checkpoint_model(checkpoint, "cpu")
    log.info("model %s: version %s, run %s", uri, version, run_id)
    return PredictModel(
        network,
        metadata,
        uri=uri,
        name=name or f"run {run_id}",
        version=version,
        run_id=run_id,
    )
