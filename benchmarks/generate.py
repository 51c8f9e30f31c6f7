"""Generation speed: ms per face at batch 1 and batch 32 (mapping + truncation + synthesis, const noise).

    python benchmarks/generate.py [--model models/deid64.safetensors] [--threads 2] [--json out.json]

Warm-up first, then the median of several timed runs. Target: <= 20 ms per face at 64 px, batch 1, CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import deid
from deid.generate import FaceSpec, seed_ws, synthesize
from deid.io.weights import load_generator


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    G = load_generator(args.model, device=dev)
    rows = []
    print(f"{'batch':>5s} {'res':>4s} {'ms/batch':>9s} {'ms/face':>8s}  device={dev} threads={torch.get_num_threads()}")
    with torch.no_grad():
        for batch in (1, 32):
            specs = [FaceSpec(seed=s, psi=0.7) for s in range(batch)]
            ws = torch.cat([seed_ws(G, s, device=dev) for s in specs])  # warms the truncation-centre cache

            def run():
                z = torch.randn(batch, G.z_dim, device=dev)
                c = None if G.c_dim == 0 else torch.rand(batch, G.c_dim, device=dev)
                w = G.mapping(z, c)
                w = G.mapping.w_avg.lerp(w, 0.7)
                return synthesize(G, w)

            for _ in range(3):
                run()
            times = []
            for _ in range(args.repeats if batch == 1 else max(args.repeats // 4, 3)):
                _sync(dev)
                t = time.perf_counter()
                run()
                _sync(dev)
                times.append((time.perf_counter() - t) * 1000)
            ms = statistics.median(times)
            print(f"{batch:5d} {G.img_resolution:4d} {ms:9.2f} {ms / batch:8.2f}")
            rows.append({"batch": batch, "ms_per_batch": ms, "ms_per_face": ms / batch})
            del ws
    if args.json:
        info = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                "dtype": "float32", "resolution": G.img_resolution, "threads": torch.get_num_threads(),
                "torch": torch.__version__, "deid": deid.__version__, "rows": rows}
        with open(args.json, "w") as fh:
            json.dump(info, fh, indent=2)


if __name__ == "__main__":
    main()
