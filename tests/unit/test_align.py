"""The canonical face frame: geometry of the transform, warps both ways, logits, mirror symmetry."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from palsyseg.align import (
    OUTSIDE_BACKGROUND_LOGIT,
    OUTSIDE_OTHER_LOGIT,
    FaceFrame,
    FivePoints,
    frame_transform,
    inverse_transform,
    logits_to_photo,
    map_points,
    warp_image,
    warp_to_photo,
)

# A frontal face around the origin: x right, y down; the patient's left eye at +x (image right).
# The mouth sits a little off the eye midline and the nose tip is yawed, as in a real face.
CANONICAL = np.array(
    [
        [30.0, 0.0],  # left_eye
        [-30.0, 0.0],  # right_eye
        [6.0, 28.0],  # nose_tip
        [25.0, 62.0],  # mouth_left
        [-19.0, 60.0],  # mouth_right
    ]
)


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = math.radians(angle_deg)
    linear = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.hstack([linear, np.array(shift)[:, None]])


def random_points(rng: np.random.Generator) -> FivePoints:
    placed = similarity(rng.uniform(-30, 30), rng.uniform(0.5, 4.0), tuple(rng.uniform(50, 400, 2)))
    return FivePoints.from_array(map_points(CANONICAL, placed))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("frame", [FaceFrame(64), FaceFrame(256, iod=0.3, eye_y=0.4)])
def test_frame_transform_puts_the_face_in_the_canonical_frame(seed: int, frame: FaceFrame) -> None:
    points = random_points(np.random.default_rng(seed))
    m = frame_transform(points, frame)
    left_eye, right_eye, *_ = map_points(points.as_array(), m)

    assert left_eye[1] == pytest.approx(right_eye[1], abs=1e-9)  # level
    assert right_eye[0] < left_eye[0]  # patient's right eye on the crop's left
    assert left_eye[0] - right_eye[0] == pytest.approx(frame.iod * frame.size, abs=1e-9)
    assert (left_eye[1] + right_eye[1]) / 2 == pytest.approx(frame.eye_y * frame.size, abs=1e-9)
    # The midline runs through the eye midpoint; the mouth (which palsy moves) does not shift it.
    assert (left_eye[0] + right_eye[0]) / 2 == pytest.approx((frame.size - 1) / 2, abs=1e-9)
    moved = points.as_array().copy()
    moved[3] += (7.0, 5.0)  # a lagging, drooping mouth corner
    assert np.allclose(frame_transform(FivePoints.from_array(moved), frame), m)

    linear = m[:, :2]
    assert np.linalg.det(linear) > 0  # no reflection
    np.testing.assert_allclose(linear @ linear.T, np.eye(2) * np.linalg.det(linear), atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_inverse_transform_undoes_the_transform(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = frame_transform(random_points(rng), FaceFrame(128))
    inv = inverse_transform(m)
    xy = rng.uniform(-100, 500, (20, 2))
    np.testing.assert_allclose(map_points(map_points(xy, m), inv), xy, atol=1e-9)
    np.testing.assert_allclose(map_points(map_points(xy, inv), m), xy, atol=1e-9)
    compose = np.vstack([m, [0, 0, 1]]) @ np.vstack([inv, [0, 0, 1]])
    np.testing.assert_allclose(compose, np.eye(3), atol=1e-12)


def test_coincident_eyes_are_refused() -> None:
    points = FivePoints((5, 5), (5, 5), (5, 9), (7, 12), (3, 12))
    with pytest.raises(ValueError, match="coincide"):
        frame_transform(points, FaceFrame(32))


@pytest.mark.parametrize("angle", [-25.0, 0.0, 17.0])
def test_label_map_survives_the_round_trip_through_the_crop(angle: float) -> None:
    # Magnification ≥ 2 into the crop: every photo pixel the crop covers comes back exactly.
    rng = np.random.default_rng(1)
    photo_labels = rng.integers(0, 7, (90, 110)).astype(np.uint8)
    points = FivePoints.from_array(map_points(CANONICAL, similarity(angle, 0.2, (55, 40))))
    frame = FaceFrame(96)
    m = frame_transform(points, frame)
    crop = warp_image(photo_labels, m, frame.size, interpolation="nearest")
    back = warp_to_photo(crop, m, photo_labels.shape, interpolation="nearest")

    assert crop.dtype == np.uint8 and crop.shape == (96, 96)
    ys, xs = np.mgrid[0:90, 0:110]
    uv = map_points(np.stack([xs.ravel(), ys.ravel()], 1), m).reshape(90, 110, 2)
    inside = np.all((uv >= 0.01) & (uv <= frame.size - 1.01), axis=-1)
    outside = np.any((uv < -0.51) | (uv > frame.size - 0.49), axis=-1)
    assert inside.sum() > 500 and outside.sum() > 500
    np.testing.assert_array_equal(back[inside], photo_labels[inside])
    assert not back[outside].any()


def crop_label_map(size: int) -> np.ndarray:
    """Nested ellipses and a bar: classes 0–4 in large regions, like a face parsing."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    labels = np.zeros((size, size), np.int64)
    labels[((xx - 0.5) / 0.4) ** 2 + ((yy - 0.55) / 0.45) ** 2 <= 1] = 1
    labels[((xx - 0.35) / 0.08) ** 2 + ((yy - 0.42) / 0.04) ** 2 <= 1] = 2
    labels[((xx - 0.65) / 0.08) ** 2 + ((yy - 0.42) / 0.04) ** 2 <= 1] = 2
    labels[(np.abs(xx - 0.5) < 0.15) & (np.abs(yy - 0.72) < 0.04)] = 3
    labels[yy < 0.12] = 4
    return labels


