"""Style-based generator (StyleGAN2): mapping network z -> w, synthesis network w -> image.

Layer groups of W+ (index ``i`` of ``ws[:, i]``): index 0 drives the 4x4 conv; block ``r`` (8, 16, ...) takes
indices ``2*log2(r)-5`` (its upsampling conv, shared with the previous block's toRGB) and ``2*log2(r)-4``; the
last index drives only the final toRGB. ``layer_groups()`` names them as in the StyleGAN paper:
coarse = 4-8 px (pose, face shape), middle = 16-32 px (features, expression, eyes open/closed),
fine = 64 px and up (colour scheme, micro-structure).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import config as _config
from . import ops
from .checks import assert_shape
from .layers import FullyConnectedLayer, SynthesisLayer, ToRGBLayer

__all__ = ["MappingNetwork", "SynthesisBlock", "SynthesisNetwork", "Generator", "layer_groups"]


class MappingNetwork(nn.Module):
    """8-layer MLP z -> w, optionally conditioned on a label vector ``c``; tracks ``w_avg`` for truncation."""

    def __init__(
        self,
        z_dim: int,  # input latent dimensionality
        c_dim: int,  # conditioning label dimensionality; 0 = unconditional
        w_dim: int,  # output latent dimensionality
        num_ws: int,  # number of copies of w to broadcast (W+)
        num_layers: int = 8,  # number of dense layers
        lr_multiplier: float = 0.01,  # learning-rate multiplier of every layer
        w_avg_beta: float = 0.995,  # decay of the running average of w during training
    ):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        embed = w_dim if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed)
        features = [z_dim + embed] + [w_dim] * num_layers
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,  # [N, z_dim] standard normal
        c: torch.Tensor | None = None,  # [N, c_dim] labels; None only when c_dim == 0
        truncation_psi: float = 1.0,  # w' = w_avg + psi * (w - w_avg); 1 = no truncation
        truncation_cutoff: int | None = None,  # truncate only the first N ws; None = all
        update_w_avg: bool = False,  # update the running average (training only)
    ) -> torch.Tensor:
        """Returns W+ ``[N, num_ws, w_dim]`` float32 (the same w in every row unless truncation_cutoff is set)."""
        assert_shape(z, [None, self.z_dim], "z")
        x = ops.normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError("this generator is conditional: pass c of shape [N, c_dim]")
            assert_shape(c, [z.shape[0], self.c_dim], "c")
            y = ops.normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cut] = self.w_avg.lerp(x[:, :cut], truncation_psi)
        return x


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network ('skip' architecture): [const | up-conv] -> conv -> toRGB."""

    def __init__(
        self,
        in_channels: int,  # input channels; 0 = first block, starts from a learned constant
        out_channels: int,  # output channels
        w_dim: int,  # dimensionality of w
        resolution: int,  # resolution of this block
        img_channels: int,  # output colour channels
        use_noise: bool = True,  # noise inputs
        conv_clamp: float | None = None,  # clamp outputs to +-X; None = disable
    ):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", ops.setup_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, use_noise=use_noise,
                                        conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, use_noise=use_noise,
                                    conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(
        self,
        x: torch.Tensor | None,  # [N, in_channels, R/2, R/2]; None for the first block
        img: torch.Tensor | None,  # [N, img_channels, R/2, R/2] skip image; None for the first block
        ws: torch.Tensor,  # [N, num_conv + 1, w_dim]
        noise_mode: str = "random",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1).to(ws.dtype)
            x = self.conv1(x, ws[:, 0], noise_mode=noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode=noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode=noise_mode)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else ops.upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ -> image, from a learned 4x4 constant up to ``img_resolution``."""

    def __init__(self, cfg: _config.GeneratorConfig):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = cfg.w_dim, cfg.img_resolution, cfg.img_channels
        self.block_resolutions = cfg.block_resolutions
        self.num_ws = cfg.num_ws
        for res in self.block_resolutions:
            in_ch = 0 if res == 4 else cfg.channels(res // 2)
            block = SynthesisBlock(in_ch, cfg.channels(res), cfg.w_dim, res, cfg.img_channels,
                                   use_noise=cfg.use_noise, conv_clamp=cfg.conv_clamp)
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """``ws``: ``[N, num_ws, w_dim]``. Returns ``[N, img_channels, R, R]`` float32, roughly in [-1, 1]."""
        assert_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        x = img = None
        idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, idx : idx + block.num_conv + 1], noise_mode=noise_mode)
            idx += block.num_conv
        return img.float()


class Generator(nn.Module):
    """Mapping + synthesis. ``forward(z, c)`` is the common path; ``mapping`` and ``synthesis`` can be called alone.

    Example:
        >>> from deid.config import GeneratorConfig
        >>> G = Generator(GeneratorConfig.preset("tiny32")).eval()
        >>> img = G(torch.randn(2, G.z_dim), truncation_psi=0.7, noise_mode="const")  # [2, 3, 32, 32] in ~[-1, 1]
    """

    def __init__(self, cfg: _config.GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.num_ws, num_layers=cfg.mapping_layers,
                                      lr_multiplier=cfg.mapping_lr_multiplier)

    def forward(
        self,
        z: torch.Tensor,  # [N, z_dim]
        c: torch.Tensor | None = None,  # [N, c_dim]; None when unconditional
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "random",  # "random", "const" or "none"
    ) -> torch.Tensor:
        """Returns images ``[N, img_channels, R, R]`` float32, roughly in [-1, 1]."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)

    @torch.no_grad()
    def mean_w(self, c: torch.Tensor | None = None, num_samples: int = 4096, seed: int = 0) -> torch.Tensor:
        """Centre of W for truncation: the tracked ``w_avg`` when unconditional, otherwise the mean of w over
        ``num_samples`` z for each label row of ``c`` (a per-label centre keeps truncation from pulling age and gender
        toward the data-set average). Returns ``[N, w_dim]`` (``N`` = rows of c, or 1).
        """
        if self.c_dim == 0 or c is None:
            return self.mapping.w_avg.unsqueeze(0)
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(num_samples, self.z_dim, generator=gen).to(c.device)
        out = []
        for row in c:
            ws = self.mapping(z, row.unsqueeze(0).expand(num_samples, -1))
            out.append(ws[:, 0].mean(dim=0))
        return torch.stack(out)


def layer_groups(num_ws: int) -> dict[str, range]:
    """Coarse / middle / fine ranges of W+ indices for a generator with ``num_ws`` ws.

    coarse: 4x4 and 8x8 (indices 0-3): pose, head shape, hair style.
    middle: 16x16 and 32x32 (indices 4-7): facial features, expression.
    fine: 64x64 and above (index 8 on): colours, skin texture, lighting detail.
    """
    return {"coarse": range(0, min(4, num_ws)), "middle": range(min(4, num_ws), min(8, num_ws)),
            "fine": range(min(8, num_ws), num_ws)}
