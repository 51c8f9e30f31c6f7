"""Training data: re-align UTKFace with the project's own detector and aligner, cache it, sample batches.

``prepare_faces`` produces one safetensors file: ``images`` ``[N, 3, R, R]`` uint8 RGB, ``age`` ``[N]`` int16,
``female`` ``[N]`` uint8, ``race`` ``[N]`` int8 (-1 = unknown), ``shard`` ``[N]`` int8. Its metadata holds the counts
(seen, kept, dropped because no face was detected) and the alignment template.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file
from safetensors import safe_open

from ..align import align_face
from ..detect import FaceDetector, detect_faces
from ..errors import DeidError
from ..labels import encode_labels
from ..types import Face

__all__ = ["PrepareStats", "prepare_faces", "FaceDataset", "holdout_mask"]


@dataclass(frozen=True)
class PrepareStats:
    seen: int  # images read
    kept: int  # images with a detected face, written
    no_face: int  # images dropped: no face detected
    out: str  # path of the written file


def _central_face(faces: list[Face], w: int, h: int) -> Face:
    """The face a cropped portrait is about: large and near the centre."""
    def score(f: Face) -> float:
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        return f.size - np.hypot(cx - w / 2, cy - h / 2)
    return max(faces, key=score)


def prepare_faces(
    src_dir: str | Path,
    out_path: str | Path,
    *,
    detector: FaceDetector,
    resolution: int = 128,
    template: str = "deid",
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareStats:
    """Detect, align and cache every face of a ``faces-train`` folder (``labels.csv`` + zip shards).

    Args:
        src_dir: folder with ``labels.csv`` and the ``utkface-*.zip`` shards.
        out_path: output ``.safetensors`` file (written atomically).
        detector: a loaded detector; the same one inference uses.
        resolution: side of the aligned crops.
        template: alignment template (``"deid"`` for the default model).
        limit: only the first N rows of ``labels.csv`` (for quick tests); None = all.
        progress: called as ``progress(done, total)``.
    """
    src_dir, out_path = Path(src_dir), Path(out_path)
    labels = src_dir / "labels.csv"
    if not labels.is_file():
        raise DeidError(f"{labels}: not found (expected a faces-train folder with labels.csv and zip shards)")
    with open(labels, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if limit is not None:
        rows = rows[:limit]
    shards: dict[str, zipfile.ZipFile] = {}
    imgs, ages, female, race, shard_idx = [], [], [], [], []
    shard_names = sorted({r["shard"] for r in rows})
    no_face = 0
    for i, r in enumerate(rows):
        z = shards.get(r["shard"])
        if z is None:
            z = shards[r["shard"]] = zipfile.ZipFile(src_dir / r["shard"])
        name = r.get("source_path", "").rsplit("/", 1)[-1]
        try:
            data = z.read(r["file"])
        except KeyError:
            data = z.read(name)
        img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        faces = detect_faces(img, detector)
        if not faces:
            no_face += 1
        else:
            face = _central_face(faces, img.shape[1], img.shape[0])
            imgs.append(align_face(img, face, resolution, template).image.transpose(2, 0, 1))
            ages.append(int(r["age"]))
            female.append(int(r["gender"]))
            race.append(int(r["race"]) if r["race"] not in ("", None) else -1)
            shard_idx.append(shard_names.index(r["shard"]))
        if progress:
            progress(i + 1, len(rows))
    for z in shards.values():
        z.close()
    tensors = {
        # contiguous: safetensors writes the raw buffer and ignores strides
        "images": np.ascontiguousarray(np.stack(imgs)) if imgs else np.zeros((0, 3, resolution, resolution), np.uint8),
        "age": np.asarray(ages, np.int16), "female": np.asarray(female, np.uint8),
        "race": np.asarray(race, np.int8), "shard": np.asarray(shard_idx, np.int8),
    }
    meta = {"seen": str(len(rows)), "kept": str(len(imgs)), "no_face": str(no_face), "template": template,
            "resolution": str(resolution), "shards": json.dumps(shard_names), "source": str(src_dir)}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(out_path)
    return PrepareStats(seen=len(rows), kept=len(imgs), no_face=no_face, out=str(out_path))


def holdout_mask(shard: torch.Tensor, holdout_shard: int, holdout_count: int | None = None) -> torch.Tensor:
    """``[N]`` bool: the held-out faces of a prepared data file's ``shard`` column, the first ``holdout_count`` of
    shard ``holdout_shard`` in file order (all of it when None)."""
    is_val = shard == holdout_shard
    if holdout_count is not None:
        is_val &= torch.cumsum(is_val.long(), 0) <= holdout_count
    return is_val


class FaceDataset:
    """A prepared file held in memory, sampled with an explicit ``torch.Generator`` (so resumes are exact).

    Args:
        path: ``prepare_faces`` output.
        resolution: resolution to train at; crops are area-downsampled when the file is larger.
        holdout_shard: shard from which faces are kept out for validation; None = use every face.
        holdout_count: how many faces of that shard (the first ones, in file order) are kept out; None = all.
        split: "train" (everything but the held-out faces) or "val" (only the held-out faces).
    """

    def __init__(self, path: str | Path, resolution: int, *, holdout_shard: int | None = None,
                 holdout_count: int | None = None, split: str = "train"):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        images = t["images"]
        keep = torch.ones(len(images), dtype=torch.bool)
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if holdout_shard is not None:
            is_val = holdout_mask(t["shard"], holdout_shard, holdout_count)
            keep = is_val if split == "val" else ~is_val
        elif split == "val":
            raise ValueError("split='val' needs a holdout_shard")
        images = images[keep]
        src = images.shape[-1]
        if src < resolution or src % resolution:
            raise DeidError(f"{path}: crops are {src} px, cannot train at {resolution} px")
        if src != resolution:  # exact area averaging, in chunks to bound memory
            f = src // resolution
            images = torch.cat([torch.nn.functional.avg_pool2d(images[i : i + 2048].float(), f).round().to(torch.uint8)
                                for i in range(0, len(images), 2048)])
        self.images = images.contiguous()  # [N, 3, R, R] uint8
        self.age = t["age"][keep].numpy()
        self.female = t["female"][keep].numpy()
        self.c = torch.from_numpy(encode_labels(self.age, self.female))  # [N, 2]
        self.template = meta.get("template", "deid")
        self.resolution = resolution
        self.weights: torch.Tensor | None = None  # set_oversample

    @classmethod
    def from_arrays(cls, images: torch.Tensor, age: np.ndarray, female: np.ndarray, template: str = "deid") -> "FaceDataset":
        """Dataset over in-memory arrays: ``images`` ``[N, 3, R, R]`` uint8 (tests, benchmarks)."""
        self = cls.__new__(cls)
        self.images = images.contiguous()
        self.age, self.female = np.asarray(age), np.asarray(female)
        self.c = torch.from_numpy(encode_labels(self.age, self.female))
        self.template, self.resolution = template, int(images.shape[-1])
        self.weights = None
        return self

    def __len__(self) -> int:
        return len(self.images)

    def set_oversample(self, ranges: list[tuple[float, float, float]]) -> None:
        """Draw faces whose age lies in a range (lo, hi inclusive) ``factor`` times as often (``parse_oversample``);
        an empty list draws every face equally often. Ranges that overlap multiply."""
        if not ranges:
            self.weights = None
            return
        w = np.ones(len(self.age))
        for lo, hi, factor in ranges:
            w[(self.age >= lo) & (self.age <= hi)] *= factor
        self.weights = torch.from_numpy(w)

    def share(self, lo: float, hi: float) -> float:
        """The share of drawn faces aged ``lo`` to ``hi`` (inclusive), under the current weights."""
        m = torch.from_numpy((self.age >= lo) & (self.age <= hi))
        w = self.weights
        return float(m.double().mean()) if w is None else float(w[m].sum() / w.sum())

    def indices(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` random face indices: uniform, or by the ``set_oversample`` weights."""
        if self.weights is None:
            return torch.randint(len(self.images), (n,), generator=gen)
        return torch.multinomial(self.weights, n, replacement=True, generator=gen)

    def sample(self, batch: int, gen: torch.Generator, mirror: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Random batch (``indices``): images ``[B, 3, R, R]`` float32 in [-1, 1], labels ``[B, 2]``."""
        idx = self.indices(batch, gen)
        x = self.images[idx].float() / 127.5 - 1
        if mirror:
            flip = torch.rand(batch, generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x, self.c[idx]
