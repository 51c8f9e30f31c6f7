"""Encoder training: the encoder learns to invert a fixed generator.

Each step uses two batches:

* generated faces (latent known): ``w -> G -> x``; loss ``|E(x) - w|^2`` plus reconstruction of ``x``;
* real prepared faces: reconstruction only (``G(E(x))`` against ``x``).

Reconstruction is an L1 pixel loss plus a feature loss on the trained discriminator's block activations (unit
normalised per position, as LPIPS does; LPIPS's own backbone cannot be downloaded here). The e4e regulariser keeps
the W+ rows close together. The generator and discriminator are frozen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..config import DiscriminatorConfig, EncoderConfig, EncoderTrainConfig
from ..errors import DeidError, ModelError
from ..io.weights import load_generator
from ..nets.discriminator import Discriminator
from ..nets.encoder import Encoder, attribute_loss, offset_penalty
from ..nets.generator import Generator
from .checkpoint import load_checkpoint, prefixed, save_checkpoint, unprefixed
from .data import FaceDataset
from .loop import autocast_for

__all__ = ["feature_distance", "EncoderTrainer", "train_encoder", "file_sha256", "load_discriminator",
           "EncoderStats"]


@dataclass(frozen=True)
class EncoderStats:
    kimg: float  # thousands of real images shown
    latent: float  # mean latent loss since the last snapshot
    pixel: float  # mean L1 reconstruction loss (real faces)
    feature: float  # mean feature loss (real faces)
    attribute: float  # mean attribute loss (real faces: gender cross-entropy + age-code error)
    img_per_s: float  # real images per second


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_discriminator(path: str | Path, G: Generator, *, device: torch.device | str = "cpu") -> Discriminator:
    """The discriminator of ``G``'s training run: from a resume bundle / checkpoint (``D.*`` keys) or a bare file."""
    tensors = load_file(str(path))
    sd = {k: v.float() for k, v in (unprefixed(tensors, "D") or tensors).items()}
    D = Discriminator(DiscriminatorConfig.for_generator(G.cfg))
    try:
        D.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: not a discriminator for this generator: {str(exc).splitlines()[0]}") from exc
    return D.eval().requires_grad_(False).to(device)


