"""Training augmentation: geometry shared by image/mask/depth, labels kept, flip swaps the side."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from palsyseg.data.augment import AugmentConfig, TrainAugmentation, hflip_sample, sample_seed
from palsyseg.labels import PALETTE, Label, image_half_of_side

SIZE = 96
GEOMETRY_ONLY = AugmentConfig(color_p=0.0, gamma_p=0.0, noise_p=0.0, blur_p=0.0)


def phantom(affected_side: str = "left") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A blocky face: skin oval, hair cap, brows, eyes, mouth; FPP on the affected side's eye and
    mouth half. The image paints each label in its palette colour; depth is label / 10."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    c = SIZE // 2
    cv2.ellipse(mask, (c, c + 4), (30, 38), 0, 0, 360, int(Label.SKIN), -1)
    cv2.ellipse(mask, (c, c - 22), (30, 14), 0, 180, 360, int(Label.HAIR), -1)
    for x in (c - 14, c + 14):
        cv2.rectangle(mask, (x - 7, c - 14), (x + 7, c - 11), int(Label.EYEBROW), -1)
        cv2.ellipse(mask, (x, c - 4), (6, 3), 0, 0, 360, int(Label.EYE), -1)
    cv2.ellipse(mask, (c, c + 20), (12, 4), 0, 0, 360, int(Label.MOUTH), -1)
    if affected_side != "none":
        half = image_half_of_side(affected_side)
        cols = slice(c, SIZE) if half == "right" else slice(0, c)
        region = mask[:, cols]
        region[(region == Label.EYE) | (region == Label.MOUTH)] = Label.FPP
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    for label, colour in PALETTE.items():
        image[mask == label] = colour
    depth = mask.astype(np.float32) / 10.0
    return image, mask, depth


def fpp_image_half(mask: np.ndarray) -> str:
    xs = np.nonzero(mask == Label.FPP)[1]
    assert xs.size, "no FPP pixels left after augmentation"
    return "right" if xs.mean() > (mask.shape[1] - 1) / 2 else "left"


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 5×5 neighbourhood holds one label (linear interpolation cannot blend there)."""
    kernel = np.ones((5, 5), np.uint8)
    same = np.ones(mask.shape, bool)
    for label in np.unique(mask):
        region = (mask == label).astype(np.uint8)
        eroded = cv2.erode(region, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
        same &= ~(region.astype(bool) & ~eroded)
    return same


@pytest.mark.parametrize("seed", range(6))
def test_image_mask_and_depth_move_together(seed: int) -> None:
    image, mask, depth = phantom("right")
    out = TrainAugmentation(GEOMETRY_ONLY)(image, mask, depth, "right", seed=seed)
    # Depth was label/10 and both are warped with nearest neighbour by the same matrix (fill 0
    # for both), so that relation survives exactly; the photo's colours match the mask inside regions.
    np.testing.assert_array_equal(out.depth, out.mask.astype(np.float32) / 10.0)
    inside = interior(out.mask)
    assert inside.sum() > SIZE * SIZE // 3
    expected = np.array([PALETTE[Label(v)] for v in range(len(Label))], np.int16)[out.mask]
    error = np.abs(out.image.astype(np.int16) - expected).max(axis=2)
    assert np.percentile(error[inside], 99) <= 2


@pytest.mark.parametrize("seed", range(10))
def test_full_augmentation_keeps_dtypes_sizes_and_label_set(seed: int) -> None:
    image, mask, depth = phantom("left")
    out = TrainAugmentation()(image, mask, depth, "left", seed=seed)
    assert out.image.shape == image.shape and out.image.dtype == np.uint8
    assert out.mask.shape == mask.shape and out.mask.dtype == np.uint8
    assert out.depth.shape == depth.shape and out.depth.dtype == np.float32
    assert set(np.unique(out.mask)) <= set(range(len(Label)))
    assert set(np.unique(out.depth)) <= set(np.unique(depth))  # nearest: no new depth values


@pytest.mark.parametrize("side", ["left", "right"])
def test_forced_flip_swaps_side_and_fpp_moves_to_the_named_half(side: str) -> None:
    image, mask, depth = phantom(side)
    assert fpp_image_half(mask) == image_half_of_side(side)
    config = AugmentConfig(flip_p=1.0, affine_p=0.0)
    out = TrainAugmentation(config)(image, mask, depth, side, seed=1)
    new_side = "right" if side == "left" else "left"
    assert out.flipped and out.affected_side == new_side
    assert fpp_image_half(out.mask) == image_half_of_side(new_side)
    np.testing.assert_array_equal(out.mask, mask[:, ::-1])


def test_random_flips_and_affines_always_keep_fpp_on_the_labelled_side() -> None:
    image, mask, depth = phantom("left")
    augment = TrainAugmentation()
    flips = set()
    for seed in range(40):
        out = augment(image, mask, depth, "left", seed=seed)
        flips.add(out.flipped)
        assert out.affected_side == ("right" if out.flipped else "left")
        assert fpp_image_half(out.mask) == image_half_of_side(out.affected_side)
    assert flips == {True, False}, "a 0.5 flip never (or always) happened in 40 draws"


def test_healthy_face_stays_none_under_flip() -> None:
    image, mask, depth = phantom("none")
    out = TrainAugmentation(AugmentConfig(flip_p=1.0))(image, mask, depth, "none", seed=0)
    assert out.affected_side == "none" and not (out.mask == Label.FPP).any()


def test_hflip_sample_is_an_involution() -> None:
    image, mask, depth = phantom("left")
    twice = hflip_sample(*hflip_sample(image, mask, depth, "left"))
    for before, after in zip((image, mask, depth, "left"), twice, strict=True):
        np.testing.assert_array_equal(before, after)


def bar_geometry(mask: np.ndarray) -> tuple[float, float]:
    """(angle of the long axis in degrees, sqrt of the area) of the non-zero pixels."""
    ys, xs = np.nonzero(mask)
    x, y = xs - xs.mean(), ys - ys.mean()
    cov = np.cov(np.stack([x, y]))
    angle = 0.5 * math.degrees(math.atan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1]))
    return angle, math.sqrt(xs.size)


