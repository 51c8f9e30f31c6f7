"""Training throughput (images/s, full G + D step incl. amortised R1) for a few generator configurations.

    python benchmarks/train_speed.py [--threads 1] [--steps 20] [--precision auto|bf16|fp16|off]
                                     [--memory-format channels_last|contiguous] [--json out.json]

Data is random (speed does not depend on content). Prints one table row per configuration.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

import deid
from deid.config import GeneratorConfig, TrainConfig
from deid.train.data import FaceDataset
from deid.train.loop import Trainer

CONFIGS = {
    "deid64 (cbase 4096, cmax 128)": GeneratorConfig.preset("deid64"),
    "64px cmax 128 everywhere": GeneratorConfig.preset("deid64", channel_base=8192),
    "64px cmax 256": GeneratorConfig.preset("deid64", channel_base=16384, channel_max=256),
    "deid128 (cbase 8192, cmax 128)": GeneratorConfig.preset("deid128"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--only", default="", help="substring of the configurations to run")
    ap.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    rows = []
    print(f"{'configuration':34s} {'res':>4s} {'G params':>9s} {'img/s':>7s} {'h per Mimg':>10s}")
    for name, g in CONFIGS.items():
        if args.only and args.only not in name:
            continue
        r = g.img_resolution
        imgs = torch.randint(0, 256, (256, 3, r, r), dtype=torch.uint8)
        data = FaceDataset.from_arrays(imgs, np.full(256, 30), np.zeros(256))
        tr = Trainer(TrainConfig(generator=g, batch=args.batch, mixed_precision=args.precision,
                                 channels_last=args.memory_format == "channels_last"), data, device=dev)
        for _ in range(3):  # warm-up, includes one R1 step
            tr.step()
        t = time.perf_counter()
        for _ in range(args.steps):
            tr.step()
        ips = args.steps * args.batch / (time.perf_counter() - t)
        nparam = sum(p.numel() for p in tr.G.parameters()) / 1e6
        print(f"{name:34s} {r:4d} {nparam:8.2f}M {ips:7.2f} {1e6 / ips / 3600:10.1f}")
        rows.append({"config": name, "resolution": r, "img_per_s": ips, "g_params_m": nparam})
    if args.json:
        info = {"device": platform.processor() or "cpu", "threads": args.threads, "batch": args.batch,
                "precision": args.precision, "memory_format": args.memory_format, "torch": torch.__version__, "deid": deid.__version__, "rows": rows}
        with open(args.json, "w") as fh:
            json.dump(info, fh, indent=2)


if __name__ == "__main__":
    main()
