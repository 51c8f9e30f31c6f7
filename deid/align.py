"""Five-point face alignment to a canonical square crop, its inverse, and feathered paste-back.

The crop geometry follows the FFHQ recipe (Karras et al., ``recreate_aligned_images``): from the eye centres and
the mouth centre it builds an oriented square ``quad``. Deviation from upstream: FFHQ uses 68 dlib landmarks; here
the eye centres come straight from MTCNN's five points and the mouth centre is the mean of the two mouth corners.
Two templates exist:

* ``"ffhq"``: the official framing (centre 0.1 of the eye-to-mouth vector below the eyes, side 2x the base size),
  for official FFHQ generators.
* ``"deid"``: a tight framing (centre 0.55 of the way from eyes to mouth, side 1.1x the base size) that fits inside the
  UTKFace crops the default model is trained on, so almost no crop needs padding and the face uses most pixels.

The same functions prepare training data (``deid data prepare``) and run at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .types import AlignedFace, Face

__all__ = ["Template", "TEMPLATES", "crop_matrix", "align_face", "paste_back", "face_mask", "warp_to_frame"]


@dataclass(frozen=True)
class Template:
    """Canonical crop: where its centre sits and how large it is, relative to eyes and mouth."""

    center_shift: float  # crop centre = eye centre + center_shift * (mouth centre - eye centre)
    scale: float  # crop side = scale * max(2 * eye distance, 1.8 * eye-to-mouth distance)


TEMPLATES = {"ffhq": Template(center_shift=0.1, scale=2.0), "deid": Template(center_shift=0.55, scale=1.1)}


def crop_matrix(landmarks: np.ndarray, size: int, template: str | Template = "deid") -> np.ndarray:
    """Affine ``[2, 3]`` float64 taking crop pixel coordinates ``(u, v, 1)`` to frame pixel coordinates.

    Args:
        landmarks: ``[5, 2]`` MTCNN points in frame pixels (left eye, right eye, nose, left and right mouth corner).
        size: crop side ``S`` in pixels.
        template: a name in ``TEMPLATES`` or a ``Template``.
    """
    t = TEMPLATES[template] if isinstance(template, str) else template
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_avg = (lm[0] + lm[1]) / 2
    eye_to_eye = lm[1] - lm[0]
    eye_to_mouth = (lm[3] + lm[4]) / 2 - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # eye line, corrected by the face's vertical axis
    x /= max(np.hypot(*x), 1e-6)
    half = t.scale / 2 * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    x *= half
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * t.center_shift
    # pixel centre u in [0, S) maps to the quad coordinate (2(u+0.5)/S - 1) in [-1, 1]
    a = np.stack([2 * x / size, 2 * y / size], axis=1)  # [2, 2]
    b = c + a @ np.array([0.5, 0.5]) - x - y
    return np.concatenate([a, b[:, None]], axis=1)


def _invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m.astype(np.float64))


def align_face(image: np.ndarray, face: Face, size: int, template: str | Template = "deid") -> AlignedFace:
    """Cut the canonical crop of ``face`` out of ``image``.

    Args:
        image: ``[H, W, 3]`` uint8 RGB frame.
        face: the detection, in frame coordinates.
        size: crop side in pixels.
        template: crop template (must match the generator's ``align_template``).

    Returns:
        ``AlignedFace`` with the ``[size, size, 3]`` uint8 crop and the crop -> frame matrix.

    Large faces are first shrunk with area averaging so that the crop does not alias. Parts of the crop outside the
    frame are filled by reflection.
    """
    m = crop_matrix(face.landmarks, size, template)
    scale = float(np.hypot(m[0, 0], m[1, 0]))  # frame pixels per crop pixel
    src, m_src = image, m
    if scale > 1.5:
        shrink = scale / 1.0
        # only the region around the crop is resized, so cost does not grow with the frame size
        corners = m @ np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64).T
        x0, y0 = np.floor(corners.min(axis=1)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(axis=1)).astype(int) + 2
        h, w = image.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            roi = image[y0:y1, x0:x1]
            nw, nh = max(int(round((x1 - x0) / shrink)), 1), max(int(round((y1 - y0) / shrink)), 1)
            src = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            sx, sy = nw / (x1 - x0), nh / (y1 - y0)
            # frame -> small: p' = (p - origin + 0.5) * s - 0.5 (pixel-centre convention of cv2.resize)
            to_small = np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5]])
            m_src = to_small @ np.vstack([m, [0, 0, 1]])
    crop = cv2.warpAffine(src, _invert(m_src), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return AlignedFace(image=crop, matrix=m, face=face)


def face_mask(size: int, feather: float = 0.1, shape: str = "ellipse") -> np.ndarray:
    """Soft mask ``[size, size]`` float32 in [0, 1] in crop coordinates: 1 inside the face, fading to 0.

    ``feather`` is the width of the fade as a fraction of ``size``. ``shape`` is ``"ellipse"`` (the face oval of the
    ``deid`` template) or ``"square"`` (the whole crop).
    """
    f = max(feather * size, 1.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == "square":
        d = np.minimum.reduce([xx, yy, size - xx, size - yy])  # distance to the border
        return np.clip((d - 0.5) / f, 0, 1).astype(np.float32)  # 0 on the outermost pixel ring
    # ellipse covering the face oval: horizontally 0.42 S, vertically 0.48 S around a point slightly above centre
    cx, cy, rx, ry = size * 0.5, size * 0.47, size * 0.42, size * 0.5
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    # signed distance approx (1 - r) * min radius; fade over f pixels inside the ellipse edge
    d = (1 - r) * min(rx, ry)
    return np.clip(d / f, 0, 1).astype(np.float32)


def warp_to_frame(
    crop: np.ndarray, matrix: np.ndarray, frame_shape: tuple[int, int], interpolation: int = cv2.INTER_LINEAR
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Warp a crop-space array (``[S, S]`` or ``[S, S, C]``, float32) into the frame, only over its bounding box.

    Returns the warped array over the region and the region ``(x0, y0, x1, y1)`` in frame pixels.
    """
    s = crop.shape[0]
    corners = matrix @ np.array([[0, 0, 1], [s, 0, 1], [0, s, 1], [s, s, 1]], dtype=np.float64).T
    h, w = frame_shape
    x0, y0 = np.maximum(np.floor(corners.min(axis=1)).astype(int) - 1, 0)
    x1, y1 = np.ceil(corners.max(axis=1)).astype(int) + 1
    x1, y1 = min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0) + crop.shape[2:], np.float32), (0, 0, 0, 0)
    m = matrix.copy()
    m[:, 2] -= (x0, y0)
    out = cv2.warpAffine(crop, m, (x1 - x0, y1 - y0), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, (int(x0), int(y0), int(x1), int(y1))


def paste_back(frame: np.ndarray, crop: np.ndarray, matrix: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend ``crop`` into a copy of ``frame`` through the soft ``mask``.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB.
        crop: ``[S, S, 3]`` uint8 RGB in canonical crop coordinates.
        matrix: ``[2, 3]`` crop -> frame affine (``AlignedFace.matrix``).
        mask: ``[S, S]`` float32 in [0, 1] (``face_mask``).

    Returns:
        A new ``[H, W, 3]`` uint8 frame; ``frame`` is not modified.
    """
    out = frame.copy()
    both = np.concatenate([crop.astype(np.float32), mask[..., None].astype(np.float32)], axis=2)
    warped, (x0, y0, x1, y1) = warp_to_frame(both, matrix, frame.shape[:2])
    if warped.size == 0:
        return out
    alpha = warped[..., 3:4]
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = region * (1 - alpha) + warped[..., :3] * alpha
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
