"""``mlflow models serve`` answers a posted photo with palsyseg's finding.

An untrained palsynet checkpoint is logged as the pipeline logs a trained one
(:func:`palsyseg.tracking.runs.log_model`, which adds the finding model of
:mod:`palsyseg.predict.serving`) through the real MLflow server (artifacts in SeaweedFS),
registered as the pipeline registers it (``register_challenger``), given alias ``champion``, and
served from ``models:/NAME@champion`` by ``mlflow models serve --env-manager
local`` on 127.0.0.1. A real face (``skimage.data.astronaut()``) and a photo without one
(``skimage.data.coffee()``) are posted as base64 JPEG/PNG in one request.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_served_champion_answers_a_posted_photo_with_a_finding(
    tracking, model_name: str, tmp_path: Path
) -> None:
    import numpy as np
    from skimage import data

    from palsyseg.checkpoint import save_untrained_checkpoint
    from palsyseg.predict.serving import encode_photo
    from palsyseg.tracking import registry
    from palsyseg.tracking.gates import PromotionPolicy, evaluate_gates
    from palsyseg.tracking.runs import RunContext, client, log_model

    # As the pipeline's train and register steps do: log_model, then register_challenger.
    mlflow_client = client(tracking.uri)
    experiment = mlflow_client.create_experiment(f"{model_name}-serving")
    run_id = mlflow_client.create_run(experiment).info.run_id
    log_model(run_id, save_untrained_checkpoint(tmp_path / "best.pt"), tracking_uri=tracking.uri)
    scores = {"f1_fpp": 0.5, "mean_f1": 0.7, "miou": 0.6, "pixel_accuracy": 0.9}
    scores.update({f"f1_{part}": 0.7 for part in ("skin", "hair", "eyebrow", "eye", "mouth")})
    policy = PromotionPolicy(registered_model=model_name, min_primary=0.3, beat_baselines=False)
    gates = evaluate_gates(scores, champion=None, baselines={}, policy=policy)
    version = registry.register_challenger(
        run_id, gate_report=gates, metrics=scores, context=RunContext(), policy=policy
    )
    # Only a reviewer makes a champion (registry promote, audited); serving needs the alias.
    mlflow_client.set_registered_model_alias(model_name, "champion", version)
    source = mlflow_client.get_model_version(model_name, version).source
    assert source == mlflow_client.get_run(run_id).data.tags["palsyseg.model_uri"]

    port = _free_port()
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        # mlflow models serve runs `uvicorn` by name: as after `source .venv/bin/activate`
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": tracking.uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),
    }
    cmd = [
        str(venv_bin / "mlflow"), "models", "serve", "-m", f"models:/{model_name}@champion",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"mlflow models serve did not start:\n{tail}", pytrace=False)
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/ping", timeout=2) as response,
            ):
                if response.status == 200:
                    break
            time.sleep(0.5)

        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [
                    [encode_photo(data.astronaut(), ".jpg")],
                    [encode_photo(np.ascontiguousarray(data.coffee()), ".png")],
                ],
            }
        }
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200
            answer = json.loads(response.read())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    face, no_face = answer["predictions"]
    assert face["image"] == "row 0" and face["size"] == [512, 512]
    x, y, w, h = face["face"]["box"]
    assert 150 < x + w / 2 < 300 and 80 < y + h / 2 < 180
    assert face["palsy"]["affected_side"] in ("left", "right", "none")
    assert face["palsy"]["threshold"] == 0.01  # carried inside the served model
    assert face["model"]["frame"] == {"size": 64, "iod": 0.25, "eye_y": 0.42}
    assert face["model"]["normalisation"]["std"] == [0.229, 0.224, 0.225]
    assert set(face["measures"]) >= {"mouth_corner_drop", "eye_opening_ratio", "brow_height_diff"}
    assert "not a medical device" in face["notice"]
    assert no_face == {
        "image": "row 1",
        "error": "row 1: no face found (dlib HOG detector, upsampled once too)",
    }
