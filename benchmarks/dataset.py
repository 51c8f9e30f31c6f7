"""Dataset sanitisation throughput and memory: composed multi-face photos through ``sanitize_dataset`` with 1 and 2
worker processes, CPU.

    python benchmarks/dataset.py [--images 200] [--mode swap] [--workers 1,2] [--threads 0] [--json out.json]

Each photo is 640x480: scikit-image's public-domain astronaut portrait pasted 2-4 times at 40-140 px onto a soft
backdrop (as ``scripts/make_samples.py`` does), saved as JPEG. ``--mode`` defaults to "swap" when the shipped
generator and encoder exist, else "blur".

Every worker count runs in a fresh Python process (so that peak memory is that run's own): it reports the wall time
of ``sanitize_dataset`` (start-up of the workers and model loading included), the steady rate (from the first
finished image to the last) and peak memory, two ways:

- ``VmHWM`` from ``/proc/<pid>/status``: the high-water RSS of the main process and of each worker (sampled after
  every finished image; the largest worker is shown). It is reset by ``exec``, so it is each process's own.
- ``ru_maxrss`` of ``RUSAGE_SELF`` and ``RUSAGE_CHILDREN`` (largest child, read after the pool is joined). Linux
  carries ``maxrss`` across ``exec``, so a process started by fork + exec also counts the RSS its parent had at the
  fork: these numbers are upper bounds (with one worker, the children are helper programs some library ran).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

import deid
from deid.config import DetectConfig, PhotoConfig
from deid.dataset import DatasetConfig, sanitize_dataset
from deid.detect import FaceDetector, detect_faces
from deid.errors import ModelError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_samples import backdrop, paste  # noqa: E402

SIZES = (140, 100, 72, 56, 40)  # face box sides in pixels, cycled


def default_mode() -> str:
    """"swap" when the shipped generator and encoder are installed, else "blur"."""
    from deid.io.weights import default_model_path

    try:
        default_model_path("deid64.safetensors")
        default_model_path("deid64-encoder.safetensors")
    except ModelError:
        return "blur"
    return "swap"


def build_dataset(root: Path, n: int) -> int:
    """Write ``n`` 640x480 JPEGs with 2-4 faces each into ``root`` (10 sub-folders); returns the faces pasted."""
    astro = skimage.data.astronaut()
    box = detect_faces(astro, FaceDetector(DetectConfig(), device="cpu"))[0].box
    rng = np.random.default_rng(0)
    base = backdrop(480, 640)
    faces = 0
    for i in range(n):
        scene = np.roll(base, int(rng.integers(0, 640)), axis=1).copy()
        k = 2 + i % 3
        for j in range(k):
            x, y = 100 + j * 150 + rng.uniform(-20, 20), 240 + rng.uniform(-100, 100)
            paste(scene, astro, box, (x, y), SIZES[(i + j) % len(SIZES)], float(rng.uniform(-12, 12)))
        faces += k
        path = root / f"set{i % 10}" / f"photo{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene).save(path, quality=90)
    return faces


def vm_hwm_mib(pid: int | str = "self") -> float:
    """Peak resident set size of a live process (``VmHWM``), MiB; 0 when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def run_once(in_dir: Path, out_dir: Path, mode: str, workers: int) -> dict:
    """One ``sanitize_dataset`` run in this process; returns timings and peak memory (MiB)."""
    marks: list[float] = []
    worker_peak = {}  # pid -> VmHWM MiB

    def progress(stage: str, done: int, total: int) -> None:
        for child in multiprocessing.active_children():
            worker_peak[child.pid] = max(worker_peak.get(child.pid, 0.0), vm_hwm_mib(child.pid))
        if stage == "anonymise" and done > 0:
            marks.append(time.perf_counter())

    cfg = DatasetConfig(in_dir, out_dir, photo=PhotoConfig(mode=mode), workers=workers, device="cpu")
    t0 = time.perf_counter()
    s = sanitize_dataset(cfg, progress=progress)
    wall = time.perf_counter() - t0
    steady = (len(marks) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 and marks[-1] > marks[0] else float("nan")
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {
        "workers": workers, "images": s.images, "processed": s.processed, "faces_found": s.faces_found,
        "faces_swapped": s.faces_swapped, "errors": len(s.errors), "wall_s": round(wall, 2),
        "images_per_min": round(60 * s.processed / wall, 1), "steady_images_per_min": round(60 * steady, 1),
        "vm_hwm_main_mib": round(vm_hwm_mib(), 1),
        "vm_hwm_worker_mib": round(max(worker_peak.values(), default=0.0), 1),
        "workers_seen": len(worker_peak),
        "ru_maxrss_main_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib, 1),
        "ru_maxrss_children_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--mode", default="", choices=["", "swap", "blur", "pixelate", "solid"],
                    help="default: swap when the shipped models exist, else blur")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process; 0 = torch's default")
    ap.add_argument("--json", default="")
    ap.add_argument("--run", nargs=3, metavar=("IN", "OUT", "WORKERS"), help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    mode = args.mode or default_mode()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run:
        print(json.dumps(run_once(Path(args.run[0]), Path(args.run[1]), mode, int(args.run[2]))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        pasted = build_dataset(src, args.images)
        for w in (int(v) for v in args.workers.split(",")):
            cmd = [sys.executable, __file__, "--mode", mode, "--threads", str(args.threads),
                   "--run", str(src), str(Path(tmp) / f"out{w}"), str(w)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"dataset: {args.images} images 640x480, {pasted} faces pasted; mode {mode}; "
          f"torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs, {platform.machine()}")
    head = ("workers", "images/min", "steady img/min", "wall s", "faces found", "errors", "VmHWM main MiB",
            "VmHWM worker MiB", "ru_maxrss main MiB", "ru_maxrss children MiB")
    keys = ("workers", "images_per_min", "steady_images_per_min", "wall_s", "faces_found", "errors",
            "vm_hwm_main_mib", "vm_hwm_worker_mib", "ru_maxrss_main_mib", "ru_maxrss_children_mib")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(f"{r[k]:>{len(h)}}" for h, k in zip(head, keys, strict=True)))
    if args.json:
        doc = {"benchmark": "dataset", "device": "cpu", "mode": mode, "images": args.images, "resolution": [640, 480],
               "faces_pasted": pasted, "threads": torch.get_num_threads(), "torch": torch.__version__,
               "deid": deid.__version__, "dtype": "float32", "rows": rows}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
