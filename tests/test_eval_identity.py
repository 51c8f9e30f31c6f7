"""Identity judge (dlib ResNet descriptors) on public-domain photos shipped with scikit-image.

Faces used: ``skimage.data.astronaut()`` (Eileen Collins, NASA, public domain) and ``skimage.data.camera()``
(a man behind a camera, CC0 by Lav Varshney). Their boxes are the ones deid's MTCNN finds (fixed here, so this
file does not depend on the detector).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from deid.eval.identity import EMBEDDING_DIM, SAME_PERSON_THRESHOLD, IdentityJudge  # noqa: E402
from deid.types import Face  # noqa: E402

ASTRONAUT_BOX = np.array([179.0, 59.0, 268.0, 176.0], np.float32)
CAMERA_BOX = np.array([200.0, 119.0, 256.0, 195.0], np.float32)


def gray3(img: np.ndarray) -> np.ndarray:
    """Grey copy with three channels (so colour alone cannot tell two photos apart)."""
    g = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2))


@pytest.fixture(scope="module")
def judge() -> IdentityJudge:
    return IdentityJudge.default()


def test_embedding_contract(judge):
    img = skdata.astronaut()
    e = judge.embed(img, ASTRONAUT_BOX)
    assert e.shape == (EMBEDDING_DIM,) and e.dtype == np.float32 and np.all(np.isfinite(e))
    assert judge.embed_batch(img, []).shape == (0, EMBEDDING_DIM)
    batch = judge.embed_batch(img, np.stack([ASTRONAUT_BOX, ASTRONAUT_BOX + 3]))
    assert batch.shape == (2, EMBEDDING_DIM)
    np.testing.assert_allclose(batch[0], e, atol=1e-5)
    face = Face(box=ASTRONAUT_BOX, score=1.0, landmarks=np.zeros((5, 2)))
    np.testing.assert_allclose(judge.embed(img, face), e, atol=1e-5)


def test_same_person_flipped_and_shifted(judge):
    img = skdata.astronaut()
    ref = judge.embed(img, ASTRONAUT_BOX)
    w = img.shape[1]
    flipped = np.ascontiguousarray(img[:, ::-1])
    x0, y0, x1, y1 = ASTRONAUT_BOX
    e_flip = judge.embed(flipped, [w - x1, y0, w - x0, y1])
    # shifted by (23, -11) px and shrunk to 80 %: a different crop, resampled
    m = np.array([[0.8, 0, 23], [0, 0.8, -11]], np.float32)
    moved = cv2.warpAffine(img, m, (w, img.shape[0]), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    box = np.array([x0 * 0.8 + 23, y0 * 0.8 - 11, x1 * 0.8 + 23, y1 * 0.8 - 11])
    e_moved = judge.embed(moved, box)
    for e in (e_flip, e_moved):
        assert judge.same_person(ref, e)
        assert judge.distance(ref, e) < 0.4


def test_different_people_do_not_match(judge):
    astronaut, camera = gray3(skdata.astronaut()), gray3(skdata.camera())
    a, b = judge.embed(astronaut, ASTRONAUT_BOX), judge.embed(camera, CAMERA_BOX)
    assert not judge.same_person(a, b)
    assert judge.distance(a, b) > SAME_PERSON_THRESHOLD
    assert judge.same_person(a, b, threshold=10.0)  # the threshold is the caller's


def test_rejects_bad_inputs(judge):
    img = skdata.astronaut()
    with pytest.raises(ValueError, match="uint8"):
        judge.embed(img.astype(np.float32), ASTRONAUT_BOX)
    with pytest.raises(ValueError, match="x1 > x0"):
        judge.embed(img, [10, 10, 5, 20])


def test_torch_network_equals_dlibs_own(judge):
    """The descriptor network ported to PyTorch gives dlib's descriptors (same chips, same weights), one face at a
    time, several faces of a photo, and one face in each of several photos."""
    assert judge.backend == "torch"
    reference = IdentityJudge.default(backend="dlib")
    astro, cam = skdata.astronaut(), gray3(skdata.camera())
    for img, box in ((astro, ASTRONAUT_BOX), (cam, CAMERA_BOX), (gray3(astro), ASTRONAUT_BOX + 4)):
        np.testing.assert_allclose(judge.embed(img, box), reference.embed(img, box), atol=1e-4)
    boxes = np.stack([ASTRONAUT_BOX, ASTRONAUT_BOX + 3])
    np.testing.assert_allclose(judge.embed_batch(astro, boxes), reference.embed_batch(astro, boxes), atol=1e-4)
    many = judge.embed_many([astro, cam], [ASTRONAUT_BOX, CAMERA_BOX])
    assert many.shape == (2, EMBEDDING_DIM)
    np.testing.assert_allclose(many, reference.embed_many([astro, cam], [ASTRONAUT_BOX, CAMERA_BOX]), atol=1e-4)
    assert judge.embed_many([], []).shape == (0, EMBEDDING_DIM)


def test_dlib_network_reader_refuses_other_files(tmp_path):
    from deid.errors import ModelError
    from deid.eval._common import package_file
    from deid.nets.dlib_resnet import read_dlib_face_net

    bad = tmp_path / "not-a-net.dat"
    bad.write_bytes(b"\x01\x15input_rgb_image_sized" + bytes(64))
    with pytest.raises(ModelError, match="not-a-net.dat"):
        read_dlib_face_net(bad)
    with pytest.raises(ModelError, match="not found"):
        read_dlib_face_net(tmp_path / "missing.dat")
    # dlib's 5-point shape predictor is a dlib file too, but not the network
    with pytest.raises(ModelError, match="not dlib's face recognition network"):
        read_dlib_face_net(package_file("face_recognition_models", "models", "shape_predictor_5_face_landmarks.dat"))


@pytest.mark.parametrize("angle", [0.0, 15.0])
def test_chip_transforms_cut_dlibs_chip(judge, astronaut, astronaut_face, angle):
    """The affine of ``chip_transforms`` samples the chip dlib cuts (also for a turned face, and when the judge
    hands dlib only the region around the face)."""
    h, w = astronaut.shape[:2]
    c = (astronaut_face.box[:2] + astronaut_face.box[2:]) / 2
    rot = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), angle, 1.0)
    img = cv2.warpAffine(astronaut, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
    img = cv2.copyMakeBorder(img, 0, 400, 0, 400, cv2.BORDER_REFLECT)  # the face region is a crop of the image
    box = astronaut_face.box
    tform = judge.chip_transforms(img, [box])
    assert tform.shape == (1, 2, 3)
    ours = cv2.warpAffine(img, tform[0], (150, 150), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    theirs = judge.chips(img, [box])[0]
    assert np.abs(ours.astype(np.int16) - theirs).mean() < 2.0
    assert judge.distance(judge.recognizer.describe([ours])[0], judge.recognizer.describe([theirs])[0]) < 0.03


@pytest.mark.parametrize("angle", [70.0, -60.0])
def test_a_tilted_head_is_judged_turned_upright(judge, astronaut, astronaut_face, angle):
    """A ``Face`` (with landmarks) tilted beyond 20 degrees is turned upright for dlib's shape predictor. The turned
    photo's face is the same person as the upright one, and its solid-filled copy is not: from the upright box alone
    dlib's points land wrong and the filled copy lay at ~0.5 from the original (any filled face did)."""
    from deid.obscure import obscure_face

    cx, cy = astronaut_face.box.reshape(2, 2).mean(axis=0)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, 1.0)
    turned = cv2.warpAffine(astronaut, m, astronaut.shape[1::-1], flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
    lm = astronaut_face.landmarks @ m[:, :2].T + m[:, 2]
    face = Face(box=astronaut_face.box, score=1.0, landmarks=lm.astype(np.float32))  # (the box is about square)
    d = lm[1] - lm[0]
    assert abs(abs(np.degrees(np.arctan2(d[1], d[0]))) - abs(angle)) < 10
    ref = judge.embed(astronaut, astronaut_face)
    assert judge.distance(ref, judge.embed(turned, face)) < 0.4
    filled = obscure_face(turned, face, "solid")
    assert judge.distance(judge.embed(turned, face), judge.embed(filled, face)) > SAME_PERSON_THRESHOLD
    camera = gray3(skdata.camera())
    assert judge.distance(judge.embed(camera, CAMERA_BOX), judge.embed(gray3(turned), face)) > SAME_PERSON_THRESHOLD