def test_rotation_and_scale_stay_in_the_papers_ranges() -> None:
    """Paper §4.3: rotation in [-10°, 10°], scale in [0.75, 1.25], measured on the warped mask."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[44:52, 24:72] = Label.SKIN  # an 8×48 horizontal bar around the centre
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    depth = np.zeros((SIZE, SIZE), np.float32)
    _, side0 = bar_geometry(mask)
    config = AugmentConfig(flip_p=0.0, color_p=0.0, gamma_p=0.0, noise_p=0.0, blur_p=0.0)
    augment = TrainAugmentation(config)
    angles, scales = [], []
    for seed in range(60):
        out = augment(image, mask, depth, "none", seed=seed)
        affine = dict(out.applied)["Affine"]
        assert -10.0 <= affine["rotate"] <= 10.0
        assert 0.75 <= affine["scale"]["x"] == affine["scale"]["y"] <= 1.25
        angle, side = bar_geometry(out.mask)
        # image y points down, so a counter-clockwise rotation reads as a negative angle here
        assert abs(abs(angle) - abs(affine["rotate"])) < 1.5
        assert abs(side / side0 - affine["scale"]["x"]) < 0.06
        angles.append(angle)
        scales.append(side / side0)
    assert max(map(abs, angles)) <= 11.0
    assert min(scales) >= 0.72 and max(scales) <= 1.28
    # the ranges are used, not just respected
    assert min(angles) < -5 and max(angles) > 5
    assert min(scales) < 0.85 and max(scales) > 1.15


def test_same_seed_same_output_and_seeds_differ() -> None:
    image, mask, depth = phantom("left")
    augment = TrainAugmentation()
    a = augment(image, mask, depth, "left", seed=11)
    b = TrainAugmentation()(image, mask, depth, "left", seed=11)
    c = augment(image, mask, depth, "left", seed=12)
    for key in ("image", "mask", "depth"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.image, c.image)


def test_sample_seed_mixes_seed_epoch_and_index() -> None:
    seeds = {sample_seed(s, e, i) for s in range(2) for e in range(3) for i in range(5)}
    assert len(seeds) == 30
    assert sample_seed(7, 1, 2) == sample_seed(7, 1, 2)


def test_config_refuses_bad_ranges() -> None:
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="flip_p"):
        AugmentConfig(flip_p=1.5)
