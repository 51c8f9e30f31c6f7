"""Is the lower half of a face covered (a face mask, a scarf, a hand)?

The generator draws whole faces and the encoder reads whole faces: over a mask it derails (session 9, the group
sample with masks drawn on: a white mask turned the women into pale ghosts, a black one into dark-skinned men,
P(female) 0.02-0.3), and a new face pasted there would unmask the person, which misreports the photo. Such faces get
the fallback instead (``SwapConfig.max_cover_contrast``).

The test compares skin that a mask leaves visible with skin that it covers: the median CIELAB colour of the nose
bridge between the eyes against that of the cheeks beside the nose and the chin below the mouth (medians: robust to
a glasses bridge, lipstick, an open mouth). Measured on held-out UTKFace faces in 384 px photos
(``benchmarks/_heldout.py``; one-off script, session 9), bare and with a flat mask drawn from just under the eyes to
the chin (``tests/conftest.py::draw_masks``): see ``SwapConfig.max_cover_contrast`` for the numbers.
"""

from __future__ import annotations

import cv2
import numpy as np

from .types import Face

__all__ = ["lower_face_contrast"]


def _rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def lower_face_contrast(image: np.ndarray, face: Face) -> float:
    """How differently coloured the cheeks and chin of ``face`` in ``image`` (``[H, W, 3]`` uint8 RGB) are from its
    nose bridge: the colour difference of their median CIELAB colours (L in 0..100) with lightness at half weight
    (shadows, beards), plus the chroma the lower face lacks (skin is coloured; white, grey and black masks are not).
    Under 10 for most bare faces, above 25 for most faces behind a mask; 0 when a region falls outside the image."""
    lm, iod = face.landmarks.astype(np.float64), face.inter_ocular
    (le, re, _, ml, mr) = lm
    ey, my = (le[1] + re[1]) / 2, (ml[1] + mr[1]) / 2
    upper = [_rect(le[0] + 0.3 * iod, re[0] - 0.3 * iod, ey - 0.15 * iod, ey + 0.25 * iod)]
    lower = [_rect(ml[0], mr[0], my + 0.2 * iod, my + 0.45 * iod),  # chin
             _rect(le[0] - 0.1 * iod, le[0] + 0.2 * iod, ey + 0.5 * iod, my - 0.1 * iod),  # cheeks beside the nose
             _rect(re[0] - 0.2 * iod, re[0] + 0.1 * iod, ey + 0.5 * iod, my - 0.1 * iod)]
    pts = np.concatenate(upper + lower)
    h, w = image.shape[:2]
    x0, y0 = np.maximum(np.floor(pts.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int) + 2, (w, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    lab = cv2.cvtColor(image[y0:y1, x0:x1].astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    off = np.array([x0, y0])
    medians = []
    for polys in (upper, lower):
        mask = np.zeros(lab.shape[:2], np.uint8)
        for p in polys:
            cv2.fillPoly(mask, [np.round(p - off).astype(np.int32)], 1)
        if not mask.any():
            return 0.0
        medians.append(np.median(lab[mask > 0], axis=0))
    (lu, au, bu), (ll, al, bl) = medians
    lost_chroma = max(float(np.hypot(au, bu) - np.hypot(al, bl)), 0.0)  # skin is coloured; white, grey, black masks not
    return float(np.sqrt((0.5 * (lu - ll)) ** 2 + (au - al) ** 2 + (bu - bl) ** 2)) + lost_chroma