def test_logits_to_photo_agrees_with_warp_to_photo_and_is_background_outside() -> None:
    size, classes, photo_shape = 64, 5, (150, 170)
    labels = crop_label_map(size)
    logits = torch.nn.functional.one_hot(torch.from_numpy(labels), classes).permute(2, 0, 1)
    logits = (8.0 * logits.float() - 4.0)[None].repeat(2, 1, 1, 1)
    matrices = [
        frame_transform(FivePoints.from_array(map_points(CANONICAL, s)), FaceFrame(size))
        for s in (similarity(12, 0.4, (80, 60)), similarity(-20, 0.3, (95, 70)))
    ]

    photo_logits = logits_to_photo(logits, matrices, photo_shape)
    assert photo_logits.shape == (2, classes, *photo_shape)
    assert photo_logits.dtype == torch.float32
    for i, m in enumerate(matrices):
        expected = warp_to_photo(labels, m, photo_shape, interpolation="nearest")
        got = photo_logits[i].argmax(0).numpy()
        differ = got != expected
        # Only where bilinear and nearest sampling may disagree: next to a class boundary.
        edges = np.zeros_like(differ)
        edges[:, 1:] |= expected[:, 1:] != expected[:, :-1]
        edges[:, :-1] |= expected[:, 1:] != expected[:, :-1]
        edges[1:] |= expected[1:] != expected[:-1]
        edges[:-1] |= expected[1:] != expected[:-1]
        assert differ.sum() <= 0.01 * differ.size
        assert not (differ & ~edges).any()

        ys, xs = np.mgrid[0 : photo_shape[0], 0 : photo_shape[1]]
        uv = map_points(np.stack([xs.ravel(), ys.ravel()], 1), m).reshape(*photo_shape, 2)
        outside = np.any((uv < -0.5) | (uv >= size - 0.5), axis=-1)
        assert outside.sum() > 1000
        assert (got[outside] == 0).all()
        outside_logits = photo_logits[i].permute(1, 2, 0)[torch.from_numpy(outside)]
        assert (outside_logits[:, 0] == OUTSIDE_BACKGROUND_LOGIT).all()
        assert (outside_logits[:, 1:] == OUTSIDE_OTHER_LOGIT).all()


