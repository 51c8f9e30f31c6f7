"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image the discriminator sees,
real and generated alike, so that a small data set does not let the discriminator memorise it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["diff_augment"]


def _color(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean  # saturation
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ``ratio`` of the size, zero fill (implemented as a padded gather: exact, differentiable)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    ty = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy.unsqueeze(0) + tx + 1, 0, h + 1)
    gx = torch.clamp(gx.unsqueeze(0) + ty + 1, 0, w + 1)
    pad = F.pad(x, [1, 1, 1, 1])
    flat = pad.permute(0, 2, 3, 1)  # [N, H+2, W+2, C]
    out = flat[torch.arange(n, device=x.device)[:, None, None], gy, gx]
    return out.permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` x size at a random place per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    gy = torch.arange(h, device=x.device).view(1, h, 1)
    gx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((gy - oy + ch // 2).clamp(0, h) < ch) & ((gy - oy + ch // 2) >= 0)
    inside = inside & ((gx - ox + cw // 2) >= 0) & ((gx - ox + cw // 2) < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """Apply the comma-separated ``policy`` (of "color", "translation", "cutout") to ``x`` ``[N, C, H, W]``."""
    for name in filter(None, policy.split(",")):
        x = _OPS[name](x)
    return x.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) else x
