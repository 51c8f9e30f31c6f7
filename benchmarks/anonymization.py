"""Baseline anonymisers measured with ``deid.eval``: Gaussian blur, pixelation, and the ``deface`` tool.

    python benchmarks/anonymization.py [--images 12] [--seed 0] [--out DIR] [--data FILE] [--json out.json]

Builds multi-face photos: real faces pasted at several sizes (48-160 px) and rotations (+-20 degrees) through a soft
oval mask onto scikit-image's face-free photos (coffee, cat, rocket, grass, gravel, brick). Faces come from the
prepared UTKFace file (``--data``, default ``cache/utkface-deid128.safetensors`` in or beside the repository) when
it exists, otherwise from scikit-image's two public-domain portraits (astronaut, cameraman) and their mirror images.
Each anonymiser writes a copy of the folder; ``evaluate_anonymization`` compares it with the originals. Rows:

* ``none``: the untouched copy (calibration: every face leaks and is re-identified),
* ``blur``: Gaussian blur (sigma = box side / 8) over each box found by deid's detector, enlarged 1.2x,
* ``pixelate``: the same boxes reduced to 8x8 blocks (nearest-neighbour mosaic),
* ``deid swap``: deid's own pipeline (``deid photo`` default mode), when the shipped generator and encoder exist,
* ``deface``: the ``deface`` package's defaults (its own CenterFace detector, threshold 0.2, box scaled 1.3x,
  box-filter blur inside an ellipse), when it is installed.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
from PIL import Image

import deid
from deid.align import face_mask
from deid.detect import FaceDetector, detect_faces
from deid.eval import Judges, evaluate_anonymization, format_table

REPO = Path(__file__).resolve().parents[1]
DATA_NAME = "utkface-deid128.safetensors"
DATA_CANDIDATES = [REPO / "cache" / DATA_NAME, REPO.parent / "cache" / DATA_NAME]
SIZE = (640, 480)  # width, height of each photo


# ---------------------------------------------------------------------------------------------------------------------
# Photos


def backgrounds() -> list[np.ndarray]:
    """Face-free scikit-image photos, ``[480, 640, 3]`` uint8 RGB."""
    out = []
    for name in ("coffee", "chelsea", "rocket", "grass", "gravel", "brick"):
        img = getattr(skimage.data, name)()
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        out.append(cv2.resize(img, SIZE, interpolation=cv2.INTER_AREA))
    return out


def utk_faces(path: Path, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` random aligned UTKFace crops ``[128, 128, 3]`` uint8 (read one by one, not the whole file)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        images = f.get_slice("images")
        idx = rng.choice(images.get_shape()[0], n, replace=False)
        crops = [images[int(i) : int(i) + 1][0] for i in idx]  # [3, R, R] each
    return [_upright(c) for c in crops]


def _upright(chw: np.ndarray) -> np.ndarray:
    """``[3, R, R]`` -> ``[R, R, 3]``."""
    return np.ascontiguousarray(chw.transpose(1, 2, 0))


def skimage_faces(detector: FaceDetector) -> list[np.ndarray]:
    """Square crops around the astronaut's and the cameraman's faces, and their mirror images."""
    crops = []
    for img in (skimage.data.astronaut(), np.repeat(skimage.data.camera()[..., None], 3, axis=2)):
        img = np.ascontiguousarray(img)
        face = detect_faces(img, detector)[0]
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        half = int(face.size * 0.6)
        crop = img[max(int(cy) - half, 0) : int(cy) + half, max(int(cx) - half, 0) : int(cx) + half]
        crops += [np.ascontiguousarray(crop), np.ascontiguousarray(crop[:, ::-1])]
    return crops


def paste(photo: np.ndarray, face: np.ndarray, x: int, y: int, side: int, angle: float) -> None:
    """Paste ``face`` (square crop) into ``photo`` at top-left ``(x, y)``, ``side`` px, rotated, through an oval."""
    crop = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if side < face.shape[0] else cv2.INTER_CUBIC)
    mask = face_mask(side, feather=0.15)
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    crop = cv2.warpAffine(crop, rot, (side, side), borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(mask, rot, (side, side))[..., None]
    region = photo[y : y + side, x : x + side].astype(np.float32)
    photo[y : y + side, x : x + side] = np.rint(region * (1 - mask) + crop * mask).astype(np.uint8)


def compose(bg: np.ndarray, faces: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One photo: ``faces`` at random sizes, angles and non-overlapping places on a copy of ``bg``."""
    photo = bg.copy()
    placed: list[tuple[int, int, int]] = []
    for face in faces:
        for _ in range(100):
            side = int(rng.integers(48, 161))
            x, y = int(rng.integers(0, SIZE[0] - side)), int(rng.integers(0, SIZE[1] - side))
            if all(x + side <= px or px + ps <= x or y + side <= py or py + ps <= y for px, py, ps in placed):
                paste(photo, face, x, y, side, float(rng.uniform(-20, 20)))
                placed.append((x, y, side))
                break
    return photo


