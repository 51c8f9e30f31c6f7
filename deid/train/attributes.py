"""Training of the attribute network (gender + age) on the prepared, labelled faces.

Real faces in photos are small, blurred, tilted and colour-cast, so every training crop is augmented: mirror, a small
random similarity transform, colour jitter and grey, and often a downscale to 12-48 px and back (a 20 px face in a
crowd) or noise. Held-out faces (the same ones the inversion and swap benchmarks use) are never trained on; they
give the validation numbers written per epoch. Resumable at epoch boundaries.
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
from ..nets.attributes import AttributeConfig, AttributeNet, age_targets
from .checkpoint import load_checkpoint, prefixed, save_checkpoint, unprefixed
from .data import FaceDataset
from .loop import autocast_for

__all__ = ["AttributeTrainConfig", "AttributeStats", "augment", "evaluate", "train_attributes"]


@dataclass(frozen=True)
class AttributeTrainConfig:
    data: str = ""  # prepared faces (deid data prepare)
    epochs: int = 12
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    threads: int = 0  # 0 = torch default
    mixed_precision: str = "auto"
    net: AttributeConfig = AttributeConfig()


@dataclass(frozen=True)
class AttributeStats:
    epoch: int
    loss: float  # mean training loss of the epoch
    gender_acc: float  # held-out faces
    age_mae: float  # held-out faces, years
    img_per_s: float


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Augmented copy of a batch ``[N, 3, R, R]`` in [-1, 1] (see the module docstring)."""
    n, _, r, _ = x.shape

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.rand(*(shape or (n,)), generator=gen) * (hi - lo) + lo

    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    angle, scale = u(-0.2, 0.2), u(0.9, 1.1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, 0, 1], theta[:, 1, 0] = -torch.sin(angle) / scale, torch.sin(angle) / scale
    theta[:, :, 2] = u(-0.08, 0.08, n, 2)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), padding_mode="border",
                      align_corners=False)
    grey = x.mean(dim=1, keepdim=True)
    sat = torch.where(torch.rand(n, generator=gen) < 0.1, torch.zeros(n), u(0.6, 1.4))
    x = grey + (x - grey) * sat[:, None, None, None]
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * u(0.7, 1.3)[:, None, None, None] + mean + u(-0.2, 0.2)[:, None, None, None]
    x = x + u(-0.06, 0.06, n, 3)[:, :, None, None]  # colour cast
    small = torch.rand(n, generator=gen) < 0.4
    if small.any():
        side = int(torch.randint(12, 49, [], generator=gen))
        low = F.interpolate(x[small], size=(side, side), mode="area")
        x[small] = F.interpolate(low, size=(r, r), mode="bilinear", align_corners=False)
    noisy = (torch.rand(n, generator=gen) < 0.3)[:, None, None, None]
    x = x + noisy * torch.randn(x.shape, generator=gen) * u(0.0, 0.05)[:, None, None, None]
    return x.clamp(-1, 1)


def _loss(net: AttributeNet, x: torch.Tensor, female: torch.Tensor, age_t: torch.Tensor) -> torch.Tensor:
    f_logit, a_logits = net(x)
    gender = F.binary_cross_entropy_with_logits(f_logit, female)
    age = -(age_t * a_logits.log_softmax(dim=1)).sum(dim=1).mean()
    return gender + age


@torch.no_grad()
def evaluate(net: AttributeNet, data: FaceDataset, *, batch: int = 256) -> tuple[float, float]:
    """(gender accuracy, age MAE in years) of ``net`` on ``data``."""
    was = net.training
    net.eval()
    correct, err = 0.0, 0.0
    for i in range(0, len(data), batch):
        x = data.images[i : i + batch].float() / 127.5 - 1
        p, age = net.predict(x.contiguous(memory_format=torch.channels_last))
        correct += float(((p > 0.5).numpy() == (data.female[i : i + batch] > 0.5)).sum())
        err += float((age - torch.as_tensor(data.age[i : i + batch], dtype=torch.float32)).abs().sum())
    net.train(was)
    return correct / len(data), err / len(data)


def train_attributes(cfg: AttributeTrainConfig, *, run_dir: str | Path, device: torch.device,
                     progress: Callable[[int, int, float], None] | None = None,
                     stop_after_epochs: int | None = None) -> list[AttributeStats]:
    """Train (or resume) in ``run_dir``; after each epoch writes the checkpoint, ``log.jsonl`` and the exported
    network ``run_dir/attributes.safetensors``. Returns the stats of the epochs run now (at most
    ``stop_after_epochs`` of them, when given: an interrupted run, for tests)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tc = TrainConfig()
    res = cfg.net.resolution
    train = FaceDataset(cfg.data, res, holdout_shard=tc.holdout_shard, holdout_count=tc.holdout_count)
    val = FaceDataset(cfg.data, res, holdout_shard=tc.holdout_shard, holdout_count=tc.holdout_count, split="val")
    torch.manual_seed(cfg.seed)
    net = AttributeNet(cfg.net).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch, len(train))
    steps_per_epoch = len(train) // batch
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    autocast, _ = autocast_for(device, cfg.mixed_precision)
    epoch = 0
    if (run_dir / "checkpoint" / "state.json").is_file():
        tensors, optim, state = load_checkpoint(run_dir / "checkpoint")
        net.load_state_dict(unprefixed(tensors, "A"))
        opt.load_state_dict(optim["opt"])
        sched.load_state_dict(optim["sched"])
        gen.set_state(optim["rng"])
        torch.set_rng_state(optim["torch_rng"])  # dropout
        epoch = state["epoch"]
    female_all = torch.as_tensor(train.female, dtype=torch.float32)
    age_all = age_targets(train.age)
    out = []
    stop = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, epoch + stop_after_epochs)
    while epoch < stop:
        t0, loss_sum = time.time(), 0.0
        order = torch.randperm(len(train), generator=gen)
        for s in range(steps_per_epoch):
            idx = order[s * batch : (s + 1) * batch]
            x = augment(train.images[idx].float() / 127.5 - 1, gen).to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = _loss(net, x, female_all[idx].to(device), age_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            if not math.isfinite(loss_sum):
                raise RuntimeError(f"attribute training diverged in epoch {epoch + 1}")
            if progress:
                progress(epoch * steps_per_epoch + s + 1, total, (s + 1) * batch / max(time.time() - t0, 1e-6))
        epoch += 1
        acc, mae = evaluate(net, val)
        stats = AttributeStats(epoch, loss_sum / steps_per_epoch, acc, mae,
                               steps_per_epoch * batch / (time.time() - t0))
        out.append(stats)
        with open(run_dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps({**dataclasses.asdict(stats), "time": time.time()}) + "\n")
        save_checkpoint(run_dir, prefixed(A=net),
                        {"opt": opt.state_dict(), "sched": sched.state_dict(), "rng": gen.get_state(),
                         "torch_rng": torch.get_rng_state()},
                        {"epoch": epoch, "config": dataclasses.asdict(cfg)})
        save_net(net, run_dir / "attributes.safetensors", "deid-attributes",
                 info={"epoch": epoch, "val_gender_acc": acc, "val_age_mae": mae,
                       "val_faces": len(val), "train_faces": len(train)})
    return out
