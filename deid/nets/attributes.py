"""Attribute network: gender and age of an aligned face, independent of any generator.

The swap conditions the new identity on the original's gender and age, so their estimate decides whether the
anonymised face still reads as the same kind of person. A small residual CNN on the 64 px "deid" crop, trained on the
UTKFace labels (``deid train attributes``); its age output is a distribution over age bins (expected value = the
estimate, as in DEX), which is more robust than one regressed number on hard faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["AGE_BINS", "AttributeConfig", "AttributeNet", "age_targets"]

AGE_BINS = (0.5, 1.5, 3, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 36, 40, 45, 50, 55, 60, 66, 72, 80, 90)  # years


@dataclass(frozen=True)
class AttributeConfig:
    resolution: int = 64  # side of the aligned crop it reads
    template: str = "deid"  # alignment template of that crop (deid.align)
    widths: tuple[int, ...] = (32, 64, 128, 192, 256)  # stem at full resolution, then one block per halving


class _Block(nn.Module):
    """Residual block that halves the resolution: conv-BN-ReLU-conv-BN plus a strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class AttributeNet(nn.Module):
    """Aligned crops ``[N, 3, R, R]`` in [-1, 1] -> (female logit ``[N]``, age-bin logits ``[N, len(AGE_BINS)]``).

    Example:
        >>> net = AttributeNet(AttributeConfig())
        >>> female_logit, age_logits = net(crops)
        >>> p_female, age = net.predict(crops)  # probabilities and expected ages in years
    """

    def __init__(self, cfg: AttributeConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_Block(a, b) for a, b in zip(w[:-1], w[1:])])
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(w[-1], 1 + len(AGE_BINS))
        self.register_buffer("bins", torch.tensor(AGE_BINS, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.blocks(self.stem(x)).mean(dim=[2, 3])
        out = self.head(self.drop(x)).float()
        return out[:, 0], out[:, 1:]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P(female) ``[N]`` and expected age in years ``[N]`` (the module must be in eval mode)."""
        female, age = self(x)
        return torch.sigmoid(female), (age.softmax(dim=1) * self.bins).sum(dim=1)


def age_targets(age: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Soft targets over ``AGE_BINS`` ``[N, B]``: each age split linearly between its two nearest bins."""
    age = torch.as_tensor(np.asarray(age, dtype=np.float32)).clamp(AGE_BINS[0], AGE_BINS[-1])
    bins = torch.tensor(AGE_BINS)
    hi = torch.searchsorted(bins, age).clamp(1, len(AGE_BINS) - 1)
    lo = hi - 1
    t = ((age - bins[lo]) / (bins[hi] - bins[lo])).clamp(0, 1)
    out = torch.zeros(len(age), len(AGE_BINS))
    out.scatter_(1, lo[:, None], (1 - t)[:, None])
    out.scatter_add_(1, hi[:, None], t[:, None])
    return out
