"""Inference-time BatchNorm folding: a convolution followed by an eval-mode BatchNorm is one
convolution with a bias.

In eval mode ``BN(conv(x)) = γ·(W∗x + b − μ)/√(σ² + ε) + β``, which is the convolution with
weights ``W·γ/√(σ² + ε)`` (per output channel) and bias ``(b − μ)·γ/√(σ² + ε) + β``: the same
numbers up to float rounding (~1e-6 on PalsyNet's logits), one operator fewer per block.
PalsyNet has 43 BatchNorms, one after each of its small convolutions (depthwise, pointwise, the
decoder's), and on two CPU threads at 250×250 their separate passes are ~6 % of its time
(measured: 20.95 → 19.66 ms, interleaved rounds in one process); DeepLabV3+-R34 and
U-Net-R18 fold too, and gain less (their large convolutions dominate).

:func:`fold_batchnorm` is for inference only — ``palsyseg predict``, the served finding model,
``palsyseg evaluate`` and ``benchmarks/bench_models.py`` use it on the networks they load; a
folded network has no BatchNorm statistics left to train or to save as a checkpoint. Pairs it
folds (everything else is left as it is, so an unknown layout runs unchanged):

- a ``Conv2d`` directly followed by a ``BatchNorm2d`` in an ``nn.Sequential`` (PalsyNet's
  :class:`~palsyseg.models.layers.ConvBNReLU`, segmentation-models-pytorch's decoder blocks);
  a child ``nn.Sequential`` whose *last* module is a ``Conv2d`` counts as that convolution
  (smp's separable convolutions, depthwise then pointwise, before their BatchNorm);
- ``convN`` / ``bnN`` of torchvision's ResNet and its blocks (the baselines' encoders), whose
  ``forward`` applies ``bnN`` straight to ``convN``'s output.
"""

from __future__ import annotations

import torch
from torch import nn


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> bool:
    """Fold ``bn`` into ``conv`` in place; False (nothing changed) when it cannot be folded."""
    if (
        not isinstance(conv, nn.Conv2d)
        or not isinstance(bn, nn.BatchNorm2d)
        or bn.running_mean is None
        or bn.running_var is None
        or conv.out_channels != bn.num_features
    ):
        return False
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.float() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.float()
        shift = -bn.running_mean.float() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.float()
        bias = shift if conv.bias is None else conv.bias.float() * scale + shift
        weight = conv.weight.float() * scale.reshape(-1, 1, 1, 1)
        conv.weight.copy_(weight.to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        else:
            conv.bias.copy_(bias.to(conv.bias.dtype))
    return True


def _last_conv(module: nn.Module) -> nn.Conv2d | None:
    """``module`` itself when a ``Conv2d``; the last module of an ``nn.Sequential`` that ends
    in one (recursively); else None."""
    if isinstance(module, nn.Conv2d):
        return module
    if isinstance(module, nn.Sequential) and len(module):
        return _last_conv(module[-1])
    return None


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every foldable eval-mode BatchNorm of ``model`` into the convolution before it, in
    place (module docstring); returns ``model``. Raises ``ValueError`` for a model in training
    mode (its BatchNorms normalise by the batch, not by their statistics)."""
    if model.training:
        raise ValueError("fold_batchnorm: the model is in training mode; call .eval() first")
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            for index in range(len(module) - 1):
                conv, bn = _last_conv(module[index]), module[index + 1]
                if conv is not None and isinstance(bn, nn.BatchNorm2d) and _fold_pair(conv, bn):
                    module[index + 1] = nn.Identity()
        elif isinstance(module, (ResNet, BasicBlock, Bottleneck)):
            for n in (1, 2, 3):
                conv, bn = getattr(module, f"conv{n}", None), getattr(module, f"bn{n}", None)
                if isinstance(bn, nn.BatchNorm2d) and _fold_pair(conv, bn):  # type: ignore[arg-type]
                    setattr(module, f"bn{n}", nn.Identity())
    return model
