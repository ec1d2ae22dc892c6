"""The tiny network the registry and MLflow-page tests log and register (shared, not a fixture:
MLflow pickles the class, so it must live in an importable module)."""

from __future__ import annotations

import torch
from torch import nn

IMAGE = 16


class TinySeg(nn.Module):
    """A 1×1-conv "segmenter" with the palsyseg output contract (a dict with ``logits``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Conv2d(3, 7, kernel_size=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.head(x)}
