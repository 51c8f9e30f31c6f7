"""Identity judge speed and agreement: dlib's own ResNet vs the same network in PyTorch (``deid.nets.dlib_resnet``).

    python benchmarks/identity.py [--threads 1] [--repeats 20]

Faces: scikit-image's public-domain astronaut and camera photos, moved and flipped to give distinct inputs. Prints
ms per face (the whole ``embed`` call: shape predictor, chip, network) for one face at a time and for a batch of 8
(``embed_many``, the identity guard's second batch), and the largest descriptor difference between the two backends.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import skimage.data
import torch

from deid.eval.identity import IdentityJudge

BOXES = {"astronaut": np.array([179.0, 59.0, 268.0, 176.0], np.float32),
         "camera": np.array([200.0, 119.0, 256.0, 195.0], np.float32)}


def faces() -> list[tuple[np.ndarray, np.ndarray]]:
    astro = skimage.data.astronaut()
    cam = np.repeat(skimage.data.camera()[..., None], 3, axis=2)
    out = []
    for k in range(4):
        for img, box in ((astro, BOXES["astronaut"]), (cam, BOXES["camera"])):
            shifted = np.ascontiguousarray(np.roll(img, (3 * k, 2 * k), axis=(0, 1)))
            out.append((shifted, box + np.array([2 * k, 3 * k, 2 * k, 3 * k], np.float32)))
    return out


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = faces()
    images, boxes = [d[0] for d in data], [d[1] for d in data]
    print(f"identity judge, {len(data)} faces, {torch.get_num_threads()} thread(s)")
    print(f"{'backend':8s} {'ms/face (1 at a time)':>22s} {'ms/face (batch of 8)':>21s}")
    results = {}
    for backend in ("dlib", "torch"):
        judge = IdentityJudge.default(backend=backend)
        one = timed(lambda: judge.embed(images[0], boxes[0]), args.repeats)
        many = timed(lambda: judge.embed_many(images, boxes), max(args.repeats // 4, 3)) / len(images)
        results[backend] = judge.embed_many(images, boxes)
        print(f"{backend:8s} {one:22.1f} {many:21.1f}")
    diff = np.abs(results["dlib"] - results["torch"]).max()
    print(f"largest descriptor difference torch vs dlib: {diff:.2e} (same-person threshold 0.6)")


if __name__ == "__main__":
    main()
