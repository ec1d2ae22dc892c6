"""Training-time augmentation applied jointly to a photo, its label mask and its depth map.

Follows the paper's §4.3: random rotation in [-10°, 10°] and random scaling in [0.75, 1.25]
plus a small translation (±4 %) — jitter around the canonical face frame of
:mod:`palsyseg.align`, which the items are already in, so the model also copes with an
imperfect alignment (``A.Affine``, nearest-neighbour for the mask and depth, constant fill 0 so new border pixels
are background and "no depth"). We add photometric jitter (brightness, contrast, saturation,
hue, gamma, sensor noise, blur) so the network does not key on the synthetic palette, and a
horizontal flip.

The flip is the one transform that changes a *label*: mirroring a face with a drooping left
side gives a face with a drooping right side. So it is not an albumentations transform here;
:meth:`TrainAugmentation.__call__` flips image, mask and depth itself and swaps
``affected_side`` with :func:`palsyseg.labels.mirrored_side` in the same step. FPP pixels move
with the image, so afterwards they lie on the image half that
:func:`palsyseg.labels.image_half_of_side` names for the new side.

Randomness: every call takes an explicit ``seed``. The training Dataset derives it from
``(run seed, epoch, sample index)`` (:func:`sample_seed`), so an augmented sample depends on
neither the number of DataLoader workers, nor the DDP rank, nor whether the run was resumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from palsyseg.labels import mirrored_side


@dataclass
class AugmentConfig:
    """Augmentation strengths. ``rotate`` and ``scale`` are the paper's (§4.3)."""

    rotate: float = 10.0
    """Maximum rotation in degrees; angles are drawn from [-rotate, rotate]."""
    scale: tuple[float, float] = (0.75, 1.25)
    translate: float = 0.04
    """Maximum shift as a fraction of the side, per axis: with rotation and scale, jitter around
    the face frame so the model copes with an imperfect alignment."""
    affine_p: float = 1.0
    flip_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.03
    color_p: float = 0.8
    gamma: tuple[float, float] = (80.0, 120.0)
    gamma_p: float = 0.3
    noise_std: tuple[float, float] = (0.01, 0.04)
    noise_p: float = 0.2
    blur_p: float = 0.2

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high:
            raise ValueError(f"scale must be 0 < low <= high, got {self.scale}")
        if self.rotate < 0:
            raise ValueError(f"rotate must be >= 0 degrees, got {self.rotate}")
        if not 0 <= self.translate < 0.5:
            raise ValueError(f"translate must be in [0, 0.5), got {self.translate}")
        for name in ("affine_p", "flip_p", "color_p", "gamma_p", "noise_p", "blur_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


@dataclass
class AugmentedSample:
    """One augmented sample: arrays keep the input's size and dtypes."""

    image: np.ndarray  # H×W×3 uint8 RGB
    mask: np.ndarray  # H×W uint8, values 0–6
    depth: np.ndarray  # H×W float32, 0 = no depth
    affected_side: str  # none / left / right, the patient's side after any flip
    flipped: bool
    applied: list[tuple[str, dict]]  # albumentations' applied parameters (angle, scale, ...)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for sample ``index`` in ``epoch`` of a run seeded ``seed`` (SeedSequence mixing)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def hflip_sample(
    image: np.ndarray, mask: np.ndarray, depth: np.ndarray, affected_side: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Mirror a sample left↔right; the patient's affected side is mirrored with it."""
    return (
        np.ascontiguousarray(image[:, ::-1]),
        np.ascontiguousarray(mask[:, ::-1]),
        np.ascontiguousarray(depth[:, ::-1]),
        mirrored_side(affected_side),
    )


class TrainAugmentation:
    """Seeded joint augmentation of (image, mask, depth, affected_side); see the module docstring."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        import albumentations as A
        import cv2

        self.config = config or AugmentConfig()
        c = self.config
        photometric = [
            A.ColorJitter(
                brightness=c.brightness,
                contrast=c.contrast,
                saturation=c.saturation,
                hue=c.hue,
                p=c.color_p,
            ),
            A.RandomGamma(gamma_limit=c.gamma, p=c.gamma_p),
            A.GaussNoise(std_range=c.noise_std, p=c.noise_p),
            A.GaussianBlur(blur_limit=(3, 5), p=c.blur_p),
        ]
        # albumentations 2.x argument names (1.x `cval`/`mode` would be silently ignored).
        affine = A.Affine(
            rotate=(-c.rotate, c.rotate),
            scale=c.scale,
            translate_percent={"x": (-c.translate, c.translate), "y": (-c.translate, c.translate)},
            keep_ratio=True,  # one scale factor, as in the paper: faces are not stretched
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=c.affine_p,
        )
        # Depth is a second "mask" target: nearest-neighbour, filled with 0 (= no depth), and
        # untouched by the photometric transforms.
        self._compose = A.Compose(
            [*photometric, affine],
            additional_targets={"depth": "mask"},
            save_applied_params=True,
            seed=0,
        )

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        depth: np.ndarray,
        affected_side: str,
        *,
        seed: int,
    ) -> AugmentedSample:
        """Augment one sample; the same inputs and ``seed`` always give the same output."""
        if image.shape[:2] != mask.shape or mask.shape != depth.shape:
            raise ValueError(
                f"image {image.shape[:2]}, mask {mask.shape} and depth {depth.shape} differ in size"
            )
        rng = np.random.default_rng(seed)
        flipped = bool(rng.random() < self.config.flip_p)
        if flipped:
            image, mask, depth, affected_side = hflip_sample(image, mask, depth, affected_side)
        self._compose.set_random_seed(int(rng.integers(2**32)))
        out = self._compose(image=image, mask=mask, depth=depth.astype(np.float32, copy=False))
        return AugmentedSample(
            image=out["image"],
            mask=out["mask"],
            depth=out["depth"],
            affected_side=affected_side,
            flipped=flipped,
            applied=list(out.get("applied_transforms", [])),
        )
