"""The one container image every palsyseg component runs in (built from the repo's Dockerfile).

``docker build -t palsyseg:0.1.0 .`` builds it; push it to a registry your cluster pulls from
and compile with ``PALSYSEG_IMAGE=registry.example.org/palsyseg:0.1.0 palsyseg pipeline compile``.
The committed ``pipelines/training_pipeline.yaml`` uses the default below. Local runs
(``kfp.local`` SubprocessRunner) ignore the image and use the current environment.
"""

import os

BASE_IMAGE = os.environ.get("PALSYSEG_IMAGE", "palsyseg:0.1.0")
