"""Held-out real faces for the inversion and swap benchmarks: the faces every training run keeps out
(``TrainConfig.holdout_shard`` / ``holdout_count``: the first 1,000 faces of shard 3).

Those are the first 1,000 in file-name order, and UTKFace names start with the age: the set holds ages 1-2 (270
faces), 10-25 (723) and 100+ (7), nobody aged 26-99. ``heldout`` returns them in a fixed shuffled order so that
the first N of any benchmark are a fair sample of the set (the first 120 in file order are all aged 10-11 or 100+),
and ``AGE_GROUPS`` lets benchmarks report the groups apart.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from deid.config import TrainConfig
from deid.train.data import FaceDataset, holdout_mask

REPO = Path(__file__).resolve().parents[1]
DATA_CANDIDATES = [REPO / "cache" / "utkface-deid128.safetensors", REPO.parent / "cache" / "utkface-deid128.safetensors"]
PHOTO = 384  # side of the photo a held-out crop is placed in
FACE = 224  # side the 128 px crop is scaled to inside it


def find_data(path: str | None) -> Path:
    p = Path(path) if path else next((c for c in DATA_CANDIDATES if c.is_file()), None)
    if p is None or not p.is_file():
        raise SystemExit("prepared data not found: run `deid data prepare` and pass --data")
    return p


AGE_GROUPS = (("0-9", 0, 10), ("10-17", 10, 18), ("18+", 18, 200))
# the adults the held-out set lacks, for benchmarks run on training faces (``training_faces``)
ADULT_GROUPS = (("26-39", 26, 40), ("40-59", 40, 60), ("60+", 60, 200))


def age_group(age: float, groups: tuple = AGE_GROUPS) -> str:
    return next(name for name, lo, hi in groups if lo <= age < hi)


def training_age_shares(data: Path) -> dict[str, float]:
    """Share of each of ``AGE_GROUPS`` among the faces training runs learn from (all but the held-out ones): the age
    mix of UTKFace itself, against which the held-out set over-represents children and teenagers (27 % and 28 % of
    it, 12 % and 4 % of the training faces). Reads the label columns only."""
    from safetensors import safe_open

    cfg = TrainConfig()
    with safe_open(str(data), framework="pt") as f:
        age, shard = f.get_tensor("age").numpy(), f.get_tensor("shard")
    age = age[~holdout_mask(shard, cfg.holdout_shard, cfg.holdout_count).numpy()]
    return {name: float(np.mean((age >= lo) & (age < hi))) for name, lo, hi in AGE_GROUPS}


def parse_groups(spec: str) -> list[tuple[str, float, float]]:
    """"0-2,3-17,60+" -> [("0-2", 0, 2), ("3-17", 3, 17), ("60+", 60, inf)]."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part.endswith("+"):
            out.append((part, float(part[:-1]), float("inf")))
        else:
            lo, hi = part.split("-")
            out.append((part, float(lo), float(hi)))
    return out


def _split(data: Path, resolution: int, split: str) -> FaceDataset:
    cfg = TrainConfig()
    return FaceDataset(data, resolution, holdout_shard=cfg.holdout_shard, holdout_count=cfg.holdout_count, split=split)


def _shuffled(ds: FaceDataset, idx: np.ndarray, n: int | None = None) -> FaceDataset:
    """The faces ``idx`` of ``ds`` in a fixed shuffled order (seed 0), the first ``n`` of it (None: all)."""
    idx = idx[np.random.default_rng(0).permutation(len(idx))[:n]]
    return FaceDataset.from_arrays(ds.images[torch.from_numpy(idx)], ds.age[idx], ds.female[idx], ds.template)


def heldout(data: Path, n: int, resolution: int = 128) -> FaceDataset:
    """The held-out faces in a fixed shuffled order (seed 0)."""
    ds = _split(data, resolution, "val")
    if len(ds) < n:
        raise SystemExit(f"only {len(ds)} held-out faces, {n} asked for")
    return _shuffled(ds, np.arange(len(ds)))


def training_faces(data: Path, n: int | None, lo: float, hi: float, resolution: int = 128) -> FaceDataset:
    """``n`` (None: all) faces aged ``lo`` to ``hi`` (inclusive) that training runs learn from, in a fixed shuffled order
    (seed 0): a stand-in for the ages the held-out set lacks (26-99). The generator, the encoder and the attribute
    network have seen these faces, so what a benchmark measures on them is not a held-out figure: inversion and
    deid's own readings are flattered, and a generator that had memorised a face would be re-identified more often."""
    ds = _split(data, resolution, "train")
    idx = np.flatnonzero((ds.age >= lo) & (ds.age <= hi))
    if n is not None and len(idx) < n:
        raise SystemExit(f"only {len(idx)} training faces aged {lo:g}-{hi:g}, {n} asked for")
    return _shuffled(ds, idx, n)


def as_photo(crop: np.ndarray) -> np.ndarray:
    """A held-out aligned crop ``[R, R, 3]`` as a ``[PHOTO, PHOTO, 3]`` photo: scaled to FACE px, centred, with a
    replicated border (no mirrored face parts for the detector to find)."""
    face = cv2.resize(crop, (FACE, FACE), interpolation=cv2.INTER_CUBIC)
    pad = (PHOTO - FACE) // 2
    return cv2.copyMakeBorder(face, pad, PHOTO - FACE - pad, pad, PHOTO - FACE - pad, cv2.BORDER_REPLICATE)
