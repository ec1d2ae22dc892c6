"""Models: the paper's PalsyNet, its ablations and the smp baselines behind one factory.

``create_model(name, num_classes=7, **kwargs)``, ``list_models()``, ``model_summary(model)``.
Every model maps B×3×H×W (ImageNet-normalised RGB, any H, W) to a dict with at least
``"logits"`` B×C×H×W; see :class:`PalsyNet` for the extra outputs.
"""

from palsyseg.models.factory import create_model, list_models, model_summary
from palsyseg.models.palsynet import PalsyNet, PalsyNetConfig

__all__ = ["PalsyNet", "PalsyNetConfig", "create_model", "list_models", "model_summary"]
