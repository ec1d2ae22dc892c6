"""Who the phantom is: :class:`Identity` and :class:`Patient`, and how they are drawn at random.

:class:`Identity` is how a synthetic person looks, fixed across their images (face shape,
Fitzpatrick skin type, hair, beard, glasses, age); :class:`Patient` adds the clinical ground
truth (diagnosis, affected side, House–Brackmann grade). Lengths are in units of the face
half-width (see :mod:`palsyseg.data.phantom.geometry`); colours are sRGB 0–255.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HAIR_STYLES: tuple[str, ...] = (
    "bald",
    "buzz",
    "short",
    "side_part",
    "fringe",
    "long",
    "curly",
    "receding",
)
BEARD_STYLES: tuple[str, ...] = ("none", "stubble", "full")
GLASSES_STYLES: tuple[str, ...] = ("none", "round", "rect")

# Representative sRGB skin colours per Fitzpatrick type (hand-picked, jittered per person).
SKIN_RGB: dict[int, tuple[float, float, float]] = {
    1: (242, 212, 195),
    2: (228, 188, 160),
    3: (206, 160, 124),
    4: (172, 122, 86),
    5: (128, 84, 56),
    6: (82, 54, 38),
}
HAIR_RGB: dict[str, tuple[float, float, float]] = {
    "black": (22, 18, 17),
    "dark_brown": (52, 36, 26),
    "brown": (96, 64, 42),
    "auburn": (120, 58, 34),
    "blond": (196, 160, 104),
    "grey": (150, 146, 140),
    "white": (214, 210, 204),
}
IRIS_RGB: dict[str, tuple[float, float, float]] = {
    "dark_brown": (58, 36, 24),
    "brown": (98, 62, 36),
    "hazel": (122, 98, 56),
    "green": (84, 112, 76),
    "blue": (78, 116, 160),
    "grey": (112, 122, 128),
}


@dataclass(frozen=True)
class Identity:
    """How a synthetic person looks, fixed across their images. Lengths in face half-widths."""

    skin_tone: int
    skin_rgb: tuple[float, float, float]
    cheek_width: float
    jaw_width: float
    chin_width: float
    chin_y: float
    skull_top: float
    face_depth: float
    eye_x: float
    eye_half_width: float
    eye_height: float
    canthal_tilt: float
    iris_rgb: tuple[float, float, float]
    brow_y: float
    brow_thickness: float
    brow_arch: float
    brow_rgb: tuple[float, float, float]
    nose_width: float
    nose_length: float
    mouth_y: float
    mouth_half_width: float
    upper_lip: float
    lower_lip: float
    lip_rgb: tuple[float, float, float]
    ear_size: float
    hair_style: str
    hair_rgb: tuple[float, float, float]
    hair_volume: float
    beard: str
    glasses: str
    frame_rgb: tuple[float, float, float]
    frame_width: float
    age: float
    lash: float
    shirt_rgb: tuple[float, float, float]
    # Natural asymmetry of a healthy face, per image half (-1, +1): brow and mouth-corner
    # height offsets and eye-opening scale, well below the clinical thresholds.
    asymmetry: tuple[float, ...] = field(default=(0.0, 0.0, 0.0, 0.0, 1.0, 1.0))


@dataclass(frozen=True)
class Patient:
    """One synthetic person: identity plus the clinical ground truth of the manifest."""

    patient_id: str
    diagnosis: str
    affected_side: str
    grade: int
    identity: Identity
    severity_jitter: float = 0.0

    @property
    def severity(self) -> float:
        """Weakness of the affected side, 0 (normal) … 1 (total paralysis), from the HB grade."""
        if self.diagnosis == "healthy":
            return 0.0
        return float(np.clip((self.grade - 1) / 5 + self.severity_jitter, 0.18, 1.0))


def _choice(rng: np.random.Generator, options: dict[str, float]) -> str:
    names = list(options)
    weights = np.array([options[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _jitter_rgb(
    rng: np.random.Generator, rgb: tuple[float, ...], amount: float
) -> tuple[float, float, float]:
    scale = 1.0 + rng.uniform(-amount, amount)
    tint = rng.uniform(-amount / 2, amount / 2, size=3)
    return tuple(float(np.clip(c * (scale + t), 0, 255)) for c, t in zip(rgb, tint, strict=True))  # type: ignore[return-value]


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw a random identity (face shape, skin type 1–6, hair, beard, glasses, age)."""
    skin_tone = int(rng.integers(1, 7))
    skin = _jitter_rgb(rng, SKIN_RGB[skin_tone], 0.05)
    age = float(rng.beta(1.6, 1.8))
    dark = skin_tone >= 4
    hair_colour = _choice(
        rng,
        {
            "black": 6 if dark else 1.5,
            "dark_brown": 4 if dark else 3,
            "brown": 1 if dark else 3,
            "auburn": 0.2 if dark else 1,
            "blond": 0.1 if dark else 2,
        },
    )
    if age > 0.7 and rng.random() < 0.7:
        hair_colour = "white" if rng.random() < 0.35 else "grey"
    hair_style = _choice(
        rng,
        {
            "bald": 1,
            "buzz": 1.2,
            "short": 2.5,
            "side_part": 2,
            "fringe": 1.3,
            "long": 2.8,
            "curly": 1.3,
            "receding": 1.0 + 2 * age,
        },
    )
    beard = _choice(rng, {"none": 5, "stubble": 1.6, "full": 1.6})
    if hair_style in ("long", "fringe") and rng.random() < 0.7:
        beard = "none"
    iris = _choice(
        rng,
        {
            "dark_brown": 6 if dark else 2,
            "brown": 2,
            "hazel": 0.3 if dark else 1.2,
            "green": 0.1 if dark else 1,
            "blue": 0.1 if dark else 2,
            "grey": 0.1 if dark else 0.6,
        },
    )
    hair_rgb = _jitter_rgb(rng, HAIR_RGB[hair_colour], 0.08)
    brow_rgb = tuple(float(c * rng.uniform(0.65, 0.9)) for c in hair_rgb)
    if hair_colour in ("white", "grey", "blond"):
        brow_rgb = tuple(
            float(0.5 * c + 0.5 * h) for c, h in zip(brow_rgb, (70, 60, 52), strict=True)
        )
    lip_base = np.array(skin) * np.array([0.88, 0.64, 0.68]) + np.array([22, 4, 8])
    glasses = _choice(rng, {"none": 2.6, "round": 0.6, "rect": 0.8})
    frame = _choice(rng, {"black": 3, "tortoise": 2, "metal": 1.5})
    frame_rgb = {"black": (20, 20, 22), "tortoise": (92, 58, 34), "metal": (150, 150, 156)}[frame]
    asym = (
        float(rng.uniform(-0.012, 0.012)),
        float(rng.uniform(-0.012, 0.012)),
        float(rng.uniform(-0.005, 0.005)),
        float(rng.uniform(-0.005, 0.005)),
        float(rng.uniform(0.95, 1.05)),
        float(rng.uniform(0.95, 1.05)),
    )
    return Identity(
        skin_tone=skin_tone,
        skin_rgb=skin,
        cheek_width=float(rng.uniform(0.97, 1.03)),
        jaw_width=float(rng.uniform(0.8, 0.95)),
        chin_width=float(rng.uniform(0.3, 0.5)),
        chin_y=float(rng.uniform(1.36, 1.5)),
        skull_top=float(rng.uniform(1.45, 1.6)),
        face_depth=float(rng.uniform(0.72, 0.85)),
        eye_x=float(rng.uniform(0.42, 0.47)),
        eye_half_width=float(rng.uniform(0.19, 0.22)),
        eye_height=float(rng.uniform(0.095, 0.12)),
        canthal_tilt=float(rng.uniform(-0.005, 0.035)),
        iris_rgb=_jitter_rgb(rng, IRIS_RGB[iris], 0.08),
        brow_y=float(rng.uniform(-0.33, -0.27)),
        brow_thickness=float(rng.uniform(0.06, 0.1)),
        brow_arch=float(rng.uniform(0.03, 0.08)),
        brow_rgb=brow_rgb,  # type: ignore[arg-type]
        nose_width=float(rng.uniform(0.16, 0.22 + 0.04 * dark)),
        nose_length=float(rng.uniform(0.5, 0.6)),
        mouth_y=float(rng.uniform(0.84, 0.92)),
        mouth_half_width=float(rng.uniform(0.36, 0.43)),
        upper_lip=float(rng.uniform(0.07, 0.1 + 0.02 * dark) * (1 - 0.25 * age)),
        lower_lip=float(rng.uniform(0.09, 0.13 + 0.02 * dark) * (1 - 0.2 * age)),
        lip_rgb=_jitter_rgb(rng, tuple(np.clip(lip_base, 0, 255)), 0.06),
        ear_size=float(rng.uniform(0.9, 1.1)),
        hair_style=hair_style,
        hair_rgb=hair_rgb,
        hair_volume=float(rng.uniform(0.04, 0.12)),
        beard=beard,
        glasses=glasses,
        frame_rgb=frame_rgb,
        frame_width=float(rng.uniform(0.025, 0.05)),
        age=age,
        lash=float(rng.uniform(0.6, 1.0)),
        shirt_rgb=tuple(float(c) for c in rng.integers(25, 230, size=3)),  # type: ignore[arg-type]
        asymmetry=asym,
    )


def sample_patient(rng: np.random.Generator, patient_id: str, diagnosis: str) -> Patient:
    """Draw a patient with ``diagnosis``: identity, affected side and House–Brackmann grade.

    Healthy faces are grade 1 with side ``none``; palsy faces get grade 2–6 and a side.
    """
    identity = sample_identity(rng)
    if diagnosis == "healthy":
        return Patient(patient_id, diagnosis, "none", 1, identity)
    side = "left" if rng.random() < 0.5 else "right"
    grade = int(rng.integers(2, 7))
    return Patient(patient_id, diagnosis, side, grade, identity, float(rng.uniform(-0.02, 0.02)))
