"""Encoder: aligned face -> W+ of a given generator (e4e style).

A residual trunk (the discriminator's blocks) turns the crop into a pyramid of features. A base head predicts one
w from the 4x4 features; each W+ row then gets an offset predicted from the pyramid level that matches its layer
group (coarse rows from 4x4, middle rows from 8-16 px, fine rows from the highest levels). The output is
``w_avg + base + offset_i``. Keeping the offsets small (``offset_penalty``) keeps codes near W, where style swaps
behave. An attribute head on the same 4x4 features estimates gender and age (trained on the UTKFace labels), so
the swap can keep them without asking the independent judges that measure it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import EncoderConfig
from .checks import assert_shape
from .discriminator import DiscriminatorBlock
from .layers import FullyConnectedLayer

__all__ = ["Encoder", "offset_penalty", "attribute_loss"]


class _Head(nn.Module):
    """Global average + max pool of one pyramid level -> w-sized vector."""

    def __init__(self, channels: int, w_dim: int, hidden: int):
        super().__init__()
        self.fc0 = FullyConnectedLayer(channels * 2, hidden, activation="lrelu")
        self.fc1 = FullyConnectedLayer(hidden, w_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=[2, 3]), x.amax(dim=[2, 3])], dim=1).float()
        return self.fc1(self.fc0(pooled))


class Encoder(nn.Module):
    """Face crop ``[N, C, R, R]`` in [-1, 1] -> W+ ``[N, num_ws, w_dim]``, offsets ``[N, num_ws, w_dim]`` and
    attributes ``[N, 2]`` (female logit, age code of ``deid.labels.encode_labels``).

    Example:
        >>> E = Encoder(EncoderConfig.for_generator(G.cfg))
        >>> ws, _, attrs = E(crops, w_avg=G.mapping.w_avg)
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.block_resolutions = [2**i for i in range(int(math.log2(cfg.img_resolution)), 2, -1)]
        for res in self.block_resolutions:
            in_ch = 0 if res == cfg.img_resolution else cfg.channels(res)
            setattr(self, f"b{res}", DiscriminatorBlock(in_ch, cfg.channels(res), cfg.channels(res // 2), cfg.img_channels))
        ch4 = cfg.channels(4)
        self.base = nn.Sequential(FullyConnectedLayer(ch4 * 16, cfg.w_dim * 2, activation="lrelu"),
                                  FullyConnectedLayer(cfg.w_dim * 2, cfg.w_dim))
        self.attr = nn.Sequential(FullyConnectedLayer(ch4 * 16, 128, activation="lrelu"), FullyConnectedLayer(128, 2))
        # pyramid levels after each block: resolutions R/2 ... 4; row i of W+ reads level _level(i)
        self.level_res = [r // 2 for r in self.block_resolutions]
        self.heads = nn.ModuleList(
            _Head(cfg.channels(self.level_res[self._level(i)]), cfg.w_dim, cfg.w_dim) for i in range(cfg.num_ws))

    def _level(self, i: int) -> int:
        """Pyramid level (index into ``level_res``) feeding W+ row ``i``: row i drives resolution 2^(i//2 + 2)."""
        layer_res = 2 ** (i // 2 + 2)
        target = max(min(layer_res, self.level_res[0]), 4)
        return self.level_res.index(target)

    def forward(self, img: torch.Tensor, w_avg: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        assert_shape(img, [None, cfg.img_channels, cfg.img_resolution, cfg.img_resolution], "img")
        feats, x = [], None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
            feats.append(x)
        flat = x.flatten(1).float()  # [N, ch4 * 16]
        base = self.base(flat)  # [N, w_dim]
        offsets = torch.stack([head(feats[self._level(i)]) for i, head in enumerate(self.heads)], dim=1)
        ws = base.unsqueeze(1) + offsets
        if w_avg is not None:
            ws = ws + w_avg.to(ws.dtype)
        return ws, offsets, self.attr(flat)


def offset_penalty(offsets: torch.Tensor) -> torch.Tensor:
    """e4e-style regulariser: mean squared distance of each W+ row from the mean row (0 when the code is in W)."""
    return (offsets - offsets.mean(dim=1, keepdim=True)).square().sum(dim=2).mean()


def attribute_loss(pred: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Gender cross-entropy plus 4x the L1 error of the age code (1 year at 30 ~ 0.007 in code units). ``[N]``."""
    import torch.nn.functional as F

    gender = F.binary_cross_entropy_with_logits(pred[:, 0].float(), c[:, 0].float(), reduction="none")
    return gender + 4 * (pred[:, 1].float() - c[:, 1].float()).abs()