# ---------------------------------------------------------------------------------------------------------------------
# Anonymisers


def _region(box: np.ndarray, shape: tuple[int, ...], scale: float) -> tuple[int, int, int, int]:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * scale / 2, (box[3] - box[1]) * scale / 2
    return (max(int(cx - hw), 0), max(int(cy - hh), 0), min(int(np.ceil(cx + hw)), shape[1]),
            min(int(np.ceil(cy + hh)), shape[0]))


def blur_faces(img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    out = img.copy()
    for b in boxes:
        x0, y0, x1, y1 = _region(b, img.shape, 1.2)
        sigma = max(x1 - x0, y1 - y0) / 8
        out[y0:y1, x0:x1] = cv2.GaussianBlur(out[y0:y1, x0:x1], (0, 0), sigma)
    return out


def pixelate_faces(img: np.ndarray, boxes: np.ndarray, blocks: int = 8) -> np.ndarray:
    out = img.copy()
    for b in boxes:
        x0, y0, x1, y1 = _region(b, img.shape, 1.2)
        small = cv2.resize(out[y0:y1, x0:x1], (blocks, blocks), interpolation=cv2.INTER_AREA)
        out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return out


def deface_anonymizer():
    """``deface``'s own image path with its CLI defaults, or None when the package is missing."""
    try:
        from deface.centerface import CenterFace
        from deface.deface import anonymize_frame
    except ImportError:
        return None
    centerface = CenterFace(in_shape=None, backend="opencv")  # the onnxrt backend also needs the onnx package

    def run(img: np.ndarray) -> np.ndarray:
        frame = img.copy()
        dets, _ = centerface(frame, threshold=0.2)
        anonymize_frame(dets, frame, mask_scale=1.3, replacewith="blur", ellipse=True, draw_scores=False,
                        replaceimg=None, mosaicsize=20)
        return frame

    return run


# ---------------------------------------------------------------------------------------------------------------------


def swap_anonymizer(detector: FaceDetector):
    """deid's swap pipeline with the shipped models, or None when they are not there."""
    from deid.config import PhotoConfig
    from deid.errors import ModelError
    from deid.photo import anonymize_faces
    from deid.swap import load_swap_models

    try:
        models = load_swap_models(device="cpu")
    except ModelError:
        return None
    return lambda img: anonymize_faces(img, detect_faces(img, detector), PhotoConfig(), models)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=12, help="photos to build")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=None, help="prepared UTKFace file (default: cache/ if present)")
    ap.add_argument("--no-data", action="store_true", help="use scikit-image's portraits even if --data exists")
    ap.add_argument("--out", type=Path, default=None, help="folder for the photos (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    judges = Judges.load(device="cpu")
    data = args.data or next((p for p in DATA_CANDIDATES if p.is_file()), None)
    n_faces = [int(rng.integers(2, 5)) for _ in range(args.images)]
    if data is not None and not args.no_data:
        pool, source = utk_faces(data, sum(n_faces), rng), f"UTKFace ({data.name})"
    else:
        pool, source = skimage_faces(judges.faces), "scikit-image astronaut + cameraman (and mirror images)"
        pool = [pool[int(i)] for i in rng.integers(0, len(pool), sum(n_faces))]
    bgs = backgrounds()
    tmp = tempfile.TemporaryDirectory() if args.out is None else None
    root = Path(tmp.name) if tmp else args.out
    photos, k = {}, 0
    for i, n in enumerate(n_faces):
        photos[f"photo_{i:02d}.png"] = compose(bgs[i % len(bgs)], pool[k : k + n], rng)
        k += n
    anonymizers = {"none": lambda img, boxes: img, "blur": blur_faces, "pixelate": pixelate_faces}
    swap = swap_anonymizer(judges.faces)
    if swap is not None:
        anonymizers["deid swap"] = lambda img, boxes: swap(img)
    deface = deface_anonymizer()
    if deface is not None:
        anonymizers["deface"] = lambda img, boxes: deface(img)
    for name, img in photos.items():
        (root / "original").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "original" / name)
        boxes = np.array([f.box for f in detect_faces(img, judges.faces)], np.float32).reshape(-1, 4)
        for method, fn in anonymizers.items():
            (root / method).mkdir(exist_ok=True)
            Image.fromarray(fn(img, boxes)).save(root / method / name)
    reports = {}
    for method in anonymizers:
        reports[method] = evaluate_anonymization(root / "original", root / method, judges=judges)
    print(f"{len(photos)} photos, {sum(n_faces)} faces pasted, faces from {source}; folders in {root}")
    print(format_table(reports))
    if args.json:
        args.json.write_text(json.dumps({
            "device": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
            "deid": deid.__version__, "photos": len(photos), "faces_pasted": sum(n_faces), "source": source,
            "seed": args.seed, "time": time.time(),
            "reports": {m: r.to_dict()["summary"] for m, r in reports.items()}}, indent=2))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
