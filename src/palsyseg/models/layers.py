"""The convolution + BatchNorm + ReLU unit every palsyseg network block is built from."""

from __future__ import annotations

from torch import nn


class ConvBNReLU(nn.Sequential):
    def __init__(
        self, cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(
                cin,
                cout,
                k,
                stride,
                padding=dilation * (k // 2),
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )
