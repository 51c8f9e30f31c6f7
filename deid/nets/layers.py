"""Layers with equalised learning rate, one class per kind (after stylegan2-ada-pytorch ``training/networks.py``).

Parameter names follow the official networks so that official checkpoints map onto these modules one to one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import ops
from .checks import assert_shape

__all__ = ["FullyConnectedLayer", "Conv2dLayer", "SynthesisLayer", "ToRGBLayer", "MinibatchStdLayer"]


class FullyConnectedLayer(nn.Module):
    """Dense layer whose weights are stored at unit variance and scaled at run time (equalised learning rate)."""

    def __init__(
        self,
        in_features: int,  # number of input features
        out_features: int,  # number of output features
        bias: bool = True,  # False = no bias
        activation: str = "linear",  # "linear" or "lrelu"
        lr_multiplier: float = 1.0,  # learning-rate multiplier (0.01 in the mapping network)
        bias_init: float = 0.0,  # initial value of the bias (1 for style affines, so styles start at 1)
    ):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class Conv2dLayer(nn.Module):
    """Convolution with equalised learning rate and optional FIR downsampling (discriminator, encoder)."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        kernel_size: int,  # width and height of the kernel
        bias: bool = True,  # False = no bias
        activation: str = "linear",  # "linear" or "lrelu"
        down: int = 1,  # downsampling factor
        resample_filter: tuple[float, ...] = (1, 3, 3, 1),  # FIR taps for resampling
        conv_clamp: float | None = None,  # clamp outputs to +-X; None = disable
    ):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        x = ops.conv2d_resample(x, w, f=self.resample_filter, down=self.down, padding=self.padding)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return ops.bias_act(x, self.bias, act=self.activation, gain=ops.ACT_GAIN[self.activation] * gain, clamp=clamp)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution with a per-layer style, noise injection with learned strength, bias and lrelu."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        w_dim: int,  # dimensionality of w
        resolution: int,  # output resolution of this layer
        kernel_size: int = 3,  # convolution kernel size
        up: int = 1,  # upsampling factor (2 for the first layer of a block)
        use_noise: bool = True,  # False = no noise input
        resample_filter: tuple[float, ...] = (1, 3, 3, 1),  # FIR taps for upsampling
        conv_clamp: float | None = None,  # clamp outputs to +-X; None = disable
    ):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", gain: float = 1.0) -> torch.Tensor:
        """``x``: ``[N, I, R/up, R/up]``; ``w``: ``[N, w_dim]``; ``noise_mode``: "random", "const" or "none"."""
        styles = self.affine(w)  # [N, I]
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        if not torch.is_grad_enabled() and gain > 0:  # inference: the fused path (same numbers, fewer passes)
            return ops.modulated_conv2d_lrelu(
                x, self.weight, styles, self.bias, ops.ACT_GAIN["lrelu"] * gain, noise=noise, clamp=clamp, up=self.up,
                padding=self.padding, resample_filter=self.resample_filter, flip_weight=(self.up == 1),
            )
        x = ops.modulated_conv2d(
            x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, flip_weight=(self.up == 1),
        )
        return ops.bias_act(x, self.bias, act="lrelu", gain=ops.ACT_GAIN["lrelu"] * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to RGB, without demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False)
        return ops.bias_act(x, self.bias, clamp=self.conv_clamp)


class MinibatchStdLayer(nn.Module):
    """Appends the standard deviation across groups of samples as extra feature maps (discriminator epilogue)."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:  # largest group size that divides the batch
            g -= 1
        f = self.num_channels
        y = x.float().reshape(g, -1, f, c // f, h, w)  # [G, n/G, F, c, H, W]
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over the group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n/G, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w).to(x.dtype)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


def check_image(img: torch.Tensor, channels: int, resolution: int, name: str = "img") -> None:
    """Shape check for an image batch ``[N, C, R, R]``."""
    assert_shape(img, [None, channels, resolution, resolution], name)
