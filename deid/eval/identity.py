"""Identity judge: dlib's ResNet face descriptor (128-D), as the ``face_recognition`` package computes it.

Two faces whose descriptors lie closer than 0.6 (Euclidean) are the same person by dlib's own rule (99.38 % on LFW).
The chip is cut the way ``face_recognition.face_encodings`` cuts it: dlib's 5-point shape predictor runs inside the
given box, and ``compute_face_descriptor`` aligns a 150 px chip (padding 0.25) from those points. Deviation from
``face_recognition``: the box comes from the caller (deid's MTCNN) instead of dlib's HOG detector; on the
astronaut photo the two boxes give descriptors 0.05 apart, far below the 0.6 threshold.

Weights: ``shape_predictor_5_face_landmarks.dat`` and ``dlib_face_recognition_resnet_model_v1.dat`` from the
``face-recognition-models`` package (dlib-models, CC0). The descriptor network runs in PyTorch
(``deid.nets.dlib_resnet``, the same weights read from dlib's file; descriptors equal dlib's to ~1e-6): the dlib-bin
wheel has no BLAS and needs ~140 ms per face on one thread, PyTorch ~16 ms and less per face in a batch.
``backend="dlib"`` keeps dlib's own network (reference; tests compare the two).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import dlib
import numpy as np

from ..errors import ModelError
from ..types import Face
from ..nets.dlib_resnet import CHIP_SIZE
from ._common import as_box, as_boxes, check_image, dlib_rectangle, package_file

__all__ = ["IdentityJudge", "SAME_PERSON_THRESHOLD", "EMBEDDING_DIM"]

SAME_PERSON_THRESHOLD = 0.6  # dlib's decision threshold on the Euclidean descriptor distance
EMBEDDING_DIM = 128
_CHIP_PADDING = 0.25  # dlib's (and face_recognition's) default chip padding
_NUM_JITTERS = 0  # 0 and 1 both mean "one pass, no jitter" in dlib; face_recognition passes 1
# A face given as a ``Face`` whose eye line is tilted more than this (degrees) is turned upright for the shape
# predictor (its points are mapped back; the chip alignment follows them). From an upright box dlib's predictor
# misplaces the points of a head tilted 70 degrees, and the chip it cuts no longer tells people apart: an original
# lay 0.40-0.59 from *other* people's filled faces (0.65-0.80 upright), so the guard and the leak check were blind.
_UPRIGHT_ROLL = 20.0


class IdentityJudge:
    """Face descriptors and same-person decisions.

    Args:
        shape_predictor: a loaded 5-point ``dlib.shape_predictor``.
        recognizer: a loaded ``dlib.face_recognition_model_v1`` (``backend="dlib"``), or the same network as a
            ``deid.nets.dlib_resnet.DlibFaceNet`` (``backend="torch"``).

    Example:
        >>> judge = IdentityJudge.default()
        >>> a = judge.embed(photo, face)          # photo: [H, W, 3] uint8 RGB; face: Face or [4] xyxy box
        >>> b = judge.embed(anonymized, face.box)
        >>> judge.same_person(a, b)               # False when the anonymisation worked
    """

    def __init__(self, shape_predictor: dlib.shape_predictor, recognizer):
        from ..nets.dlib_resnet import DlibFaceNet

        self.shape_predictor = shape_predictor
        self.recognizer = recognizer
        self.backend = "torch" if isinstance(recognizer, DlibFaceNet) else "dlib"

    @classmethod
    def load(cls, shape_predictor_path: str | Path, recognizer_path: str | Path, backend: str = "torch"
             ) -> "IdentityJudge":
        """Read both dlib models from explicit files; ``backend`` "torch" runs the descriptor network in PyTorch,
        "dlib" in dlib.

        Raises:
            ModelError: a file is missing or is not the expected dlib model.
        """
        from ..nets.dlib_resnet import read_dlib_face_net

        if backend not in ("torch", "dlib"):
            raise ValueError(f"backend must be torch or dlib, got {backend!r}")
        for p in (shape_predictor_path, recognizer_path):
            if not Path(p).is_file():
                raise ModelError(f"{p}: model file not found")
        try:
            predictor = dlib.shape_predictor(str(shape_predictor_path))
            if backend == "dlib":
                recognizer = dlib.face_recognition_model_v1(str(recognizer_path))
            else:
                recognizer = read_dlib_face_net(recognizer_path)
        except RuntimeError as exc:  # dlib's deserialisation errors
            raise ModelError(f"cannot load the dlib identity models: {exc}") from exc
        return cls(predictor, recognizer)

    @classmethod
    def default(cls, backend: str = "torch") -> "IdentityJudge":
        """The models shipped in the ``face-recognition-models`` package."""
        return cls.load(package_file("face_recognition_models", "models", "shape_predictor_5_face_landmarks.dat"),
                        package_file("face_recognition_models", "models", "dlib_face_recognition_resnet_model_v1.dat"),
                        backend)

    def embed(self, image: np.ndarray, box: np.ndarray | Face) -> np.ndarray:
        """Descriptor of one face.

        Args:
            image: ``[H, W, 3]`` uint8 RGB.
            box: ``[4]`` xyxy pixels, or a ``Face``.

        Returns:
            ``[128]`` float32 descriptor (unit-free; compare with ``distance``).
        """
        return self.embed_batch(image, [box if isinstance(box, Face) else as_box(box)])[0]

    def embed_batch(self, image: np.ndarray, boxes: Sequence[np.ndarray | Face] | np.ndarray) -> np.ndarray:
        """Descriptors of several faces of one image.

        Args:
            image: ``[H, W, 3]`` uint8 RGB.
            boxes: ``K`` boxes (``[K, 4]`` xyxy pixels) or ``Face``s.

        Returns:
            ``[K, 128]`` float32; ``[0, 128]`` when there is no box.
        """
        image = check_image(image)
        boxes, rolls = _boxes_and_rolls(boxes)
        if len(boxes) == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        image, shapes = self._shapes(image, boxes, rolls)
        if self.backend == "torch":
            return self._describe(list(dlib.get_face_chips(image, shapes, size=CHIP_SIZE, padding=_CHIP_PADDING)))
        desc = self.recognizer.compute_face_descriptor(image, shapes, _NUM_JITTERS, _CHIP_PADDING)
        return np.asarray([np.asarray(d) for d in desc], dtype=np.float32).reshape(len(boxes), EMBEDDING_DIM)

    def chips(self, image: np.ndarray, boxes: Sequence[np.ndarray | Face] | np.ndarray) -> list[np.ndarray]:
        """dlib's aligned 150 px chips (``[150, 150, 3]`` uint8 RGB) of the faces in ``boxes`` of ``image``: the
        5-point shape predictor inside each box, then dlib's chip alignment (padding 0.25)."""
        image = check_image(image)
        boxes, rolls = _boxes_and_rolls(boxes)
        if len(boxes) == 0:
            return []
        image, shapes = self._shapes(image, boxes, rolls)
        return list(dlib.get_face_chips(image, shapes, size=CHIP_SIZE, padding=_CHIP_PADDING))

    def chip_transforms(self, image: np.ndarray, boxes: Sequence[np.ndarray | Face] | np.ndarray) -> np.ndarray:
        """Where ``chips`` samples from: ``[K, 2, 3]`` affine maps from chip pixel ``(u, v, 1)`` to ``image`` pixel
        ``(x, y)``, one per box (dlib's chip geometry: the chip's corners are its box's corners turned by its angle).
        With them a chip can be cut differentiably (``torch.nn.functional.grid_sample``) from an image being
        optimised, e.g. by ``deid.invert.refine``."""
        image = check_image(image)
        boxes, rolls = _boxes_and_rolls(boxes)
        if len(boxes) == 0:
            return np.zeros((0, 2, 3), np.float64)
        region = self._region(image, boxes)
        x0, y0 = region[:2] if region is not None else (0, 0)
        image, shapes = self._shapes(image, boxes, rolls)
        out = []
        for shape in shapes:
            det = dlib.get_face_chip_details(shape, CHIP_SIZE, _CHIP_PADDING)
            r, a = det.rect, det.angle
            c = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
            turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            corners = np.array([[r.left(), r.top()], [r.right(), r.top()], [r.right(), r.bottom()]])
            dst = (corners - c) @ turn.T + c + (x0, y0)
            src = np.array([[0, 0], [det.cols - 1, 0], [det.cols - 1, det.rows - 1]], np.float64)
            out.append(np.linalg.solve(np.c_[src, np.ones(3)], dst).T)  # [2, 3]
        return np.stack(out)

    @staticmethod
    def _region(image: np.ndarray, boxes: np.ndarray) -> tuple[int, int, int, int] | None:
        """The region ``(x0, y0, x1, y1)`` around ``boxes`` that ``_shapes`` hands to dlib; None = the whole image.
        dlib copies the whole image into its own format on every call, and the 150 px chip with 25 % padding lies
        well inside a margin of one face size."""
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        h, w = image.shape[:2]
        x0 = int(max(np.floor((boxes[:, 0] - side).min()), 0))
        y0 = int(max(np.floor((boxes[:, 1] - side).min()), 0))
        x1 = int(min(np.ceil((boxes[:, 2] + side).max()), w))
        y1 = int(min(np.ceil((boxes[:, 3] + side).max()), h))
        if x1 - x0 > 0 and y1 - y0 > 0 and (x1 - x0) * (y1 - y0) < 0.8 * h * w:
            return x0, y0, x1, y1
        return None

    def _shapes(self, image: np.ndarray, boxes: np.ndarray, rolls: np.ndarray | None = None
                ) -> tuple[np.ndarray, dlib.full_object_detections]:
        """dlib's 5-point shapes of the faces in ``boxes``, with the image region they refer to. A face whose eye
        line is tilted (``rolls``, degrees) beyond ``_UPRIGHT_ROLL`` is turned upright about its box centre for the
        predictor, and the points are turned back."""
        region = self._region(image, boxes)
        if region is not None:
            x0, y0, x1, y1 = region
            image = np.ascontiguousarray(image[y0:y1, x0:x1])
            boxes = boxes - np.array([x0, y0, x0, y0], boxes.dtype)
        shapes = dlib.full_object_detections()
        for b, roll in zip(boxes, rolls if rolls is not None else np.zeros(len(boxes))):
            rect = dlib_rectangle(b)
            if abs(roll) <= _UPRIGHT_ROLL:
                shapes.append(self.shape_predictor(image, rect))
                continue
            m = cv2.getRotationMatrix2D((float(b[0] + b[2]) / 2, float(b[1] + b[3]) / 2), float(roll), 1.0)
            upright = cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
            shape = self.shape_predictor(upright, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
            inv = cv2.invertAffineTransform(m)
            back = pts @ inv[:, :2].T + inv[:, 2]
            shapes.append(dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y)))
                                                            for x, y in back]))
        return image, shapes

    def embed_many(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray | Face]) -> np.ndarray:
        """Descriptors ``[K, 128]`` of one face in each of ``K`` images (``boxes[i]`` in ``images[i]``), in one
        batch: the identity guard checks several candidate swaps of one face at once."""
        if self.backend != "torch":
            return np.stack([self.embed(im, b) for im, b in zip(images, boxes)]) if len(images) else \
                np.zeros((0, EMBEDDING_DIM), np.float32)
        chips = [c for im, b in zip(images, boxes) for c in self.chips(im, [b if isinstance(b, Face) else as_box(b)])]
        return self._describe(chips)

    def _describe(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        return self.recognizer.describe(np.stack(chips)).astype(np.float32)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance between two ``[128]`` descriptors (0 = identical; same person below 0.6)."""
        return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))

    @staticmethod
    def same_person(a: np.ndarray, b: np.ndarray, threshold: float = SAME_PERSON_THRESHOLD) -> bool:
        """True when descriptors ``a`` and ``b`` are closer than ``threshold``."""
        return IdentityJudge.distance(a, b) < threshold


def _boxes_and_rolls(boxes) -> tuple[np.ndarray, np.ndarray | None]:
    """``as_boxes(boxes)`` and the eye-line tilt (degrees) of each ``Face`` among them (0 for plain boxes; None when
    none is a Face)."""
    if isinstance(boxes, np.ndarray):
        return as_boxes(boxes), None
    boxes = list(boxes)
    if not any(isinstance(b, Face) for b in boxes):
        return as_boxes(boxes), None
    rolls = np.zeros(len(boxes))
    for i, b in enumerate(boxes):
        if isinstance(b, Face):
            rolls[i] = b.roll
    return as_boxes(boxes), rolls
