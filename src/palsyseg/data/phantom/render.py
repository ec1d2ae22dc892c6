"""Pixels: canonical-frame drawing, warp, background and imaging nuisances.

:func:`render_face` draws the face over a defocused, cluttered room in an upright "canonical"
frame: per-pixel fields (a height field lit with Lambert + Blinn–Phong gives skin shading and
the depth map; shells give hair, beards) on horizontal bands of rows, and anti-aliased cv2
polygons for eyes, brows, lips, ears, glasses. One affine warp then rolls and places photo,
labels and depth together, and the imaging nuisances follow (lighting gradient, colour cast,
blur, sensor noise; JPEG happens when the file is written). :class:`Capture` holds the
per-image camera and scene, drawn by :func:`sample_capture`; :class:`Rendering` the result.
Everything is vectorised NumPy/OpenCV; colour work is done on planes (see :func:`_rep3`).

Coordinates: normalised face units as in :mod:`palsyseg.data.phantom.geometry` (lengths in face
half-widths ``A``, ``x`` right, ``y`` down, ``z`` toward the camera, eye line at ``y = 0``);
:class:`_Canvas` maps them to canonical pixels, and landmarks are returned in output pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from palsyseg.data.phantom.geometry import (
    FaceGeometry,
    HalfFace,
    _angles,
    _bezier,
    _ellipse,
    _steps,
    _through,
    face_geometry,
    side_sign,
)
from palsyseg.data.phantom.identity import Identity, Patient
from palsyseg.labels import Label
from palsyseg.visibility import Visibility, measure_asymmetry, visible_weakness

_SHIFT = 4  # cv2 fixed-point bits: polygons are placed with 1/16-pixel precision
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Capture:
    """Per-image camera and scene: head pose, lighting, background, nuisances (all drawn per image)."""

    roll_deg: float
    yaw_deg: float
    scale: float
    shift: tuple[float, float]
    light: tuple[float, float, float]
    ambient: float
    gradient: tuple[float, float]  # strength, direction (radians) of the lighting gradient
    cast: tuple[float, float, float]  # per-channel colour-cast gains
    blur_sigma: float
    noise_sigma: float
    jpeg_quality: int
    intensity: float  # effort of the exam movement
    gaze: tuple[float, float]
    background_seed: int


def sample_capture(
    rng: np.random.Generator,
    *,
    max_roll_deg: float = 10.0,
    max_yaw_deg: float = 8.0,
    jpeg_quality: tuple[int, int] = (55, 95),
) -> Capture:
    """Draw the imaging conditions of one photo."""
    lx = rng.uniform(-0.6, 0.6)
    ly = rng.uniform(-0.55, -0.1)
    norm = math.sqrt(lx * lx + ly * ly + 0.8**2)
    return Capture(
        roll_deg=float(rng.uniform(-max_roll_deg, max_roll_deg)),
        yaw_deg=float(rng.uniform(-max_yaw_deg, max_yaw_deg)),
        scale=float(rng.uniform(0.9, 1.1)),
        shift=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.03, 0.04))),
        light=(lx / norm, ly / norm, 0.8 / norm),
        ambient=float(rng.uniform(0.3, 0.45)),
        gradient=(float(rng.uniform(0.0, 0.35)), float(rng.uniform(0, 2 * math.pi))),
        cast=tuple(float(g) for g in rng.uniform(0.9, 1.1, size=3)),  # type: ignore[arg-type]
        blur_sigma=float(rng.choice([0.0, 0.0, rng.uniform(0.4, 1.1)])),
        noise_sigma=float(rng.uniform(1.0, 6.0)),
        jpeg_quality=int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)),
        intensity=float(rng.uniform(0.85, 1.05)),
        gaze=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
        background_seed=int(rng.integers(0, 2**31 - 1)),
    )


@dataclass
class Rendering:
    """One synthetic photo and its ground truth, all at the output size."""

    rgb: np.ndarray  # H×W×3 uint8
    mask: np.ndarray  # H×W uint8, Label values
    depth: np.ndarray  # H×W float32, 0 = none, (0, 1] relative depth, nearer = smaller
    landmarks: dict[str, Any]
    jpeg_quality: int
    visibility: Visibility | None = None  # what the photo shows of a palsy (None: healthy)


NOISE_LEVELS: tuple[float, ...] = (1.5, 3.0, 4.5, 6.0)
"""Sensor-noise standard deviations (8-bit levels) that images choose from."""


@lru_cache(maxsize=4)
def _texture_pool(size: int, seed: int) -> dict[str, Any]:
    """Noise tiles (``size + 64`` square) shared by all images of one dataset, which crop them at
    random offsets: drawing fresh Gaussian noise per image would cost more than rendering it.
    Feature sizes scale with the face (given in pixels at 250 px), so every output size gets the
    same look; only sensor noise stays per pixel."""
    import cv2

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    n = size + 64
    scale = max(size, 250) / 250  # features are never finer than at 250 px

    def smooth(px_y: float, px_x: float, interpolation: int) -> np.ndarray:
        """Unit-variance noise whose features are ``px_y`` × ``px_x`` pixels at 250 px."""
        cells = (max(4, round(n / (px_y * scale))), max(4, round(n / (px_x * scale))))
        coarse = rng.standard_normal(cells, dtype=np.float32)
        tile = cv2.resize(coarse, (n, n), interpolation=interpolation)
        return tile / (tile.std() + 1e-6)

    streak = cv2.GaussianBlur(smooth(6.0, 1.5, cv2.INTER_LINEAR), (0, 0), 0.7 * scale)
    return {
        "streak": streak / (streak.std() + 1e-6),  # hair strands: long vertical correlation
        "curl": smooth(2.0, 2.0, cv2.INTER_CUBIC),  # curls, beards
        "blotch": smooth(16.0, 16.0, cv2.INTER_CUBIC),  # skin tone variation
        "speck": smooth(1.0, 1.0, cv2.INTER_LINEAR),  # stubble, buzz cut
        "sensor": {  # integer sensor noise per level, added with saturation
            level: np.rint(rng.standard_normal((n, n, 3)) * level).astype(np.int16)
            for level in NOISE_LEVELS
        },
    }


def _crop(tile: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y = int(rng.integers(0, tile.shape[0] - h + 1))
    x = int(rng.integers(0, tile.shape[1] - w + 1))
    return tile[y : y + h, x : x + w]


class _Canvas:
    """The upright canonical frame: colour, coverage and label layers plus the unit mapping."""

    def __init__(
        self, size: int, ident: Identity, capture: Capture, background: np.ndarray
    ) -> None:
        self.size = size
        self.unit = size * 0.235 * capture.scale  # A: pixels per face half-width
        self.cx = size / 2
        self.cy = size * 0.43
        yaw = math.radians(capture.yaw_deg)
        self.sin_yaw, self.cos_yaw = math.sin(yaw), math.cos(yaw)
        self.ident = ident
        self.table = _outline_table(ident)
        # The scene is drawn straight over the background; layers blend "over" what is there.
        self.rgb = background
        self.mask = np.zeros((size, size), np.uint8)
        self.z = np.zeros((size, size), np.float32)
        self.creases: list[tuple[np.ndarray, float, float, bool, bool]] = []

    # -- coordinates ---------------------------------------------------------------------------
    def px(self, points: np.ndarray, lift: float | np.ndarray = 0.0) -> np.ndarray:
        """Normalised (x, y) on the face surface (+``lift`` toward the camera) → canonical pixels."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        x, y = points[:, 0], points[:, 1]
        ys, w_tab, p_tab = self.table
        w = np.maximum(np.interp(y, ys, w_tab), 1e-3)
        r = np.minimum((x / w) ** 2, 1.0)
        z = self.ident.face_depth * np.sqrt(1.0 - r) * np.interp(y, ys, p_tab) + lift
        out = np.empty_like(points)
        out[:, 0] = self.cx + self.unit * (x * self.cos_yaw + z * self.sin_yaw)
        out[:, 1] = self.cy + self.unit * y
        return out

    def px_flat(self, points: np.ndarray) -> np.ndarray:
        """Normalised (x, y) in the image plane (body, shirt) → canonical pixels, no yaw shift."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return points * self.unit + (self.cx, self.cy)

    # -- drawing helpers -----------------------------------------------------------------------
    def _box(self, pts: np.ndarray, pad: float) -> tuple[int, int, int, int] | None:
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        x0 = max(math.floor(lo[0] - pad), 0)
        y0 = max(math.floor(lo[1] - pad), 0)
        x1 = min(math.ceil(hi[0] + pad) + 1, self.size)
        y1 = min(math.ceil(hi[1] + pad) + 1, self.size)
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    def coverage(
        self, polys: list[np.ndarray], pad: float = 2.0, blur: float = 0.0, thickness: int = 0
    ) -> tuple[np.ndarray, tuple[int, int, int, int], list[np.ndarray]] | None:
        """Anti-aliased coverage (float 0..1) of filled polygons (or polylines if ``thickness``)
        in their bounding box: ``(alpha_patch, (x0, y0, x1, y1), fixed_point_polys)``, or
        ``None`` if off-canvas."""
        import cv2

        allpts = polys[0] if len(polys) == 1 else np.concatenate(polys)
        box = self._box(allpts, pad + thickness + 3 * blur)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        fixed = [np.rint(p * _ONE).astype(np.int32) for p in polys]
        patch = np.zeros((y1 - y0, x1 - x0), np.uint8)
        offset = (-x0 * _ONE, -y0 * _ONE)  # cv2 adds it in fixed-point units
        if thickness:
            moved = [f + offset for f in fixed]
            cv2.polylines(patch, moved, False, 255, thickness, cv2.LINE_AA, _SHIFT)
        else:
            cv2.fillPoly(patch, fixed, 255, cv2.LINE_AA, _SHIFT, offset)
        alpha = patch.astype(np.float32)
        alpha *= 1 / 255
        if blur > 0:
            alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
        return alpha, box, fixed

    def paint(
        self,
        polys: list[np.ndarray],
        colour: Any,
        opacity: float = 1.0,
        *,
        label: int | None = None,
        blur: float = 0.0,
        thickness: int = 0,
        multiply: bool = False,
    ) -> None:
        """Blend a flat ``colour`` into the polygons (or, with ``multiply``, scale what is there
        by per-channel factors ``colour``, keeping its shading); optionally write ``label``."""
        import cv2

        cov = self.coverage(polys, blur=blur, thickness=thickness)
        if cov is None:
            return
        alpha, (x0, y0, x1, y1), fixed = cov
        if opacity != 1.0:
            alpha *= opacity
        region = self.rgb[y0:y1, x0:x1]
        colour = np.asarray(colour, np.float32)
        if alpha.size < 4096:  # small: NumPy broadcasting beats merging planes
            if multiply:
                region *= 1 + (colour - 1) * alpha[..., None]
            else:
                region += (colour - region) * alpha[..., None]
        elif multiply:
            factor = _tint(alpha, colour - 1)
            factor += 1
            region *= factor
        else:
            region *= _rep3(1 - alpha)
            region += _tint(alpha, colour)
        if label is not None:
            if thickness:
                cv2.polylines(self.mask, fixed, False, int(label), thickness, cv2.LINE_8, _SHIFT)
            else:
                cv2.fillPoly(self.mask, fixed, int(label), cv2.LINE_8, _SHIFT)

    def crease(
        self,
        points: np.ndarray,
        strength: float,
        width: float = 1.0,
        *,
        soft: bool = False,
        flat: bool = False,
    ) -> None:
        """Queue a skin crease (polyline of normalised points; ``width`` 0 fills it as a shadow).
        Creases go into darkness maps that are blurred once and applied to the skin."""
        if strength > 0.01:
            self.creases.append(
                (np.asarray(points, np.float64), float(strength), float(width), soft, flat)
            )

    def crease_maps(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Draw the queued creases (projected in one batch) into ``(sharp, soft)`` maps of a region."""
        import cv2

        h, w = rows.stop - rows.start, cols.stop - cols.start
        sharp = np.zeros((h, w), np.float32)
        soft = np.zeros((h, w), np.float32)
        if not self.creases:
            return sharp, soft
        points = np.concatenate([c[0] for c in self.creases])
        on_face = np.concatenate([np.full(len(c[0]), not c[4]) for c in self.creases])
        projected = np.where(on_face[:, None], self.px(points), self.px_flat(points))
        origin = np.array([cols.start, rows.start], np.float64)
        fixed = np.rint((projected - origin) * _ONE).astype(np.int32)
        bounds = np.cumsum([len(c[0]) for c in self.creases])[:-1]
        for pts, (_, strength, width, is_soft, _) in zip(
            np.split(fixed, bounds), self.creases, strict=True
        ):
            target = soft if is_soft else sharp
            if width <= 0:
                cv2.fillPoly(target, [pts], strength, cv2.LINE_8, _SHIFT)
            else:
                cv2.polylines(
                    target, [pts], False, strength, max(1, round(width)), cv2.LINE_8, _SHIFT
                )
        return sharp, soft


