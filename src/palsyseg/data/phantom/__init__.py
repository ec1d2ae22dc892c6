"""Procedural phantom faces with and without facial palsy: identity, exam pose, pixels, labels.

This package is the face model behind :mod:`palsyseg.data.synth`. It reads in three parts,
one module each (each imports only from the ones before it):

1. **Who** — :mod:`~palsyseg.data.phantom.identity`: :class:`Identity` (face shape,
   Fitzpatrick skin type, hair, beard, glasses, age) and :class:`Patient` (identity +
   diagnosis, affected side, House–Brackmann grade).
2. **What the muscles do** — :mod:`~palsyseg.data.phantom.geometry`: :func:`side_function`
   gives each half-face an upper (frontalis, orbicularis oculi) and a lower (zygomaticus,
   orbicularis oris) function in [0, 1]. Bell's palsy is a *peripheral* (lower motor neuron)
   lesion of the facial nerve: the whole half-face is weak, forehead included. A stroke is a
   *central* (upper motor neuron) lesion: the forehead has bilateral cortical innervation and
   is spared, the lower face is weak (the classic bedside distinction of clinical neurology).
   :func:`face_geometry` turns the function and the exam pose (rest, smile, brow_raise,
   eye_closure, pucker) into feature positions: a weak side's brow does not rise, its eye
   does not close (with Bell's phenomenon: the eyeball rolls up), its mouth corner droops at
   rest and does not lift on a smile, its nasolabial fold is flat, its forehead unwrinkled.
   Severity follows the House–Brackmann grade (House & Brackmann 1985): grade 2 is slight
   weakness, grade 6 total paralysis. Healthy faces keep a small natural asymmetry. The curve
   sampling shared with the drawing (lid and lip contours, Béziers, ellipses) lives here too.
3. **Pixels** — :mod:`~palsyseg.data.phantom.render`: :func:`render_face` draws the face over
   a defocused, cluttered room in an upright "canonical" frame: per-pixel fields (a height
   field lit with Lambert + Blinn–Phong gives skin shading and the depth map; shells give
   hair, beards) on horizontal bands of rows, and anti-aliased cv2 polygons for eyes, brows,
   lips, ears, glasses. One affine warp then rolls and places photo, labels and depth
   together, and the imaging nuisances follow (lighting gradient, colour cast, blur, sensor
   noise; JPEG happens when the file is written). Everything is vectorised NumPy/OpenCV.

Coordinates: the canonical frame measures lengths in units of the face half-width ``A``
pixels, ``x`` to the image's right, ``y`` down, ``z`` toward the camera, the eye line at
``y = 0``. A frontal photo mirrors the patient, so the patient's *left* half-face has
``x > 0`` (the image's right); :func:`side_sign` is the one conversion, built on
:func:`palsyseg.labels.image_half_of_side`.

The public names of all three modules are re-exported here, so callers import them from
``palsyseg.data.phantom``.
"""

from __future__ import annotations

from palsyseg.data.phantom.geometry import (
    FaceGeometry,
    HalfFace,
    face_geometry,
    side_function,
    side_sign,
)
from palsyseg.data.phantom.identity import (
    BEARD_STYLES,
    GLASSES_STYLES,
    HAIR_RGB,
    HAIR_STYLES,
    IRIS_RGB,
    SKIN_RGB,
    Identity,
    Patient,
    sample_identity,
    sample_patient,
)
from palsyseg.data.phantom.render import (
    NOISE_LEVELS,
    Capture,
    Rendering,
    render_face,
    sample_capture,
    surface_z,
)

__all__ = [
    "BEARD_STYLES",
    "GLASSES_STYLES",
    "HAIR_RGB",
    "HAIR_STYLES",
    "IRIS_RGB",
    "NOISE_LEVELS",
    "SKIN_RGB",
    "Capture",
    "FaceGeometry",
    "HalfFace",
    "Identity",
    "Patient",
    "Rendering",
    "face_geometry",
    "render_face",
    "sample_capture",
    "sample_identity",
    "sample_patient",
    "side_function",
    "side_sign",
    "surface_z",
]
