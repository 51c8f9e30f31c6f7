"""Face super-resolution network: a generated 64 px face -> 128 px with facial detail (x2).

The default generator draws 64 px faces; pasted over a 200 px face in a photo they look soft. This small residual
network (EDSR-style: residual blocks without batch norm at the low resolution, one pixel-shuffle x2, a bilinear skip)
is trained on the prepared real faces, from their area-downscaled 64 px version (the generator's own training
resolution and resampling) back to 128 px (``deid train superres``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SuperResConfig", "SuperResNet"]


@dataclass(frozen=True)
class SuperResConfig:
    in_resolution: int = 64  # side of the face it reads (the generator's output)
    scale: int = 2  # output side = in_resolution * scale
    channels: int = 32
    blocks: int = 6


class _Res(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.a, self.b = nn.Conv2d(ch, ch, 3, 1, 1), nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.b(F.relu(self.a(x)))


class SuperResNet(nn.Module):
    """``[N, 3, R, R]`` in [-1, 1] -> ``[N, 3, R*scale, R*scale]`` in [-1, 1] (any R works; trained at 64)."""

    def __init__(self, cfg: SuperResConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.head = nn.Conv2d(3, ch, 3, 1, 1)
        self.body = nn.Sequential(*[_Res(ch) for _ in range(cfg.blocks)], nn.Conv2d(ch, ch, 3, 1, 1))
        self.up = nn.Sequential(nn.Conv2d(ch, ch * cfg.scale**2, 3, 1, 1), nn.PixelShuffle(cfg.scale), nn.ReLU(),
                                nn.Conv2d(ch, 3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        y = self.up(feat + self.body(feat))
        base = F.interpolate(x, scale_factor=self.cfg.scale, mode="bilinear", align_corners=False)
        return (base + y.to(base.dtype)).clamp(-1, 1)
