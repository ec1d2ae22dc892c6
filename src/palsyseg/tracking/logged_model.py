"""The module MLflow pickles: a palsyseg network reduced to "image batch -> class logits".

palsyseg networks return a dict (``logits`` plus PalsyNet's auxiliary heads); an MLflow
pyfunc model must return one array. :class:`LogitsOnly` keeps the network and returns its
``logits``, so ``mlflow.pyfunc.load_model(uri).predict(batch)`` gives B×C×H×W scores. It lives
in its own module (imports torch at the top) so that ``palsyseg.tracking.runs`` stays light.
"""

from __future__ import annotations

import torch
from torch import nn


class LogitsOnly(nn.Module):
    """Wraps a palsyseg model; ``forward(x)`` returns ``model(x)["logits"]`` (B×C×H×W)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out["logits"] if isinstance(out, dict) else out
