"""Colour matching and blending of a synthetic face crop back into the photo."""

from __future__ import annotations

import cv2
import numpy as np

from .align import face_mask, warp_to_frame

__all__ = ["match_colour", "blend_face", "grain_sigma", "BLEND_FEATHER"]

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


_GRAIN_PAD = 5  # > the radius of cv2.GaussianBlur's kernel at sigma 1 (4 px)


def grain_sigma(img: np.ndarray, weight: np.ndarray) -> float:
    """Standard deviation of the fine detail (image minus a 1 px Gaussian blur) of ``img`` ``[h, w, 3]``, weighted
    by ``weight`` ``[h, w]``: the sensor noise and texture level that a pasted face must match."""
    x, y, bw, bh = cv2.boundingRect((weight != 0).astype(np.uint8))
    if bw == 0 or bh == 0:
        return 0.0
    # only the weighted part and the blur's reach around it (its 9-tap kernel: 4 px), so the same value as over all
    # of img; the pasted region is mostly feathered margin, and tries of a face compute this twice each
    x0, y0 = max(x - _GRAIN_PAD, 0), max(y - _GRAIN_PAD, 0)
    x1, y1 = min(x + bw + _GRAIN_PAD, weight.shape[1]), min(y + bh + _GRAIN_PAD, weight.shape[0])
    f = np.ascontiguousarray(img[y0:y1, x0:x1], dtype=np.float32)
    hp = cv2.subtract(f, cv2.GaussianBlur(f, (0, 0), 1.0))
    w = np.ascontiguousarray(weight[y0:y1, x0:x1], dtype=np.float32)
    total = sum(cv2.sumElems(cv2.multiply(cv2.multiply(hp, hp), cv2.merge([w, w, w]))))
    return float(np.sqrt(total / max(float(w.sum()) * 3, 1e-6)))


def blend_face(frame: np.ndarray, synthetic: np.ndarray, original_crop: np.ndarray, matrix: np.ndarray,
               *, seed: int = 0, method: str = "alpha") -> np.ndarray:
    """Colour-match ``synthetic`` to ``original_crop``, paste it into a copy of ``frame`` through a feathered oval,
    and add grain so that the pasted face is not visibly cleaner than the photo around it.

    ``method="poisson"``: the pasted face is first solved into the photo by Poisson image editing (OpenCV's
    ``seamlessClone``: the synthetic face's gradients, the photo's values on the oval's edge), which carries the
    photo's lighting gradient across the face (side light, shadows) where a global colour match cannot; the
    feathered oval then blends that in as usual. Falls back to plain alpha blending where the oval touches the
    frame's edge.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB photo.
        synthetic: ``[S, S, 3]`` uint8 RGB generated face, in the aligned crop's coordinates.
        original_crop: ``[S, S, 3]`` uint8 RGB, the aligned crop it replaces.
        matrix: ``[2, 3]`` crop -> frame affine of that crop.
        seed: seed of the grain (the output is deterministic).
        method: ``"alpha"`` (feathered oval) or ``"poisson"`` (see above).

    Returns:
        A new ``[H, W, 3]`` uint8 frame.
    """
    mask = face_mask(synthetic.shape[0], feather=BLEND_FEATHER, shape="ellipse")
    matched = match_colour(synthetic, original_crop, mask)
    both = np.concatenate([matched.astype(np.float32), mask[..., None]], axis=2)
    warped, (x0, y0, x1, y1) = warp_to_frame(both, matrix, frame.shape[:2])
    out = frame.copy()
    if warped.size == 0:
        return out
    alpha = warped[..., 3]
    region = frame[y0:y1, x0:x1]
    if method == "poisson":
        warped[..., :3] = _poisson(warped[..., :3], region, alpha)
    elif method != "alpha":
        raise ValueError(f"blend method must be 'alpha' or 'poisson', got {method!r}")
    blended = region.astype(np.float32) * (1 - alpha[..., None]) + warped[..., :3] * alpha[..., None]
    inside = (alpha > 0.5).astype(np.float32)
    missing = grain_sigma(region, inside) ** 2 - grain_sigma(np.clip(blended, 0, 255), inside) ** 2
    if missing > 0:
        # the part of the original's fine detail the (upscaled) synthetic face lacks, as Gaussian grain
        noise = np.random.default_rng(seed).normal(0, np.sqrt(missing), blended.shape).astype(np.float32)
        blended += noise * alpha[..., None]
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def _poisson(face: np.ndarray, region: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``face`` (float32 ``[h, w, 3]`` over ``region``) solved into ``region`` inside ``alpha > 0.02`` by Poisson
    editing; unchanged when the mask reaches the region's border (seamlessClone needs a margin) or is empty."""
    mask = (alpha > 0.02).astype(np.uint8) * 255
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    if len(xs) == 0 or xs.min() < 1 or ys.min() < 1 or xs.max() > w - 2 or ys.max() > h - 2:
        return face
    x, y = int(xs.min()), int(ys.min())
    bw, bh = int(xs.max()) - x + 1, int(ys.max()) - y + 1
    src = np.clip(np.rint(face), 0, 255).astype(np.uint8)
    try:
        out = cv2.seamlessClone(src, np.ascontiguousarray(region), mask, (x + bw // 2, y + bh // 2), cv2.NORMAL_CLONE)
    except cv2.error:
        return face
    return out.astype(np.float32)
