"""deid.align: canonical crops are pose-invariant, paste-back inverts alignment, masks are well formed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import match_faces

from deid.align import TEMPLATES, align_face, crop_matrix, face_mask, paste_back, warp_to_frame
from deid.types import AlignedFace, Face


def canonical(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``[5, 2]`` frame landmarks -> crop pixel coordinates through the inverse of ``matrix``."""
    inv = cv2.invertAffineTransform(matrix)
    return np.concatenate([np.asarray(landmarks, np.float64), np.ones((5, 1))], axis=1) @ inv.T


def similarity(scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    """``[2, 3]`` similarity transform: rotate by ``angle_deg`` and scale about the origin, then shift."""
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([r, np.array(shift, np.float64)[:, None]], axis=1)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("scale, angle, shift", [(0.2, 0, (5, 7)), (0.5, -20, (300, 40)), (3.0, 35, (-90, 600)),
                                                 (1.0, 180, (1000, 1000))])
def test_crop_matrix_is_invariant_to_scale_rotation_translation(astronaut_face: Face, template, scale, angle, shift):
    size = 256
    ref = canonical(astronaut_face.landmarks, crop_matrix(astronaut_face.landmarks, size, template))
    t = similarity(scale, angle, shift)
    moved = np.concatenate([astronaut_face.landmarks.astype(np.float64), np.ones((5, 1))], axis=1) @ t.T
    got = canonical(moved, crop_matrix(moved, size, template))
    np.testing.assert_allclose(got, ref, atol=1e-6 * size)


def test_crop_matrix_puts_detected_eyes_at_the_same_place_in_every_scene_face(astronaut_face, scene_720p,
                                                                              scene_720p_faces):
    """End to end: faces pasted at 40..200 px and -20..20 deg, re-detected, land on the same canonical eyes."""
    size = 256
    ref = canonical(astronaut_face.landmarks, crop_matrix(astronaut_face.landmarks, size))[:2]
    for truth, found in zip(scene_720p.faces, match_faces(scene_720p.faces, scene_720p_faces)):
        assert found is not None
        eyes = canonical(found.landmarks, crop_matrix(found.landmarks, size))[:2]
        err = np.linalg.norm(eyes - ref, axis=1).max() / size
        assert err < 0.04, f"face {truth.size:.0f} px at {truth.angle:+.0f} deg: eyes off by {err:.3f} of the crop"


def test_canonical_eyes_are_level_and_symmetric(astronaut_face):
    size = 256
    eyes = canonical(astronaut_face.landmarks, crop_matrix(astronaut_face.landmarks, size))[:2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.03 * size
    assert abs((eyes[0, 0] + eyes[1, 0]) / 2 - size / 2) < 0.03 * size


@pytest.mark.parametrize("size", [64, 256])
def test_align_face_output_contract(astronaut, astronaut_face, size):
    aligned = align_face(astronaut, astronaut_face, size)
    assert isinstance(aligned, AlignedFace)
    assert aligned.image.shape == (size, size, 3) and aligned.image.dtype == np.uint8
    assert aligned.matrix.shape == (2, 3) and aligned.matrix.dtype == np.float64
    assert aligned.size == size and aligned.face is astronaut_face


def test_align_then_paste_back_restores_the_frame(astronaut, astronaut_face):
    """An upsampled crop pasted back unchanged reproduces the frame inside the mask and leaves the rest alone."""
    size = 256  # the face region is ~95 px in the frame: the crop is upsampled ~2.7x
    aligned = align_face(astronaut, astronaut_face, size)
    mask = face_mask(size)
    out = paste_back(astronaut, aligned.image, aligned.matrix, mask)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    warped_mask, (x0, y0, x1, y1) = warp_to_frame(mask, aligned.matrix, astronaut.shape[:2])
    inside = warped_mask > 0.99
    assert inside.sum() > 2000
    diff = np.abs(out[y0:y1, x0:x1].astype(np.int16) - astronaut[y0:y1, x0:x1].astype(np.int16))
    assert diff[inside].mean() < 3.0
    outside = np.ones(astronaut.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], astronaut[outside])


def test_paste_back_does_not_modify_its_input(astronaut, astronaut_face):
    frame = astronaut.copy()
    aligned = align_face(frame, astronaut_face, 64)
    paste_back(frame, np.zeros_like(aligned.image), aligned.matrix, face_mask(64))
    assert np.array_equal(frame, astronaut)


def test_large_face_crop_matches_the_small_face_crop(astronaut, astronaut_face):
    """A 3x larger face goes through the area-shrink path; its crop must look like the direct crop."""
    up = cv2.resize(astronaut, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    # cv2.resize maps pixel centres: p' = (p + 0.5) * 3 - 0.5
    big = Face(box=astronaut_face.box * 3 + 1, score=astronaut_face.score, landmarks=astronaut_face.landmarks * 3 + 1)
    direct = align_face(astronaut, astronaut_face, 64).image.astype(np.int16)
    shrunk = align_face(up, big, 64).image.astype(np.int16)
    assert np.abs(direct - shrunk).mean() < 4.0


@pytest.mark.parametrize("shape", ["ellipse", "square"])
@pytest.mark.parametrize("size", [32, 257])
def test_face_mask_shape_range_and_profile(shape, size):
    m = face_mask(size, feather=0.1, shape=shape)
    assert m.shape == (size, size) and m.dtype == np.float32
    assert m.min() >= 0 and m.max() <= 1
    assert m[size // 2, size // 2] == 1.0, "opaque in the middle"
    assert m[0, 0] == 0.0 and m[-1, -1] == 0.0, "transparent in the corners"
    if shape == "square":
        assert np.all(m[0] == 0) and np.all(m[:, -1] == 0), "transparent on the whole outer ring (no seam)"
    row = m[size // 2, : size // 2]
    assert np.all(np.diff(row) >= 0), "fades in monotonically from the border"
