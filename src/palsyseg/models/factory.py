"""One factory for every model: ``create_model(name, num_classes=7, **kwargs)``.

A name → constructor registry (as in timm / smp): PalsyNet, its ablations and the smp baselines
are created the same way and all return a dict with at least ``"logits"`` at the input size, so
training, evaluation and benchmarks never branch on the model kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace

from torch import nn

from palsyseg.models import baselines
from palsyseg.models.palsynet import PalsyNet, PalsyNetConfig


def _palsynet(**overrides: object) -> Callable[..., nn.Module]:
    def build(num_classes: int = 7, **kwargs: object) -> nn.Module:
        known = {f.name for f in fields(PalsyNetConfig)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown PalsyNet option(s) {unknown}; valid: {sorted(known)}")
        for key, value in kwargs.items():  # params.yaml gives lists where the config has tuples
            if isinstance(value, list):
                kwargs[key] = tuple(value)
        config = replace(PalsyNetConfig(), num_classes=num_classes, **{**kwargs, **overrides})
        return PalsyNet(config)

    return build


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "palsynet": _palsynet(),
    "palsynet_no_fg_attention": _palsynet(use_fg_attention=False),
    "palsynet_no_depth": _palsynet(use_depth=False),
    "palsynet_no_esc": _palsynet(use_esc=False),
    "palsynet_no_mirror": _palsynet(use_mirror=False, mirror_skips=False, part_side_fpp=False),
    "palsynet_no_mirror_skips": _palsynet(mirror_skips=False),
    "palsynet_no_part_side": _palsynet(part_side_fpp=False),
    "palsynet_side": _palsynet(mirror_input=True, side_path=True, part_side_fpp=False),
    "deeplabv3plus_r34": baselines.deeplabv3plus_r34,
    "unet_r18": baselines.unet_r18,
    "unet_r18_mirror": baselines.unet_r18_mirror,
}


def list_models() -> list[str]:
    """Registered model names, in registration order (PalsyNet and ablations, then baselines)."""
    return list(_REGISTRY)


def create_model(name: str, num_classes: int = 7, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` (random init; nothing is downloaded).

    ``kwargs`` go to the constructor (for PalsyNet: :class:`PalsyNetConfig` fields). An unknown
    name raises ``ValueError`` listing the valid names.
    """
    try:
        constructor = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(_REGISTRY)}") from None
    return constructor(num_classes=num_classes, **kwargs)


def model_summary(model: nn.Module, image_size: int = 250) -> dict[str, float | int]:
    """Parameter count and GFLOPs of one forward pass on a 1×3×S×S input.

    FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-accumulate of
    convolutions, matmuls and attention; element-wise ops are not counted), in eval mode.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, image_size, image_size, device=device)
        counter = FlopCounterMode(display=False)
        # no torch.no_grad(): FlopCounterMode's module tracker needs autograd on (torch 2.14)
        with counter:
            model(x)
    finally:
        model.train(was_training)
    return {"params": int(params), "gflops": counter.get_total_flops() / 1e9}
