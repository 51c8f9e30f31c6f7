"""Preview images: detections drawn over a photo (``deid faces --preview``)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..types import Face

__all__ = ["draw_faces"]

_BOX_COLOUR = (0, 230, 0)  # RGB
_LABEL_TEXT = (0, 0, 0)  # RGB, drawn on a box-coloured label
# one colour per MTCNN landmark: left eye, right eye, nose, left and right mouth corner (RGB)
_LANDMARK_COLOURS = ((255, 60, 60), (60, 120, 255), (255, 230, 0), (255, 0, 255), (0, 230, 230))


def draw_faces(pixels: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """Draw numbered boxes and landmark dots on a copy of ``pixels``.

    Faces are numbered from 1 in the order given (``detect_faces`` gives largest first, the numbering the CLI
    prints). Line widths and label sizes follow the image size, so previews of large photos stay readable.

    Args:
        pixels: ``[H, W, 3]`` uint8 RGB in [0, 255].
        faces: detections in the same pixel coordinates.

    Returns:
        A new ``[H, W, 3]`` uint8 RGB image; ``pixels`` is not modified.

    Example:
        >>> preview = draw_faces(image, detect_faces(image, detector))
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be [H, W, 3] uint8 RGB, got {pixels.shape} {pixels.dtype}")
    out = np.ascontiguousarray(pixels.copy())
    line = max(1, round(max(out.shape[:2]) / 600))  # 2 px on a 1280 px image
    for number, face in enumerate(faces, start=1):
        _draw_box(out, face, line)
        _draw_landmarks(out, face, line)
        _draw_label(out, face, str(number), line)
    return out


def _draw_box(img: np.ndarray, face: Face, line: int) -> None:
    x0, y0, x1, y1 = (int(round(float(v))) for v in face.box)
    cv2.rectangle(img, (x0, y0), (x1, y1), _BOX_COLOUR, line, lineType=cv2.LINE_AA)


def _draw_landmarks(img: np.ndarray, face: Face, line: int) -> None:
    radius = max(1, min(line + 1, int(face.size / 25)))  # dots stay inside small faces
    for (x, y), colour in zip(face.landmarks, _LANDMARK_COLOURS):
        cv2.circle(img, (int(round(float(x))), int(round(float(y)))), radius, colour, -1, lineType=cv2.LINE_AA)


def _draw_label(img: np.ndarray, face: Face, text: str, line: int) -> None:
    """The face number on a filled tag above the box (inside the image when the box touches the top)."""
    scale = 0.45 * line
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, line)
    x0, y0 = int(round(float(face.box[0]))), int(round(float(face.box[1])))
    pad = 2 * line
    top = y0 - th - base - 2 * pad
    if top < 0:
        top = max(y0, 0)
    left = min(max(x0, 0), max(img.shape[1] - tw - 2 * pad, 0))
    cv2.rectangle(img, (left, top), (left + tw + 2 * pad, top + th + base + 2 * pad), _BOX_COLOUR, -1)
    cv2.putText(img, text, (left + pad, top + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, _LABEL_TEXT, line,
                lineType=cv2.LINE_AA)
