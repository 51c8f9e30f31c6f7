"""Stateless ops in pure PyTorch: FIR resampling, bias + activation, resampling convolution, modulated convolution.

These follow the math of stylegan2-ada-pytorch's reference implementations (``upfirdn2d``, ``bias_act``,
``conv2d_resample``, ``modulated_conv2d``) so that official checkpoints produce the same images. There is no custom
CUDA kernel: every op runs on CPU and GPU as written.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
    "downsample2d",
    "bias_act",
    "conv2d_resample",
    "modulated_conv2d",
    "modulated_conv2d_lrelu",
    "normalize_2nd_moment",
    "ACT_GAIN",
]

# Gain applied after an activation so that activations keep unit variance at init (He et al.).
ACT_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0)}
LRELU_SLOPE = 0.2


def setup_filter(taps: list[float] | tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR filter from 1-D taps, normalised to unit sum. Returns ``[len(taps)]`` float32."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,  # [N, C, H, W]
    f: torch.Tensor,  # [taps] separable FIR filter
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),  # x0, x1, y0, y1; negative crops
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad, apply the separable FIR filter ``f``, then keep every ``down``-th pixel."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    # The filter is symmetric in every use here, so convolution equals correlation; flip anyway to be exact.
    k = (f * math.sqrt(gain)).to(x.dtype).flip(0)
    x = F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """2x (or ``up``x) FIR upsampling that keeps the image centred; output ``[N, C, H*up, W*up]``."""
    fw = f.shape[0]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """FIR downsampling by ``down``; output ``[N, C, H/down, W/down]``."""
    fw = f.shape[0]
    p0, p1 = (fw - down + 1) // 2, (fw - down) // 2
    return upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,  # [C] added along dim 1
    act: str = "linear",  # "linear" or "lrelu"
    gain: float | None = None,  # None = the activation's default gain
    clamp: float | None = None,  # None = no clamping
) -> torch.Tensor:
    """Add a per-channel bias, apply the activation, scale by ``gain``, clamp to ``[-clamp, clamp]``."""
    if b is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + b.to(x.dtype).reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    gain = ACT_GAIN[act] if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def conv2d_resample(
    x: torch.Tensor,  # [N, I, H, W]
    w: torch.Tensor,  # [O, I, k, k]
    f: torch.Tensor | None = None,  # FIR filter for resampling; None only when up == down == 1
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    flip_weight: bool = True,  # True = correlation (what conv2d does), False = true convolution
) -> torch.Tensor:
    """2-D convolution fused with FIR up- or downsampling, as ``conv2d_resample`` of stylegan2-ada.

    Upsampling uses a stride-2 transposed convolution followed by the FIR filter; downsampling filters first and
    then uses a strided convolution. Output: ``[N, O, H*up/down, W*up/down]``.
    """
    kh = w.shape[2]
    if not flip_weight and kh > 1 and up == 1:
        w = w.flip([2, 3])
    if up == 1 and down == 1:
        return F.conv2d(x, w, padding=padding)
    assert f is not None
    fw = f.shape[0]
    if up > 1:
        assert down == 1
        p0 = padding + (fw + up - 1) // 2 - (kh - 1)
        p1 = padding + (fw - up) // 2 - (kh - up)
        pt = max(min(-p0, -p1), 0)
        wt = w.transpose(0, 1)
        if flip_weight and kh > 1:
            wt = wt.flip([2, 3])
        x = F.conv_transpose2d(x, wt, stride=up, padding=pt)
        return upfirdn2d(x, f, padding=(p0 + pt, p1 + pt, p0 + pt, p1 + pt), gain=up * up)
    p0 = padding + (fw - down + 1) // 2
    p1 = padding + (fw - down) // 2
    if kh == 1:  # 1x1 conv: downsample first, then convolve (cheaper)
        x = upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))
        return F.conv2d(x, w)
    x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
    return F.conv2d(x, w, stride=down)


def modulated_conv2d(
    x: torch.Tensor,  # [N, I, H, W]
    weight: torch.Tensor,  # [O, I, k, k]
    styles: torch.Tensor,  # [N, I]
    noise: torch.Tensor | None = None,  # [N, 1, H', W'] or [H', W'], added after demodulation; None = no noise
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution, non-grouped path: scale inputs by the style, run one shared convolution for
    the whole batch, then scale outputs by the demodulation coefficients. Mathematically the same as modulating the
    weights per sample, and much faster on CPU.

    Returns ``[N, O, H*up, W*up]``.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    styles = styles.to(torch.float32)
    if demodulate:
        # sum_{i,k} (W[o,i,k] * s[n,i])^2 = sum_i s[n,i]^2 * sum_k W[o,i,k]^2, without building per-sample weights.
        wsq = weight.to(torch.float32).square().sum(dim=[2, 3])  # [O, I]
        dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [N, O]
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
    if demodulate:
        x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def modulated_conv2d_lrelu(
    x: torch.Tensor,  # [N, I, H, W]
    weight: torch.Tensor,  # [O, I, k, k]
    styles: torch.Tensor,  # [N, I]
    bias: torch.Tensor,  # [O]
    gain: float,  # > 0: the activation's gain times the layer's
    noise: torch.Tensor | None = None,
    clamp: float | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    flip_weight: bool = True,
) -> torch.Tensor:
    """``bias_act(modulated_conv2d(...), bias, "lrelu", gain, clamp)`` (demodulated) in two passes over the output
    instead of five, for inference: demodulation, noise, bias and gain become one ``addcmul`` (lrelu commutes with a
    positive gain), then an in-place lrelu and clamp. Same numbers up to float rounding; not for autograd."""
    assert gain > 0
    n = x.shape[0]
    styles = styles.to(torch.float32)
    wsq = weight.to(torch.float32).square().sum(dim=[2, 3])  # [O, I]
    dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [N, O]
    shift = bias.to(x.dtype).reshape(1, -1, 1, 1) * gain
    if noise is not None:
        shift = shift + noise.to(x.dtype) * gain
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    y = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
    y = torch.addcmul(shift, y, (dcoefs * gain).to(y.dtype).reshape(n, -1, 1, 1))
    F.leaky_relu_(y, LRELU_SLOPE)
    if clamp is not None:
        y.clamp_(-clamp, clamp)
    return y


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit mean square along ``dim`` (the pixel norm of the mapping network)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
