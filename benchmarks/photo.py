"""End-to-end photo anonymisation: a 1920x1080 photo with 8 faces, time per stage and peak memory, CPU.

    python benchmarks/photo.py [--mode swap] [--faces 8] [--repeats 3] [--threads 2] [--source astronaut|heldout]
                               [--json out.json]

The photo is built from faces pasted at 40-240 px (as ``scripts/make_samples.py`` does): by default scikit-image's
public-domain astronaut portrait, 8 times (one person, and one whose swaps sit near the guard's threshold: many tries);
with ``--source heldout``, 8 different real people, adults from the held-out UTKFace faces (never used in training;
read from ``../shared/data/faces-train``, or ``--data-dir``). Models are loaded once before timing (as ``deid photo``
does for a batch). Targets: <= 2 s and <= 2 GB for the photo.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

import deid
from deid.config import PhotoConfig
from deid.blend import grain_sigma
from deid.detect import FaceDetector, detect_faces
from deid.photo import anonymize_photo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_samples import backdrop, paste  # noqa: E402

SIZES = [240, 180, 140, 110, 90, 70, 56, 40]


def astronaut_faces(n: int, detector: FaceDetector) -> list[tuple[np.ndarray, np.ndarray]]:
    astro = skimage.data.astronaut()
    return [(astro, detect_faces(astro, detector)[0].box)] * n


def heldout_faces(n: int, detector: FaceDetector, data_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` different adults (18+) among the first 900 files of UTKFace shard 3: inside the faces every training
    run keeps out (its first 1,000 prepared faces, ``TrainConfig.holdout_shard/holdout_count``)."""
    import io
    import zipfile

    zpath = data_dir / "utkface-03.zip"
    if not zpath.is_file():
        raise SystemExit(f"{zpath}: not found (pass --data-dir, the folder of the UTKFace zips)")
    out = []
    with zipfile.ZipFile(zpath) as z:
        names = sorted(i for i in z.namelist() if i.endswith(".jpg"))[:900]
        adults = [nm for nm in names if int(Path(nm).name.split("_")[0]) >= 18]
        for nm in np.random.default_rng(0).permutation(adults):
            img = np.asarray(Image.open(io.BytesIO(z.read(nm))).convert("RGB"))
            big = np.pad(img, ((100, 100), (100, 100), (0, 0)), mode="edge")  # room around the face
            faces = detect_faces(big, detector)
            if len(faces) == 1:
                out.append((big, faces[0].box))
            if len(out) == n:
                return out
    raise SystemExit(f"{zpath}: fewer than {n} usable held-out adults")


def build_photo(sources: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    scene = backdrop(1080, 1920)
    rng = np.random.default_rng(0)
    for i, (img, box) in enumerate(sources):
        x, y = 180 + (i % 4) * 470, 260 + (i // 4) * 520
        paste(scene, img, box, (x, y), SIZES[i % len(SIZES)], float(rng.uniform(-12, 12)))
    return scene


def _face_and_ring(shape: tuple[int, int], box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the central half of a face box and of a ring 1.3x-1.8x the box around it."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) / 2
    d = np.maximum(np.abs(xx - cx), np.abs(yy - cy))
    return (d < half * 0.5).astype(np.float32), ((d > half * 1.3) & (d < half * 1.8)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="swap", choices=["swap", "blur", "pixelate", "solid"])
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--source", default="astronaut", choices=["astronaut", "heldout"])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-train"))
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PhotoConfig(mode=args.mode)
    detector = FaceDetector(cfg.detect, device="cpu")
    models = None
    if args.mode == "swap":
        from deid.swap import load_swap_models

        models = load_swap_models(device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "photo.jpg"
        faces = (heldout_faces(args.faces, detector, Path(args.data_dir)) if args.source == "heldout"
                 else astronaut_faces(args.faces, detector))
        Image.fromarray(build_photo(faces)).save(src, quality=92)
        runs = []
        for i in range(args.repeats + 1):  # the first run warms up
            t = time.perf_counter()
            report, before, after = anonymize_photo(src, Path(tmp) / f"out{i}.jpg", detector=detector, config=cfg,
                                                    models=models)
            total = (time.perf_counter() - t) * 1000
            if i:
                runs.append((total, report))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = statistics.median(t for t, _ in runs)
    rep = runs[-1][1]
    methods = {}
    for f in rep.faces:
        methods[f.method] = methods.get(f.method, 0) + 1
    print(f"1920x1080, {len(rep.faces)} faces found of {args.faces} ({args.source}), mode {args.mode}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'stage':12s} {'ms':>8s}")
    for k, v in rep.timings_ms.items():
        print(f"{k:12s} {v:8.1f}")
    print(f"{'total':12s} {total:8.1f}   (median of {args.repeats})")
    print("per face ms (tries): " + ", ".join(
        f"{f.index}:{f.time_ms:.0f}" + (f" ({f.swap.tries})" if getattr(f, "swap", None) is not None else "")
        for f in rep.faces))
    print(f"methods: {methods}   peak RSS {peak_mb:.0f} MB (whole process, models included)")
    # softness check: fine-detail level inside each anonymised face vs a ring of photo around it, beside the same
    # ratio in the original photo (the ring here is partly edge-padded, smooth photo: even a real face is > 1)
    ratios, before_ratios = [], []
    for f in rep.faces:
        inner, ring = _face_and_ring(after.shape[:2], f.face.box)
        ring_sigma, ring_before = grain_sigma(after, ring), grain_sigma(before, ring)
        if ring_sigma > 0 and ring_before > 0:
            ratios.append(grain_sigma(after, inner) / ring_sigma)
            before_ratios.append(grain_sigma(before, inner) / ring_before)
    print("fine detail inside face / ring around it, anonymised (original): "
          + ", ".join(f"{r:.2f} ({b:.2f})" for r, b in zip(ratios, before_ratios)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"mode": args.mode, "source": args.source, "faces_found": len(rep.faces), "total_ms": total, "stages_ms": rep.timings_ms,
                       "peak_rss_mb": peak_mb, "methods": methods, "device": platform.processor() or "cpu",
                       "threads": torch.get_num_threads(), "torch": torch.__version__, "deid": deid.__version__}, fh,
                      indent=2)


if __name__ == "__main__":
    main()