def _half_width(y: np.ndarray, ident: Identity) -> np.ndarray:
    """Half-width of the head outline at height ``y`` (skull ellipse, cheeks, jaw, rounded chin)."""
    y = np.asarray(y, dtype=np.float64)
    top, yc, jaw_y = -ident.skull_top, 0.15, ident.chin_y - 0.5
    w = np.zeros_like(y)
    up = y < yc
    # The cranium: a superellipse (exponent 2.5), rounder at the crown than an ellipse.
    w[up] = ident.cheek_width * np.clip(1 - np.abs((y[up] - yc) / (top - yc)) ** 2.5, 0, 1) ** 0.4
    mid = (y >= yc) & (y < jaw_y)
    t = (y[mid] - yc) / (jaw_y - yc)
    w[mid] = ident.cheek_width + (ident.jaw_width - ident.cheek_width) * t**2.2
    low = (y >= jaw_y) & (y < ident.chin_y)
    t = (y[low] - jaw_y) / (ident.chin_y - jaw_y)
    w[low] = (ident.jaw_width + (ident.chin_width - ident.jaw_width) * t) * np.sqrt(
        np.clip(1 - t**5, 0, 1)
    )
    return w


def _profile(y: np.ndarray, ident: Identity) -> np.ndarray:
    """Forward extent of the face along its height (flat front, falling off at crown and chin)."""
    span = 0.5 * (ident.skull_top + ident.chin_y)
    centre = 0.5 * (ident.chin_y - ident.skull_top)
    return np.sqrt(np.clip(1 - ((np.asarray(y) - centre) / (span * 1.06)) ** 4, 0, 1))


