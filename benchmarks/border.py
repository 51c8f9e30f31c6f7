"""Faces cut by the photo's edge: detection recall by how much of the face is inside, with and without the border
passes (``DetectConfig.border_min_face``), and what each costs.

    python benchmarks/border.py [--faces 24] [--sizes 40,90,200,400] [--threads 1] [--source heldout|astronaut]

Each face is pasted (as ``scripts/make_samples.py`` does) on a 1280x720 backdrop at one of the four edges in turn,
its centre placed so that the given share of its box width (height at the top and bottom) is inside the picture;
"1.0" places it whole, 0.2 box widths from the edge. A face counts as found when a detection's box centre lies
within half the face size of the pasted centre, at 0.5-2x its size; "extra" counts the other detections. With
``--source heldout`` (default) the faces are different real people, adults and children, from the held-out UTKFace
faces (never used in training; ``--data-dir``), turned less than 0.5 (``Face.turn``); with ``astronaut``, scikit-image's
public-domain portrait, mirrored on every other face.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

from deid.config import DetectConfig
from deid.detect import FaceDetector, detect_faces

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_samples import backdrop, paste  # noqa: E402

SHARES = (0.35, 0.5, 0.65, 0.8, 1.0)
H, W = 720, 1280


def heldout(n: int, detector: FaceDetector, data_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    zpath = data_dir / "utkface-03.zip"
    if not zpath.is_file():
        raise SystemExit(f"{zpath}: not found (pass --data-dir, the folder of the UTKFace zips)")
    out = []
    with zipfile.ZipFile(zpath) as z:
        names = sorted(i for i in z.namelist() if i.endswith(".jpg"))[:900]  # the held-out faces (see photo.py)
        for nm in np.random.default_rng(1).permutation(names):
            img = np.asarray(Image.open(io.BytesIO(z.read(nm))).convert("RGB"))
            big = np.pad(img, ((100, 100), (100, 100), (0, 0)), mode="edge")
            faces = detect_faces(big, detector)
            if len(faces) == 1 and abs(faces[0].turn) < 0.5:
                out.append((big, faces[0].box))
            if len(out) == n:
                return out
    raise SystemExit(f"{zpath}: fewer than {n} usable held-out faces")


def astronaut(n: int, detector: FaceDetector) -> list[tuple[np.ndarray, np.ndarray]]:
    img = skimage.data.astronaut()
    box = detect_faces(img, detector)[0].box
    flipped = np.ascontiguousarray(img[:, ::-1])
    fbox = np.array([img.shape[1] - box[2], box[1], img.shape[1] - box[0], box[3]], np.float32)
    return [(img, box) if i % 2 == 0 else (flipped, fbox) for i in range(n)]


def centre(side: int, share: float, size: float) -> tuple[float, float]:
    off = (share - 0.5) * size if share < 1 else 0.7 * size
    return [(off, H / 2), (W - off, H / 2), (W / 2, off), (W / 2, H - off)][side]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=24, help="faces per size and share")
    ap.add_argument("--sizes", default="40,90,200,400", help="face sizes, px")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--source", default="heldout", choices=["heldout", "astronaut"])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-train"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with_border = FaceDetector(DetectConfig(), device="cpu")
    without = FaceDetector(DetectConfig(border_min_face=0), device="cpu")
    faces = (heldout(args.faces, without, Path(args.data_dir)) if args.source == "heldout"
             else astronaut(args.faces, without))
    sizes = [int(s) for s in args.sizes.split(",")]
    seconds = {"without": 0.0, "with": 0.0}
    print(f"{args.faces} faces ({args.source}) per row, 1280x720, threads {torch.get_num_threads()}")
    print(f"{'face px':>7s} {'inside':>6s} {'found without':>13s} {'found with':>10s} {'extra w/o':>9s} {'extra w':>7s}")
    for size in sizes:
        for share in SHARES:
            found = {"without": 0, "with": 0}
            extra = {"without": 0, "with": 0}
            for i, (img, box) in enumerate(faces):
                scene = backdrop(H, W)
                c = np.array(centre(i % 4, share, size))
                paste(scene, img, box, tuple(c), size, 0.0)
                for name, det in (("without", without), ("with", with_border)):
                    t = time.perf_counter()
                    got = detect_faces(scene, det)
                    seconds[name] += time.perf_counter() - t
                    ok = [np.hypot(*((f.box[:2] + f.box[2:]) / 2 - c)) < 0.5 * size and 0.5 * size < f.size < 2 * size
                          for f in got]
                    found[name] += any(ok)
                    extra[name] += len(ok) - sum(ok)
            n = len(faces)
            print(f"{size:7d} {share:6.2f} {found['without'] / n:13.0%} {found['with'] / n:10.0%} "
                  f"{extra['without']:9d} {extra['with']:7d}", flush=True)
    runs = len(sizes) * len(SHARES) * len(faces)
    print(f"detection time per 1280x720 photo: without {seconds['without'] / runs * 1000:.0f} ms, "
          f"with {seconds['with'] / runs * 1000:.0f} ms")


if __name__ == "__main__":
    main()
