"""Shared fixtures: the detector, the astronaut photo with its reference detection, and composed multi-face scenes.

Scenes are built from scikit-image's public-domain ``astronaut`` photo (Eileen Collins, NASA): its face region is
pasted at chosen sizes and in-plane rotations onto a noisy neutral background. The ground truth of each pasted face
is the astronaut's own detection mapped through the same affine transform.

MTCNN on large images is the slow part of the suite, so the detector, the scenes and their detections are
session-scoped and shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import skimage.data

from deid.config import DetectConfig
from deid.detect import FaceDetector, detect_faces
from deid.types import Face


# Region of the astronaut photo pasted into scenes, as a multiple of the detected face box (keeps hair and collar
# so that the detector sees a natural face context rather than a hard-edged face tile).
PASTE_CONTEXT = 1.8


@dataclass(frozen=True)
class PlacedFace:
    """Ground truth of one pasted face, in scene pixels."""

    center: np.ndarray  # [2] float64, centre of the face box (x, y)
    size: float  # face box side (the larger one), pixels
    angle: float  # in-plane rotation, degrees, counter-clockwise as displayed
    landmarks: np.ndarray  # [5, 2] float64, the reference landmarks mapped into the scene

    @property
    def inter_ocular(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


@dataclass(frozen=True)
class Scene:
    """A composed photo and the faces pasted into it."""

    image: np.ndarray  # [H, W, 3] uint8 RGB
    faces: tuple[PlacedFace, ...]


@pytest.fixture(scope="session")
def face_detector() -> FaceDetector:
    """MTCNN with the default ``DetectConfig``, on the CPU."""
    return FaceDetector(DetectConfig(), device="cpu")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """``[512, 512, 3]`` uint8 RGB photo with one frontal face of about 117 px."""
    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def astronaut_face(astronaut, face_detector) -> Face:
    """The reference detection of the astronaut's face (the ground truth that scenes transform)."""
    faces = detect_faces(astronaut, face_detector)
    assert len(faces) == 1, f"expected one face in skimage.data.astronaut(), found {len(faces)}"
    return faces[0]


