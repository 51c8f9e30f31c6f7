"""Generator training loop: StyleGAN2 losses, lazy R1, EMA, style mixing, DiffAugment, mixed precision,
checkpoints with exact resume, sample grids and periodic FID.

A run directory holds:

* ``checkpoint/`` (replaced atomically): ``nets.safetensors`` (``G.*``, ``D.*``, ``G_ema.*``), ``optim.pt``
  (optimizer states and RNG states, loaded with ``weights_only=True``) and ``state.json`` (images shown, config).
* ``samples/`` sample grids, ``log.jsonl`` one line per snapshot (losses, img/s, FID), ``best/`` the EMA generator
  of the best FID so far (``G_ema.safetensors`` + JSON).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from ..config import DiscriminatorConfig, GeneratorConfig, TrainConfig, config_from_dict, parse_oversample
from ..errors import DeidError
from ..io.weights import save_generator
from ..nets.discriminator import Discriminator
from ..nets.generator import Generator
from .augment import diff_augment
from .checkpoint import load_checkpoint, prefixed, save_checkpoint, unprefixed
from .data import FaceDataset
from .losses import d_logistic_loss, d_r1_loss, g_nonsaturating_loss

__all__ = ["Trainer", "train", "StepStats", "label_sweep_grid", "save_grid"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepStats:
    """What one snapshot reports."""

    kimg: float  # thousands of real images shown so far
    g_loss: float  # mean generator loss since the last snapshot
    d_loss: float  # mean discriminator loss since the last snapshot
    r1: float  # last R1 penalty
    img_per_s: float  # throughput since the last snapshot
    fid: float | None = None  # FID of this snapshot, when measured


def autocast_for(device: torch.device, mode: str):
    """Autocast context and gradient scaler for ``mode`` (auto, bf16, fp16, off). ``auto``: bf16 on CPUs that
    compute it natively (1.8-2.4x faster than float32 there), float32 on other CPUs (emulated bf16 is several times
    slower than float32), bf16 or fp16 with a scaler on CUDA."""
    from ..device import native_bf16

    if mode == "auto":
        if device.type == "cpu":
            mode = "bf16" if native_bf16() else "off"
        else:
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "off":
        return nullcontext(), None
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if (dtype == torch.float16 and device.type == "cuda") else None
    return torch.autocast(device_type=device.type, dtype=dtype), scaler


def _train_config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def _train_config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    d["generator"] = config_from_dict(GeneratorConfig, d["generator"])
    return config_from_dict(TrainConfig, d)


class Trainer:
    """Holds the networks, optimizers and random streams of one run; ``step()`` trains one batch."""

    def __init__(self, cfg: TrainConfig, dataset: FaceDataset, *, device: torch.device):
        self.cfg, self.data, self.device = cfg, dataset, device
        gcfg = cfg.generator
        if dataset.resolution != gcfg.img_resolution:
            raise DeidError(f"data is {dataset.resolution} px but the generator is {gcfg.img_resolution} px")
        torch.manual_seed(cfg.seed)
        self.G = Generator(gcfg).to(device).train()
        self.D = Discriminator(DiscriminatorConfig.for_generator(gcfg)).to(device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        if cfg.channels_last:
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)
        ratio = self._d_ratio()
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.g_lr, betas=(0.0, 0.99), eps=1e-8)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)
        self.autocast, self.scaler = autocast_for(device, cfg.mixed_precision)
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)  # data order, labels of fakes, latents
        self.cur_nimg = 0
        self.step_idx = 0
        self.last_r1 = float("nan")

    # -- one batch -------------------------------------------------------------------------------------------
    def _fake_labels(self, n: int) -> torch.Tensor:
        return self.data.c[self.data.indices(n, self.data_gen)]  # the real faces' label mix, oversampling included

    def _mixed_ws(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        ws = self.G.mapping(z, c, update_w_avg=True)
        if torch.rand([], generator=self.data_gen) < self.cfg.style_mixing_prob:
            cutoff = int(torch.randint(1, ws.shape[1], [], generator=self.data_gen))
            z2 = torch.randn(z.shape, generator=self.data_gen).to(self.device)
            ws = torch.cat([ws[:, :cutoff], self.G.mapping(z2, c)[:, cutoff:]], dim=1)
        return ws

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def _backward(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            opt.step()

    def step(self) -> tuple[float, float]:
        """Train G and D on one batch. Returns (generator loss, discriminator loss)."""
        cfg, dev, B = self.cfg, self.device, self.cfg.batch
        c_dim = self.G.c_dim
        real, c_real = self.data.sample(B, self.data_gen, mirror=cfg.mirror)
        real = self._prep(real.to(dev))
        c_real = c_real.to(dev) if c_dim else None
        c_fake = self._fake_labels(B).to(dev) if c_dim else None
        z = torch.randn(B, self.G.z_dim, generator=self.data_gen).to(dev)

        # generator: non-saturating loss through a frozen D
        self.D.requires_grad_(False)
        with self.autocast:
            fake = self.G.synthesis(self._mixed_ws(z, c_fake))
            g_loss = g_nonsaturating_loss(self.D(self._prep(diff_augment(fake, cfg.augment)), c_fake))
        self._backward(g_loss, self.opt_g)
        self.D.requires_grad_(True)

        # discriminator: logistic loss on the same fakes (detached) and a real batch
        with self.autocast:
            fake_logits = self.D(self._prep(diff_augment(fake.detach(), cfg.augment)), c_fake)
            real_logits = self.D(self._prep(diff_augment(real, cfg.augment)), c_real)
            d_loss = d_logistic_loss(real_logits, fake_logits)
        self._backward(d_loss, self.opt_d)

        # lazy R1 on un-augmented reals
        if self.step_idx % cfg.r1_interval == 0 and cfg.r1_gamma > 0:
            real_r1 = real.detach().requires_grad_(True)
            with self.autocast:
                r1 = d_r1_loss(self.D(real_r1, c_real), real_r1)
            self._backward(r1 * (cfg.r1_gamma / 2) * cfg.r1_interval, self.opt_d)
            self.last_r1 = float(r1.detach())

        # EMA of the generator
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, (self.cur_nimg + B) * cfg.ema_rampup)
        beta = 0.5 ** (B / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.lerp_(p, 1 - beta)
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)
        self.cur_nimg += B
        self.step_idx += 1
        return float(g_loss.detach()), float(d_loss.detach())

    # -- checkpoints -----------------------------------------------------------------------------------------
    def save(self, run_dir: Path, extra: dict | None = None) -> None:
        """Write ``run_dir/checkpoint`` atomically."""
        rng = {"torch": torch.get_rng_state(), "data": self.data_gen.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        optim = {"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "rng": rng,
                 "scaler": self.scaler.state_dict() if self.scaler else {}}
        state = {"cur_nimg": self.cur_nimg, "step": self.step_idx, "last_r1": self.last_r1,
                 "config": _train_config_to_dict(self.cfg), **(extra or {})}
        save_checkpoint(run_dir, prefixed(G=self.G, D=self.D, G_ema=self.G_ema), optim, state)

    def _load_nets(self, nets: dict[str, torch.Tensor]) -> None:
        for name, m in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            m.load_state_dict({k: v.float() for k, v in unprefixed(nets, name).items()}, strict=True)
        if self.cfg.channels_last:
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)

    def load(self, ckpt_dir: Path) -> dict:
        """Restore networks, optimizers, RNG streams and counters from ``ckpt_dir``. Returns ``state.json``."""
        nets, opt, state = load_checkpoint(ckpt_dir)
        self._load_nets(nets)
        self.opt_g.load_state_dict(opt["opt_g"])
        self.opt_d.load_state_dict(opt["opt_d"])
        if self.scaler is not None and opt.get("scaler"):
            self.scaler.load_state_dict(opt["scaler"])
        torch.set_rng_state(opt["rng"]["torch"])
        self.data_gen.set_state(opt["rng"]["data"])
        if "cuda" in opt["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(opt["rng"]["cuda"], self.device)
        self.cur_nimg, self.step_idx, self.last_r1 = state["cur_nimg"], state["step"], state.get("last_r1", float("nan"))
        return state

    def _d_ratio(self) -> float:
        """D's learning rate and beta2 scale under lazy R1 regularisation (StyleGAN2 appendix B)."""
        return self.cfg.r1_interval / (self.cfg.r1_interval + 1)

    def set_lr(self) -> None:
        """Apply ``cfg.g_lr`` / ``cfg.d_lr`` to the optimizers (a resumed run's stored state carries its old rate)."""
        ratio = self._d_ratio()
        for group in self.opt_g.param_groups:
            group["lr"] = self.cfg.g_lr
        for group in self.opt_d.param_groups:
            group["lr"] = self.cfg.d_lr * ratio

    def load_nets(self, path: Path) -> None:
        """Warm start: G, D and G_ema from a nets-only file (``export_resume_bundle``); optimizers start fresh."""
        self._load_nets(load_file(str(path)))
        meta = json.loads(path.with_suffix(".json").read_text())
        self.cur_nimg, self.step_idx = int(meta["cur_nimg"]), int(meta["step"])

    def sample_grid(self, path: Path) -> None:
        label_sweep_grid(self.G_ema, path, device=self.device)


