"""Shape checks used at stage boundaries and at the top of ``forward`` (after stylegan2-ada's ``misc.assert_shape``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["assert_shape"]


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[int | None], name: str = "tensor") -> None:
    """Raise ``ValueError`` unless ``tensor`` has ``len(ref_shape)`` dims matching ``ref_shape``.

    ``None`` in ``ref_shape`` marks a dimension that may take any size. The error names the dimension that differs.

    Example:
        >>> assert_shape(torch.zeros(2, 3, 8, 8), [None, 3, 8, 8])
    """
    if tensor.ndim != len(ref_shape):
        raise ValueError(f"{name}: expected {len(ref_shape)} dimensions {list(ref_shape)}, got shape {list(tensor.shape)}")
    for idx, (size, ref) in enumerate(zip(tensor.shape, ref_shape)):
        if ref is not None and size != ref:
            raise ValueError(f"{name}: wrong size for dimension {idx}: got {size}, expected {ref} (shape {list(tensor.shape)})")
