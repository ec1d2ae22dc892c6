"""Baselines from segmentation-models-pytorch, behind the same interface as PalsyNet.

``deeplabv3plus_r34`` (DeepLabV3+, ResNet-34 encoder; the paper's Table 1–3 baseline [28]) and
``unet_r18`` (U-Net, ResNet-18 encoder), and ``unet_r18_mirror``: the same U-Net fed the crop and
its mirror image as six channels — in the canonical face frame (:mod:`palsyseg.align`) the crop's
mirror is the face's own mirror, so this is the simplest network that can compare each half of the
face with the other; the FPP decision (which half is weak) needs exactly that. All are built with ``encoder_weights=None``: nothing is
downloaded, and like the paper (§4.4) every model is trained from scratch on our data.

smp refuses inputs whose sides are not divisible by the encoder's output stride (32 for these
ResNets). :class:`PaddedSegmentationModel` takes any H×W: it **zero-pads** the normalised image
(zero is the ImageNet mean colour after normalisation; unlike reflection it works for any size)
symmetrically up to the next multiple of 32, runs the model and crops the logits back to H×W, so
training, evaluation and benchmarks never branch on the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SIZE_DIVISOR = 32


class PaddedSegmentationModel(nn.Module):
    """Wrap a logits-returning model: pad to a multiple of ``divisor``, crop back, return a dict.

    ``mirror_input``: feed ``[x, x.flip(-1)]`` (six channels), mirrored *before* padding so the
    mirror is exact for any width. In eval mode the logits get ``class_offsets`` (one per class,
    0 until validation chooses them: :func:`palsyseg.scoring.choose_class_offsets`)."""

    def __init__(
        self,
        model: nn.Module,
        divisor: int = SIZE_DIVISOR,
        mirror_input: bool = False,
        num_classes: int = 7,
    ) -> None:
        super().__init__()
        self.model = model
        self.divisor = divisor
        self.mirror_input = mirror_input
        # per-class offsets on the logits in eval mode, 0 until validation chooses them
        # (palsyseg.scoring.choose_class_offsets); training never sees them
        self.register_buffer("class_offsets", torch.zeros(num_classes))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.mirror_input:
            x = torch.cat([x, x.flip(-1)], dim=1)
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.divisor, (-w) % self.divisor
        top, left = ph // 2, pw // 2
        if ph or pw:
            x = F.pad(x, (left, pw - left, top, ph - top), mode="constant", value=0.0)
        logits = self.model(x)
        logits = logits[..., top : top + h, left : left + w]
        if not self.training:
            logits = logits + self.class_offsets.to(logits.dtype)[:, None, None]
        return {"logits": logits}


def deeplabv3plus_r34(num_classes: int = 7, **kwargs: object) -> nn.Module:
    """DeepLabV3+ with a ResNet-34 encoder (output stride 16), random init."""
    import segmentation_models_pytorch as smp

    model = smp.DeepLabV3Plus(
        encoder_name="resnet34", encoder_weights=None, classes=num_classes, **kwargs
    )
    return PaddedSegmentationModel(model, num_classes=num_classes)


def unet_r18(num_classes: int = 7, **kwargs: object) -> nn.Module:
    """U-Net with a ResNet-18 encoder, random init."""
    import segmentation_models_pytorch as smp

    model = smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=num_classes, **kwargs)
    return PaddedSegmentationModel(model, num_classes=num_classes)


def unet_r18_mirror(num_classes: int = 7, **kwargs: object) -> nn.Module:
    """U-Net-R18 on six channels: the face-frame crop and its mirror image (see the module doc)."""
    import segmentation_models_pytorch as smp

    model = smp.Unet(
        encoder_name="resnet18", encoder_weights=None, in_channels=6, classes=num_classes, **kwargs
    )
    return PaddedSegmentationModel(model, mirror_input=True, num_classes=num_classes)
