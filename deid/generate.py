"""Faces from seeds: seed -> z -> w (with truncation around a label-aware centre) -> image, and style mixing.

Seeds map to z exactly as NVIDIA's ``generate.py`` does (``np.random.RandomState(seed).randn(1, z_dim)``), so an
official FFHQ model gives the same faces for the same seeds.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .errors import ConfigError
from .labels import encode_labels
from .nets.generator import Generator

__all__ = ["FaceSpec", "z_from_seed", "labels_for", "seed_ws", "mix_ws", "synthesize", "parse_layer_range"]


@dataclass(frozen=True)
class FaceSpec:
    """What to generate: a seed, and for conditional models optional age/gender targets."""

    seed: int  # selects z (and, for conditional models, any label not given)
    psi: float = 0.7  # truncation: 1 = none, 0 = the average face
    age: float | None = None  # years; None = drawn from the seed (conditional models only)
    female: float | None = None  # 1 = female, 0 = male; None = drawn from the seed

    def __post_init__(self):
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be in [0, 2^32), got {self.seed}")
        if not 0.0 <= self.psi <= 1.0:
            raise ConfigError(f"psi must be in [0, 1], got {self.psi}")
        if self.age is not None and not 0 <= self.age <= 120:
            raise ConfigError(f"age must be in [0, 120], got {self.age}")
        if self.female is not None and not 0 <= self.female <= 1:
            raise ConfigError(f"female must be 0 or 1 (or a probability), got {self.female}")


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """``[1, z_dim]`` float32 standard normal, NVIDIA's seed convention."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


def labels_for(G: Generator, spec: FaceSpec) -> torch.Tensor | None:
    """Label vector ``[1, c_dim]`` for a conditional generator, None for an unconditional one."""
    if G.c_dim == 0:
        if spec.age is not None or spec.female is not None:
            raise ConfigError("this generator is unconditional: --age/--gender need a conditional model")
        return None
    rng = np.random.RandomState(spec.seed)
    rng.randn(1, G.z_dim)  # skip the draws used by z, so labels are independent of them
    female = float(rng.rand() < 0.5) if spec.female is None else spec.female
    age = float(rng.uniform(18, 75)) if spec.age is None else spec.age
    return torch.from_numpy(encode_labels(age, female))


@lru_cache(maxsize=256)
def _centre(G: Generator, c_key: tuple[float, ...]) -> torch.Tensor:
    c = torch.tensor([c_key], dtype=torch.float32, device=G.mapping.w_avg.device)
    return G.mean_w(c, num_samples=1024)[0]


CENTRE_STEP = 1 / 32  # grid of the label-aware truncation centres, in label units (age code: ~3.5 years at 30)


def truncation_centre(G: Generator, c: torch.Tensor | None) -> torch.Tensor:
    """Centre of truncation ``[w_dim]``: ``w_avg``, or for a label ``c`` the mean w of that label, interpolated
    (multilinear) between the cached means at the grid points of ``CENTRE_STEP`` around it.

    Each grid mean costs 1,024 passes through the mapping network; computing it for every continuous label (an age
    of 34.37 years) cost the API and the swap 10-20 ms per face on a CPU. The mean w changes smoothly with the label
    and is itself an estimate (1,024 samples), so the interpolation changes nothing a viewer could see."""
    if c is None or G.c_dim == 0:
        return G.mapping.w_avg
    v = c.detach().reshape(-1).double().cpu().numpy() / CENTRE_STEP
    lo = np.floor(v)
    frac = v - lo
    centre = None
    for corner in itertools.product((0, 1), repeat=len(v)):
        weight = float(np.prod([f if bit else 1 - f for f, bit in zip(frac, corner)]))
        if weight < 1e-9:
            continue
        key = tuple(round(float(x + bit) * CENTRE_STEP, 6) for x, bit in zip(lo, corner))
        term = _centre(G, key) * weight
        centre = term if centre is None else centre + term
    return centre


@torch.no_grad()
def seed_ws(G: Generator, spec: FaceSpec, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """W+ ``[1, num_ws, w_dim]`` float32 for ``spec``.

    Example:
        >>> ws = seed_ws(G, FaceSpec(seed=42, psi=0.7))
    """
    z = z_from_seed(spec.seed, G.z_dim).to(device)
    c = labels_for(G, spec)
    c = None if c is None else c.to(device)
    ws = G.mapping(z, c)
    if spec.psi != 1:
        ws = truncation_centre(G, c).lerp(ws, spec.psi)
    return ws


def parse_layer_range(text: str, num_ws: int) -> range:
    """``"A-B"`` (inclusive) or a group name ``coarse``/``middle``/``fine`` -> range of W+ indices."""
    from .nets.generator import layer_groups

    text = text.strip().lower()
    groups = layer_groups(num_ws)
    if text in groups:
        return groups[text]
    try:
        a, b = (int(v) for v in text.split("-", 1)) if "-" in text else (int(text), int(text))
    except ValueError as exc:
        raise ConfigError(f"layer range {text!r}: use A-B (e.g. 0-3) or coarse, middle, fine") from exc
    if not 0 <= a <= b < num_ws:
        raise ConfigError(f"layer range {text!r} outside 0-{num_ws - 1}")
    return range(a, b + 1)


def mix_ws(content: torch.Tensor, style: torch.Tensor, layers: range) -> torch.Tensor:
    """Style mixing: ``content`` W+ with rows ``layers`` taken from ``style``. Both ``[N, num_ws, w_dim]``."""
    out = content.clone()
    out[:, layers.start : layers.stop] = style[:, layers.start : layers.stop]
    return out


@torch.no_grad()
def synthesize(G: Generator, ws: torch.Tensor, *, noise_mode: str = "const") -> np.ndarray:
    """Images from W+ ``[N, num_ws, w_dim]``: ``[N, R, R, 3]`` uint8 RGB. "const" noise makes output repeatable.

    Runs under ``deid.device.fast_inference`` (bf16 on CPUs with native bf16)."""
    from .device import fast_inference
    from .io.images import to_uint8

    with fast_inference(ws.device, ws.shape[0], min_batch=1):
        img = G.synthesis(ws, noise_mode=noise_mode)
    return to_uint8(img.float()).reshape(ws.shape[0], G.img_resolution, G.img_resolution, 3)
