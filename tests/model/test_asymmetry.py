"""PalsyNet's blocks that compare the face's two halves (:mod:`palsyseg.models.asymmetry`): the
mirror about the image's centre, the side vote, and the per-part, per-side FPP decision."""

from __future__ import annotations

import math

import pytest
import torch

from palsyseg.labels import Label
from palsyseg.models import create_model
from palsyseg.models.asymmetry import (
    MirrorAsymmetry,
    PartSideFPP,
    SidePath,
    mirror_about_image_centre,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)


def _part_side(seed: int = 0, *, geometry: bool = False, outline: bool = False) -> PartSideFPP:
    torch.manual_seed(seed)
    block = PartSideFPP(
        8,
        parts=(int(Label.EYE), int(Label.MOUTH)),
        fpp_class=int(Label.FPP),
        geometry=geometry,
        outline=outline,
    )
    for head in block.presence:  # an untrained presence says "no FPP"; make it say something
        torch.nn.init.normal_(head[-1].weight)
    for head in getattr(block, "shape_side", []):  # and the shape term starts at 0
        torch.nn.init.normal_(head.weight)
    return block.eval()


@pytest.mark.parametrize(("geometry", "outline"), [(False, False), (True, False), (True, True)])
def test_the_part_side_decision_swaps_sides_with_the_halves(geometry: bool, outline: bool) -> None:
    block = _part_side(geometry=geometry, outline=outline)
    features = torch.randn(2, 8, 32, 32)  # 1/4 of a 128 px frame: cells 0-15 left, 16-31 right
    features[..., :16] += torch.randn(2, 8, 1, 1) * 3  # one half's part looks different
    logits = torch.randn(2, 7, 64, 64)
    full = torch.randn(2, 7, 128, 128)  # the base logits at the input's size (shape moments)

    def decide(*args: torch.Tensor | int, **kwargs: torch.Tensor) -> torch.Tensor:
        return block.judge(*block.describe(*args, **kwargs))

    with torch.no_grad():
        log_q = decide(features, logits, image_width=128, stride=4, shape_logits=full)
        mirrored = decide(features.flip(-1), logits.flip(-1), 128, 4, shape_logits=full.flip(-1))
    assert log_q.shape == (2, 2, 2) and (log_q <= 0).all()
    side = log_q[..., 0] - log_q[..., 1]  # = v: log σ(v) − log σ(−v)
    assert (side.abs() > 1e-2).all()  # the halves differ: one side is favoured
    # A mirrored face: the other side (to float32 summation order: the outline's off⁴ sums
    # run over the halves' columns in the other order).
    torch.testing.assert_close(mirrored, log_q.flip(-1), atol=1e-4, rtol=1e-5)
    # A face whose halves pool to the same features gets no side preference at all.
    symmetric = features + features.flip(-1)
    with torch.no_grad():
        even = decide(
            symmetric, logits + logits.flip(-1), 128, 4, shape_logits=full + full.flip(-1)
        ).exp()
    torch.testing.assert_close(even[..., 0], even[..., 1])


def test_the_decision_reads_the_fine_features_of_each_half_and_swaps_with_them() -> None:
    """With ``fine`` (PalsyNet's 1/2 decoder features), each half's part-weighted mean of them
    is appended to the pooled features; mirroring the face swaps them with the halves."""
    torch.manual_seed(0)
    block = PartSideFPP(8 + 4, (4, 5), 6, geometry=True, outline=True).eval()
    features, fine = torch.randn(2, 8, 32, 32), torch.randn(2, 4, 64, 64)
    logits, full = torch.randn(2, 7, 64, 64), torch.randn(2, 7, 128, 128)
    with torch.no_grad():
        pooled, moments = block.describe(features, logits, 128, 4, shape_logits=full, fine=fine)
        coarse, _ = block.describe(features, logits, 128, 4, shape_logits=full)
        flipped, _ = block.describe(
            features.flip(-1), logits.flip(-1), 128, 4, shape_logits=full.flip(-1),
            fine=fine.flip(-1),
        )  # fmt: skip
    assert pooled.shape == (2, 2, 2, 12)
    torch.testing.assert_close(pooled[..., :8], coarse)
    torch.testing.assert_close(flipped, pooled.flip(2), atol=1e-5, rtol=1e-5)
    # the eye's left half, by hand: its probability-weighted mean of the fine features there
    keep = block.others(7)
    prob = logits[:, keep].softmax(dim=1)[:, keep.index(4)]
    left = (torch.arange(64) * 2 < 63.5).float()  # 1/2 cell j sits on input pixel 2j
    weight = prob * left
    expected = (fine * weight[:, None]).sum(dim=(2, 3)) / (weight.sum(dim=(1, 2))[:, None] + 1e-3)
    torch.testing.assert_close(pooled[:, 0, 0, 8:], expected, atol=1e-5, rtol=1e-4)
    # and the decision depends on them
    with torch.no_grad():
        changed, _ = block.describe(features, logits, 128, 4, shape_logits=full, fine=fine * 3)
        assert not torch.allclose(block.judge(changed, moments), block.judge(pooled, moments))


