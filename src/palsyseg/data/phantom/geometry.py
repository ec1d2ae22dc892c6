"""What the muscles do: function per half-face and feature positions per exam pose.

:func:`side_function` gives each half-face an upper (frontalis, orbicularis oculi) and a lower
(zygomaticus, orbicularis oris) function in [0, 1]. Bell's palsy is a *peripheral* (lower motor
neuron) lesion of the facial nerve: the whole half-face is weak, forehead included. A stroke is
a *central* (upper motor neuron) lesion: the forehead has bilateral cortical innervation and is
spared, the lower face is weak (the classic bedside distinction of clinical neurology).
:func:`face_geometry` turns the function and the exam pose (rest, smile, brow_raise,
eye_closure, pucker) into feature positions: a weak side's brow does not rise, its eye does not
close (with Bell's phenomenon: the eyeball rolls up), its mouth corner droops at rest and does
not lift on a smile, its nasolabial fold is flat, its forehead unwrinkled. Severity follows the
House–Brackmann grade (House & Brackmann 1985): grade 2 is slight weakness, grade 6 total
paralysis. Healthy faces keep a small natural asymmetry.

Also here: the curve sampling (quadratic Béziers, ellipses, lid and lip contours) that both
the feature positions and the drawing in :mod:`palsyseg.data.phantom.render` use.

Coordinates: the canonical frame measures lengths in units of the face half-width ``A``
pixels, ``x`` to the image's right, ``y`` down, ``z`` toward the camera, the eye line at
``y = 0``. A frontal photo mirrors the patient, so the patient's *left* half-face has
``x > 0`` (the image's right); :func:`side_sign` is the one conversion, built on
:func:`palsyseg.labels.image_half_of_side`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from palsyseg.data.phantom.identity import Patient
from palsyseg.labels import image_half_of_side


def side_sign(side: str) -> int:
    """+1 if the patient's ``side`` appears on the image's right (x > 0), else -1."""
    return 1 if image_half_of_side(side) == "right" else -1


def side_function(patient: Patient, sign: int) -> tuple[float, float]:
    """(upper, lower) muscle function of the half-face at image half ``sign``, each in [0, 1].

    Bell's palsy (peripheral): the whole half-face is weak. Stroke (central): the forehead and
    eye closure are spared by bilateral cortical innervation; the lower face is weak.
    """
    if patient.diagnosis == "healthy" or sign != side_sign(patient.affected_side):
        return 1.0, 1.0
    weak = 1.0 - patient.severity
    if patient.diagnosis == "bells_palsy":
        return weak, weak
    return 1.0, weak


@dataclass
class HalfFace:
    """Feature positions of one half-face (image half ``sign``), normalised units."""

    sign: int
    brow: np.ndarray  # 3×2: inner, peak, outer (x, y)
    eye_inner: np.ndarray
    eye_outer: np.ndarray
    eye_up: float  # upper-lid height above the canthal line when open
    eye_low: float  # lower-lid depth below the canthal line
    eye_open: float  # 0 closed … 1 open (upper lid between the lower lid and fully open)
    iris_shift: np.ndarray  # iris offset from the fissure centre (gaze, Bell's phenomenon)
    corner: np.ndarray  # mouth corner (x, y)
    fold: float  # nasolabial fold depth 0…1
    forehead: float  # forehead wrinkling 0…1
    crows: float  # crow's-feet wrinkling 0…1
    cheek: float  # cheek raise 0…1
    # Lid margins (upper, lower, upper when fully open), inner → outer corner; face_geometry sets them.
    lids: tuple[np.ndarray, ...] = ()


@dataclass
class FaceGeometry:
    """Both half-faces plus the mouth centre, in normalised units (see module docstring)."""

    halves: dict[int, HalfFace]
    mouth_center: np.ndarray  # stomion centre (x, y)
    lip_gap: float  # lip parting at the centre (teeth show when > 0)
    pucker: float  # 0 … 1 lips rounded forward
    upper_lip: float
    lower_lip: float
    lips: dict[str, np.ndarray] = field(default_factory=dict)  # lip contours; set by face_geometry


def _rest_tone_loss(weakness: float) -> float:
    """Visible tone loss at rest, 0…1, of a muscle with ``weakness`` 0…1 (House–Brackmann:
    symmetric at rest up to grade IV, weakness 0.6; complete at grade VI)."""
    return float(np.clip((weakness - 0.6) / 0.4, 0.0, 1.0))


def face_geometry(
    patient: Patient, pose: str, intensity: float = 1.0, gaze: tuple[float, float] = (0.0, 0.0)
) -> FaceGeometry:
    """Feature positions for ``patient`` performing the exam ``pose`` with effort ``intensity``.

    Healthy sides perform the full movement; a weak side performs ``function`` × movement and,
    from House–Brackmann grade V on, shows tone loss at rest (drooping corner; for Bell's a
    lower brow and a wider palpebral fissure). Deterministic in its arguments.
    """
    ident = patient.identity
    halves: dict[int, HalfFace] = {}
    for sign, asym_index in ((-1, 0), (1, 1)):
        upper, lower = side_function(patient, sign)
        bells_side = patient.diagnosis == "bells_palsy" and upper < 1.0
        weak = 1.0 - lower
        brow_dy = ident.asymmetry[asym_index]
        corner_dy = ident.asymmetry[2 + asym_index]
        eye_scale = ident.asymmetry[4 + asym_index]
        # Tone loss at rest: the weak corner sags; a Bell's brow sags and the fissure widens.
        # House–Brackmann: grades II–IV keep "normal symmetry and tone at rest", V–VI do not,
        # so the resting sag starts at grade IV's severity (0.6) and is full at grade VI.
        lower_tone, upper_tone = _rest_tone_loss(weak), _rest_tone_loss(1 - upper)
        corner_dy += 0.075 * lower_tone
        corner_dx = -0.02 * lower_tone
        if bells_side:
            brow_dy += 0.06 * upper_tone
        eye_open, eye_low = 1.0, ident.eye_height * 0.55
        if bells_side:
            eye_low *= 1 + 0.45 * upper_tone
            eye_open = 1 + 0.12 * upper_tone
        iris_dy = 0.0
        forehead = 0.15 * ident.age * upper
        crows = 0.2 * ident.age
        fold = (0.35 + 0.4 * ident.age) * (0.1 + 0.9 * lower)
        cheek = 0.0
        brow_lift = np.zeros(3)
        effort = intensity
        if pose == "brow_raise":
            brow_lift = np.array([0.10, 0.13, 0.10]) * upper * effort
            # A weak frontalis leaves the forehead smooth well before the brow stops moving.
            forehead = max(forehead, 0.95 * effort * max(0.0, upper - 0.3) / 0.7)
            eye_open *= 1 + 0.18 * upper * effort
        elif pose == "eye_closure":
            # Orbicularis oculi closes the lid; a weak one leaves the eye open (lagophthalmos),
            # and the eyeball rolls up under the lid (Bell's phenomenon).
            residual = 0.0 if upper >= 0.999 else 0.12 + 0.82 * (1 - upper) ** 1.2
            eye_open = min(1.0, residual)
            iris_dy = -ident.eye_height * (0.9 if residual > 0 else 0.0)
            brow_lift = np.array([-0.035, -0.025, -0.02]) * upper * effort
            crows = max(crows, 0.7 * upper * effort)
            eye_low *= 1 - 0.2 * upper
            fold *= 1.15
        elif pose == "smile":
            corner_dx += 0.1 * lower * effort
            corner_dy -= 0.15 * lower * effort
            fold = min(1.0, fold * (1 + 1.2 * lower * effort))
            cheek = lower * effort
            crows = max(crows, 0.5 * lower * effort)
            eye_low *= 1 - 0.3 * lower * effort  # cheeks push the lower lid up (Duchenne smile)
            eye_open *= 1 - 0.1 * lower * effort
        elif pose == "pucker":
            corner_dx -= ident.mouth_half_width * 0.45 * lower * effort
            corner_dy -= 0.01 * lower
            fold *= 0.7
        brow_base = np.array(
            [
                [ident.eye_x - ident.eye_half_width * 1.05, ident.brow_y + 0.03],
                [ident.eye_x + 0.02, ident.brow_y - ident.brow_arch],
                [ident.eye_x + ident.eye_half_width * 1.45, ident.brow_y + 0.02],
            ]
        )
        brow = brow_base.copy()
        brow[:, 1] += brow_dy - brow_lift
        brow[:, 0] *= sign
        tilt = ident.canthal_tilt
        eye_inner = np.array([sign * (ident.eye_x - ident.eye_half_width), tilt / 2])
        eye_outer = np.array([sign * (ident.eye_x + ident.eye_half_width), -tilt / 2])
        corner = np.array([sign * (ident.mouth_half_width + corner_dx), ident.mouth_y + corner_dy])
        halves[sign] = HalfFace(
            sign=sign,
            brow=brow,
            eye_inner=eye_inner,
            eye_outer=eye_outer,
            eye_up=ident.eye_height * eye_scale,
            eye_low=eye_low * eye_scale,
            eye_open=float(eye_open),
            iris_shift=np.array([gaze[0] * ident.eye_half_width * 0.3, gaze[1] * 0.01 + iris_dy]),
            corner=corner,
            fold=float(np.clip(fold, 0.0, 1.0)),
            forehead=float(np.clip(forehead, 0.0, 1.0)),
            crows=float(np.clip(crows, 0.0, 1.0)),
            cheek=float(cheek),
        )
    left, right = halves[-1].corner, halves[1].corner
    center = (left + right) / 2
    center[1] = ident.mouth_y + 0.5 * (ident.asymmetry[2] + ident.asymmetry[3])
    lower_mean = 0.5 * (side_function(patient, -1)[1] + side_function(patient, 1)[1])
    lip_gap, pucker = 0.0, 0.0
    upper_lip, lower_lip = ident.upper_lip, ident.lower_lip
    if pose == "smile":
        lip_gap = 0.085 * lower_mean * intensity
        center[1] += 0.015
        upper_lip *= 0.85
        lower_lip *= 0.85
    elif pose == "pucker":
        pucker = intensity * lower_mean
        upper_lip *= 1 + 0.35 * pucker
        lower_lip *= 1 + 0.3 * pucker
        center[1] -= 0.02
    geo = FaceGeometry(halves, center, float(lip_gap), float(pucker), upper_lip, lower_lip)
    for half in halves.values():
        upper, lower = _eye_curves(half)
        half.lids = (upper, lower, _eye_curves(half, opening=1.0)[0])
    geo.lips = _lip_curves(geo)
    return geo


# ---- curves shared by the feature positions and the drawing ----------------------------------


@lru_cache(maxsize=64)
def _steps(n: int) -> np.ndarray:
    """``linspace(0, 1, n)`` as an n×1 column, cached (curves are sampled many times per image)."""
    t = np.linspace(0, 1, n)[:, None]
    t.flags.writeable = False
    return t


@lru_cache(maxsize=64)
def _angles(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    c.flags.writeable = False
    s.flags.writeable = False
    return c, s


def _bezier(p0: np.ndarray, c: np.ndarray, p1: np.ndarray, n: int) -> np.ndarray:
    t = _steps(n)
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * c + t**2 * p1


def _through(p0: np.ndarray, mid: np.ndarray, p1: np.ndarray, n: int) -> np.ndarray:
    """Quadratic curve from ``p0`` to ``p1`` passing through ``mid`` at t = 1/2."""
    return _bezier(p0, 2 * mid - (p0 + p1) / 2, p1, n)


def _ellipse(
    center: np.ndarray, rx: float, ry: float, n: int = 28, angle: float = 0.0
) -> np.ndarray:
    cos_t, sin_t = _angles(n)
    c, s = math.cos(angle), math.sin(angle)
    x, y = rx * cos_t, ry * sin_t
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=1)


def _eye_curves(
    half: HalfFace, n: int = 17, opening: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid margins (normalised, inner → outer corner) of one eye; ``opening``
    overrides the lid position (1 = fully open)."""
    t = _steps(n)
    chord = (1 - t) * half.eye_inner + t * half.eye_outer
    g_up = np.sin(np.pi * t**0.85) ** 0.8
    g_lo = np.sin(np.pi * t**1.15) ** 0.9
    lower = chord + np.hstack([np.zeros_like(t), half.eye_low * g_lo])
    opened = chord - np.hstack([np.zeros_like(t), half.eye_up * g_up])
    upper = lower + (half.eye_open if opening is None else opening) * (opened - lower)
    return upper, lower


def _lip_curves(geo: FaceGeometry, n: int = 23) -> dict[str, np.ndarray]:
    """Outer and inner lip contours (normalised, image-left corner → image-right corner)."""
    left, right = geo.halves[-1].corner, geo.halves[1].corner
    t = _steps(n)[:, 0]
    base = _through(left, geo.mouth_center, right, n)
    f = np.sin(np.pi * t) ** (0.6 - 0.35 * geo.pucker)
    bow = (
        1
        + 0.12 * np.exp(-(((np.abs(t - 0.5) - 0.1) / 0.05) ** 2))
        - 0.25 * np.exp(-(((t - 0.5) / 0.045) ** 2))
    )
    zeros = np.zeros(n)
    up = np.stack([zeros, geo.upper_lip * f * bow], axis=1)
    down = np.stack([zeros, geo.lower_lip * f**0.7], axis=1)
    gap = np.stack([zeros, 0.5 * geo.lip_gap * f**0.8], axis=1)
    return {
        "upper_outer": base - up,
        "upper_inner": base - gap,
        "lower_inner": base + gap,
        "lower_outer": base + down,
        "base": base,
    }
