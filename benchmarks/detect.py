"""Face detection time and recall on composed photos of a few sizes.

    python benchmarks/detect.py [--faces 8] [--runs 3] [--threads 1] [--tilt 20] [--upright-only] [--no-border]
                                [--json out.json]

Each photo is a noisy neutral background with ``--faces`` copies of the face of scikit-image's public-domain
``astronaut`` photo, pasted on a grid at sizes from 20 px up to 200 px (less where the grid cell is smaller) and at
in-plane rotations spread over -20..20 degrees (``--tilt``). A face counts as found when a detection's box centre lies within 35% of the
face size of the pasted centre. Times are the median of ``--runs`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import time

import cv2
import numpy as np
import skimage.data
import torch

import deid
from deid.config import DetectConfig
from deid.detect import FaceDetector, detect_faces
from deid.types import Face

RESOLUTIONS = ((640, 480), (1920, 1080), (4000, 3000))  # (width, height)
MIN_FACE_PX, MAX_FACE_PX = 20, 200


def face_sizes(n: int, cell: float) -> list[float]:
    """``n`` face sizes spread geometrically from 20 px to 200 px, capped at 45% of a grid cell."""
    top = max(min(MAX_FACE_PX, 0.45 * cell), MIN_FACE_PX)
    if n == 1:
        return [top]
    return [MIN_FACE_PX * (top / MIN_FACE_PX) ** (i / (n - 1)) for i in range(n)]


def paste(scene: np.ndarray, source: np.ndarray, face: Face, center: np.ndarray, size: float, angle: float) -> None:
    """Paste the face region of ``source`` (1.8x its box) into ``scene`` at ``center``, ``size`` px, ``angle`` deg."""
    pre = min(size / face.size, 1.0)  # shrink with area averaging first, so small faces do not alias
    small = cv2.resize(source, None, fx=pre, fy=pre, interpolation=cv2.INTER_AREA) if pre < 1 else source
    src_c = (face.box[:2] + face.box[2:]) / 2 * pre
    rot = cv2.getRotationMatrix2D((float(src_c[0]), float(src_c[1])), angle, size / face.size / pre)
    half = 0.9 * face.size * pre
    mask = np.zeros(small.shape[:2], np.float32)
    mask[max(int(src_c[1] - half), 0) : int(src_c[1] + half), max(int(src_c[0] - half), 0) : int(src_c[0] + half)] = 1
    mask = cv2.GaussianBlur(mask, (0, 0), max(half * 0.08, 0.8))
    r = int(math.ceil(half * size / face.size / pre * 1.5)) + 2  # half-side of the region that can change
    x0, y0 = int(max(center[0] - r, 0)), int(max(center[1] - r, 0))
    x1, y1 = int(min(center[0] + r, scene.shape[1])), int(min(center[1] + r, scene.shape[0]))
    rot[:, 2] += np.asarray(center) - src_c - (x0, y0)
    warped = cv2.warpAffine(small, rot, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = cv2.warpAffine(mask, rot, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)[..., None]
    region = scene[y0:y1, x0:x1].astype(np.float32)
    scene[y0:y1, x0:x1] = np.clip(np.rint(region * (1 - alpha) + warped * alpha), 0, 255).astype(np.uint8)


def compose(width: int, height: int, n: int, source: np.ndarray, face: Face, seed: int = 0, tilt: float = 20.0):
    """A ``[H, W, 3]`` uint8 photo with ``n`` pasted faces; returns it with the ``[n, 2]`` centres and ``[n]`` sizes."""
    rng = np.random.default_rng(seed)
    cols = max(1, round(math.sqrt(n * width / height)))
    rows = math.ceil(n / cols)
    cell_w, cell_h = width / cols, height / rows
    sizes = face_sizes(n, min(cell_w, cell_h))
    rng.shuffle(sizes)
    scene = np.clip(120 + 6 * rng.standard_normal((height, width, 3), dtype=np.float32), 0, 255).astype(np.uint8)
    centres = np.array([((i % cols + 0.5) * cell_w, (i // cols + 0.5) * cell_h) for i in range(n)])
    angles = np.linspace(-tilt, tilt, n) if n > 1 else np.zeros(1)
    for c, s, a in zip(centres, sizes, rng.permutation(angles)):
        paste(scene, source, face, c, s, float(a))
    return scene, centres, np.asarray(sizes)


def recall(found: list[Face], centres: np.ndarray, sizes: np.ndarray) -> tuple[int, int]:
    """(faces found, detections matching no face)."""
    got = np.array([(f.box[:2] + f.box[2:]) / 2 for f in found]).reshape(-1, 2)
    hit, used = 0, np.zeros(len(got), bool)
    for c, s in zip(centres, sizes):
        d = np.linalg.norm(got - c, axis=1) if len(got) else np.zeros(0)
        ok = np.flatnonzero(d < 0.35 * s)
        if len(ok):
            hit += 1
            used[ok[np.argmin(d[ok])]] = True
    return hit, int((~used).sum())


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=8, help="faces per photo")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per photo (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 = torch's default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tilt", type=float, default=20.0, help="faces are pasted at angles spread over +-this (degrees)")
    ap.add_argument("--upright-only", action="store_true", help="no turned passes (DetectConfig.rotations = ())")
    ap.add_argument("--no-border", action="store_true",
                    help="no border passes for faces cut by the edge (DetectConfig.border_min_face = 0)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = DetectConfig(rotations=() if args.upright_only else DetectConfig.rotations,
                          border_min_face=0 if args.no_border else DetectConfig.border_min_face)
    detector = FaceDetector(config, device=device)
    source = skimage.data.astronaut()
    reference = detect_faces(source, detector)[0]
    rows = []
    print(f"{'resolution':>11s} {'faces':>5s} {'face px':>9s} {'median s':>9s} {'min s':>7s} {'recall':>7s} "
          f"{'extra':>5s}")
    for width, height in RESOLUTIONS:
        scene, centres, sizes = compose(width, height, args.faces, source, reference, tilt=args.tilt)
        detect_faces(scene, detector)  # warm-up
        times, found = [], []
        for _ in range(args.runs):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            found = detect_faces(scene, detector)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
        hit, extra = recall(found, centres, sizes)
        med = statistics.median(times)
        span = f"{sizes.min():.0f}-{sizes.max():.0f}"
        print(f"{width:>5d}x{height:<5d} {args.faces:5d} {span:>9s} {med:9.2f} {min(times):7.2f} "
              f"{hit / args.faces:7.0%} {extra:5d}")
        rows.append({"width": width, "height": height, "faces": args.faces, "face_px": [float(sizes.min()),
                     float(sizes.max())], "median_s": med, "min_s": min(times), "times_s": times,
                     "recall": hit / args.faces, "found": hit, "extra_detections": extra})
    if args.json:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
        meta = {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
                "dtype": "float32", "batch": 1, "torch": torch.__version__, "deid": deid.__version__,
                "python": platform.python_version(), "detect_config": dataclasses.asdict(config)}
        with open(args.json, "w") as f:
            json.dump({"benchmark": "detect", **meta, "rows": rows}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