def noisy_background(height: int, width: int, seed: int) -> np.ndarray:
    """``[H, W, 3]`` uint8: a smooth grey-blue gradient with mild Gaussian noise (nothing that looks like a face)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 110 + 30 * (xx / width) + 20 * (yy / height)  # [H, W]
    tint = np.array([0.95, 1.0, 1.08], np.float32)
    img = base[..., None] * tint + 6 * rng.standard_normal((height, width, 3), dtype=np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def paste_face(
    scene: np.ndarray, source: np.ndarray, face: Face, center: tuple[float, float], size: float, angle: float
) -> PlacedFace:
    """Paste ``face`` of ``source`` into ``scene`` (in place) with its box side ``size`` px, rotated by ``angle`` deg.

    The source is first shrunk with area averaging (no aliasing), then rotated and placed; a feathered square of
    ``PASTE_CONTEXT`` times the face box is blended in.
    """
    scale = size / face.size
    src_center = (face.box[:2] + face.box[2:]) / 2
    small = source
    pre = 1.0
    if scale < 1:
        pre = scale
        small = cv2.resize(source, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rest = scale / pre  # remaining scale after the area resize (1 when shrinking)
    # source pixel -> scene pixel: rotate and scale about the face centre, then move it to ``center``
    rot = cv2.getRotationMatrix2D((float(src_center[0] * pre), float(src_center[1] * pre)), angle, rest)
    rot[:, 2] += np.asarray(center) - src_center * pre
    half = PASTE_CONTEXT * face.size * pre / 2
    mask = np.zeros(small.shape[:2], np.float32)
    cx, cy = src_center * pre
    x0, y0, x1, y1 = (int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    mask[max(y0, 0) : y1, max(x0, 0) : x1] = 1
    mask = cv2.GaussianBlur(mask, (0, 0), max(half * 0.08, 0.8))
    # blend only over the bounding box of the pasted square (warping the whole scene is slow at 4K)
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ rot.T
    h, w = scene.shape[:2]
    bx0, by0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 2, 0)
    bx1, by1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 2, (w, h))
    roi = rot.copy()
    roi[:, 2] -= (bx0, by0)
    size_roi = (int(bx1 - bx0), int(by1 - by0))
    warped = cv2.warpAffine(small, roi, size_roi, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = cv2.warpAffine(mask, roi, size_roi, flags=cv2.INTER_LINEAR)[..., None]
    region = scene[by0:by1, bx0:bx1].astype(np.float32)
    scene[by0:by1, bx0:bx1] = np.clip(np.rint(region * (1 - alpha) + warped * alpha), 0, 255).astype(np.uint8)
    full = rot.copy()
    full[:, :2] *= pre  # original source pixel -> scene pixel
    lm = np.concatenate([face.landmarks.astype(np.float64), np.ones((5, 1))], axis=1) @ full.T
    return PlacedFace(center=np.asarray(center, np.float64), size=float(size), angle=float(angle), landmarks=lm)


def compose_scene(
    source: np.ndarray,
    face: Face,
    shape: tuple[int, int],
    placements: list[tuple[float, float, float, float]],
    seed: int = 0,
) -> Scene:
    """Build a scene of ``shape`` ``(H, W)`` with one pasted face per ``(x, y, size, angle)`` placement."""
    img = noisy_background(*shape, seed=seed)
    placed = tuple(paste_face(img, source, face, (x, y), s, a) for x, y, s, a in placements)
    return Scene(image=img, faces=placed)


def match_faces(truth: tuple[PlacedFace, ...], found: list[Face]) -> list[Face | None]:
    """For each true face, the detection whose box centre is nearest and within 35% of the face size, else None."""
    out: list[Face | None] = []
    for t in truth:
        best, best_d = None, 0.35 * t.size
        for f in found:
            d = float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - t.center))
            if d < best_d:
                best, best_d = f, d
        out.append(best)
    return out


def eye_error(truth: PlacedFace, found: Face) -> float:
    """Largest eye-landmark error as a fraction of the true inter-ocular distance."""
    err = np.linalg.norm(found.landmarks[:2].astype(np.float64) - truth.landmarks[:2], axis=1)
    return float(err.max() / truth.inter_ocular)


# Scenes shared by the detection and CLI tests: (x, y, face size, angle) per face.
SCENE_720P = [(200, 200, 200, 0), (560, 160, 80, -15), (820, 170, 80, 20), (1080, 200, 40, 10),
              (300, 560, 40, -20), (640, 520, 120, 5), (1000, 560, 60, -8)]
# 4K: the whole-image pass runs at half size, where 20 px faces are 10 px: only the upscaled tiles can find them
SCENE_2160P_SMALL = [(770, 540, 20, 0), (1920, 650, 20, 10), (3070, 650, 22, -10), (1150, 1620, 20, 5),
                     (2690, 1510, 24, 0)]
SCENE_1080P_SMALL = [(200, 200, 20, 0), (520, 260, 22, 10), (900, 180, 20, -10), (1400, 300, 24, 0),
                     (300, 800, 20, 5), (800, 850, 40, -15), (1300, 750, 80, 0), (1700, 900, 200, 12)]


@pytest.fixture(scope="session")
def scene_720p(astronaut, astronaut_face) -> Scene:
    """1280x720, seven faces of 40..200 px, rotations -20..20 deg."""
    return compose_scene(astronaut, astronaut_face, (720, 1280), SCENE_720P, seed=1)


@pytest.fixture(scope="session")
def scene_720p_faces(scene_720p, face_detector) -> list[Face]:
    return detect_faces(scene_720p.image, face_detector)


@pytest.fixture(scope="session")
def scene_1080p_small(astronaut, astronaut_face) -> Scene:
    """1920x1080 with five faces of 20..24 px (the tiled small-face pass) and three of 40..200 px."""
    return compose_scene(astronaut, astronaut_face, (1080, 1920), SCENE_1080P_SMALL, seed=2)


@pytest.fixture(scope="session")
def scene_1080p_small_faces(scene_1080p_small, face_detector) -> list[Face]:
    return detect_faces(scene_1080p_small.image, face_detector)


@pytest.fixture(scope="session")
def scene_2160p_small(astronaut, astronaut_face) -> Scene:
    """3840x2160 with five faces of 20..24 px, found only by the tiled small-face pass."""
    return compose_scene(astronaut, astronaut_face, (2160, 3840), SCENE_2160P_SMALL, seed=3)


@pytest.fixture(scope="session")
def tiny_swap_models():
    """Random tiny generator (32 px, conditional) + encoder + the real dlib identity judge (swap tests)."""
    from deid.config import EncoderConfig, GeneratorConfig
    from deid.eval.identity import IdentityJudge
    from deid.nets.encoder import Encoder
    from deid.nets.generator import Generator
    from deid.swap import SwapModels
    import torch

    torch.manual_seed(0)
    G = Generator(GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age"))).eval()
    E = Encoder(EncoderConfig.for_generator(G.cfg, channel_base=256, channel_max=32)).eval()
    return SwapModels(G=G, E=adult_attribute_head(E), judge=IdentityJudge.default())


def adult_attribute_head(E):
    """A random encoder whose attribute head reads faces as adults of about 30: at random it reads babies, whom the
    swap obscures without a try (``SwapConfig.min_swap_age``)."""
    import torch

    from deid.labels import encode_labels

    with torch.no_grad():
        E.attr[1].weight.mul_(0.1)
        E.attr[1].bias[1] = float(encode_labels(30.0, 0.0)[0, 1])
    return E


@pytest.fixture(scope="module")
def client(live):
    """HTTP client of the module's ``live`` server (tests/test_server*.py define ``live``)."""
    import httpx

    with httpx.Client(base_url=live.base_url, timeout=60.0) as c:  # a swap of three faces takes seconds on 1 CPU thread
        yield c


def draw_masks(image: np.ndarray, faces: list[Face], colour: tuple[int, int, int]) -> np.ndarray:
    """A flat face mask drawn over each face, from just under the eyes (0.3 eye distances) to below the chin."""
    import cv2

    out = image.copy()
    for f in faces:
        (le, re, _, lm, rm), iod = f.landmarks, f.inter_ocular
        top, chin = (le[1] + re[1]) / 2 + 0.3 * iod, (lm[1] + rm[1]) / 2 + 0.75 * iod
        pts = [[le[0] - 0.6 * iod, top], [re[0] + 0.6 * iod, top], [rm[0] + 0.55 * iod, chin - 0.3 * iod],
               [(lm[0] + rm[0]) / 2, chin], [lm[0] - 0.55 * iod, chin - 0.3 * iod]]
        cv2.fillPoly(out, [np.array(pts, np.int32)], colour)
    return out


def assert_obscured_without_a_try(out: np.ndarray, res, original: np.ndarray, face: Face, reason: str) -> None:
    """``deid.swap.swap_face`` gave ``face`` the fallback without a try, for ``reason``, and the face in ``out``
    is obscured (not left as it was in ``original``)."""
    assert res.method in ("pixelate", "solid") and res.reason == reason and res.tries == 0 and res.seed == -1
    assert res.to_dict()["fallback_reason"] == reason
    x0, y0, x1, y1 = face.box.astype(int)
    assert np.abs(out[y0:y1, x0:x1].astype(int) - original[y0:y1, x0:x1]).mean() > 10