def feature_distance(D: Discriminator, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over D's block outputs of the squared distance between channel-normalised features. ``[N]``."""
    total = 0
    for fa, fb in zip(D.features(a), D.features(b)):
        fa = fa.float() / (fa.float().norm(dim=1, keepdim=True) + 1e-6)
        fb = fb.float() / (fb.float().norm(dim=1, keepdim=True) + 1e-6)
        total = total + (fa - fb).square().sum(dim=1).mean(dim=[1, 2])
    return total


class EncoderTrainer:
    """Encoder, its optimizer and random streams; ``step()`` trains on one real and one generated batch."""

    def __init__(self, cfg: EncoderTrainConfig, G: Generator, D: Discriminator, data: FaceDataset, *,
                 device: torch.device, generator_sha256: str = ""):
        self.cfg, self.G, self.D, self.data, self.device = cfg, G, D, data, device
        ecfg = cfg.encoder or EncoderConfig.for_generator(G.cfg)
        ecfg = dataclasses.replace(ecfg, generator_sha256=generator_sha256 or ecfg.generator_sha256)
        if (ecfg.num_ws, ecfg.w_dim, ecfg.img_resolution) != (G.num_ws, G.w_dim, G.img_resolution):
            raise DeidError("encoder config does not fit the generator (num_ws, w_dim or resolution differ)")
        torch.manual_seed(cfg.seed)
        self.E = Encoder(ecfg).to(device).train()
        self.opt = torch.optim.Adam(self.E.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.autocast, _ = autocast_for(device, cfg.mixed_precision)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.cur_nimg = 0
        self.step_idx = 0

    @torch.no_grad()
    def _generated(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated faces ``[n, 3, R, R]`` and their W+ ``[n, num_ws, w_dim]`` (labels drawn from the data)."""
        G = self.G
        c = None
        if G.c_dim:
            c = self.data.c[torch.randint(len(self.data), (n,), generator=self.gen)].to(self.device)
        z = torch.randn(n, G.z_dim, generator=self.gen).to(self.device)
        ws = G.mapping(z, c)
        if torch.rand([], generator=self.gen) < self.cfg.mixing_prob:
            cut = int(torch.randint(1, G.num_ws, [], generator=self.gen))
            z2 = torch.randn(n, G.z_dim, generator=self.gen).to(self.device)
            ws[:, cut:] = G.mapping(z2, c)[:, cut:]
        psi = float(torch.empty([]).uniform_(0.5, 1.0, generator=self.gen))  # cover typical and extreme faces
        ws = G.mapping.w_avg.lerp(ws, psi)
        return G.synthesis(ws, noise_mode="random"), ws

    def step(self) -> dict[str, float]:
        cfg, B = self.cfg, self.cfg.batch
        real, c_real = self.data.sample(B, self.gen, mirror=True)
        real, c_real = real.to(self.device), c_real.to(self.device)
        fake, ws_true = self._generated(B)
        x = torch.cat([real, fake])
        with self.autocast:
            ws, offsets, attrs = self.E(x, w_avg=self.G.mapping.w_avg)
            recon = self.G.synthesis(ws, noise_mode="const")
            pix = (recon - x).abs().mean(dim=[1, 2, 3])
            feat = feature_distance(self.D, recon, x)
            lat = (ws[B:].float() - ws_true).square().mean()
            reg = offset_penalty(offsets.float())
            attr = attribute_loss(attrs[:B], c_real).mean()
            loss = (cfg.pixel_weight * pix.mean() + cfg.feature_weight * feat.mean() + cfg.latent_weight * lat
                    + cfg.offset_weight * reg + cfg.attribute_weight * attr)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.cur_nimg += B
        self.step_idx += 1
        return {"latent": float(lat.detach()), "pixel": float(pix[:B].mean().detach()),
                "feature": float(feat[:B].mean().detach()), "attribute": float(attr.detach())}

    def save(self, run_dir: Path) -> None:
        optim = {"opt": self.opt.state_dict(), "rng": {"torch": torch.get_rng_state(), "data": self.gen.get_state()}}
        state = {"cur_nimg": self.cur_nimg, "step": self.step_idx, "encoder": dataclasses.asdict(self.E.cfg),
                 "config": {k: v for k, v in dataclasses.asdict(self.cfg).items() if k != "encoder"}}
        save_checkpoint(run_dir, prefixed(E=self.E), optim, state)

    def load(self, ckpt: Path) -> None:
        tensors, optim, state = load_checkpoint(ckpt)
        if state["encoder"]["generator_sha256"] != self.E.cfg.generator_sha256:
            raise DeidError(f"{ckpt}: this run was trained for another generator; use a new run folder")
        self.E.load_state_dict(unprefixed(tensors, "E"), strict=True)
        self.opt.load_state_dict(optim["opt"])
        torch.set_rng_state(optim["rng"]["torch"])
        self.gen.set_state(optim["rng"]["data"])
        self.cur_nimg, self.step_idx = state["cur_nimg"], state["step"]


def train_encoder(
    cfg: EncoderTrainConfig,
    *,
    device: torch.device,
    run_dir: str | Path,
    resume: bool = True,
    progress: Callable[[int, int, float], None] | None = None,
    stop_after_kimg: float | None = None,
    init: str | Path | None = None,
) -> list[EncoderStats]:
    """Train (or resume) an encoder for ``cfg.generator`` in ``run_dir``; returns one entry per snapshot.

    ``init``: an exported encoder (of an earlier snapshot of the same generator run) whose weights start a new run;
    ignored when the run folder has a checkpoint to resume.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    G = load_generator(cfg.generator, device=device)
    D = load_discriminator(cfg.discriminator, G, device=device)
    data = FaceDataset(cfg.data, G.img_resolution, holdout_shard=cfg.holdout_shard, holdout_count=cfg.holdout_count)
    tr = EncoderTrainer(cfg, G, D, data, device=device, generator_sha256=file_sha256(cfg.generator))
    if resume and (run_dir / "checkpoint" / "state.json").is_file():
        tr.load(run_dir / "checkpoint")
    elif init is not None:
        from ..invert import load_encoder

        old = load_encoder(init)  # no generator check: the new generator is a later snapshot of the same run
        if old.cfg.num_ws != G.num_ws or old.cfg.w_dim != G.w_dim or old.cfg.img_resolution != G.img_resolution:
            raise DeidError(f"{init}: encoder does not fit the generator (num_ws, w_dim or resolution differ)")
        tr.E.load_state_dict(old.state_dict())
    total = int(cfg.total_kimg * 1000)
    stop_at = total if stop_after_kimg is None else min(total, tr.cur_nimg + int(stop_after_kimg * 1000))
    snap = int(cfg.snapshot_kimg * 1000)
    next_snap = (tr.cur_nimg // snap + 1) * snap
    sums, n, t0, n0 = {"latent": 0.0, "pixel": 0.0, "feature": 0.0, "attribute": 0.0}, 0, time.time(), tr.cur_nimg
    out = []
    while tr.cur_nimg < stop_at:
        losses = tr.step()
        if not all(math.isfinite(v) for v in losses.values()):
            raise DeidError(f"encoder training diverged at {tr.cur_nimg / 1000:.1f} kimg: {losses}")
        sums = {k: sums[k] + losses[k] for k in sums}
        n += 1
        rate = (tr.cur_nimg - n0) / max(time.time() - t0, 1e-6)
        if progress:
            progress(tr.cur_nimg, total, rate)
        if tr.cur_nimg >= next_snap or tr.cur_nimg >= stop_at:
            s = EncoderStats(kimg=tr.cur_nimg / 1000, img_per_s=rate, **{k: v / n for k, v in sums.items()})
            out.append(s)
            with open(run_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps({**dataclasses.asdict(s), "time": time.time()}) + "\n")
            tr.save(run_dir)
            next_snap = (tr.cur_nimg // snap + 1) * snap
            sums, n = {k: 0.0 for k in sums}, 0
    return out