@torch.no_grad()
def label_sweep_grid(G: Generator, path: Path, *, rows: int = 6, cols: int = 8, seed: int = 123,
                     device: torch.device | str = "cpu") -> None:
    """Fixed-seed sample grid; for a conditional model, columns sweep age 5 -> 75 and rows alternate male/female."""
    gen = torch.Generator().manual_seed(seed)
    n = rows * cols
    z = torch.randn(n, G.z_dim, generator=gen).to(device)
    c = None
    if G.c_dim:
        from ..labels import encode_labels

        ages = np.tile(np.linspace(5, 75, cols), rows)
        female = np.repeat(np.arange(rows) % 2, cols)
        c = torch.from_numpy(encode_labels(ages, female)).to(device)
    save_grid(G(z, c, noise_mode="const"), path, cols)


def save_grid(img: torch.Tensor, path: Path, cols: int) -> None:
    """Save ``[N, 3, R, R]`` images in [-1, 1] as one PNG grid."""
    n, _, r, _ = img.shape
    rows = math.ceil(n / cols)
    arr = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    grid = np.zeros((rows * r, cols * r, 3), np.uint8)
    for i in range(n):
        grid[(i // cols) * r : (i // cols + 1) * r, (i % cols) * r : (i % cols + 1) * r] = arr[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def train(
    cfg: TrainConfig,
    *,
    device: torch.device,
    run_dir: str | Path,
    resume: bool = True,
    fid_fn: Callable[[Generator], float] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    stop_after_kimg: float | None = None,
    warm_start: str | Path | None = None,
    overrides: dict | None = None,
) -> list[StepStats]:
    """Train (or resume) a generator in ``run_dir`` until ``cfg.total_kimg``.

    Args:
        cfg: the run's configuration; on resume the stored one is used and ``cfg`` must match it.
        device: CPU or CUDA device.
        run_dir: run directory (created if needed).
        resume: continue from ``run_dir/checkpoint`` when present.
        fid_fn: measures FID of a generator (lower is better); called every ``cfg.fid_kimg``. None = never.
        progress: called as ``progress(cur_nimg, total_nimg, img_per_s)`` after every step.
        stop_after_kimg: stop (with a checkpoint) after this many thousand images in this call; None = run to the end.
        warm_start: a resume bundle (``export_resume_bundle``) to start from when ``run_dir`` has no checkpoint: it
            continues that run, with the configuration stored beside it (rates, EMA, age mix, ...) as a resume does.
        overrides: ``TrainConfig`` fields that replace the stored ones on resume (only ``g_lr``, ``d_lr``,
            ``ema_kimg`` and ``oversample``: a later phase of the run at a lower learning rate, a longer EMA or
            another age mix).

    Returns:
        One ``StepStats`` per snapshot of this call.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ckpt = run_dir / "checkpoint"
    state = {}
    resuming = resume and (ckpt / "state.json").is_file()
    source = ckpt / "state.json" if resuming else Path(warm_start).with_suffix(".json") if warm_start else None
    if source is not None:
        if not source.is_file():
            raise DeidError(f"{source}: missing (the training state that goes with the resume bundle)")
        stored = _train_config_from_dict(json.loads(source.read_text())["config"])
        if stored.generator != cfg.generator:
            raise DeidError(f"{source}: checkpoint has a different generator config; use another run dir or --no-resume"
                            if resuming else f"{source}: the resume bundle's generator config differs from the run's "
                            "(--preset)")
        cfg = dataclasses.replace(stored, total_kimg=cfg.total_kimg, threads=cfg.threads, data=cfg.data or stored.data)
    refused = sorted(set(overrides or {}) - {"g_lr", "d_lr", "ema_kimg", "oversample"})
    if refused:
        raise DeidError(f"cannot override {refused} of a run")
    cfg = dataclasses.replace(cfg, **(overrides or {}))
    data = FaceDataset(cfg.data, cfg.generator.img_resolution, holdout_shard=cfg.holdout_shard,
                       holdout_count=cfg.holdout_count)
    data.set_oversample(parse_oversample(cfg.oversample))
    if cfg.oversample:
        log.info("oversampling %s: ages 0-9 %.3f, 10-17 %.3f, 18+ %.3f of the faces drawn", cfg.oversample,
                 data.share(0, 9.99), data.share(10, 17.99), data.share(18, 1e9))
    trainer = Trainer(cfg, data, device=device)
    if resuming:
        state = trainer.load(ckpt)
        trainer.set_lr()
        log.info("resumed from %s at %.1f kimg (lr G %g, D %g, EMA %g kimg)", ckpt, trainer.cur_nimg / 1000,
                 cfg.g_lr, cfg.d_lr, cfg.ema_kimg)
    elif warm_start is not None:
        trainer.load_nets(Path(warm_start))
        log.info("warm start from %s at %.1f kimg (lr G %g, D %g, EMA %g kimg)", warm_start, trainer.cur_nimg / 1000,
                 cfg.g_lr, cfg.d_lr, cfg.ema_kimg)
    best_fid = state.get("best_fid", float("inf"))
    total = int(cfg.total_kimg * 1000)
    stop_at = total if stop_after_kimg is None else min(total, trainer.cur_nimg + int(stop_after_kimg * 1000))
    snap_every, fid_every = int(cfg.snapshot_kimg * 1000), int(cfg.fid_kimg * 1000)
    next_snap = (trainer.cur_nimg // snap_every + 1) * snap_every
    next_fid = (trainer.cur_nimg // fid_every + 1) * fid_every if fid_every else None
    stats: list[StepStats] = []
    g_sum = d_sum = 0.0
    n_steps = 0
    t0, n0 = time.time(), trainer.cur_nimg
    while trainer.cur_nimg < stop_at:
        g, d = trainer.step()
        if not (math.isfinite(g) and math.isfinite(d)):
            raise DeidError(f"training diverged at {trainer.cur_nimg / 1000:.1f} kimg (loss G {g}, D {d})")
        g_sum, d_sum, n_steps = g_sum + g, d_sum + d, n_steps + 1
        rate = (trainer.cur_nimg - n0) / max(time.time() - t0, 1e-6)
        if progress:
            progress(trainer.cur_nimg, total, rate)
        done = trainer.cur_nimg >= stop_at
        if trainer.cur_nimg >= next_snap or done:
            fid = None
            if fid_fn is not None and next_fid is not None and (trainer.cur_nimg >= next_fid or trainer.cur_nimg >= total):
                fid = float(fid_fn(trainer.G_ema))
                next_fid = (trainer.cur_nimg // fid_every + 1) * fid_every
                if fid < best_fid:
                    best_fid = fid
                    save_generator(trainer.G_ema, run_dir / "best" / "G_ema.safetensors", dtype=torch.float32,
                                   info={"kimg": trainer.cur_nimg / 1000, "fid": fid})
            s = StepStats(kimg=trainer.cur_nimg / 1000, g_loss=g_sum / n_steps, d_loss=d_sum / n_steps,
                          r1=trainer.last_r1, img_per_s=rate, fid=fid)
            stats.append(s)
            with open(run_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps({**dataclasses.asdict(s), "time": time.time()}) + "\n")
            trainer.sample_grid(run_dir / "samples" / f"grid-{trainer.cur_nimg // 1000:06d}k.png")
            trainer.save(run_dir, extra={"best_fid": best_fid})
            next_snap = (trainer.cur_nimg // snap_every + 1) * snap_every
            g_sum = d_sum = 0.0
            n_steps = 0
    return stats
