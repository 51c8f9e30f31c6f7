"""Blur, pixelate or fill a face region: a mode of its own and the fail-closed fallback of the swap.

The region is an ellipse around the detection box, enlarged by ``scale`` (faces extend beyond MTCNN's box: hair,
ears, chin), with a short feathered edge so that it does not look cut out. Strength follows the face size, so a
20 px face and a 2000 px face are both unrecognisable.
"""

from __future__ import annotations

import cv2
import numpy as np

from .types import Face

__all__ = ["OBSCURE_MODES", "obscure_face", "face_region_mask"]

OBSCURE_MODES = ("blur", "pixelate", "solid")
_PIXEL_BLOCKS = 8  # blocks across the face for pixelation: coarse enough to defeat face recognisers


def face_region_mask(shape: tuple[int, int], face: Face, scale: float = 1.3, feather: float = 0.08) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Soft ellipse mask over the face region, cropped to its bounding box.

    Returns:
        mask ``[h, w]`` float32 in [0, 1] and the region ``(x0, y0, x1, y1)`` in frame pixels (clipped to the frame).
    """
    H, W = shape
    x0, y0, x1, y1 = face.box.astype(np.float64)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = (x1 - x0) / 2 * scale, (y1 - y0) / 2 * scale
    bx0, by0 = max(int(np.floor(cx - rx)), 0), max(int(np.floor(cy - ry)), 0)
    bx1, by1 = min(int(np.ceil(cx + rx)) + 1, W), min(int(np.ceil(cy + ry)) + 1, H)
    if bx1 <= bx0 or by1 <= by0:
        return np.zeros((0, 0), np.float32), (0, 0, 0, 0)
    yy, xx = np.mgrid[by0:by1, bx0:bx1].astype(np.float32) + 0.5
    r = np.sqrt(((xx - cx) / max(rx, 1e-6)) ** 2 + ((yy - cy) / max(ry, 1e-6)) ** 2)
    # fully opaque over the detection box itself, fading only in the outer part of the enlarged ellipse
    edge = max(feather * scale, 1e-3)
    mask = np.clip((1 - r) / edge, 0, 1).astype(np.float32)
    return mask, (bx0, by0, bx1, by1)


def obscure_face(frame: np.ndarray, face: Face, mode: str = "blur", scale: float = 1.3) -> np.ndarray:
    """Return a copy of ``frame`` (``[H, W, 3]`` uint8 RGB) with ``face`` blurred, pixelated or filled.

    Args:
        frame: the photo.
        face: detection in frame pixels.
        mode: "blur", "pixelate" or "solid".
        scale: the obscured ellipse is the box enlarged by this factor.

    Example:
        >>> out = obscure_face(image, faces[0], "pixelate")
    """
    if mode not in OBSCURE_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(OBSCURE_MODES)}")
    out = frame.copy()
    mask, (x0, y0, x1, y1) = face_region_mask(frame.shape[:2], face, scale)
    if mask.size == 0:
        return out
    region = frame[y0:y1, x0:x1]
    size = max(face.size, 4.0)
    if mode == "blur":
        # sigma ~ face/8 removes every feature a recogniser uses; pad by reflection so edges stay in the face
        sigma = size / 8
        pad = int(3 * sigma) + 1
        py0, px0 = max(y0 - pad, 0), max(x0 - pad, 0)
        blurred = cv2.GaussianBlur(frame[py0 : y1 + pad, px0 : x1 + pad], (0, 0), sigmaX=sigma,
                                   borderType=cv2.BORDER_REFLECT)
        oy, ox = y0 - py0, x0 - px0
        filled = blurred[oy : oy + (y1 - y0), ox : ox + (x1 - x0)]
    elif mode == "pixelate":
        block = max(size / _PIXEL_BLOCKS, 2.0)
        h, w = region.shape[:2]
        small = cv2.resize(region, (max(int(round(w / block)), 1), max(int(round(h / block)), 1)),
                           interpolation=cv2.INTER_AREA)
        filled = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    else:
        ring = region[mask < 0.5]
        colour = np.median(ring, axis=0) if len(ring) else np.array([128, 128, 128])
        filled = np.broadcast_to(colour.astype(np.uint8), region.shape)
    a = mask[..., None]
    out[y0:y1, x0:x1] = np.clip(np.rint(region * (1 - a) + filled * a), 0, 255).astype(np.uint8)
    return out
