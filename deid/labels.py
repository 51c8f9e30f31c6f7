"""Conditioning labels of the default generator: (female, age) -> the vector ``c`` fed to the mapping network."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["C_LABELS", "encode_labels", "decode_age"]

C_LABELS = ("female", "age")
_AGE_SCALE = math.log1p(100.0)  # age 100 -> 1.0; log scale because faces change fastest in childhood


def encode_labels(age: np.ndarray | float, female: np.ndarray | float) -> np.ndarray:
    """Label vector ``[N, 2]`` float32: ``female`` in {0, 1} (or a probability) and ``log1p(age) / log1p(100)``."""
    age = np.clip(np.asarray(age, dtype=np.float32).reshape(-1), 0, 120)
    female = np.asarray(female, dtype=np.float32).reshape(-1)
    return np.stack([female, np.log1p(age) / _AGE_SCALE], axis=1).astype(np.float32)


def decode_age(code: np.ndarray | float) -> np.ndarray:
    """Inverse of the age column of ``encode_labels``: years."""
    return np.expm1(np.asarray(code, dtype=np.float32) * _AGE_SCALE)