@lru_cache(maxsize=64)
def _outline_table(ident: Identity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y, half_width, profile)`` sampled every 0.004 units, for fast interpolation.

    The half-width is smoothed (Gaussian, σ = 0.05 units, the crown and chin ends kept) so its
    slope has no kinks: a kink at the jaw angle would show as a lit seam across the face."""
    ys = np.linspace(-2.4, 2.4, 1201)
    w = _half_width(ys, ident)
    kernel = np.exp(-0.5 * (np.arange(-40, 41) * 0.004 / 0.05) ** 2)
    smooth = np.convolve(w, kernel / kernel.sum(), mode="same")
    inside = w > 0
    w = np.where(inside, np.maximum(smooth, 0.0), 0.0)
    return ys, w, _profile(ys, ident)


def surface_z(x: np.ndarray | float, y: np.ndarray | float, ident: Identity) -> np.ndarray:
    """Height of the base head surface toward the camera (normalised units), for features."""
    ys, w_tab, p_tab = _outline_table(ident)
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    w = np.maximum(np.interp(y, ys, w_tab), 1e-3)
    return ident.face_depth * np.sqrt(np.clip(1 - (x / w) ** 2, 0, 1)) * np.interp(y, ys, p_tab)


def _rep3(plane: np.ndarray) -> np.ndarray:
    """H×W → H×W×3. (NumPy broadcasting over a last axis of 3 is several times slower than
    same-shape arithmetic, so per-pixel colour work is done on planes and merged.)"""
    import cv2

    plane = np.ascontiguousarray(plane, dtype=np.float32)
    return cv2.merge([plane, plane, plane])


def _tint(plane: np.ndarray, rgb: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """A grey plane times an RGB colour → H×W×3."""
    import cv2

    plane = np.asarray(plane, dtype=np.float32)
    return cv2.merge(
        [plane * np.float32(rgb[0]), plane * np.float32(rgb[1]), plane * np.float32(rgb[2])]
    )


def _shade(
    r: np.ndarray, g: np.ndarray, b: np.ndarray, shade: np.ndarray, spec: np.ndarray | None
) -> np.ndarray:
    """Albedo planes under a grey shading field, with a warm subsurface tint in the half-shadows."""
    import cv2

    t = shade * (1 - shade)
    planes = [r * (shade + 0.3 * t), g * (shade + 0.02 * t), b * (shade - 0.12 * t)]
    if spec is not None:
        planes = [p + spec for p in planes]
    return cv2.merge([p.astype(np.float32, copy=False) for p in planes])


def _lambert(
    z: np.ndarray,
    unit: float,
    light: tuple[float, float, float],
    ambient: float,
    gloss: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Lambert diffuse + optional Blinn–Phong specular (exponent 16) of a height field ``z``."""
    import cv2

    # Central differences (as np.gradient in the interior), scaled to normalised units.
    gx = cv2.Sobel(z, cv2.CV_32F, 1, 0, ksize=1, scale=0.5 * unit, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(z, cv2.CV_32F, 0, 1, ksize=1, scale=0.5 * unit, borderType=cv2.BORDER_REPLICATE)
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    lx, ly, lz = light
    ndotl = (lz - gx * lx - gy * ly) * inv
    shade = ambient + (1 - ambient) * np.clip(ndotl, 0, 1)
    spec = None
    if gloss > 0:
        hx, hy, hz = lx, ly, lz + 1.0
        hn = math.sqrt(hx * hx + hy * hy + hz * hz)
        ndoth = np.clip((hz - gx * hx - gy * hy) * inv / hn, 0, 1)
        ndoth *= ndoth
        ndoth *= ndoth
        ndoth *= ndoth
        ndoth *= ndoth
        spec = gloss * ndoth
    return shade.astype(np.float32, copy=False), spec


def _bumps(
    b: _Band, x0: np.ndarray, y0: np.ndarray, sx: np.ndarray, sy: np.ndarray, amp: np.ndarray
) -> np.ndarray:
    """Sum of separable Gaussian bumps over a band, each on its ±3σ window only. Each factor is
    lowered to reach exactly 0 at the window edge: a truncation step would be lit as a seam."""
    floor = math.exp(-4.5)
    gy = np.exp(-0.5 * ((b.ys[:, None] - y0[None, :]) / sy[None, :]) ** 2) - floor
    gx = np.exp(-0.5 * ((b.xs[:, None] - x0[None, :]) / sx[None, :]) ** 2) - floor
    gy = (gy * (amp / (1 - floor) ** 2)).astype(np.float32).T.copy()
    gx = gx.astype(np.float32).T.copy()
    i0, i1 = np.searchsorted(b.ys, y0 - 3 * sy), np.searchsorted(b.ys, y0 + 3 * sy)
    j0, j1 = np.searchsorted(b.xs, x0 - 3 * sx), np.searchsorted(b.xs, x0 + 3 * sx)
    out = np.zeros(b.shape, np.float32)
    for k, (r0, r1, c0, c1) in enumerate(
        zip(i0.tolist(), i1.tolist(), j0.tolist(), j1.tolist(), strict=True)
    ):
        if r1 > r0 and c1 > c0:
            out[r0:r1, c0:c1] += np.multiply.outer(gy[k, r0:r1], gx[k, c0:c1])
    return out


def _smooth_edge(signed_px: np.ndarray) -> np.ndarray:
    """Coverage from a signed distance in pixels (positive inside), one-pixel anti-aliasing."""
    return np.clip(signed_px + 0.5, 0.0, 1.0)


def _hairline(x: np.ndarray, ident: Identity) -> np.ndarray:
    """Height of the frontal hairline at ``x`` (hair above, skin below), style dependent."""
    ax = np.abs(x)
    style = ident.hair_style
    if style == "fringe":
        hl = -0.5 + 0.06 * x**2 + 0.025 * np.sin(38 * x)
    elif style == "side_part":
        hl = -0.84 + 0.14 * x**2 - 0.14 * x * (1 if ident.lash > 0.8 else -1)
    elif style == "receding":
        hl = -1.0 - 0.3 * np.exp(-(((ax - 0.5) / 0.17) ** 2)) + 0.1 * x**2
    elif style == "long":
        hl = -0.92 + 0.2 * ax - 0.05 * np.exp(-((x / 0.05) ** 2))
    else:
        hl = -0.93 + 0.14 * x**2
    temple = -0.85 + (ax - 0.74) / 0.23 * 0.95
    return np.where(ax > 0.74, np.maximum(hl, temple), hl)


class _Band:
    """A horizontal band of the per-pixel region: normalised coordinates and the head outline."""

    def __init__(self, cv: _Canvas, r0: int, r1: int, c0: int, c1: int) -> None:
        A = cv.unit
        self.rows, self.cols = slice(r0, r1), slice(c0, c1)
        self.shape = (r1 - r0, c1 - c0)
        self.xs = ((np.arange(c0, c1, dtype=np.float32) - cv.cx) / A).astype(np.float32)
        self.ys = ((np.arange(r0, r1, dtype=np.float32) - cv.cy) / A).astype(np.float32)
        self.X = self.xs[None, :]
        self.Y = self.ys[:, None]
        self.ax = np.abs(self.X)
        w = np.interp(self.ys, *_outline_table(cv.ident)[:2]).astype(np.float32)
        self.W = np.where(w > 0, w, -1.0).astype(np.float32)[:, None]  # beyond crown/chin: outside

    @property
    def empty(self) -> bool:
        return self.shape[0] <= 0 or self.shape[1] <= 0

    def composite(
        self, cv: _Canvas, colour: np.ndarray, alpha: np.ndarray, label: int, z: np.ndarray | None
    ) -> None:
        """Blend a per-pixel layer into the canvas; pixels at least half covered take ``label``."""
        # Work only on the bounding box of the covered pixels.
        covered = alpha > 0
        rows = np.flatnonzero(covered.any(axis=1))
        if rows.size == 0:
            return
        cols = np.flatnonzero(covered[rows[0] : rows[-1] + 1].any(axis=0))
        i0, i1, j0, j1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        a = alpha[i0:i1, j0:j1]
        rs = slice(self.rows.start + i0, self.rows.start + i1)
        cs = slice(self.cols.start + j0, self.cols.start + j1)
        region = cv.rgb[rs, cs]
        change = colour[i0:i1, j0:j1] - region
        change *= _rep3(a)
        region += change
        solid = a >= 0.5
        np.copyto(cv.mask[rs, cs], np.uint8(label), where=solid)
        if z is not None:
            np.copyto(cv.z[rs, cs], z[i0:i1, j0:j1], where=solid, casting="same_kind")


def _band(cv: _Canvas, y_lo: float, y_hi: float, half_span: float = 1.8) -> _Band:
    """The band of rows between normalised heights ``y_lo`` and ``y_hi`` (clipped to the frame)."""
    A, size = cv.unit, cv.size
    r0 = min(max(math.floor(cv.cy + y_lo * A), 0), size)
    r1 = min(max(math.ceil(cv.cy + y_hi * A) + 1, r0), size)
    c0 = max(int(cv.cx - half_span * A), 0)
    c1 = min(int(cv.cx + half_span * A) + 1, size)
    return _Band(cv, r0, r1, c0, c1)


@dataclass
class _Hair:
    """Scalp hair as a shell around the skull: coverage edge, shading, texture, colour."""

    band: _Band
    shell: np.ndarray
    z: np.ndarray
    colour: np.ndarray
    tex: np.ndarray
    vol: float


def _hair_field(
    cv: _Canvas, capture: Capture, pool: dict[str, np.ndarray], rng: np.random.Generator
) -> _Hair:
    ident = cv.ident
    style = ident.hair_style
    vol = {"bald": 0.02, "buzz": 0.015, "curly": 0.22 + 2 * ident.hair_volume}.get(
        style, ident.hair_volume
    )
    bottom = {"long": 2.6, "curly": 0.45, "bald": 0.05}.get(style, 0.0)
    span = (ident.cheek_width + vol) * (1.22 if style == "long" else 1.0) + 0.05
    band = _band(cv, -(ident.skull_top + vol + 0.05), bottom, half_span=span)
    X, Y, A = band.X, band.Y, cv.unit
    rx, ry, yc = ident.cheek_width + vol, ident.skull_top + vol - 0.2, -0.2
    r2 = (X / rx) ** 2 + ((Y - yc) / ry) ** 2
    shell = _smooth_edge((1 - np.sqrt(r2)) * (rx * A))
    z = (ident.face_depth + vol) * np.sqrt(np.clip(1 - r2, 0, 1))
    shade, spec = _lambert(z, A, capture.light, capture.ambient * 0.8, gloss=40.0)
    name = "curl" if style == "curly" else ("speck" if style == "buzz" else "streak")
    tex = _crop(pool[name], rng, *band.shape)
    albedo = np.asarray(ident.hair_rgb, np.float32)
    colour = _tint(shade * (1 + 0.22 * np.clip(tex, -2.5, 2.5)), albedo)
    if spec is not None:
        colour += _rep3(spec * (0.5 + 0.5 * np.clip(tex, -1, 1)) * (0.35 + albedo.mean() / 255))
    return _Hair(band, shell, z.astype(np.float32), colour, tex, vol)


def _long_hair_extent(hair: _Hair, ident: Identity) -> np.ndarray:
    """Coverage of long hair falling from the crown past the shoulders, with ragged ends."""
    b = hair.band
    rx = ident.cheek_width + hair.vol
    flare = rx * (1 + 0.2 * np.clip((b.Y - 0.2) / 1.5, 0, 1))
    ends = (
        2.0 + 2 * ident.hair_volume - 0.25 * (b.ax / flare) ** 2 + 0.06 * np.clip(hair.tex, -2, 2)
    )
    extent = _smooth_edge((flare - b.ax) * 1e3) * _smooth_edge((ends - b.Y) * 1e3) * (b.Y > -0.2)
    return np.maximum(extent, hair.shell)


def _draw_front_hair(
    cv: _Canvas, hair: _Hair, ident: Identity, z_skin: np.ndarray, skin_band: _Band
) -> None:
    """Scalp hair above the hairline, hair beside the face, curtains of long hair."""
    b, A = hair.band, cv.unit
    style = ident.hair_style
    tex = hair.tex
    if style == "bald":
        # A horseshoe fringe above the ears, mostly beyond the face outline.
        fringe = _smooth_edge((b.ax - b.W + 0.06 + 0.03 * np.clip(tex, -1, 1)) * A)
        front = (
            hair.shell
            * fringe
            * _smooth_edge((b.Y + 0.75) * A)
            * _smooth_edge((-0.05 - b.Y) * A)
            * 0.9
        )
    else:
        hl = _hairline(b.X, ident) + 0.03 * np.clip(tex, -2, 2)
        above = _smooth_edge((hl - b.Y) * A)
        if style == "long":
            curtain = _smooth_edge((b.ax - b.W + 0.1 + 0.04 * np.clip(tex, -1, 1)) * A)
            curtain *= _long_hair_extent(hair, ident) * np.where(b.Y > 1.15, b.ax > 0.62, True)
            front = np.maximum(hair.shell * above, curtain)
        else:
            limit = 0.35 if style == "curly" else -0.12
            beside = _smooth_edge((b.ax - b.W + 0.02) * A) * _smooth_edge((limit - b.Y) * A)
            front = hair.shell * np.maximum(above, beside)
        if style == "buzz":
            front *= 0.82
    z = hair.z.copy()
    # Where the hair lies on the face, it sits just above the skin surface.
    r0, r1 = max(skin_band.rows.start, b.rows.start), min(skin_band.rows.stop, b.rows.stop)
    c0, c1 = max(skin_band.cols.start, b.cols.start), min(skin_band.cols.stop, b.cols.stop)
    if r1 > r0 and c1 > c0:
        s0, h0 = skin_band.rows.start, b.rows.start
        sc, hc = skin_band.cols.start, b.cols.start
        zs = z_skin[r0 - s0 : r1 - s0, c0 - sc : c1 - sc]
        zh = z[r0 - h0 : r1 - h0, c0 - hc : c1 - hc]
        np.maximum(zh, zs + 0.02, out=zh)
    b.composite(cv, hair.colour, front, Label.HAIR, z)


def _draw_skin(
    cv: _Canvas,
    geo: FaceGeometry,
    capture: Capture,
    pool: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> tuple[_Band, np.ndarray, np.ndarray]:
    """Face and scalp skin: a height field (head outline + Gaussian relief) lit by Lambert +
    Blinn–Phong, over an albedo with blotches, flushed cheeks and stubble. Returns the band,
    its height field and its grey shading (beards reuse them)."""
    ident = cv.ident
    A = cv.unit
    b = _band(cv, -ident.skull_top - 0.02, ident.chin_y + 0.02, half_span=ident.cheek_width + 0.04)
    X, ax = b.X, b.ax
    face = _smooth_edge((b.W - ax) * A)
    ys_tab, _, p_tab = _outline_table(ident)
    prof = np.interp(b.ys, ys_tab, p_tab).astype(np.float32)
    z = (
        ident.face_depth
        * np.sqrt(np.clip(1 - (X / np.maximum(b.W, 1e-3)) ** 2, 0, 1))
        * prof[:, None]
    )
    z = z.astype(np.float32)
    bx, by, bsx, bsy, amp = np.array(_face_bumps(geo, ident)).T
    bz = surface_z(bx, by, ident) + np.maximum(amp, 0.0)
    z += _bumps(b, bx * cv.cos_yaw + bz * cv.sin_yaw, by, bsx, bsy, amp)
    shade, spec = _lambert(
        z, A, capture.light, capture.ambient, gloss=18.0 + 20 * (ident.skin_tone <= 3)
    )
    shade *= 1 - _crease_darkness(cv, b)
    blotch = _crop(pool["blotch"], rng, *b.shape)
    flush = 0.1 * (1.2 - ident.skin_tone / 6)
    sy = cv.sin_yaw
    # Flushed cheeks and nose tip.
    redness = _bumps(
        b,
        np.array([-0.52 + 0.1 * sy, 0.52 + 0.1 * sy, 0.3 * sy]),
        np.array([0.38, 0.38, 0.42]),
        np.array([0.2, 0.2, 0.08]),
        np.array([0.15, 0.15, 0.07]),
        np.array([flush, flush, 0.8 * flush]),
    )
    redness += 0.02 * blotch
    tone = 1 + 0.025 * blotch
    if ident.beard == "stubble":
        speck = np.clip(_crop(pool["speck"], rng, *b.shape), -1, 1)
        tone *= 1 - 0.2 * _beard_region(b, ident, 0.25 * A) * (0.5 + 0.5 * speck)
    r, g, bl = (np.float32(c) for c in ident.skin_rgb)
    if spec is not None:
        spec *= 0.6 + 0.4 * ident.skin_tone / 6
    colour = _shade(
        r * tone, g * tone * (1 - redness), bl * tone * (1 - 1.2 * redness), shade, spec
    )
    b.composite(cv, colour, face, Label.SKIN, z)
    return b, z, shade


def _crease_darkness(cv: _Canvas, b: _Band) -> np.ndarray:
    """Darkness (0…0.75) of the queued creases over a band: sharp creases blurred a little,
    contact shadows broadly (at half resolution: a broad blur loses nothing there)."""
    import cv2

    sharp, soft = cv.crease_maps(b.rows, b.cols)
    sigma = max(0.5, 0.012 * cv.unit)
    k = 2 * max(1, round(2.5 * sigma)) + 1
    dark = cv2.GaussianBlur(sharp, (k, k), sigma)
    h, w = soft.shape
    half = cv2.resize(soft, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    half = cv2.GaussianBlur(half, (0, 0), max(0.5, 0.03 * cv.unit))
    dark += cv2.resize(half, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(dark, 0, 0.75, out=dark)


def _draw_beard(
    cv: _Canvas,
    geo: FaceGeometry,
    skin_band: _Band,
    z: np.ndarray,
    shade: np.ndarray,
    pool: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> None:
    """A full beard and moustache (labelled hair) around a bare mouth."""
    import cv2

    ident = cv.ident
    lo = int(np.searchsorted(skin_band.ys, 0.0))
    b = _Band(
        cv,
        skin_band.rows.start + lo,
        skin_band.rows.stop,
        skin_band.cols.start,
        skin_band.cols.stop,
    )
    curl = np.clip(_crop(pool["curl"], rng, *b.shape), -2, 2)
    cover = _beard_region(b, ident, cv.unit) * np.clip(2.2 + 0.6 * curl, 0, 1)
    # Keep the lips bare: clear the beard inside the lip outline and a pixel around it.
    lips = geo.lips
    outline = cv.px(np.concatenate([lips["upper_outer"], lips["lower_outer"][::-1]]), lift=0.04)
    fixed = [np.rint(outline * _ONE).astype(np.int32)]
    bare = np.zeros(b.shape, np.uint8)
    offset = (-b.cols.start * _ONE, -b.rows.start * _ONE)
    cv2.fillPoly(bare, fixed, 255, cv2.LINE_AA, _SHIFT, offset)
    cv2.polylines(
        bare,
        [f + offset for f in fixed],
        True,
        255,
        max(1, round(0.02 * cv.unit)),
        cv2.LINE_AA,
        _SHIFT,
    )
    cover *= 1 - bare.astype(np.float32) * (1 / 255)
    colour = _tint(shade[lo:] * 0.95 * (0.86 + 0.14 * curl), ident.hair_rgb)
    b.composite(cv, colour, cover, Label.HAIR, z[lo:] + 0.03)


def render_face(
    patient: Patient, pose: str, capture: Capture, size: int, pool_seed: int = 0
) -> Rendering:
    """Render ``patient`` in exam ``pose`` under ``capture`` at ``size``×``size`` pixels.

    Returns the photo (before JPEG), the label mask (values 0–6; FPP on the affected half's eye
    and/or mouth pixels where this photo shows their weakness by :mod:`palsyseg.visibility`,
    split at the face's own midline after roll), the relative depth (0 on background, nearer =
    smaller), landmarks in output pixel coordinates (with the asymmetry measures and the FPP
    parts) and the :class:`~palsyseg.visibility.Visibility`. Deterministic in its arguments.
    """
    ident = patient.identity
    geo = face_geometry(patient, pose, capture.intensity, capture.gaze)
    pool = _texture_pool(size, pool_seed)
    rng = np.random.default_rng(capture.background_seed)
    cv = _Canvas(size, ident, capture, _background(size, rng))
    skin = np.asarray(ident.skin_rgb, np.float32)

    _draw_creases(cv, geo, ident)
    hair = _hair_field(cv, capture, pool, rng)
    if ident.hair_style == "long":
        hair.band.composite(
            cv,
            hair.colour * np.float32(0.7),
            _long_hair_extent(hair, ident),
            Label.HAIR,
            hair.z * 0.3,
        )
    neck = np.array([[-0.6, 0.4], [0.6, 0.4], [0.66, 1.95], [-0.66, 1.95]])
    cv.paint([cv.px_flat(neck)], skin * 0.78, label=Label.BACKGROUND)
    # The neck is a cylinder (darker at its sides) in the shadow of the jaw.
    sides = [
        np.array([[s * 0.6, 0.4], [s * 0.48, 0.4], [s * 0.52, 1.95], [s * 0.66, 1.95]])
        for s in (-1, 1)
    ]
    cv.paint([cv.px_flat(p) for p in sides], (0.8, 0.8, 0.8), blur=0.04 * cv.unit, multiply=True)
    ys = np.linspace(ident.chin_y - 0.6, ident.chin_y, 10)
    ws = np.minimum(np.interp(ys, *cv.table[:2]), 0.58)
    jaw = np.concatenate([np.stack([-ws, ys], 1), np.stack([ws, ys], 1)[::-1]])
    shadow = np.concatenate([jaw, (jaw + np.array([0.0, 0.32]))[::-1]])
    cv.paint([cv.px_flat(shadow)], (0.65, 0.65, 0.65), blur=max(1.0, 0.05 * cv.unit), multiply=True)
    _draw_shirt(cv, ident)
    _draw_ears(cv, ident, skin)
    skin_band, z, shade = _draw_skin(cv, geo, capture, pool, rng)
    _draw_front_hair(cv, hair, ident, z, skin_band)
    if ident.beard == "full":
        _draw_beard(cv, geo, skin_band, z, shade, pool, rng)
    _draw_nose(cv, ident, skin, geo)
    _draw_brows(cv, ident, geo)
    for half in geo.halves.values():
        _draw_eye(cv, ident, half, capture)
    _draw_mouth(cv, ident, geo, skin)
    if ident.glasses != "none":
        _draw_glasses(cv, ident, geo)
    return _finish(cv, capture, _canonical_landmarks(cv, geo, ident), patient, rng, pool)


# ---- geometry shared by drawing and landmarks ------------------------------------------------


def _nose_tip_y(ident: Identity) -> float:
    return ident.nose_length - 0.05


def _face_bumps(
    geo: FaceGeometry, ident: Identity
) -> list[tuple[float, float, float, float, float]]:
    """Gaussian relief of the face: (x, y, sigma_x, sigma_y, height), normalised units."""
    tip = _nose_tip_y(ident)
    bumps: list[tuple[float, float, float, float, float]] = []
    for t in np.linspace(0, 1, 6):
        bumps.append((0.0, -0.1 + t * (tip - 0.02), 0.075 + 0.03 * t, 0.08, 0.02 + 0.15 * t**1.5))
    bumps += [
        (0.0, tip, 0.085, 0.07, 0.12),
        (0.0, tip + 0.1, 0.1, 0.03, -0.03),
        (0.0, -0.2, 0.1, 0.1, 0.03),
        (0.0, ident.mouth_y, 0.32, 0.17, 0.07 + 0.06 * geo.pucker),
        (0.0, ident.mouth_y + ident.lower_lip + 0.08, 0.16, 0.035, -0.025),
        (0.0, ident.chin_y - 0.2, 0.16, 0.12, 0.05),
    ]
    for sign in (-1, 1):
        half = geo.halves[sign]
        ex = sign * ident.eye_x
        bumps += [
            (sign * ident.nose_width * 0.75, tip + 0.04, 0.06, 0.05, 0.07),
            (sign * 0.42, ident.brow_y + 0.02, 0.22, 0.08, 0.05),
            (ex, 0.0, 0.2, 0.12, -0.08),
            (ex, 0.0, 0.12, 0.07, 0.03),
            (sign * 0.55, 0.3 - 0.08 * half.cheek, 0.18, 0.13, 0.05 + 0.04 * half.cheek),
            (sign * 0.85, -0.35, 0.12, 0.15, -0.04),
            (sign * 0.6, 0.68, 0.14, 0.12, -0.03 * ident.age),
        ]
    return bumps


def _beard_region(b: _Band, ident: Identity, unit: float) -> np.ndarray:
    """Coverage of a full beard / stubble: jaw, chin, cheeks below the cheek line, moustache."""
    wb = np.interp(b.ys - 0.08, *_outline_table(ident)[:2]).astype(np.float32)[:, None]
    wb = np.where(wb > 0, wb * 1.03 + 0.015, -1.0)
    top = 0.1 + 0.6 * (1 - np.clip((b.ax - 0.05) / 0.92, 0, 1) ** 2)
    return _smooth_edge((wb - b.ax) * unit) * _smooth_edge((b.Y - top) * unit) * (b.Y > 0)


# ---- drawing ----------------------------------------------------------------------------------


def _draw_creases(cv: _Canvas, geo: FaceGeometry, ident: Identity) -> None:
    """Queue wrinkles, folds and contact shadows (see :meth:`_Canvas.crease`)."""
    A = cv.unit
    tip = _nose_tip_y(ident)
    for sign, half in geo.halves.items():
        # Forehead lines follow the brow: absent on a paralysed frontalis (Bell's sign).
        peak_y = half.brow[1, 1]
        xs = np.linspace(0.04, 0.68, 9) * sign
        for k in range(4):
            y = peak_y - 0.17 - 0.09 * k + 0.05 * ((np.abs(xs) - 0.38) / 0.38) ** 2
            y += 0.008 * np.sin(7 * xs + k)
            cv.crease(np.stack([xs, y], 1), 0.5 * half.forehead * (1 - 0.15 * k), 1.0)
        # Nasolabial fold from the nasal ala to beside the mouth corner.
        ala = np.array([sign * (ident.nose_width + 0.02), tip + 0.02])
        end = half.corner + np.array([sign * 0.07, 0.07])
        ctrl = np.array([sign * (abs(end[0]) + 0.1), 0.5 * (ala[1] + end[1])])
        fold = _bezier(ala, ctrl, end, 10)
        cv.crease(fold, 0.3 * half.fold, max(1.0, 0.02 * A))
        cv.crease(
            fold + np.array([sign * 0.03, 0.0]), 0.1 * half.fold, max(1.0, 0.05 * A), soft=True
        )
        # Crow's feet from the outer canthus.
        outer = half.eye_outer + np.array([sign * 0.05, 0.0])
        for angle in (-0.45, 0.0, 0.4):
            tip_pt = outer + 0.13 * np.array([sign * math.cos(angle), math.sin(angle)])
            cv.crease(np.stack([outer, tip_pt]), 0.22 * half.crows, 1.0)
        # Upper-lid crease, under-eye shadow and the orbital hollow.
        _, lower, open_upper = half.lids
        cv.crease(open_upper[2:-2] - (0, 0.45 * half.eye_up), 0.28, max(1.0, 0.015 * A))
        cv.crease(
            lower[3:-1] + np.array([0.0, 0.08]),
            0.1 + 0.25 * ident.age,
            max(1.0, 0.03 * A),
            soft=True,
        )
        cv.crease(
            _ellipse(np.array([sign * (ident.eye_x - 0.06), -0.08]), 0.2, 0.09), 0.12, 0, soft=True
        )
        # Alar crease and marionette line.
        cv.crease(
            _ellipse(np.array([sign * ident.nose_width * 0.8, tip + 0.03]), 0.06, 0.055, 12)[6:12],
            0.3,
            1.0,
        )
        marionette = np.stack(
            [
                half.corner + np.array([sign * 0.02, 0.04]),
                half.corner + np.array([sign * 0.06, 0.28]),
            ]
        )
        cv.crease(marionette, 0.25 * ident.age, 1.0)
    # Hair shades the skin just below the hairline.
    if ident.hair_style not in ("bald", "buzz"):
        xs = np.linspace(-0.72, 0.72, 13)
        cv.crease(
            np.stack([xs, _hairline(xs, ident) + 0.05], 1), 0.22, max(1.0, 0.05 * A), soft=True
        )
    # Shadow under the lower lip and under the jaw onto the neck.
    cv.crease(
        _ellipse(np.array([0.0, ident.mouth_y + ident.lower_lip + 0.06]), 0.14, 0.04, 16),
        0.15,
        0,
        soft=True,
    )


def _draw_shirt(cv: _Canvas, ident: Identity) -> None:
    shirt = np.array(
        [
            [-0.56, 1.72],
            [-1.25, 1.92],
            [-2.2, 2.25],
            [-2.7, 3.6],
            [2.7, 3.6],
            [2.2, 2.25],
            [1.25, 1.92],
            [0.56, 1.72],
            [0.0, 2.05 if ident.lash > 0.75 else 1.9],
        ]
    )
    colour = np.asarray(ident.shirt_rgb, np.float32)
    cv.paint([cv.px_flat(shirt)], colour, label=Label.BACKGROUND)
    collar = np.array([[-0.56, 1.72], [0.0, 2.05 if ident.lash > 0.75 else 1.9], [0.56, 1.72]])
    cv.paint([cv.px_flat(collar)], colour * 0.55, 0.8, thickness=max(1, int(0.03 * cv.unit)))


def _draw_ears(cv: _Canvas, ident: Identity, skin: np.ndarray) -> None:
    w = float(np.interp(0.2, *cv.table[:2]))
    s = ident.ear_size
    outer, inner = [], []
    for sign in (-1, 1):
        centre = np.array([sign * (w + 0.03 - 0.1 * sign * cv.sin_yaw), 0.18])
        outer.append(cv.px_flat(_ellipse(centre, 0.12 * s, 0.27 * s, 24, sign * 0.12)))
        concha = centre + np.array([sign * 0.02, 0.03])
        inner.append(cv.px_flat(_ellipse(concha, 0.06 * s, 0.16 * s, 16, sign * 0.12)))
    cv.paint(outer, skin * 0.86, label=Label.SKIN)
    cv.paint(inner, skin * 0.55, 0.7, blur=max(0.5, 0.03 * cv.unit))


def _draw_nose(cv: _Canvas, ident: Identity, skin: np.ndarray, geo: FaceGeometry) -> None:
    tip = _nose_tip_y(ident)
    nostrils = [
        cv.px(
            _ellipse(
                np.array([sign * ident.nose_width * 0.45, tip + 0.06]),
                0.045,
                0.022,
                14,
                -sign * 0.35,
            ),
            lift=0.1,
        )
        for sign in (-1, 1)
    ]
    cv.paint(nostrils, skin * 0.28, 0.85, blur=max(0.4, 0.012 * cv.unit))


def _draw_brows(cv: _Canvas, ident: Identity, geo: FaceGeometry) -> None:
    """Both brows: a tapering band along a curve through inner point, peak and tail."""
    polys = []
    thick = ident.brow_thickness * (1.05 - 0.65 * _steps(15) ** 1.4)
    for half in geo.halves.values():
        centre = _through(half.brow[0], half.brow[1], half.brow[2], 15)
        d = np.gradient(centre, axis=0)
        normal = np.stack([-d[:, 1], d[:, 0]], 1) / np.linalg.norm(d, axis=1, keepdims=True)
        poly = np.concatenate([centre - normal * thick / 2, (centre + normal * thick / 2)[::-1]])
        polys.append(cv.px(poly, lift=0.03))
    cv.paint(polys, ident.brow_rgb, 0.92, label=Label.EYEBROW, blur=0.35)


def _draw_eye(cv: _Canvas, ident: Identity, half: HalfFace, capture: Capture) -> None:
    import cv2

    A = cv.unit
    upper_n, lower_n, _ = half.lids
    upper, lower = cv.px(upper_n), cv.px(lower_n)
    lash_colour = np.array([28, 22, 20], np.float32)
    lash_w = max(1, round(0.03 * A * ident.lash))
    opening = float((lower[:, 1] - upper[:, 1]).max())
    if opening >= 0.6:
        poly = np.concatenate([upper, lower[-2:0:-1]])
        cov = cv.coverage([poly], pad=1.0)
        if cov is not None:
            alpha, (x0, y0, x1, y1), _ = cov
            h, w = alpha.shape
            uu = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
            vv = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
            centre = cv.px(0.5 * (half.eye_inner + half.eye_outer) + half.iris_shift, lift=0.02)[0]
            half_w = 0.5 * abs(upper[-1, 0] - upper[0, 0]) + 1e-3
            light = 0.55 + 0.45 * (capture.ambient + 0.5)
            across = 1 - 0.3 * np.clip(
                ((uu - 0.5 * (upper[0, 0] + upper[-1, 0])) / half_w) ** 2, 0, 1
            )
            eye = np.empty((h, w, 3), np.float32)
            eye[:] = np.array([236, 230, 224], np.float32) * light
            eye *= across[..., None]
            r = 0.42 * ident.eye_half_width * A
            d = np.sqrt((uu - centre[0]) ** 2 + (vv - centre[1]) ** 2)
            iris = np.clip(r - d + 0.5, 0, 1)
            ring = np.clip((d - 0.78 * r) / (0.22 * r + 1e-3), 0, 1)
            iris_rgb = np.asarray(ident.iris_rgb, np.float32) * light
            angle = np.arctan2(vv - centre[1], uu - centre[0])
            fibres = 1 + 0.12 * np.sin(angle * 11 + d)
            colour = (
                iris_rgb
                * (fibres * (1 - 0.55 * ring) * (0.8 + 0.3 * np.clip(d / r, 0, 1)))[..., None]
            )
            eye += (colour - eye) * iris[..., None]
            pupil = np.clip(0.42 * r - d + 0.5, 0, 1)
            eye += (np.array([12, 10, 10], np.float32) - eye) * pupil[..., None]
            lx, ly, _ = capture.light
            glint = np.sqrt(
                (uu - centre[0] - 0.35 * r * lx * 2) ** 2
                + (vv - centre[1] - 0.35 * r * (ly * 2)) ** 2
            )
            spark = np.clip(max(0.6, 0.2 * r) - glint + 0.5, 0, 1) * 0.9
            eye += (255 - eye) * spark[..., None]
            # The upper lid and lashes shade the top of the eyeball.
            lid_y = np.interp(
                uu[0],
                upper[:, 0] if upper[0, 0] < upper[-1, 0] else upper[::-1, 0],
                upper[:, 1] if upper[0, 0] < upper[-1, 0] else upper[::-1, 1],
            )
            shadow = np.clip(1 - (vv - lid_y[None, :]) / max(1.0, 0.35 * opening), 0, 1)
            eye *= (1 - 0.45 * shadow)[..., None]
            region = cv.rgb[y0:y1, x0:x1]
            region += (eye - region) * alpha[..., None]
            fixed = np.round(poly * _ONE).astype(np.int32)
            cv2.fillPoly(cv.mask, [fixed], int(Label.EYE), cv2.LINE_8, _SHIFT)
        cv.paint([lower], np.asarray(ident.skin_rgb, np.float32) * 0.55, 0.45, thickness=1)
        wing = cv.px(half.eye_outer + np.array([half.sign * 0.035, -0.012]))
        cv.paint([np.concatenate([upper, wing])], lash_colour, 0.92, thickness=lash_w)
    else:
        # Closed lid: the lash line lies along the lower lid.
        cv.paint([lower], lash_colour, 0.9, thickness=lash_w)


def _draw_mouth(cv: _Canvas, ident: Identity, geo: FaceGeometry, skin: np.ndarray) -> None:
    import cv2

    curves = geo.lips
    lift = 0.04 + 0.1 * geo.pucker
    p = {name: cv.px(c, lift=lift) for name, c in curves.items()}
    lip = np.asarray(ident.lip_rgb, np.float32)
    if geo.lip_gap > 0.005:
        cavity = np.concatenate([p["upper_inner"], p["lower_inner"][-2:0:-1]])
        cv.paint([cavity], np.array([62, 20, 26], np.float32), 1.0)
        teeth_top = p["upper_inner"][4:-4]
        teeth_bottom = (teeth_top + np.array([0.0, 0.6 * geo.lip_gap * cv.unit]))[::-1]
        cv.paint(
            [np.concatenate([teeth_top, teeth_bottom])],
            np.array([226, 220, 204], np.float32),
            0.95,
            blur=0.3,
        )
    upper = np.concatenate([p["upper_outer"], p["upper_inner"][-2:0:-1]])
    lower = np.concatenate([p["lower_inner"], p["lower_outer"][-2:0:-1]])
    # Lips tint the shaded skin below them, so the relief of the mouth keeps its light.
    tint = np.clip(lip / np.maximum(skin, 1.0), 0.3, 1.8)
    cv.paint([upper], tint * 0.78, 1.0, blur=0.35, multiply=True)
    cv.paint([lower], tint * 0.98, 1.0, blur=0.35, multiply=True)
    corners = [
        cv.px(_ellipse(c, 0.025, 0.015, 10), lift=lift)
        for c in (curves["base"][0], curves["base"][-1])
    ]
    cv.paint(corners, lip * 0.3, 0.6, blur=max(0.5, 0.015 * cv.unit))
    centre = 0.5 * (curves["lower_inner"][11] + curves["lower_outer"][11])
    highlight = _ellipse(centre, 0.09, 0.022, 16)
    cv.paint(
        [cv.px(highlight, lift=lift)],
        np.minimum(lip * 1.35, 255),
        0.35,
        blur=max(0.5, 0.02 * cv.unit),
    )
    if geo.lip_gap <= 0.005:
        cv.paint([p["base"]], lip * 0.35, 0.85, thickness=1)
    outline = np.concatenate([p["upper_outer"], p["lower_outer"][-2:0:-1]])
    fixed = np.round(outline * _ONE).astype(np.int32)
    cv2.fillPoly(cv.mask, [fixed], int(Label.MOUTH), cv2.LINE_8, _SHIFT)


def _lens_outline(ident: Identity, centre: np.ndarray, n: int = 28) -> np.ndarray:
    c, s = _angles(n)
    if ident.glasses == "round":
        return centre + np.stack([0.25 * c, 0.22 * s], 1)
    return centre + np.stack(
        [0.28 * np.sign(c) * np.abs(c) ** 0.45, 0.19 * np.sign(s) * np.abs(s) ** 0.45], 1
    )


def _draw_glasses(cv: _Canvas, ident: Identity, geo: FaceGeometry) -> None:
    """Frames are labelled background (as the public datasets label eyeglasses); the lenses are
    transparent, so the eyes behind them keep their labels."""
    A = cv.unit
    thick = max(1, round(ident.frame_width * A))
    frame = np.asarray(ident.frame_rgb, np.float32)
    inner_edges = []
    for sign in (-1, 1):
        centre = np.array([sign * ident.eye_x, -0.03])
        outline = cv.px(_lens_outline(ident, centre), lift=0.25)
        cov = cv.coverage([outline], pad=0)
        if cov is not None:
            alpha, (x0, y0, x1, y1), _ = cov
            uu = np.arange(x0, x1, dtype=np.float32)[None, :]
            vv = np.arange(y0, y1, dtype=np.float32)[:, None]
            band = np.exp(-((((uu - x0) - 0.8 * (vv - y0) - 0.3 * (x1 - x0)) / (0.12 * A)) ** 2))
            region = cv.rgb[y0:y1, x0:x1]
            region += (255 - region) * (alpha * (0.05 + 0.15 * band))[..., None]
        cv.paint(
            [np.concatenate([outline, outline[:1]])],
            frame,
            1.0,
            label=Label.BACKGROUND,
            thickness=thick,
        )
        inner_edges.append(
            cv.px(
                centre + np.array([-sign * (0.26 if ident.glasses == "rect" else 0.24), -0.04]),
                lift=0.25,
            )[0]
        )
        hinge = cv.px(centre + np.array([sign * 0.27, -0.05]), lift=0.2)[0]
        w = float(_half_width(np.array([-0.02]), ident)[0])
        ear = cv.px_flat(np.array([[sign * (w + 0.01), -0.01]]))[0]
        cv.paint([np.stack([hinge, ear])], frame, 1.0, label=Label.BACKGROUND, thickness=thick)
    bridge = cv.px(
        _through(np.array([-0.15, -0.06]), np.array([0.0, -0.1]), np.array([0.15, -0.06]), 7),
        lift=0.3,
    )
    bridge = np.concatenate([inner_edges[0][None], bridge, inner_edges[1][None]])
    cv.paint([bridge], frame, 1.0, label=Label.BACKGROUND, thickness=thick)


def _canonical_landmarks(cv: _Canvas, geo: FaceGeometry, ident: Identity) -> dict[str, np.ndarray]:
    """Landmarks in canonical pixels, keyed by the *patient's* side (projected in one batch)."""
    names: list[str] = []
    points: list[np.ndarray] = []
    lifts: list[float] = []

    def add(name: str, point: np.ndarray, lift: float = 0.0) -> None:
        names.append(name)
        points.append(point)
        lifts.append(lift)

    mouth_lift = 0.04 + 0.1 * geo.pucker
    for side in ("left", "right"):
        half = geo.halves[side_sign(side)]
        upper, lower, _ = half.lids
        mid = len(upper) // 2
        add(f"{side}_eye_inner", half.eye_inner)
        add(f"{side}_eye_outer", half.eye_outer)
        add(f"{side}_eye_top", upper[mid])
        add(f"{side}_eye_bottom", lower[mid])
        for name, point in zip(("inner", "middle", "outer"), half.brow, strict=True):
            add(f"{side}_brow_{name}", point, 0.03)
        add(f"mouth_{side}_corner", half.corner, mouth_lift)
    lips = geo.lips
    mid = len(lips["base"]) // 2
    add("mouth_top", lips["upper_outer"][mid], mouth_lift)
    add("mouth_bottom", lips["lower_outer"][mid], mouth_lift)
    add("nose_tip", np.array([0.0, _nose_tip_y(ident)]), 0.3)
    # The face's own midline: glabella to chin. Both points are taken at the same depth, so the
    # line keeps the face's roll under yaw (it shifts sideways with the face, it does not tilt).
    top, bottom = np.array([0.0, ident.brow_y + 0.05]), np.array([0.0, ident.chin_y - 0.15])
    depth_gap = float(surface_z(*top, ident)[0] - surface_z(*bottom, ident)[0])
    add("midline_top", top, 0.05)
    add("midline_bottom", bottom, 0.05 + depth_gap)
    projected = cv.px(np.array(points), lift=np.array(lifts))
    return dict(zip(names, projected, strict=True))


def _background(out_size: int, rng: np.random.Generator) -> np.ndarray:
    """A defocused room: a wall with soft colour variation and a few objects (frames, shelves,
    a door edge, lamps, plants). Drawn at quarter resolution: it is out of focus anyway.
    Object sizes are fractions of the frame, so every output size gets the same scene."""
    import cv2

    n = max(16, (out_size + 3) // 4)

    def span(lo: float, hi: float) -> int:  # a length between fractions lo and hi of the frame
        return round(n * float(rng.uniform(lo, hi)))

    def colour(sat_max: float = 0.7) -> tuple[float, float, float]:
        return _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, sat_max), rng.uniform(30, 250))

    base = np.array(_hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.03, 0.35), rng.uniform(90, 235)))
    cells = int(rng.integers(2, 6))
    bg = cv2.resize(_tint(rng.uniform(0.75, 1.15, size=(cells, cells)), base), (n, n))
    for _ in range(int(rng.integers(2, 8))):
        kind = int(rng.integers(0, 4))
        x, y = span(0, 1), span(0, 1)
        if kind == 0:  # picture frame
            w, h = span(0.12, 0.5), span(0.12, 0.5)
            m = max(1, w // 8)
            cv2.rectangle(bg, (x, y), (x + w, y + h), colour(), -1)
            cv2.rectangle(bg, (x + m, y + m), (x + w - m, y + h - m), colour(0.9), -1)
        elif kind == 1:  # door edge or shelf
            if rng.random() < 0.5:
                cv2.rectangle(bg, (x, 0), (x + span(0.02, 0.16), n), colour(), -1)
            else:
                cv2.rectangle(bg, (0, y), (n, y + span(0.01, 0.07)), colour(), -1)
        elif kind == 2:  # lamp or ball
            cv2.circle(bg, (x, y), span(0.05, 0.16), colour(), -1)
        else:  # plant: a cluster of leaves
            for _ in range(6):
                centre = (x + span(-0.1, 0.1), y + span(-0.1, 0.1))
                axes = (max(1, span(0.02, 0.08)), max(1, span(0.01, 0.04)))
                leaf = (
                    float(rng.uniform(20, 80)),
                    float(rng.uniform(80, 160)),
                    float(rng.uniform(20, 80)),
                )
                cv2.ellipse(bg, centre, axes, float(rng.uniform(0, 180)), 0, 360, leaf, -1)
    bg = cv2.GaussianBlur(bg, (0, 0), float(rng.uniform(0.4, 1.0)) * n / 62)
    return cv2.resize(bg, (out_size, out_size), interpolation=cv2.INTER_LINEAR)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h, s, 1.0)
    return r * v, g * v, b * v


def _finish(
    cv: _Canvas,
    capture: Capture,
    points: dict[str, np.ndarray],
    patient: Patient,
    rng: np.random.Generator,
    pool: dict[str, np.ndarray],
) -> Rendering:
    """Light the scene, roll and place it with one affine warp, label FPP where the photo shows
    the weakness (:mod:`palsyseg.visibility`) split at the rolled midline, derive depth, then
    blur and add sensor noise."""
    import cv2

    size = cv.size
    rgb = cv.rgb
    rgb *= _lighting(size, capture)
    # Saturating float → uint8 (values are non-negative), as RGBA: OpenCV's 4-channel
    # warp and blur are about twice as fast as its 3-channel ones.
    photo = cv2.cvtColor(cv2.convertScaleAbs(rgb), cv2.COLOR_RGB2RGBA)

    # One warp for photo, labels and depth (reflected borders keep them consistent).
    centre = (cv.cx, cv.cy + 0.3 * cv.unit)
    M = cv2.getRotationMatrix2D(centre, capture.roll_deg, 1.0)
    M[:, 2] += np.array(capture.shift) * size
    border = cv2.BORDER_REFLECT_101
    photo = cv2.warpAffine(photo, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    mask = cv2.warpAffine(cv.mask, M, (size, size), flags=cv2.INTER_NEAREST, borderMode=border)
    z = cv2.warpAffine(cv.z, M, (size, size), flags=cv2.INTER_NEAREST, borderMode=border)
    names = list(points)
    pts = np.array([points[n] for n in names]) @ M[:, :2].T + M[:, 2]
    flat = {
        n: [round(float(p[0]), 2), round(float(p[1]), 2)] for n, p in zip(names, pts, strict=True)
    }

    # FPP where this photo shows the weakness (palsyseg.visibility): the weak half's eye pixels
    # when the eye's measure crosses its threshold, its mouth pixels when the mouth's does; the
    # halves are split at the face's own midline after roll.
    document = _landmark_document(flat, capture, size)
    measures = measure_asymmetry(document)
    visibility = None
    if patient.diagnosis != "healthy":
        visibility = visible_weakness(measures, patient.affected_side)
        top, bottom = np.array(flat["midline_top"]), np.array(flat["midline_bottom"])
        d = bottom - top
        normal = np.array([d[1], -d[0]]) * side_sign(patient.affected_side)  # toward that half
        for part, label in (("eye", Label.EYE), ("mouth", Label.MOUTH)):
            if part not in visibility.parts:
                continue
            vv, uu = np.nonzero(mask == label)
            on_side = (uu - top[0]) * normal[0] + (vv - top[1]) * normal[1] > 0
            mask[vv[on_side], uu[on_side]] = Label.FPP
    document["asymmetry"] = {k: round(v, 4) for k, v in measures.items()}
    document["fpp"] = (
        visibility.to_dict() if visibility is not None else {"weak_side": "none", "parts": []}
    )

    # Relative depth over the labelled head: nearest point (nose tip) → 0+, silhouette → 1.
    labelled = mask > 0
    z_near = max(float(z.max(where=labelled, initial=0.0)), 1e-6)
    depth = 1.0 - z * np.float32(1.0 / z_near)
    np.clip(depth, 1.0 / 65535, 1.0, out=depth)
    depth *= labelled

    sigma = capture.blur_sigma * size / 250
    if sigma > 0.05:
        k = 2 * max(1, round(2.5 * sigma)) + 1
        photo = cv2.GaussianBlur(photo, (k, k), sigma)
    photo = cv2.cvtColor(photo, cv2.COLOR_RGBA2RGB)
    level = min(NOISE_LEVELS, key=lambda lv: abs(lv - capture.noise_sigma))
    photo = cv2.add(photo, _crop(pool["sensor"][level], rng, size, size), dtype=cv2.CV_8U)
    return Rendering(photo, mask, depth, document, capture.jpeg_quality, visibility)


def _lighting(size: int, capture: Capture) -> np.ndarray:
    """Per-pixel gain: a linear lighting gradient across the frame times a colour cast."""
    strength, direction = capture.gradient
    ramp = (np.arange(size, dtype=np.float32) - size / 2) / size
    gain = (ramp * np.float32(strength * math.sin(direction)))[:, None] + (
        1 + ramp * np.float32(strength * math.cos(direction))
    )[None, :]
    return _tint(gain, capture.cast)


def _landmark_document(flat: dict[str, list[float]], capture: Capture, size: int) -> dict[str, Any]:
    """Landmarks as written to JSON: image pixels, sides are the patient's."""
    doc: dict[str, Any] = {
        "convention": "image pixels, x right, y down; left/right are the patient's sides "
        "(the patient's left appears on the image's right)",
        "size": [size, size],
        "eyes": {},
        "brows": {},
        "mouth": {},
        "nose_tip": flat["nose_tip"],
        "midline": {"top": flat["midline_top"], "bottom": flat["midline_bottom"]},
        "capture": {
            "roll_deg": round(capture.roll_deg, 2),
            "yaw_deg": round(capture.yaw_deg, 2),
            "scale": round(capture.scale, 3),
        },
    }
    for side in ("left", "right"):
        doc["eyes"][side] = {
            k: flat[f"{side}_eye_{k}"] for k in ("inner", "outer", "top", "bottom")
        }
        doc["brows"][side] = {k: flat[f"{side}_brow_{k}"] for k in ("inner", "middle", "outer")}
        doc["mouth"][f"{side}_corner"] = flat[f"mouth_{side}_corner"]
    doc["mouth"]["top"] = flat["mouth_top"]
    doc["mouth"]["bottom"] = flat["mouth_bottom"]
    return doc
