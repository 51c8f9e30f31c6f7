"""Held-out real faces for the inversion and swap benchmarks: the faces every training run keeps out
(``TrainConfig.holdout_shard`` / ``holdout_count``: the first 1,000 faces of shard 3)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deid.config import TrainConfig
from deid.train.data import FaceDataset

REPO = Path(__file__).resolve().parents[1]
DATA_CANDIDATES = [REPO / "cache" / "utkface-deid128.safetensors", REPO.parent / "cache" / "utkface-deid128.safetensors"]
PHOTO = 384  # side of the photo a held-out crop is placed in
FACE = 224  # side the 128 px crop is scaled to inside it


def find_data(path: str | None) -> Path:
    p = Path(path) if path else next((c for c in DATA_CANDIDATES if c.is_file()), None)
    if p is None or not p.is_file():
        raise SystemExit("prepared data not found: run `deid data prepare` and pass --data")
    return p


def heldout(data: Path, n: int, resolution: int = 128) -> FaceDataset:
    cfg = TrainConfig()
    ds = FaceDataset(data, resolution, holdout_shard=cfg.holdout_shard, holdout_count=cfg.holdout_count, split="val")
    if len(ds) < n:
        raise SystemExit(f"only {len(ds)} held-out faces, {n} asked for")
    return ds


def as_photo(crop: np.ndarray) -> np.ndarray:
    """A held-out aligned crop ``[R, R, 3]`` as a ``[PHOTO, PHOTO, 3]`` photo: scaled to FACE px, centred, with a
    replicated border (no mirrored face parts for the detector to find)."""
    face = cv2.resize(crop, (FACE, FACE), interpolation=cv2.INTER_CUBIC)
    pad = (PHOTO - FACE) // 2
    return cv2.copyMakeBorder(face, pad, PHOTO - FACE - pad, pad, PHOTO - FACE - pad, cv2.BORDER_REPLICATE)
