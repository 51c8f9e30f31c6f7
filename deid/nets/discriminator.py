"""Residual discriminator with minibatch-stddev (StyleGAN2 'resnet'), optionally label-conditioned by projection."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import DiscriminatorConfig
from .checks import assert_shape
from .layers import Conv2dLayer, FullyConnectedLayer, MinibatchStdLayer

__all__ = ["DiscriminatorBlock", "Discriminator"]


class DiscriminatorBlock(nn.Module):
    """[fromRGB] -> conv 3x3 -> conv 3x3 down 2, plus a 1x1 down-sampling skip; both branches scaled by sqrt(0.5)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu")
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class Discriminator(nn.Module):
    """Image ``[N, C, R, R]`` in [-1, 1] (and labels ``[N, c_dim]``) -> realness logits ``[N, 1]``."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        self.img_resolution, self.img_channels, self.c_dim = cfg.img_resolution, cfg.img_channels, cfg.c_dim
        self.block_resolutions = [2**i for i in range(int(math.log2(cfg.img_resolution)), 2, -1)]
        for res in self.block_resolutions:
            in_ch = 0 if res == cfg.img_resolution else cfg.channels(res)
            setattr(self, f"b{res}", DiscriminatorBlock(in_ch, cfg.channels(res), cfg.channels(res // 2), cfg.img_channels))
        ch4 = cfg.channels(4)
        self.cmap_dim = 0 if cfg.c_dim == 0 else (cfg.cmap_dim or ch4)
        if cfg.c_dim > 0:
            self.c_embed = nn.Sequential(FullyConnectedLayer(cfg.c_dim, self.cmap_dim, activation="lrelu"),
                                         FullyConnectedLayer(self.cmap_dim, self.cmap_dim))
        self.mbstd = MinibatchStdLayer(cfg.mbstd_group_size, cfg.mbstd_num_channels)
        self.conv = Conv2dLayer(ch4 + cfg.mbstd_num_channels, ch4, 3, activation="lrelu")
        self.fc = FullyConnectedLayer(ch4 * 16, ch4, activation="lrelu")
        self.out = FullyConnectedLayer(ch4, max(self.cmap_dim, 1))

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each block, from high to low resolution (a feature loss for the encoder)."""
        assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution], "img")
        feats, x = [], None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
            feats.append(x)
        return feats

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = self.features(img)[-1]  # [N, ch4, 4, 4]
        x = self.conv(self.mbstd(x))
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.c_dim > 0:
            if c is None:
                raise ValueError("this discriminator is conditional: pass c of shape [N, c_dim]")
            cmap = self.c_embed(c.to(x.dtype))
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x.float()
