"""GAN inversion: an aligned face -> W+ of the generator, by the encoder and optional optimisation.

Deviation from NVIDIA's ``projector.py``: only W+ is optimised; the per-layer noise stays at the generator's
constant noise. Noise fitted to a photo would carry its fine identity detail into every later edit (the swap keeps
noise), which is exactly what anonymisation must not do.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from .config import EncoderConfig, config_from_dict
from .errors import ConfigError, ModelError
from .io.images import to_tensor
from .io.weights import atomic_save_file
from .nets.discriminator import Discriminator
from .nets.encoder import Encoder, offset_penalty
from .nets.generator import Generator
from .types import AlignedFace, Latent

__all__ = ["save_encoder", "load_encoder", "encode", "refine", "invert_faces", "crops_to_tensor"]


def save_encoder(E: Encoder, path: str | Path, *, dtype: torch.dtype = torch.float16, info: dict | None = None) -> None:
    """Write ``E`` as safetensors plus a JSON of its config (incl. the sha256 of its generator)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in E.state_dict().items()}, path,
                     metadata={"format": "deid-encoder"})
    doc = {"format": "deid-encoder", "config": dataclasses.asdict(E.cfg), "info": info or {}}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")


def load_encoder(path: str | Path, *, generator_path: str | Path | None = None,
                 device: torch.device | str = "cpu") -> Encoder:
    """Load an encoder; with ``generator_path``, refuse it unless it was trained for exactly that generator.

    Raises:
        ModelError: missing or malformed files, or an encoder/generator mismatch.
    """
    from safetensors.torch import load_file

    from .train.encoder import file_sha256

    path = Path(path)
    jp = path.with_suffix(".json")
    if not path.is_file() or not jp.is_file():
        raise ModelError(f"{path}: encoder weights or their .json are missing")
    try:
        cfg = config_from_dict(EncoderConfig, json.loads(jp.read_text())["config"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ModelError(f"{jp}: bad encoder config ({exc})") from exc
    if generator_path is not None:
        sha = file_sha256(generator_path)
        if cfg.generator_sha256 and cfg.generator_sha256 != sha:
            raise ModelError(f"{path}: this encoder was trained for another generator than {generator_path} "
                             f"(sha256 {cfg.generator_sha256[:12]}… vs {sha[:12]}…); retrain it with deid train encoder")
    E = Encoder(cfg)
    try:
        E.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the config: {str(exc).splitlines()[0]}") from exc
    return E.eval().requires_grad_(False).to(device)


def crops_to_tensor(faces: list[AlignedFace], *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Aligned crops (uint8 HWC) -> ``[N, 3, S, S]`` float32 in [-1, 1]."""
    return torch.cat([to_tensor(f.image) for f in faces]).to(device)


@torch.no_grad()
def encode(E: Encoder, G: Generator, crops: torch.Tensor) -> torch.Tensor:
    """W+ ``[N, num_ws, w_dim]`` of crops ``[N, 3, R, R]`` in [-1, 1] (R = the generator's resolution)."""
    ws, _, _ = E(crops, w_avg=G.mapping.w_avg)
    return ws.float()


def refine(
    G: Generator,
    target: torch.Tensor,
    ws_init: torch.Tensor,
    *,
    steps: int = 50,
    lr: float = 0.02,
    D: Discriminator | None = None,
    feature_weight: float = 1.0,
    offset_weight: float = 0.002,
) -> torch.Tensor:
    """Optimise W+ so that ``G(ws)`` matches ``target`` (Adam, cosine-decayed learning rate).

    Args:
        G: the generator (frozen).
        target: ``[N, 3, R, R]`` float32 in [-1, 1].
        ws_init: ``[N, num_ws, w_dim]`` starting codes (the encoder's).
        steps: optimisation steps; 0 returns ``ws_init``.
        lr: peak learning rate.
        D: discriminator whose features give a perceptual loss; None = pixel loss only.
        feature_weight: weight of that feature loss.
        offset_weight: keeps W+ rows near each other (near W), so swaps keep behaving.

    Returns:
        Refined W+ ``[N, num_ws, w_dim]`` float32.
    """
    if steps <= 0:
        return ws_init
    from .train.encoder import feature_distance

    ws = ws_init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([ws], lr=lr, betas=(0.9, 0.999))
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * i / steps))
        img = G.synthesis(ws, noise_mode="const")
        loss = (img - target).abs().mean() + offset_weight * offset_penalty(ws)
        if D is not None and feature_weight > 0:
            loss = loss + feature_weight * feature_distance(D, img, target).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return ws.detach()


def invert_faces(
    faces: list[AlignedFace],
    G: Generator,
    E: Encoder,
    *,
    steps: int = 0,
    D: Discriminator | None = None,
    device: torch.device | str = "cpu",
) -> list[Latent]:
    """Invert aligned crops (made with the generator's template at its resolution): encoder, then ``steps`` of
    refinement. Returns one ``Latent`` per face; an empty list for no faces."""
    if not faces:
        return []
    if any(f.size != G.img_resolution for f in faces):
        raise ValueError(f"aligned crops must be {G.img_resolution} px for this generator")
    crops = crops_to_tensor(faces, device=device)
    ws = encode(E, G, crops)
    if steps > 0:
        with torch.enable_grad():
            ws = refine(G, crops, ws, steps=steps, D=D)
    method = "refined" if steps > 0 else "encoder"
    return [Latent(ws=w.cpu().numpy().astype(np.float32), method=method, steps=steps) for w in ws]
