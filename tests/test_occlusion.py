"""Faces that cannot be swapped convincingly: covered lower faces (masks) and faces cut by the edge; the measures
that send them to the fallback, and the swap's use of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_obscured_without_a_try, draw_masks
from PIL import Image

from deid.config import SwapConfig
from deid.detect import detect_faces
from deid.occlusion import lower_face_contrast
from deid.swap import swap_face, unswappable

MASKS = {"white": (235, 235, 235), "black": (30, 30, 30), "blue": (90, 140, 200), "light blue": (170, 200, 225)}


@pytest.fixture(scope="module")
def group(face_detector):
    photo = np.asarray(Image.open(Path(__file__).parents[1] / "samples" / "group.jpg").convert("RGB"))
    faces = detect_faces(photo, face_detector)
    assert len(faces) == 9
    return photo, faces


def test_masks_raise_the_lower_face_contrast_and_bare_faces_stay_under_it(group):
    photo, faces = group
    limit = SwapConfig().max_cover_contrast
    bare = [lower_face_contrast(photo, f) for f in faces]
    assert max(bare) < limit and all(unswappable(photo, f, SwapConfig()) in ("", "turned") for f in faces)
    frontal = [f for f in faces if abs(f.turn) < SwapConfig().max_turn]  # all but the cameraman
    assert len(frontal) == 8
    assert max(lower_face_contrast(photo, f) for f in frontal) < 0.5 * limit
    for name, colour in MASKS.items():
        masked = draw_masks(photo, faces, colour)
        values = [lower_face_contrast(masked, f) for f in frontal]
        assert min(values) > limit, f"{name} mask: {values}"
        assert all(unswappable(masked, f, SwapConfig()) == "covered" for f in frontal)
        assert all(unswappable(masked, f, SwapConfig(max_cover_contrast=0)) == "" for f in frontal)  # 0 = off
    # a face whose regions lie outside the photo measures 0, not an error
    f = frontal[0]
    shifted = type(f)(f.box - 5000, f.score, f.landmarks - 5000)
    assert lower_face_contrast(photo, shifted) == 0.0


def test_a_masked_face_gets_the_fallback_without_a_try(tiny_swap_models, astronaut, astronaut_face):
    masked = draw_masks(astronaut, [astronaut_face], MASKS["light blue"])
    out, res = swap_face(masked, astronaut_face, tiny_swap_models, SwapConfig())
    assert_obscured_without_a_try(out, res, masked, astronaut_face, "covered")
    _, res = swap_face(masked, astronaut_face, tiny_swap_models, SwapConfig(max_cover_contrast=0, max_tries=1))
    assert res.tries == 1 and res.reason != "covered"
    with pytest.raises(Exception, match="max_cover_contrast"):
        SwapConfig(max_cover_contrast=-1)


def test_a_face_cut_by_the_edge_gets_the_fallback_without_a_try(tiny_swap_models, astronaut, astronaut_face):
    """More than ``max_outside`` of the box beyond the photo's edge: no swap is tried (the encoder would see the
    edge smeared over the missing part); the part inside is obscured."""
    from deid.swap import outside_share

    f = astronaut_face
    assert outside_share(f, astronaut.shape) == 0.0
    x0, y0, x1, y1 = f.box
    cut_x = int(round((x0 + x1) / 2))  # the photo cropped through the middle of the face
    cropped = np.ascontiguousarray(astronaut[:, cut_x:])
    moved = type(f)(f.box - [cut_x, 0, cut_x, 0], f.score, f.landmarks - [cut_x, 0])
    assert outside_share(moved, cropped.shape) == pytest.approx(0.5, abs=0.02)
    assert unswappable(cropped, moved, SwapConfig()) == "cut"
    assert unswappable(cropped, moved, SwapConfig(max_outside=1.0)) != "cut"  # 1 = no check
    out, res = swap_face(cropped, moved, tiny_swap_models, SwapConfig())
    assert res.method in ("pixelate", "solid") and res.reason == "cut" and res.tries == 0
    assert res.to_dict()["fallback_reason"] == "cut"
    inside = (slice(int(y0), int(y1)), slice(0, int(x1) - cut_x))
    assert np.abs(out[inside].astype(int) - cropped[inside]).mean() > 10  # obscured, not left
    # a sliver outside (under the limit) is still swapped
    nudged = type(f)(f.box - [x0 + 0.05 * (x1 - x0), 0, x0 + 0.05 * (x1 - x0), 0], f.score, f.landmarks)
    assert 0 < outside_share(nudged, astronaut.shape) < SwapConfig().max_outside
    assert unswappable(astronaut, nudged, SwapConfig()) != "cut"
    with pytest.raises(Exception, match="max_outside"):
        SwapConfig(max_outside=1.5)


def test_darker_skin_and_greyscale_photos_are_not_taken_for_masks(group):
    """The measure is relative to the nose bridge: shaded cheeks of darker skin keep less absolute chroma than the
    bridge (the earlier absolute colour difference called them covered), and a greyscale photo has no chroma at
    all, where only a large lightness difference (a dark mask on light skin) counts."""
    from deid.occlusion import _cover_score

    limit = SwapConfig().max_cover_contrast
    # median CIELAB colours of bridge and lower face of a bare Black adult (UTKFace, session 11) that the earlier
    # measure scored 27.2, over the bar
    assert 25 * _cover_score(np.array([41.7, 21.3, 22.2]), np.array([37.5, 10.6, 13.7])) < limit
    # ... and a white / blue mask on the same face
    assert 25 * _cover_score(np.array([41.7, 21.3, 22.2]), np.array([90.0, 0.5, 1.0])) > limit
    assert 25 * _cover_score(np.array([41.7, 21.3, 22.2]), np.array([57.0, 0.6, -36.0])) > limit
    photo, faces = group
    grey = np.repeat(photo.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
    assert max(lower_face_contrast(grey, f) for f in faces) < limit
    frontal = [f for f in faces if abs(f.turn) < SwapConfig().max_turn]
    masked = draw_masks(grey, frontal, MASKS["black"])
    assert min(lower_face_contrast(masked, f) for f in frontal) > limit
