"""The covered-face check (``deid.occlusion.lower_face_contrast``, bar ``SwapConfig.max_cover_contrast``): how often
it calls a bare face covered, by the data set's race label, and how often it catches a mask, by colour.

    python benchmarks/cover.py [--data cache/utkface-deid128.safetensors] [--faces 1200] [--seed 2]
                               [--min-age 18] [--masked-every 3] [--greyscale]

Faces are drawn at random (``--seed``) from the prepared UTKFace faces aged ``--min-age`` or more (the check has
nothing learned, so training faces are fair here), each placed in a 384 px photo (``_heldout.as_photo``) and
detected. Every ``--masked-every``-th face is also measured with a flat mask drawn over it in each colour (the
test suite's ``draw_masks``: from under the eyes to below the chin) and detected again. ``--greyscale`` measures
greyscale copies of the photos instead. Columns: faces measured, median and 95th/99th percentile of the score, and
the share above the bar (bare: false alarms, which pixelate a face that could be swapped; masked: catches).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

from _heldout import as_photo, find_data
from deid.config import DetectConfig, SwapConfig
from deid.detect import FaceDetector, detect_faces
from deid.occlusion import lower_face_contrast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import draw_masks  # noqa: E402

RACES = ("white", "black", "asian", "indian", "other")  # UTKFace's race labels 0-4
MASKS = {"white": (235, 235, 235), "off-white": (220, 215, 205), "grey": (128, 128, 128), "black": (30, 30, 30),
         "blue": (90, 140, 200), "light blue": (170, 200, 225), "navy": (30, 40, 80), "beige": (200, 170, 140)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--faces", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--min-age", type=float, default=18)
    ap.add_argument("--masked-every", type=int, default=3)
    ap.add_argument("--greyscale", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_file(str(find_data(args.data)))
    pool = np.nonzero(data["age"] >= args.min_age)[0]
    idx = np.random.default_rng(args.seed).choice(pool, min(args.faces, len(pool)), replace=False)
    detector = FaceDetector(DetectConfig(), device="cpu")
    bar = SwapConfig().max_cover_contrast
    bare: dict[str, list[float]] = {r: [] for r in RACES}
    masked: dict[str, list[float]] = {m: [] for m in MASKS}
    missed = 0
    for k, i in enumerate(idx):
        photo = as_photo(np.ascontiguousarray(data["images"][i].transpose(1, 2, 0)))
        if args.greyscale:
            photo = np.repeat(photo.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
        found = detect_faces(photo, detector)
        if not found:
            missed += 1
            continue
        race = int(data["race"][i])
        if 0 <= race < len(RACES):
            bare[RACES[race]].append(lower_face_contrast(photo, found[0]))
        if args.masked_every and k % args.masked_every == 0:
            for name, colour in MASKS.items():
                covered = draw_masks(photo, [found[0]], colour)
                again = detect_faces(covered, detector)
                if again:
                    masked[name].append(lower_face_contrast(covered, again[0]))
    print(f"{len(idx)} faces aged {args.min_age:g}+ (seed {args.seed}{', greyscale' if args.greyscale else ''}), "
          f"{missed} not detected; bar {bar:g}")
    print(f"{'':18s} {'faces':>5s} {'median':>6s} {'p95':>6s} {'p99':>6s} {'> bar':>6s}")
    for title, groups in (("bare", bare), ("masked", masked)):
        for name, v in groups.items():
            if v:
                a = np.array(v)
                print(f"{title + ' ' + name:18s} {len(a):5d} {np.median(a):6.1f} {np.percentile(a, 95):6.1f} "
                      f"{np.percentile(a, 99):6.1f} {np.mean(a > bar):6.3f}")
    everyone = np.concatenate([np.array(v) for v in bare.values() if v])
    print(f"{'bare all':18s} {len(everyone):5d} {np.median(everyone):6.1f} {np.percentile(everyone, 95):6.1f} "
          f"{np.percentile(everyone, 99):6.1f} {np.mean(everyone > bar):6.3f}")


if __name__ == "__main__":
    main()
