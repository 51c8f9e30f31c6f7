"""GAN inversion: an aligned face -> W+ of the generator, by the encoder and optional optimisation.

Deviation from NVIDIA's ``projector.py``: only W+ is optimised; the per-layer noise stays at the generator's
constant noise. Noise fitted to a photo would carry its fine identity detail into every later edit (the swap keeps
noise), which is exactly what anonymisation must not do. Refinement may add an identity term (``IdentityLoss``): the
identity judge's descriptor distance, its chip cut differentiably where dlib cuts it in the target.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import EncoderConfig, config_from_dict
from .errors import ConfigError, ModelError
from .io.images import to_tensor
from .io.weights import atomic_save_file
from .nets.discriminator import Discriminator
from .nets.encoder import Encoder, offset_penalty
from .nets.generator import Generator
from .types import AlignedFace, Latent

__all__ = ["save_encoder", "load_encoder", "encode", "refine", "invert_faces", "crops_to_tensor", "IdentityLoss",
           "JUDGE_SIZE", "JUDGE_BOX", "judge_box"]

# The identity judge looks at an aligned crop upscaled to JUDGE_SIZE px, the face in JUDGE_BOX (xyxy px): where the
# "deid" template puts the face (used by the inversion benchmark and by the identity term of ``refine``).
JUDGE_SIZE = 256
JUDGE_BOX = np.array([0.08, 0.04, 0.92, 0.98]) * JUDGE_SIZE
_MOUTH_PER_SIDE = 1 / 2.2  # eye-to-mouth distance over the template's unit side, typical for a frontal face


def judge_box(template: str = "deid") -> np.ndarray:
    """``JUDGE_BOX`` moved into another crop template (same face region, the template's centre and scale)."""
    from .align import TEMPLATES

    t, d = TEMPLATES[template], TEMPLATES["deid"]
    u = JUDGE_BOX / JUDGE_SIZE * 2 - 1  # deid crop, normalised to [-1, 1]
    shift = (d.center_shift - t.center_shift) * _MOUTH_PER_SIDE * 2 / t.scale
    u = u * d.scale / t.scale + np.array([0, shift, 0, shift])
    return (u + 1) / 2 * JUDGE_SIZE


class IdentityLoss:
    """Identity term for ``refine``: the descriptor distance of the identity judge's network between a rendered crop
    and its target, with the judge's chip cut differentiably where dlib cuts it in the *target* (its landmarks).

    The chip is made as the judge makes it from a crop: bicubic upscale to ``JUDGE_SIZE``, then dlib's
    ``extract_image_chips`` (a [1 4 6 4 1] pyramid level chosen by the chip's scale, then bilinear sampling; black
    outside the image), in PyTorch. The grid is jittered a little (shift and scale, ``jitter`` of the chip size) at
    every call, so the code matches the face rather than one exact sampling of it; the judge that measures the result
    finds its own landmarks in the reconstruction. Call with ``[N, 3, R, R]`` images in [-1, 1]; returns ``[N]``
    distances.
    """

    def __init__(self, judge, targets: torch.Tensor, *, box: np.ndarray = JUDGE_BOX, jitter: float = 0.03,
                 seed: int = 0):
        import cv2

        from .io.images import to_uint8
        from .nets.dlib_resnet import CHIP_SIZE, DlibFaceNet

        if not isinstance(judge.recognizer, DlibFaceNet):
            raise ValueError("the identity term needs the judge's PyTorch network (IdentityJudge backend 'torch')")
        self.net, self.jitter = judge.recognizer, jitter
        self.gen = torch.Generator().manual_seed(seed)
        uv = np.stack(np.meshgrid(np.arange(CHIP_SIZE), np.arange(CHIP_SIZE), indexing="xy"), -1).reshape(-1, 2)
        uv1 = np.c_[uv, np.ones(len(uv))]
        self.levels, grids = [], []
        for img in to_uint8(targets.detach().cpu()):
            big = cv2.resize(img, (JUDGE_SIZE, JUDGE_SIZE), interpolation=cv2.INTER_CUBIC)
            t = judge.chip_transforms(big, [box])[0]
            # dlib's pyramid level: halve the chip's rect while the halved rect still has more pixels than the chip
            level, side = 0, (CHIP_SIZE - 1) * float(np.hypot(*t[:, 0]))
            while (side / 2) ** 2 > CHIP_SIZE**2:
                level, side = level + 1, side / 2
            p, size = uv1 @ t.T, JUDGE_SIZE
            for _ in range(level):  # dlib's point_down of pyramid_down<2>
                p, size = p / 2 - (1.25, 0.75), (size - 3) // 2
            self.levels.append(level)
            grids.append((2 * (p + 0.5) / size - 1).reshape(CHIP_SIZE, CHIP_SIZE, 2))  # align_corners=False
        self.grids = torch.as_tensor(np.stack(grids), dtype=torch.float32, device=targets.device)
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=targets.device) / 16
        self.kx, self.ky = k.view(1, 1, 1, 5).repeat(3, 1, 1, 1), k.view(1, 1, 5, 1).repeat(3, 1, 1, 1)
        with torch.no_grad():
            self.target = self.describe(targets, jitter=False)

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's pyramid_down<2>: [1 4 6 4 1]/16 both ways, every other pixel, output pixel i centred on 2i + 2."""
        return F.conv2d(F.conv2d(x, self.kx, stride=(1, 2), groups=3), self.ky, stride=(2, 1), groups=3)

    def describe(self, images: torch.Tensor, *, jitter: bool = True) -> torch.Tensor:
        """Differentiable descriptors ``[N, 128]`` of ``[N, 3, R, R]`` crops in [-1, 1]."""
        big = F.interpolate(images.float(), size=(JUDGE_SIZE, JUDGE_SIZE), mode="bicubic", align_corners=False)
        big = ((big + 1) * 127.5).clamp(0, 255)
        grid = self.grids
        if jitter and self.jitter > 0:
            n = grid.shape[0]
            centre = grid.mean(dim=(1, 2), keepdim=True)
            size = (grid[:, -1, -1] - grid[:, 0, 0]).abs().view(n, 1, 1, 2)
            r = (torch.rand(n, 3, generator=self.gen) * 2 - 1).to(grid.device) * self.jitter
            grid = centre + (grid - centre) * (1 + r[:, :1]).view(n, 1, 1, 1) + r[:, 1:].view(n, 1, 1, 2) * size
        chips = []
        for i, level in enumerate(self.levels):
            x = big[i : i + 1]
            for _ in range(level):
                x = self._down(x)
            chips.append(F.grid_sample(x, grid[i : i + 1], mode="bilinear", padding_mode="zeros", align_corners=False))
        return self.net.embed(torch.cat(chips))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (self.describe(images) - self.target).norm(dim=1)


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
    identity: IdentityLoss | None = None,
    identity_weight: float = 1.0,
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
        identity: an ``IdentityLoss`` made for ``target``; None = no identity term.
        identity_weight: weight of that term (descriptor distance, same person below 0.6).

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
        if identity is not None and identity_weight > 0:
            loss = loss + identity_weight * identity(img).mean()
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
    judge=None,
    identity_weight: float = 1.0,
    device: torch.device | str = "cpu",
) -> list[Latent]:
    """Invert aligned crops (made with the generator's template at its resolution): encoder, then ``steps`` of
    refinement, with the identity term of ``judge`` (an ``IdentityJudge``, PyTorch backend) when one is given.
    Returns one ``Latent`` per face; an empty list for no faces."""
    if not faces:
        return []
    if any(f.size != G.img_resolution for f in faces):
        raise ValueError(f"aligned crops must be {G.img_resolution} px for this generator")
    crops = crops_to_tensor(faces, device=device)
    ws = encode(E, G, crops)
    if steps > 0:
        with torch.enable_grad():
            identity = None
            if judge is not None and identity_weight > 0:
                identity = IdentityLoss(judge, crops, box=judge_box(G.cfg.align_template))
            ws = refine(G, crops, ws, steps=steps, D=D, identity=identity, identity_weight=identity_weight)
    method = "refined" if steps > 0 else "encoder"
    return [Latent(ws=w.cpu().numpy().astype(np.float32), method=method, steps=steps) for w in ws]
