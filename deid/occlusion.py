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


# The score's parts, each scaled so that 1 is where it alone calls a face covered (score 25, the default
# SwapConfig.max_cover_contrast). Chosen on 1,159 bare UTKFace adults and 386 of them with flat masks of 8 colours
# (session 11; see SwapConfig.max_cover_contrast for the numbers).
LOST_CHROMA_AT = 0.65  # share of the bridge's chroma the lower face has lost (white, grey, black masks: ~1)
HUE_AT = 45.0  # degrees of hue between bridge and lower face (blue masks: 120-160; bare skin: 99 % under 30)
LIGHTER_AT = 12.0  # CIELAB L the lower face is lighter than the bridge ...
PALER_AT = 0.25  # ... times the share of chroma it has lost, at this share (off-white, beige masks)
GREY_CHROMA = 4.0  # chroma under which a region has no hue (a greyscale photo; a neutral mask)
GREY_LIGHTNESS_AT = 32.0  # no colour on the bridge (a greyscale photo): the L difference (a black or white mask) ...
GREY_COLOURED_AT = 15.0  # ... or chroma on the lower face (a coloured mask in a black-and-white picture)


def lower_face_contrast(image: np.ndarray, face: Face) -> float:
    """How unlike skin the cheeks and chin of ``face`` in ``image`` (``[H, W, 3]`` uint8 RGB) look, next to its nose
    bridge: 25 is the default bar (``SwapConfig.max_cover_contrast``), most bare faces score under 10, most faces
    behind a mask above 25; 0 when a region falls outside the image.

    From the median CIELAB colours of the two regions, the largest of: the share of the bridge's chroma the lower
    face has lost (white, grey and black masks have none), the hue between them (blue masks), and a lower face both
    lighter and paler than the bridge (off-white and beige masks; on skin the bridge catches the light). All are
    relative to the bridge, so darker skin, whose shaded cheeks keep less absolute chroma, is not taken for a mask
    (the earlier absolute colour difference called 3.0 % of 640 bare Black adults covered, against 0.5 % of 1,285
    white ones; this measure 1.3 % and 0.5 %).
    In a greyscale photo (no chroma on the bridge) a large lightness difference counts, or colour on the lower face."""
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
        medians.append(np.median(lab[mask > 0], axis=0).astype(np.float64))
    return 25.0 * _cover_score(*medians)


def _cover_score(upper: np.ndarray, lower: np.ndarray) -> float:
    """``lower_face_contrast`` / 25 from the median CIELAB colours (L, a, b) of the bridge and the lower face."""
    (lu, au, bu), (ll, al, bl) = upper, lower
    cu, cl = float(np.hypot(au, bu)), float(np.hypot(al, bl))
    if cu < GREY_CHROMA:  # no colour on the bridge: a greyscale (or heavily tinted) photo
        return max(abs(lu - ll) / GREY_LIGHTNESS_AT, cl / GREY_COLOURED_AT)
    lost = 1.0 - min(cl / cu, 1.0)
    hue = 0.0
    if cl >= GREY_CHROMA:
        hue = abs((np.degrees(np.arctan2(bu, au) - np.arctan2(bl, al)) + 180.0) % 360.0 - 180.0)
    paler_and_lighter = max(ll - lu, 0.0) / LIGHTER_AT * lost / PALER_AT
    return float(max(lost / LOST_CHROMA_AT, hue / HUE_AT, paler_and_lighter))