def test_shape_moments_measure_each_half_in_128_px_frame_pixels() -> None:
    prob = torch.zeros(1, 64, 64)  # a 64 px input: one pixel here is 2 px of a 128 px frame
    prob[0, 40:42, 10:14] = 1.0  # left: rows 40-41, columns 10-13
    prob[0, 42:44, 50:54] = 1.0  # right: one row pair lower (a drooping corner), as far out
    cols = torch.arange(64)
    halves = torch.stack([cols < 31.5, cols > 31.5]).float()
    moments = PartSideFPP.shape_moments(prob, halves)[0]  # 2×5
    torch.testing.assert_close(moments[:, 0], torch.full((2,), 8 * 4 / 16), atol=1e-3, rtol=0)
    torch.testing.assert_close(moments[:, 1], torch.tensor([81.0, 85.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(moments[:, 2], torch.tensor([40.0, 40.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(moments[:, 3], torch.ones(2), atol=1e-2, rtol=0)  # rows ±0.5 px
    expected_spread = 2 * torch.tensor([0.0, 1, 2, 3]).std(unbiased=False)
    torch.testing.assert_close(moments[:, 4], expected_spread.repeat(2), atol=1e-2, rtol=0)


def test_outline_moments_read_the_outer_end_the_extent_and_the_tallest_columns() -> None:
    prob = torch.zeros(1, 64, 64)  # a 64 px input: one pixel here is 2 px of a 128 px frame
    prob[0, 40:42, 20:31] = 1.0  # left: a flat part, rows 40-41, up to the centre line
    prob[0, 40:42, 33:44] = 1.0  # right: its mirror image ...
    prob[0, 42:44, 41:44] = 1.0  # ... whose outer end hangs one row pair lower (a corner drop)
    prob[0, 36:46, 36] = 1.0  # ... and one column 10 pixels tall (an open eye's middle)
    cols = torch.arange(64)
    halves = torch.stack([cols < 31.5, cols > 31.5]).float()
    end_row, extent, height = PartSideFPP.outline_moments(prob, halves)[0].unbind(-1)
    torch.testing.assert_close(end_row[0], torch.tensor(81.0), atol=0.05, rtol=0)
    assert end_row[1] > end_row[0] + 1.0  # the right half's outer end sits lower
    off = 2 * (31.5 - torch.arange(20, 31.0))  # columns 20-30 in 128 px frame pixels
    torch.testing.assert_close(extent[0], off.pow(4).mean().pow(0.25), atol=0.05, rtol=0)
    torch.testing.assert_close(extent[0], extent[1], atol=1.0, rtol=0)  # the same reach
    torch.testing.assert_close(height[0], torch.tensor(4.0), atol=1e-2, rtol=0)  # 2 px × 2
    assert height[1] > height[0] + 1.0  # the tall column counts more than its mass share
    # Swapping the halves swaps the numbers (the decision's equivariance rests on this).
    swapped = PartSideFPP.outline_moments(prob.flip(-1), halves)[0]
    torch.testing.assert_close(swapped, torch.stack([end_row, extent, height], -1).flip(0))
    with pytest.raises(ValueError, match="outline moments need geometry"):
        PartSideFPP(8, parts=(4, 5), fpp_class=6, outline=True)


def test_the_part_side_composition_marks_the_decided_half_of_the_part() -> None:
    block = _part_side()
    size = 9  # the centre column x = 4 belongs to both halves
    logits = torch.full((1, 7, size, size), -10.0)
    logits[:, Label.SKIN] = 0.0
    logits[:, Label.EYE, 1:3, :] = 10.0  # an eye band across both halves
    logits[:, Label.MOUTH, 6:8, :] = 10.0  # a mouth band across both halves
    logits[:, Label.FPP] = 50.0  # the base FPP channel is not read: the decision is
    sure, unsure = math.log(1 - 1e-7), math.log(1e-7)
    log_q = torch.tensor([[[sure, unsure], [unsure, unsure]]])  # the left eye only
    out = block.compose(logits, log_q)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(1, size, size))
    label = out.argmax(1)[0]
    assert (label[1:3, :4] == Label.FPP).all() and (label[1:3, 5:] == Label.EYE).all()
    assert (label[6:8] == Label.MOUTH).all() and (label[[0, 3, 4, 5, 8]] == Label.SKIN).all()
    centre = out[0, :, 1, 4].exp()  # on the midline: half FPP, half eye
    torch.testing.assert_close(centre[Label.FPP], centre[Label.EYE], atol=1e-3, rtol=0)
    none = block.compose(logits, torch.full((1, 2, 2), unsure)).argmax(1)[0]
    assert not (none == Label.FPP).any()


def test_the_operating_point_shifts_the_decision_in_eval_only() -> None:
    block = _part_side()
    log_q = torch.log(torch.tensor([[[0.3, 0.05], [0.02, 0.6]]]))
    torch.testing.assert_close(block.shift(log_q), log_q)  # bias 0: the raw decision
    block.decision_bias.copy_(torch.tensor([1.0, -0.5]))
    logit = lambda lq: lq - torch.log1p(-lq.exp())  # noqa: E731
    expected = torch.stack([logit(log_q[:, 0]) + 1.0, logit(log_q[:, 1]) - 0.5], dim=1)
    torch.testing.assert_close(logit(block.shift(log_q)), expected)
    assert block.shift(log_q).exp()[0, 0, 0] > 0.5 > block.shift(log_q).exp()[0, 1, 1]

    torch.manual_seed(0)
    model = create_model("palsynet")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eval_before = model.eval()(x)
        model.part_side.decision_bias.fill_(8.0)  # every half marked where its part is
        eval_after = model.eval()(x)
        train_after = model.train()(x)["logits"]  # batch statistics: the running ones don't
        model.part_side.decision_bias.zero_()  # matter, but this updates them: eval first
        train_before = model.train()(x)["logits"]
    # Training reads the raw decision: the losses never see the operating point.
    torch.testing.assert_close(train_after, train_before)
    torch.testing.assert_close(eval_after["fpp_side_log_q"], eval_before["fpp_side_log_q"])
    torch.testing.assert_close(eval_after["base_logits"], eval_before["base_logits"])
    fpp = lambda out: (out["logits"].argmax(1) == Label.FPP).sum()  # noqa: E731
    parts = torch.isin(eval_before["logits"].argmax(1), torch.tensor([Label.EYE, Label.MOUTH]))
    assert fpp(eval_after) > fpp(eval_before) and fpp(eval_after) >= parts.sum()


def test_mirror_asymmetry_is_flip_equivariant_and_silent_on_symmetric_input() -> None:
    torch.manual_seed(0)
    block = MirrorAsymmetry(8).eval()
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        # A horizontal flip of the face moves the asymmetry evidence to the other half.
        assert torch.allclose(block(x.flip(-1)), block(x).flip(-1), atol=1e-6)
        # A left-right symmetric input has no asymmetry: the difference branch sees zeros.
        symmetric = x + x.flip(-1)
        fused = block.fuse(torch.cat([symmetric, torch.zeros_like(symmetric)], dim=1))
        assert torch.allclose(block(symmetric), symmetric + fused, atol=1e-6)
        # An asymmetric input changes the output relative to that.
        assert not torch.allclose(block(x), x + block.fuse(torch.cat([x, torch.zeros_like(x)], 1)))


@pytest.mark.parametrize("stride", [4, 8, 16])
def test_mirror_axis_is_the_image_centre_not_the_grid_centre(stride: int) -> None:
    block = MirrorAsymmetry(1, stride=stride)
    # Cell j of the 1/stride map sits on input pixel stride·j: a feature that is a linear
    # function of that position, mirrored about the image centre (W - 1) / 2, is the same
    # function at W - 1 - stride·j.
    for width in (128, 160, 97):
        w = (width + stride - 1) // stride
        position = float(stride) * torch.arange(w)
        mirrored = block.mirror(position.view(1, 1, 1, w), image_width=width).flatten()
        expected = (width - 1 - position).clamp(0, float(stride) * (w - 1))
        torch.testing.assert_close(mirrored, expected)
    # When the image centre falls on the grid's centre, the mirror is the plain flip.
    x = torch.randn(1, 2, 3, 5)
    torch.testing.assert_close(block.mirror(x, image_width=stride * 4 + 1), x.flip(-1))


def test_the_side_vote_is_odd_and_pushes_fpp_to_opposite_halves() -> None:
    torch.manual_seed(0)
    side = SidePath(8)
    torch.nn.init.normal_(side.vote.weight)
    width = 16 * 7 + 1  # 8 cells at 0, 16, ..., 112 about the centre 56: the mirror is exact
    a = torch.randn(2, 8, 4, 8)
    a = a - mirror_about_image_centre(a, width, 16)  # an asymmetry map is antisymmetric
    with torch.no_grad():
        vote = side(a, width)
        mirrored = side(mirror_about_image_centre(a, width, 16), width)
    assert vote.shape == (2, 1, 1, 1) and (vote.abs() > 1e-4).all()
    torch.testing.assert_close(mirrored, -vote)  # odd: the mirrored face votes the other side
    sign = SidePath.sign_map(64, 128, 2, torch.device("cpu"))
    assert (sign[:32] == 1).all() and (sign[32:] == -1).all()  # cells at 0, 2, ..., 126
    # An untrained vote is silent: the path starts as a no-op on the logits.
    assert torch.equal(SidePath(8)(a, width), torch.zeros(2, 1, 1, 1))
