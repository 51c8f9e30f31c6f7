"""deid.detect: recall and landmark accuracy on a real photo and on composed multi-face scenes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import compose_scene, draw_masks, eye_error, match_faces, noisy_background

from deid.config import MTCNN_STOCK_THRESHOLDS, DetectConfig
from deid.detect import FaceDetector, detect_faces
from deid.errors import ConfigError
from deid.types import Face

# Largest accepted eye-landmark error, as a fraction of the inter-ocular distance (measured: <= 0.07 for faces of
# 40 px and more, <= 0.11 for 20-24 px faces).
EYE_TOLERANCE = 0.15


def test_astronaut_has_one_confident_face_with_ordered_landmarks(astronaut_face: Face):
    lm = astronaut_face.landmarks
    assert astronaut_face.score > 0.99
    assert 100 < astronaut_face.size < 135
    assert lm[0, 0] < lm[1, 0], "left eye (image left) comes first"
    assert lm[3, 0] < lm[4, 0], "left mouth corner comes first"
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1]), "eyes above nose above mouth"
    x0, y0, x1, y1 = astronaut_face.box
    assert np.all((lm[:, 0] > x0) & (lm[:, 0] < x1) & (lm[:, 1] > y0) & (lm[:, 1] < y1))


def test_face_contract_shapes_dtypes_and_json(astronaut_face: Face):
    assert astronaut_face.box.shape == (4,) and astronaut_face.box.dtype == np.float32
    assert astronaut_face.landmarks.shape == (5, 2) and astronaut_face.landmarks.dtype == np.float32
    assert 0 <= astronaut_face.score <= 1
    d = json.loads(json.dumps(astronaut_face.to_dict()))
    assert set(d) == {"box", "score", "landmarks"} and len(d["landmarks"]) == 5


def test_scene_720p_finds_every_face_with_accurate_eyes(scene_720p, scene_720p_faces):
    matches = match_faces(scene_720p.faces, scene_720p_faces)
    missed = [t.size for t, f in zip(scene_720p.faces, matches) if f is None]
    assert not missed, f"missed faces of size {missed}"
    assert len(scene_720p_faces) == len(scene_720p.faces), "no detections on the plain background"
    errors = [eye_error(t, f) for t, f in zip(scene_720p.faces, matches)]
    assert max(errors) < EYE_TOLERANCE, f"eye errors (fraction of inter-ocular distance): {np.round(errors, 3)}"


def test_scene_1080p_finds_20px_faces_through_tiling(scene_1080p_small, scene_1080p_small_faces):
    matches = match_faces(scene_1080p_small.faces, scene_1080p_small_faces)
    missed = [t.size for t, f in zip(scene_1080p_small.faces, matches) if f is None]
    assert not missed, f"missed faces of size {missed}"
    assert len(scene_1080p_small_faces) == len(scene_1080p_small.faces)
    errors = [eye_error(t, f) for t, f in zip(scene_1080p_small.faces, matches)]
    assert max(errors) < EYE_TOLERANCE, f"eye errors (fraction of inter-ocular distance): {np.round(errors, 3)}"


def test_scene_2160p_20px_faces_need_the_tiled_pass(scene_2160p_small, face_detector):
    """At 4K the whole-image pass works at half size; the tiled pass must find the 20 px faces."""
    tiled = detect_faces(scene_2160p_small.image, face_detector)
    matches = match_faces(scene_2160p_small.faces, tiled)
    assert all(f is not None for f in matches), f"found {sum(f is not None for f in matches)} of 5 faces"
    assert len(tiled) == len(scene_2160p_small.faces)
    errors = [eye_error(t, f) for t, f in zip(scene_2160p_small.faces, matches)]
    assert max(errors) < EYE_TOLERANCE, f"eye errors (fraction of inter-ocular distance): {np.round(errors, 3)}"
    whole_only = detect_faces(scene_2160p_small.image, FaceDetector(DetectConfig(tile=0), device="cpu"))
    assert sum(f is not None for f in match_faces(scene_2160p_small.faces, whole_only)) < len(matches)


def test_faces_come_largest_first(scene_720p_faces):
    sizes = [f.size for f in scene_720p_faces]
    assert sizes == sorted(sizes, reverse=True)


def test_no_face_gives_empty_list(face_detector):
    assert detect_faces(noisy_background(240, 320, seed=5), face_detector) == []


def test_min_face_drops_smaller_faces(scene_720p):
    """Every face of at least min_face is found; faces well under it (40 and 60 px for 100) are not. Boxes down to
    0.8 min_face are kept (MTCNN's box sizes vary by that much), so the 80 px faces may be found too."""
    det = FaceDetector(DetectConfig(min_face=100, tile=0), device="cpu")
    found = detect_faces(scene_720p.image, det)
    big = tuple(t for t in scene_720p.faces if t.size >= 100)
    assert all(f is not None for f in match_faces(big, found))
    assert len(found) <= len([t for t in scene_720p.faces if t.size >= 80])
    assert all(f.size >= 80 for f in found)


@pytest.mark.parametrize("image", [np.zeros((32, 32), np.uint8), np.zeros((32, 32, 3), np.float32),
                                   np.zeros((32, 32, 4), np.uint8)])
def test_rejects_arrays_that_are_not_rgb_uint8(face_detector, image):
    with pytest.raises(ValueError, match="uint8 RGB"):
        detect_faces(image, face_detector)


@pytest.mark.parametrize("field, value", [("min_face", 2), ("min_score", 1.5), ("tile", 50), ("nms_iou", 0.0)])
def test_detect_config_validates(field, value):
    with pytest.raises(ConfigError):
        DetectConfig(**{field: value})


def test_pyramid_levels_follow_the_image():
    """The pyramid's levels are area resamplings of the image itself (one contiguous copy is reused across levels):
    a second image of the same size (even at a reused address) gets levels of its own."""
    import cv2
    import torch

    from deid.detect import _area_resample

    rng = np.random.default_rng(0)
    for _ in range(2):
        img = cv2.GaussianBlur(rng.uniform(0, 255, (300, 400, 3)).astype(np.float32), (0, 0), 2)
        t = torch.from_numpy(img).permute(2, 0, 1)[None]
        for h, w in ((213, 284), (151, 201), (107, 142), (76, 101), (54, 71)):
            out = _area_resample(t, (h, w), _torch_area=None)[0].permute(1, 2, 0).numpy()
            direct = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            assert out.shape == direct.shape and np.abs(out - direct).max() < 1e-3
        del t  # the next image may land at the same address


TILTED = [(220, 200, 150, 50), (640, 190, 120, -65), (1060, 200, 100, 90), (330, 540, 80, -90), (900, 540, 60, 40)]


def test_heads_tilted_up_to_90_degrees_are_found_by_the_turned_passes(astronaut, astronaut_face, face_detector):
    """Upright MTCNN finds faces to about +-35 degrees; the passes over the turned photo find the rest, with
    landmarks as accurate as upright faces get (they are confirmed in an upright crop of their own)."""
    scene = compose_scene(astronaut, astronaut_face, (720, 1280), TILTED, seed=4)
    found = detect_faces(scene.image, face_detector)
    matches = match_faces(scene.faces, found)
    missed = [(t.size, a) for t, f, (*_, a) in zip(scene.faces, matches, TILTED) if f is None]
    assert not missed, f"missed faces (size, angle): {missed}"
    assert len(found) == len(TILTED), "one detection per face, none on the background"
    errors = [eye_error(t, f) for t, f in zip(scene.faces, matches)]
    assert max(errors) < EYE_TOLERANCE, f"eye errors (fraction of inter-ocular distance): {np.round(errors, 3)}"
    rolls = [a for *_, a in TILTED]
    assert all(f.found_by == "turned" for f, a in zip(matches, rolls) if abs(a) > 45), [f.found_by for f in matches]
    # (the default thresholds' R-net bar lets the upright pass find some of them too, with poor landmarks, which the
    # turned detections replace; facenet-pytorch's stock cascade upright alone misses them)
    upright = detect_faces(scene.image, FaceDetector(DetectConfig(rotations=(), thresholds=MTCNN_STOCK_THRESHOLDS)))
    assert sum(f is None for f in match_faces(scene.faces, upright)) >= 2, "upright alone should miss them"


def test_turned_passes_leave_upright_faces_as_they_were(scene_720p, scene_720p_faces):
    """Faces within MTCNN's upright range keep the upright pass's detection (no duplicate, same landmarks)."""
    upright = detect_faces(scene_720p.image, FaceDetector(DetectConfig(rotations=())))
    assert len(upright) == len(scene_720p_faces)
    for a, b in zip(upright, scene_720p_faces):
        assert np.abs(a.landmarks - b.landmarks).max() < 0.05 * a.inter_ocular


def test_turned_passes_in_a_thread_of_their_own_find_the_same_faces(astronaut, astronaut_face, face_detector,
                                                                    monkeypatch):
    """With more than one torch thread the turned and border passes run beside the upright ones; with one, after them:
    the same faces either way (to float rounding, which depends on the thread count and can tip which of two
    near-equal candidates NMS keeps: boxes within 2 % of the face size)."""
    import torch

    import deid.detect

    jobs = []
    pool = deid.detect._POOL
    monkeypatch.setattr(deid.detect, "_POOL", type("Spy", (), {
        "submit": staticmethod(lambda fn, *a: jobs.append(fn.__name__) or pool.submit(fn, *a))})())
    scene = compose_scene(astronaut, astronaut_face, (720, 1280), TILTED, seed=4)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append(detect_faces(scene.image, face_detector))
    finally:
        torch.set_num_threads(threads)
    assert sorted(jobs) == ["_border_passes", "_rotated_passes"]  # only the two-thread run used the workers
    assert len(runs[0]) == len(runs[1]) == len(TILTED)
    for a, b in zip(*runs):
        assert np.abs(a.box - b.box).max() < 0.02 * a.size and np.abs(a.landmarks - b.landmarks).max() < 0.02 * a.size


def test_masked_faces_that_mtcnns_stock_thresholds_drop_are_found():
    """Faces with the lower half covered: R-net (at facenet-pytorch's 0.7) drops some that O-net itself scores
    >= 0.9; the default thresholds find every face the stock ones find, and more (the group sample, white and dark
    masks; the final bar, min_score, is the same for both)."""
    from pathlib import Path

    from PIL import Image

    photo = np.asarray(Image.open(Path(__file__).parents[1] / "samples" / "group.jpg").convert("RGB"))
    stock = FaceDetector(DetectConfig(thresholds=MTCNN_STOCK_THRESHOLDS, rotations=()))
    default = FaceDetector(DetectConfig(rotations=()))
    faces = detect_faces(photo, stock)
    assert len(faces) == 9
    gained = 0
    for colour in ((235, 235, 235), (30, 30, 30)):
        masked = draw_masks(photo, faces, colour)
        a, b = detect_faces(masked, stock), detect_faces(masked, default)
        assert all(f.score >= 0.9 for f in b)
        assert len(a) < len(faces)  # the masks do hide faces from the stock cascade
        centres = np.array([(f.box[:2] + f.box[2:]) / 2 for f in b])
        for f in a:  # every face found by the stock thresholds is still found
            assert np.linalg.norm(centres - (f.box[:2] + f.box[2:]) / 2, axis=1).min() < 0.35 * f.size
        gained += len(b) - len(a)
    assert gained >= 2


def test_faces_cut_in_half_by_the_edge_are_found_by_the_border_passes(astronaut, astronaut_face, face_detector):
    """A face cut near its middle by the photo's edge: MTCNN alone misses it; the border passes (strips mirrored
    beyond each edge) find it, once, with a box that reaches beyond the edge (the cut-off part), and never report
    the mirror image of a face as a face of its own (benchmarks/border.py measures recall by the share inside)."""
    placements = [(639, 200, 150, 0), (200, 479, 80, 0), (320, 240, 90, 0)]  # right edge, bottom edge, inside
    scene = compose_scene(astronaut, astronaut_face, (480, 640), placements, seed=3)
    without = detect_faces(scene.image, FaceDetector(dataclasses.replace(face_detector.config, border_min_face=0)))
    found = detect_faces(scene.image, face_detector)
    hits = match_faces(scene.faces, found)
    assert all(h is not None for h in hits) and len(found) == 3
    assert all(h is None for h in match_faces(scene.faces[:2], without))  # MTCNN alone misses both cut faces
    right, bottom = hits[0], hits[1]
    assert right.box[2] > 640 > (right.box[0] + right.box[2]) / 2
    assert bottom.box[3] > 480 > (bottom.box[1] + bottom.box[3]) / 2
    assert [h.found_by for h in hits] == ["border", "border", "upright"]
    # the inside face is the upright pass's own detection, untouched
    inside = [f for f in without if match_faces(scene.faces[2:], [f])[0] is not None]
    assert len(inside) == 1 and np.allclose(inside[0].box, hits[2].box)
    # a face near the edge but wholly inside is found once (its mirror image beyond the edge is not a face)
    near = compose_scene(astronaut, astronaut_face, (480, 640), [(60, 240, 100, 0)], seed=4)
    assert len(detect_faces(near.image, face_detector)) == 1


def test_find_again_finds_the_face_near_a_box_and_nothing_where_there_is_none(astronaut, astronaut_face,
                                                                             face_detector):
    """``find_again``: the face MTCNN finds where a face was (the swap guard judges a new face in that box), from a
    box moved by a fifth of the face; None on a blank image; a box past the photo's edge is padded, not an error."""
    from deid.detect import find_again
    from deid.track import box_iou

    moved = dataclasses.replace(astronaut_face, box=astronaut_face.box + 0.2 * astronaut_face.size * np.float32(1))
    again = find_again(astronaut, moved, face_detector)
    assert again is not None
    assert float(box_iou(again.box, astronaut_face.box)[0, 0]) > 0.8
    assert np.abs(again.landmarks - astronaut_face.landmarks).max() < 0.1 * astronaut_face.inter_ocular
    assert find_again(np.full_like(astronaut, 128), astronaut_face, face_detector) is None
    edge = dataclasses.replace(astronaut_face, box=np.array([-60, -60, 40, 40], np.float32))
    assert find_again(astronaut, edge, face_detector) is None
