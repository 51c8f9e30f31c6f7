"""Training of the face super-resolution network on the prepared real faces (128 px).

Each step: random 64 px patches of the 128 px crops (targets) and their area-downscaled 32 px versions (inputs; the
generator's 64 px faces are area-downscaled crops in the same way), mirrored at random, a little noise on some
inputs. Loss: L1 plus L1 of the fine detail (image minus a Gaussian blur), so edges and skin texture are not traded
for smoothness. Validation on the held-out faces: PSNR of the full 64 -> 128 px result against bicubic upscaling.
Resumable; checkpoints, ``log.jsonl`` and the exported ``run_dir/superres.safetensors`` every ``snapshot`` steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..io.weights import save_net
from ..nets.superres import SuperResConfig, SuperResNet
from .checkpoint import load_checkpoint, prefixed, save_checkpoint, unprefixed
from .data import FaceDataset
from .loop import autocast_for

__all__ = ["SuperResTrainConfig", "SuperResStats", "train_superres", "validate_superres"]


@dataclass(frozen=True)
class SuperResTrainConfig:
    data: str = ""  # prepared faces (deid data prepare), 128 px
    steps: int = 20000
    batch: int = 16
    patch: int = 64  # target patch side (input: patch / scale)
    lr: float = 1e-3
    detail_weight: float = 1.0
    snapshot: int = 1000  # steps between checkpoints
    seed: int = 0
    threads: int = 0
    mixed_precision: str = "auto"
    net: SuperResConfig = SuperResConfig()


@dataclass(frozen=True)
class SuperResStats:
    step: int
    loss: float  # mean training loss since the last snapshot
    psnr: float  # held-out faces, 64 -> 128 px, dB
    psnr_bicubic: float  # the same faces upscaled bicubically
    patches_per_s: float


def _detail(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device) / 16
    k2 = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 5, 5).to(x.dtype)
    return x - F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k2, groups=x.shape[1])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a - b) / 2).square().mean(dim=[1, 2, 3]).clamp_min(1e-10)  # images in [-1, 1] -> [0, 1]
    return -10 * torch.log10(mse)


@torch.no_grad()
def validate_superres(net: SuperResNet, hr: torch.Tensor, *, batch: int = 64) -> tuple[float, float]:
    """Mean PSNR (dB) of ``net`` and of bicubic upscaling, on ``hr`` ``[N, 3, R*s, R*s]`` uint8 real faces."""
    was = net.training
    net.eval()
    s = net.cfg.scale
    ours, bicubic = [], []
    for i in range(0, len(hr), batch):
        y = hr[i : i + batch].float() / 127.5 - 1
        x = F.avg_pool2d(y, s)
        ours.append(_psnr(net(x).float(), y))
        bicubic.append(_psnr(F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False).clamp(-1, 1), y))
    net.train(was)
    return float(torch.cat(ours).mean()), float(torch.cat(bicubic).mean())


def train_superres(cfg: SuperResTrainConfig, *, run_dir: str | Path, device: torch.device,
                   progress: Callable[[int, int, float], None] | None = None,
                   stop_after_steps: int | None = None) -> list[SuperResStats]:
    """Train (or resume) in ``run_dir``; returns the stats of the snapshots written now."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tc = TrainConfig()
    res = cfg.net.in_resolution * cfg.net.scale
    train = FaceDataset(cfg.data, res, holdout_shard=tc.holdout_shard, holdout_count=tc.holdout_count)
    val = FaceDataset(cfg.data, res, holdout_shard=tc.holdout_shard, holdout_count=tc.holdout_count, split="val")
    val_hr = val.images[:200]
    torch.manual_seed(cfg.seed)
    net = SuperResNet(cfg.net).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr * 0.05)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    autocast, _ = autocast_for(device, cfg.mixed_precision)
    step = 0
    if (run_dir / "checkpoint" / "state.json").is_file():
        tensors, optim, state = load_checkpoint(run_dir / "checkpoint")
        net.load_state_dict(unprefixed(tensors, "S"))
        opt.load_state_dict(optim["opt"])
        sched.load_state_dict(optim["sched"])
        gen.set_state(optim["rng"])
        step = state["step"]
    s, p = cfg.net.scale, cfg.patch
    out, loss_sum, n, t0 = [], 0.0, 0, time.time()
    stop = cfg.steps if stop_after_steps is None else min(cfg.steps, step + stop_after_steps)
    while step < stop:
        idx = torch.randint(len(train), (cfg.batch,), generator=gen)
        oy, ox = (int(v) * s for v in torch.randint(0, (res - p) // s + 1, (2,), generator=gen))
        y = train.images[idx, :, oy : oy + p, ox : ox + p].float() / 127.5 - 1
        flip = torch.rand(cfg.batch, generator=gen) < 0.5
        y = torch.where(flip[:, None, None, None], y.flip(3), y)
        x = F.avg_pool2d(y, s)
        noisy = (torch.rand(cfg.batch, generator=gen) < 0.3)[:, None, None, None]
        x = (x + noisy * torch.randn(x.shape, generator=gen) * 0.02).clamp(-1, 1)
        x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
        with autocast:
            pred = net(x).float()
        loss = (pred - y).abs().mean() + cfg.detail_weight * (_detail(pred) - _detail(y)).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        loss_sum, n = loss_sum + float(loss.detach()), n + 1
        if not math.isfinite(loss_sum):
            raise RuntimeError(f"super-resolution training diverged at step {step}")
        rate = n * cfg.batch / max(time.time() - t0, 1e-6)
        if progress:
            progress(step, cfg.steps, rate)
        if step % cfg.snapshot == 0 or step == stop:
            psnr, psnr_bicubic = validate_superres(net, val_hr)
            st = SuperResStats(step, loss_sum / n, psnr, psnr_bicubic, rate)
            out.append(st)
            with open(run_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps({**dataclasses.asdict(st), "time": time.time()}) + "\n")
            save_checkpoint(run_dir, prefixed(S=net),
                            {"opt": opt.state_dict(), "sched": sched.state_dict(), "rng": gen.get_state()},
                            {"step": step, "config": dataclasses.asdict(cfg)})
            save_net(net, run_dir / "superres.safetensors", "deid-superres",
                     info={"step": step, "val_psnr": psnr, "val_psnr_bicubic": psnr_bicubic,
                           "val_faces": len(val_hr), "train_faces": len(train)})
            loss_sum, n, t0 = 0.0, 0, time.time()
    return out
