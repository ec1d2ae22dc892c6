# The palsyseg image: every Kubeflow component of pipelines/training_pipeline.py runs in it
# (components/image.py names it). It holds the library, the component and pipeline packages
# and the pinned dependencies, so no task installs anything at run time.
#
#   docker build -t palsyseg:0.1.0 --build-arg GIT_COMMIT=$(git rev-parse HEAD) .
#   docker tag palsyseg:0.1.0 REGISTRY/palsyseg:0.1.0 && docker push REGISTRY/palsyseg:0.1.0
#   PALSYSEG_IMAGE=REGISTRY/palsyseg:0.1.0 palsyseg pipeline compile --out build/pipeline.yaml
#
# Training tasks request an NVIDIA GPU: torch from PyPI is the CUDA build (its runtime comes
# as pip packages), so the base image needs no CUDA toolkit; the node provides the driver.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true \
    DO_NOT_TRACK=1 \
    DVC_NO_ANALYTICS=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    HF_HUB_OFFLINE=1 \
    MPLBACKEND=Agg

# git: DVC revisions (`--dvc-rev` fetches a dataset with `dvc get` from a git repository).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/palsyseg

# Dependencies first (the slow layer), in the Makefile's order: torch and torchvision pinned
# together, then everything else from the frozen constraints so pip never resolves a new torch.
COPY requirements/constraints.txt requirements/constraints.txt
RUN pip install torch==2.14.1 torchvision==0.29.1 \
    && grep -v -E '^(torch|torchvision|palsyseg)==' requirements/constraints.txt > /tmp/deps.txt \
    && pip install -c requirements/constraints.txt -r /tmp/deps.txt \
    && rm /tmp/deps.txt

COPY pyproject.toml README.md ./
COPY src src
COPY components components
COPY pipelines pipelines
COPY mlflow/promotion.yaml mlflow/promotion.yaml
# The shipped warm start: `pipeline submit --set init_weights=/opt/palsyseg/pretrained/...`.
COPY pretrained pretrained
RUN pip install --no-deps . && python -c "import palsyseg.pipeline, components.train, pipelines.training_pipeline"

# The code version MLflow records for runs made in this image (no .git inside).
ARG GIT_COMMIT=unknown
ENV PALSYSEG_GIT_COMMIT=${GIT_COMMIT}

# Tasks run as an unprivileged user; HOME must be writable (MLflow, matplotlib caches).
RUN useradd --create-home --uid 1000 palsyseg
USER palsyseg
ENTRYPOINT []
CMD ["palsyseg", "--help"]
