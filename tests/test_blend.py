"""Colour matching, blending and grain matching of a synthetic crop."""

from __future__ import annotations

import numpy as np

from deid.align import align_face, face_mask
from deid.blend import blend_face, grain_sigma, match_colour


def test_match_colour_moves_statistics():
    rng = np.random.default_rng(0)
    src = np.clip(rng.normal(60, 10, (32, 32, 3)), 0, 255).astype(np.uint8)
    ref = np.clip(rng.normal(180, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
    out = match_colour(src, ref, np.ones((32, 32), np.float32))
    assert abs(out.mean() - ref.mean()) < 8 and abs(out.std() - ref.std()) < 8


def test_blend_changes_only_the_face_and_matches_grain(astronaut, astronaut_face):
    aligned = align_face(astronaut, astronaut_face, 64, "deid")
    flat = np.full((64, 64, 3), 150, np.uint8)  # a perfectly clean synthetic face, upscaled ~2x into the photo
    out = blend_face(astronaut, flat, aligned.image, aligned.matrix, seed=1)
    assert out.shape == astronaut.shape and not np.array_equal(out, astronaut)
    assert np.array_equal(out[400:, :100], astronaut[400:, :100])  # far from the face: untouched
    x0, y0, x1, y1 = (int(v) for v in astronaut_face.box)
    inner = np.zeros(astronaut.shape[:2], np.float32)
    cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0) // 4
    inner[cy - r : cy + r, cx - r : cx + r] = 1
    g_out, g_orig = grain_sigma(out, inner), grain_sigma(astronaut, inner)
    assert 0.5 * g_orig < g_out < 1.6 * g_orig  # not visibly cleaner than the original face
    assert np.array_equal(out, blend_face(astronaut, flat, aligned.image, aligned.matrix, seed=1))


def test_grain_sigma_reads_only_the_weighted_part_and_agrees_with_the_whole_image_formula():
    """grain_sigma works on the weighted part (plus the blur's reach) only: the same value as the weighted fine
    detail of the whole image, for weights inside it, at its edge and for none."""
    import cv2

    def whole(img, weight):
        f = img.astype(np.float32)
        hp = f - cv2.GaussianBlur(f, (0, 0), 1.0)
        w = weight[..., None].astype(np.float32)
        return float(np.sqrt((hp**2 * w).sum() / max(w.sum() * 3, 1e-6)))

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 150, 3)).astype(np.uint8)
    img[:, :75] = cv2.GaussianBlur(img[:, :75], (0, 0), 2.0)  # smooth left half: the weights' place matters
    yy, xx = np.mgrid[:120, :150]
    oval = (((yy - 60) / 40.0) ** 2 + ((xx - 70) / 30.0) ** 2 < 1).astype(np.float32)
    soft = oval * rng.random(oval.shape).astype(np.float32)
    corner = np.zeros_like(oval)
    corner[:6, 140:] = 1
    for im in (img, img.astype(np.float32) + 0.25):
        for w in (oval, soft, corner, oval > 0):
            assert abs(grain_sigma(im, w) - whole(im, w)) < 1e-4 * whole(im, w)
    assert grain_sigma(img, np.zeros_like(oval)) == 0.0
    assert grain_sigma(img, corner) > 2 * grain_sigma(img, (xx < 40).astype(np.float32))


def test_face_mask_used_for_blend_is_soft():
    m = face_mask(64, feather=0.12)
    assert 0 < (m[(m > 0) & (m < 1)]).size


def test_poisson_blend_carries_the_photos_lighting_gradient():
    """Side light: the photo darkens left to right; a flat synthetic face pasted by Poisson editing takes on that
    gradient, alpha blending (global colour match) does not."""
    from deid.types import Face

    h, w = 240, 240
    ramp = np.linspace(230, 40, w, dtype=np.float32)
    frame = np.repeat(np.repeat(ramp[None, :, None], h, axis=0), 3, axis=2).astype(np.uint8)
    lm = np.array([[100, 105], [140, 105], [120, 125], [104, 145], [136, 145]], np.float64)
    face = Face(box=np.array([80, 80, 160, 170], np.float32), score=1.0, landmarks=lm.astype(np.float32))
    aligned = align_face(frame, face, 64, "deid")
    flat = np.full((64, 64, 3), 128, np.uint8)
    alpha = blend_face(frame, flat, aligned.image, aligned.matrix, seed=0).astype(float)
    poisson = blend_face(frame, flat, aligned.image, aligned.matrix, seed=0, method="poisson").astype(float)
    left, right = (slice(115, 135), slice(105, 112)), (slice(115, 135), slice(128, 135))
    drop = frame[left].mean() - frame[right].mean()
    assert abs((poisson[left].mean() - poisson[right].mean()) - drop) < abs((alpha[left].mean() - alpha[right].mean()) - drop)
    assert np.array_equal(poisson, blend_face(frame, flat, aligned.image, aligned.matrix, seed=0, method="poisson").astype(float))
    assert np.array_equal(poisson[:, :40], frame[:, :40].astype(float))  # far from the face: untouched


def test_poisson_blend_at_the_frame_edge_falls_back_to_alpha(astronaut, astronaut_face):
    shifted = astronaut_face.__class__(box=astronaut_face.box - [astronaut_face.box[0] + 20, 0, astronaut_face.box[0] + 20, 0],
                                       score=astronaut_face.score,
                                       landmarks=astronaut_face.landmarks - [astronaut_face.box[0] + 20, 0])
    aligned = align_face(astronaut, shifted, 64, "deid")
    flat = np.full((64, 64, 3), 150, np.uint8)
    a = blend_face(astronaut, flat, aligned.image, aligned.matrix, seed=2)
    p = blend_face(astronaut, flat, aligned.image, aligned.matrix, seed=2, method="poisson")
    assert np.array_equal(a, p)