def test_logits_to_photo_samples_at_opencv_pixel_centres() -> None:
    # A linear ramp is reproduced exactly by bilinear sampling: each photo pixel inside the
    # crop must read its own crop coordinate u (channel 0) and v (channel 1).
    size = 48
    vv, uu = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    ramp = torch.stack([uu, vv, torch.zeros_like(uu)])[None].double()
    m = frame_transform(
        FivePoints.from_array(map_points(CANONICAL, similarity(9, 0.7, (60, 50)))), FaceFrame(size)
    )
    photo = logits_to_photo(ramp, m, (110, 120), background_index=2)
    assert photo.dtype == torch.float64

    ys, xs = np.mgrid[0:110, 0:120]
    uv = map_points(np.stack([xs.ravel(), ys.ravel()], 1), m).reshape(110, 120, 2)
    inside = np.all((uv >= 0) & (uv <= size - 1), axis=-1)
    got = photo[0, :2].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got[inside], uv[inside], atol=1e-9)
    # OpenCV's bilinear warp (fixed point, 1/32 pixel) reads the same coordinates.
    cv = warp_to_photo(
        ramp[0, :2].permute(1, 2, 0).numpy().astype(np.float32),
        m,
        (110, 120),
        interpolation="linear",
    )
    np.testing.assert_allclose(cv[inside], uv[inside], atol=0.05)


def test_logits_to_photo_takes_one_matrix_for_one_photo_and_keeps_half_precision() -> None:
    logits = torch.randn(1, 3, 32, 32, dtype=torch.float16)
    m = frame_transform(
        FivePoints.from_array(map_points(CANONICAL, similarity(0, 0.1, (50, 40)))), FaceFrame(32)
    )
    out = logits_to_photo(logits, m, (80, 90), background_index=1)
    assert out.shape == (1, 3, 80, 90) and out.dtype == torch.float16
    assert (out[0, :, 0, 0] == torch.tensor([-20.0, 0.0, -20.0], dtype=torch.float16)).all()
    with pytest.raises(ValueError, match="2×3"):
        logits_to_photo(logits.repeat(2, 1, 1, 1), [m, m, m], (80, 90))


