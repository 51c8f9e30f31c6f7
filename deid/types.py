"""Frozen dataclasses passed between pipeline stages. Every array field states shape, dtype and range.

"No face" is a zero-length result (an empty list), never ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Face", "AlignedFace", "Latent", "SwapResult", "FaceOutcome", "PhotoReport"]


@dataclass(frozen=True)
class Face:
    """One detected face, in the coordinates of the original (EXIF-rotated) image.

    Landmark order (MTCNN): left eye, right eye, nose tip, left mouth corner, right mouth corner, where "left" means
    the left side of the *image*.
    """

    box: np.ndarray  # [4] float32, x0, y0, x1, y1 in pixels
    score: float  # detector confidence in [0, 1]
    landmarks: np.ndarray  # [5, 2] float32, (x, y) pixels
    # which of the detector's searches found it: "upright", "turned" (a head tilted beyond what MTCNN finds
    # upright) or "border" (a face cut by the photo's edge); see deid.detect
    found_by: str = "upright"

    def __post_init__(self):
        object.__setattr__(self, "box", np.asarray(self.box, dtype=np.float32).reshape(4))
        object.__setattr__(self, "landmarks", np.asarray(self.landmarks, dtype=np.float32).reshape(5, 2))

    @property
    def size(self) -> float:
        """Face size in pixels: the larger side of the box."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def inter_ocular(self) -> float:
        """Distance between the eye centres in pixels."""
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    @property
    def roll(self) -> float:
        """Tilt of the eye line in degrees (0 = level; positive: the image-right eye lower)."""
        d = self.landmarks[1].astype(np.float64) - self.landmarks[0]
        return float(np.degrees(np.arctan2(d[1], d[0])))

    @property
    def turn(self) -> float:
        """How far the head is turned left or right (yaw), read off the landmarks: the nose tip's offset from the
        eyes' midpoint along the eye line, over half the eye distance. About 0 for a frontal face, +-0.5 for a
        three-quarter view; beyond +-1 the nose passes an eye (towards profile). Positive: the nose lies toward the
        image-right eye."""
        lm = self.landmarks.astype(np.float64)
        v = lm[1] - lm[0]
        iod = max(float(np.hypot(*v)), 1e-6)
        return float(np.dot(lm[2] - (lm[0] + lm[1]) / 2, v / iod) / (iod / 2))

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 4),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]}


@dataclass(frozen=True)
class AlignedFace:
    """A face crop in the canonical pose, with the transform that puts it back into the frame."""

    image: np.ndarray  # [S, S, 3] uint8 RGB, the aligned crop
    matrix: np.ndarray  # [2, 3] float64 affine, crop pixel (x, y, 1) -> frame pixel (x, y)
    face: Face = field(repr=False)  # the detection it came from

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class Latent:
    """A face projected into a generator's latent space."""

    ws: np.ndarray  # [num_ws, w_dim] float32, W+ code
    method: str  # "encoder" (one forward pass) or "refined" (encoder + optimisation steps)
    steps: int = 0  # optimisation steps run after the encoder


@dataclass(frozen=True)
class SwapResult:
    """What the identity swap did to one face."""

    method: str  # "swap", or the fallback mode ("blur", "pixelate", "solid") when the guard rejected every try
    tries: int  # new identities tried
    distance: float  # identity distance original <-> result (dlib descriptor, larger = less alike; 0.6 = same person)
    female: float  # estimated probability that the person is female (attribute network); the new face keeps it
    age: float  # estimated age in years (attribute network); the new face keeps it
    seed: int  # seed of the accepted identity; -1 when the face fell back
    female_after: float | None = None  # the same estimate on the anonymised face (None when it fell back)
    age_after: float | None = None
    # why a face fell back: "guard" (every try stayed recognisable), "turned" (head turned beyond
    # SwapConfig.max_turn), "covered" (lower half covered, SwapConfig.max_cover_contrast), "cut" (by the image's
    # edge, SwapConfig.max_outside) or "young" (read as younger than SwapConfig.min_swap_age; none of the last four
    # is tried); "" for a swap
    reason: str = ""

    def to_dict(self) -> dict:
        d = {"tries": self.tries, "identity_distance": round(self.distance, 4), "female": round(self.female, 3),
             "age": round(self.age, 1), "seed": self.seed}
        if self.female_after is not None and self.age_after is not None:
            d["after"] = {"female": round(self.female_after, 3), "age": round(self.age_after, 1)}
        if self.reason:
            d["fallback_reason"] = self.reason
        return d


@dataclass(frozen=True)
class FaceOutcome:
    """What happened to one face of a photo."""

    index: int  # 1-based number, largest face first (the numbering of ``deid faces``)
    face: Face  # the detection
    method: str  # "swap", "blur", "pixelate", "solid", or "kept" (excluded by --only/--skip)
    swap: SwapResult | None = None  # details when the swap ran (also when it fell back); None otherwise
    time_ms: float = 0.0  # time spent on this face

    def to_dict(self) -> dict:
        d = {"id": self.index, "method": self.method, **self.face.to_dict(), "time_ms": round(self.time_ms, 1)}
        if self.swap is not None:
            d["swap"] = self.swap.to_dict()
        return d


@dataclass(frozen=True)
class PhotoReport:
    """Result of anonymising one photo."""

    source: str  # input path
    output: str  # output path ("" when nothing was written)
    width: int  # image width in pixels (after EXIF orientation)
    height: int  # image height in pixels
    faces: tuple[FaceOutcome, ...]  # every detected face, in number order
    timings_ms: dict[str, float]  # wall time per stage: read, detect, anonymize, write

    def to_dict(self) -> dict:
        return {"source": self.source, "output": self.output, "width": self.width, "height": self.height,
                "faces": [f.to_dict() for f in self.faces],
                "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()}}
