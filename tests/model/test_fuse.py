"""BatchNorm folding for inference (palsyseg.models.fuse): the same logits, one operator fewer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from palsyseg.labels import NUM_CLASSES
from palsyseg.models import create_model, list_models
from palsyseg.models.fuse import fold_batchnorm


def _with_statistics(name: str) -> nn.Module:
    """A registered network whose BatchNorms hold non-trivial statistics and affine terms, in
    eval mode (a fresh network's mean 0, variance 1 would hide a wrong fold)."""
    torch.manual_seed(0)
    model = create_model(name, NUM_CLASSES)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.3, 3.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("name", list_models())
def test_a_folded_network_gives_the_same_logits_without_a_batchnorm(name: str) -> None:
    model = _with_statistics(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)["logits"]
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        got = folded(x)["logits"]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_folding_refuses_a_network_in_training_mode() -> None:
    model = create_model("palsynet", NUM_CLASSES).train()
    with pytest.raises(ValueError, match="training mode"):
        fold_batchnorm(model)


def test_a_batchnorm_that_does_not_follow_a_convolution_is_left_alone() -> None:
    """Only a BatchNorm fed straight by a convolution folds; one after a ReLU keeps its pass."""
    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    block[2].running_mean.fill_(0.5)
    x = torch.randn(1, 3, 8, 8)
    expected = block(x)
    fold_batchnorm(block)
    assert isinstance(block[2], nn.BatchNorm2d)
    torch.testing.assert_close(block(x), expected)