def textured_photo(height: int, width: int) -> np.ndarray:
    """Sharp, asymmetric detail (blocks and a diagonal edge), lightly smoothed: 3 channels."""
    import cv2

    rng = np.random.default_rng(5)
    blocks = rng.uniform(0, 255, (height // 6 + 1, width // 6 + 1, 3)).astype(np.float32)
    photo = np.repeat(np.repeat(blocks, 6, 0), 6, 1)[:height, :width]
    yy, xx = np.mgrid[0:height, 0:width]
    photo[xx + 2 * yy < 150] *= 0.3
    return cv2.GaussianBlur(photo, (0, 0), 1.0)


def test_flipping_the_crop_is_the_crop_of_the_mirrored_photo() -> None:
    height, width = 180, 230
    photo = textured_photo(height, width)
    points = FivePoints.from_array(map_points(CANONICAL, similarity(14, 1.1, (120, 70))))
    frame = FaceFrame(128)

    crop = warp_image(photo, frame_transform(points, frame), frame.size)
    mirrored = points.mirrored(width)
    crop_of_mirror = warp_image(photo[:, ::-1], frame_transform(mirrored, frame), frame.size)
    assert mirrored.left_eye[0] > mirrored.right_eye[0]  # still a frontal face

    centre = (slice(16, -16), slice(16, -16))  # away from the photo's border
    error = np.abs(crop_of_mirror - crop[:, ::-1])[centre].max()
    # The same photo mirrored about an axis off by half a photo pixel is clearly worse: the
    # check sees the pixel-centre convention, not just "roughly the same picture".
    off = FivePoints.from_array(mirrored.as_array() + np.array([0.5, 0.0]))
    off_error = np.abs(
        warp_image(photo[:, ::-1], frame_transform(off, frame), frame.size) - crop[:, ::-1]
    )[centre].max()
    assert error < 0.5  # grey levels of 255; seen here: 0.004 (OpenCV interpolates in fixed point)
    assert off_error > 10 * error


def test_mirrored_swaps_sides_and_is_an_involution() -> None:
    points = FivePoints((70, 40), (30, 41), (52, 60), (65, 80), (35, 81))
    mirrored = points.mirrored(100)
    assert mirrored.left_eye == (99 - 30, 41)
    assert mirrored.right_eye == (99 - 70, 40)
    assert mirrored.mouth_left == (99 - 35, 81)
    assert mirrored.nose_tip == (47, 60)
    assert mirrored.mirrored(100) == points
    assert mirrored.inter_ocular() == pytest.approx(points.inter_ocular())


def test_five_points_round_trip_through_json_and_arrays() -> None:
    points = FivePoints((70.5, 40.25), (30, 41), (52, 60), (65, 80), (35, 81))
    assert FivePoints.from_dict(json.loads(json.dumps(points.to_dict()))) == points
    assert FivePoints.from_array(points.as_array()) == points
    assert points.as_array().dtype == np.float64 and points.as_array().shape == (5, 2)
    assert list(points.to_dict()) == [
        "left_eye",
        "right_eye",
        "nose_tip",
        "mouth_left",
        "mouth_right",
    ]
    assert points.inter_ocular() == pytest.approx(math.hypot(40.5, 0.75))
    with pytest.raises(KeyError, match="nose_tip"):
        FivePoints.from_dict({k: v for k, v in points.to_dict().items() if k != "nose_tip"})
    with pytest.raises(ValueError, match="5×2"):
        FivePoints.from_array(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="not finite"):
        FivePoints((math.nan, 1), (0, 0), (0, 0), (0, 0), (0, 0))


def test_face_frame_round_trips_and_validates() -> None:
    frame = FaceFrame(224, iod=0.3, eye_y=0.4)
    assert FaceFrame.from_dict(json.loads(json.dumps(frame.to_dict()))) == frame
    assert FaceFrame(64) == FaceFrame.from_dict({"size": 64})
    with pytest.raises(ValueError, match="unknown FaceFrame keys: iodd"):
        FaceFrame.from_dict({"size": 64, "iodd": 0.3})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 15}, "size"),
        ({"size": 64.5}, "size"),
        ({"size": True}, "size"),
        ({"size": 64, "iod": 0.0}, "iod"),
        ({"size": 64, "iod": 1.0}, "iod"),
        ({"size": 64, "eye_y": 0.0}, "eye_y"),
        ({"size": 64, "eye_y": 1.2}, "eye_y"),
    ],
)
def test_face_frame_refuses_impossible_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaceFrame(**kwargs)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64, np.float32, np.bool_])
def test_warp_image_keeps_dtype_and_shape(dtype: type) -> None:
    rng = np.random.default_rng(0)
    image = (rng.integers(0, 2, (40, 50, 1)) * 3).astype(dtype)
    m = similarity(0, 1, (-5.0, -3.0))  # pure integer shift: nearest copies values exactly
    crop = warp_image(image, m, 32, interpolation="nearest")
    assert crop.dtype == image.dtype and crop.shape == (32, 32, 1)
    np.testing.assert_array_equal(crop, image[3:35, 5:37])
    assert warp_image(image[..., 0], m, 20).shape == (20, 20)
    with pytest.raises(ValueError, match="interpolation"):
        warp_image(image, m, 20, interpolation="cubic")  # type: ignore[arg-type]


def test_importing_align_loads_neither_cv2_nor_torch() -> None:
    probe = "import sys, palsyseg.align; print(sorted({'cv2', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
