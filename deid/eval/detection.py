"""Detection judge: does a detector other than the pipeline's MTCNN still find a face where one was anonymised?

Two dlib detectors are offered: the HOG + linear SVM frontal detector (``dlib.get_frontal_face_detector``, built into
dlib, fast on a CPU, frontal faces from about 40 px with one upsampling) and the CNN MMOD detector
(``mmod_human_face_detector.dat`` from ``face-recognition-models``, CC0; also finds turned faces, about 10x slower).
A given face box counts as re-detected when some detection overlaps it with IoU >= ``min_iou``: the detectors'
boxes are squarer and tighter than MTCNN's (IoU about 0.7 on a frontal face), hence the low default of 0.3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import dlib
import numpy as np

from ..errors import ConfigError, ModelError
from ..track import box_iou  # re-exported: the one IoU of the project
from ._common import as_boxes, check_image, package_file

__all__ = ["IndependentDetector", "box_iou", "redetected", "redetect_rate"]


class IndependentDetector:
    """dlib's HOG or CNN face detector, returning xyxy boxes.

    Args:
        detector: ``dlib.fhog_object_detector`` or ``dlib.cnn_face_detection_model_v1``.
        kind: ``"hog"`` or ``"cnn"``.
        upsample: times the image is doubled before detection (1 finds faces down to about 40 px).

    Example:
        >>> det = IndependentDetector.hog()
        >>> det(image)  # [K, 4] float32 xyxy
    """

    def __init__(self, detector, *, kind: str, upsample: int = 1):
        if kind not in ("hog", "cnn"):
            raise ConfigError(f"detector kind must be 'hog' or 'cnn', got {kind!r}")
        if upsample < 0:
            raise ConfigError("upsample must be >= 0")
        self.detector, self.kind, self.upsample = detector, kind, int(upsample)

    @classmethod
    def hog(cls, *, upsample: int = 1) -> "IndependentDetector":
        """dlib's built-in HOG frontal face detector (no file needed)."""
        return cls(dlib.get_frontal_face_detector(), kind="hog", upsample=upsample)

    @classmethod
    def cnn(cls, path: str | Path | None = None, *, upsample: int = 1) -> "IndependentDetector":
        """dlib's CNN (MMOD) face detector; ``path`` None = the file shipped in ``face-recognition-models``."""
        path = Path(path) if path is not None else package_file("face_recognition_models", "models",
                                                                 "mmod_human_face_detector.dat")
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        try:
            return cls(dlib.cnn_face_detection_model_v1(str(path)), kind="cnn", upsample=upsample)
        except RuntimeError as exc:
            raise ModelError(f"{path}: cannot load the MMOD detector: {exc}") from exc

    @classmethod
    def load(cls, kind: str = "hog", *, upsample: int = 1) -> "IndependentDetector":
        """``hog()`` or ``cnn()`` by name."""
        if kind == "hog":
            return cls.hog(upsample=upsample)
        if kind == "cnn":
            return cls.cnn(upsample=upsample)
        raise ConfigError(f"detector kind must be 'hog' or 'cnn', got {kind!r}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Faces in ``image`` (``[H, W, 3]`` uint8 RGB) as ``[K, 4]`` float32 xyxy pixels; ``[0, 4]`` for none."""
        image = check_image(image)
        found = self.detector(image, self.upsample)
        rects = [d.rect if self.kind == "cnn" else d for d in found]
        # dlib rectangles are inclusive: right/bottom + 1 gives the exclusive xyxy corner
        boxes = [[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects]
        return np.asarray(boxes, np.float32).reshape(-1, 4)


def redetected(image: np.ndarray, boxes, detector: IndependentDetector, *, min_iou: float = 0.3) -> np.ndarray:
    """For each given face box, whether ``detector`` finds a face there in ``image``.

    Args:
        image: ``[H, W, 3]`` uint8 RGB (typically the anonymised photo).
        boxes: ``K`` face boxes (``[K, 4]`` xyxy pixels or ``Face``s), typically from the original photo.
        detector: the independent detector.
        min_iou: overlap needed to count a detection as this face.

    Returns:
        ``[K]`` bool.
    """
    boxes = as_boxes(boxes)
    if len(boxes) == 0:
        return np.zeros(0, bool)
    found = detector(image)
    if len(found) == 0:
        return np.zeros(len(boxes), bool)
    return box_iou(boxes, found).max(axis=1) >= min_iou


def redetect_rate(images: Sequence[np.ndarray], boxes: Sequence, *, detector: IndependentDetector | None = None,
                  min_iou: float = 0.3) -> float:
    """Share of the given faces that an independent detector still finds (0 = every face hidden from it).

    Args:
        images: ``[H, W, 3]`` uint8 RGB images (anonymised).
        boxes: per image, its face boxes (``[K_i, 4]`` xyxy or ``Face``s).
        detector: None = dlib HOG with one upsampling.
        min_iou: overlap needed to count a detection as the face.

    Returns:
        A rate in [0, 1]; NaN when there is no face at all.

    Example:
        >>> redetect_rate([blurred], [[face.box for face in faces]])
    """
    if len(images) != len(boxes):
        raise ValueError(f"{len(images)} images but {len(boxes)} box lists")
    detector = detector or IndependentDetector.hog()
    hits = [redetected(img, b, detector, min_iou=min_iou) for img, b in zip(images, boxes, strict=True)]
    hits = np.concatenate(hits or [np.zeros(0, bool)])
    return float(hits.mean()) if len(hits) else math.nan
