"""Detail for big faces: the generated face is upscaled by the super-resolution network before it is pasted.

A 64 px generated face pasted over a 200 px face would be stretched three times and look soft beside the sharp photo
around it; ``FaceUpscaler`` doubles its resolution with learned facial detail (``deid.nets.superres``), and the
blend adds grain for what is still missing. Used only where the face is drawn larger than the generator's output
(``needs_upscale``); the identity guard judges the final, upscaled result.

Example:
    >>> up = FaceUpscaler.load()  # the shipped models/deid-sr128.safetensors
    >>> face128 = up(face64)  # [64, 64, 3] uint8 -> [128, 128, 3] uint8
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .io.images import to_tensor, to_uint8
from .io.weights import default_model_path, load_net
from .nets.superres import SuperResConfig, SuperResNet

__all__ = ["FaceUpscaler", "DEFAULT_SUPERRES", "needs_upscale"]

DEFAULT_SUPERRES = "deid-sr128.safetensors"
UPSCALE_ABOVE = 1.25  # use the network when the crop is drawn this many times larger than its pixels


def needs_upscale(matrix: np.ndarray, threshold: float = UPSCALE_ABOVE) -> bool:
    """Whether a crop with crop->frame affine ``matrix`` ``[2, 3]`` is magnified more than ``threshold`` when
    pasted."""
    return float(np.hypot(matrix[0, 0], matrix[1, 0])) > threshold


@dataclass
class FaceUpscaler:
    net: SuperResNet
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def load(cls, path: str | Path | None = None, *, device: torch.device | str = "cpu") -> "FaceUpscaler":
        """Load ``path`` (default: the shipped network). Raises ModelError on missing or malformed files."""
        net = load_net(path or default_model_path(DEFAULT_SUPERRES), SuperResConfig, SuperResNet,
                       "super-resolution network")
        device = torch.device(device)
        return cls(net.to(device), device)

    @property
    def scale(self) -> int:
        return self.net.cfg.scale

    @torch.no_grad()
    def __call__(self, face: np.ndarray) -> np.ndarray:
        """``[S, S, 3]`` uint8 RGB -> ``[S*scale, S*scale, 3]`` uint8 RGB."""
        return to_uint8(self.net(to_tensor(face).to(self.device))[0].float())
