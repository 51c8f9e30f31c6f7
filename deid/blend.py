"""Colour matching and blending of a synthetic face crop back into the photo."""

from __future__ import annotations

import cv2
import numpy as np

from .align import face_mask, paste_back

__all__ = ["match_colour", "blend_face", "BLEND_FEATHER"]

BLEND_FEATHER = 0.12  # width of the mask's fade, as a fraction of the crop side


def match_colour(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift ``src``'s colour statistics to ``ref``'s inside ``mask`` (per-channel mean and std in CIE Lab).

    Args:
        src: ``[S, S, 3]`` uint8 RGB, the synthetic face.
        ref: ``[S, S, 3]`` uint8 RGB, the original aligned crop.
        mask: ``[S, S]`` float32 in [0, 1]; statistics are weighted by it.

    Returns:
        ``[S, S, 3]`` uint8 RGB.
    """
    w = mask.astype(np.float64)[..., None]
    total = max(w.sum(), 1e-6)
    a = cv2.cvtColor(src, cv2.COLOR_RGB2LAB).astype(np.float64)
    b = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).astype(np.float64)
    ma, mb = (a * w).sum((0, 1)) / total, (b * w).sum((0, 1)) / total
    sa = np.sqrt(((a - ma) ** 2 * w).sum((0, 1)) / total) + 1e-6
    sb = np.sqrt(((b - mb) ** 2 * w).sum((0, 1)) / total) + 1e-6
    scale = np.clip(sb / sa, 0.5, 2.0)  # limit: a flat crop must not blow up noise
    out = (a - ma) * scale + mb
    return cv2.cvtColor(np.clip(np.rint(out), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def blend_face(frame: np.ndarray, synthetic: np.ndarray, original_crop: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Colour-match ``synthetic`` to ``original_crop`` and paste it into a copy of ``frame`` through a feathered oval.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB photo.
        synthetic: ``[S, S, 3]`` uint8 RGB generated face, in the aligned crop's coordinates.
        original_crop: ``[S, S, 3]`` uint8 RGB, the aligned crop it replaces.
        matrix: ``[2, 3]`` crop -> frame affine of that crop.
    """
    mask = face_mask(synthetic.shape[0], feather=BLEND_FEATHER, shape="ellipse")
    matched = match_colour(synthetic, original_crop, mask)
    return paste_back(frame, matched, matrix, mask)
