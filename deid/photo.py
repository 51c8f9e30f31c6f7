"""Photo anonymisation: read -> detect -> anonymise every selected face -> write, with a per-face report.

Faces are numbered 1.. largest first, exactly as ``deid faces`` prints them, so ``--only``/``--skip`` refer to the
numbers a user saw in the preview.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .align import crop_matrix
from .config import PhotoConfig
from .detect import FaceDetector, detect_faces
from .io.images import LoadedImage, check_output_path, decode_image, encode_image, read_image, write_image
from .obscure import obscure_face
from .swap import SwapModels, swap_face
from .types import Face, FaceOutcome, PhotoReport

__all__ = ["anonymize_faces", "anonymize_photo", "anonymize_bytes", "AnonymizedPhoto", "preview_sheet", "plan_outputs"]


def anonymize_faces(pixels: np.ndarray, faces: list[Face], config: PhotoConfig,
                    models: SwapModels | None = None,
                    clusters: tuple[str | None, ...] | None = None) -> tuple[np.ndarray, list[FaceOutcome]]:
    """Anonymise the selected ``faces`` of ``pixels`` (``[H, W, 3]`` uint8 RGB); the input array is not modified.

    Args:
        pixels: the photo.
        faces: its detections, largest first (``detect_faces``).
        config: mode, selection and swap settings.
        models: loaded swap models; required for mode "swap".
        clusters: per face, an identity-cluster label (``deid dataset --key``: the same person across images gets
            the same synthetic person); None = no clusters.

    Returns:
        The new image and one ``FaceOutcome`` per face, in number order.
    """
    if config.mode == "swap" and models is None:
        raise ValueError("mode 'swap' needs SwapModels (deid.swap.load_swap_models)")
    # small faces first: a large face's blend must not be undone by a later paste of a small one beside it
    order = sorted(range(len(faces)), key=lambda i: faces[i].size)
    results: dict[int, FaceOutcome] = {}

    def run(group: list[int], out: np.ndarray) -> np.ndarray:
        for i in group:
            face, number = faces[i], i + 1
            t0 = time.perf_counter()
            swap = None
            if not is_selected(number, config):
                method = "kept"
            elif config.mode == "swap":
                out, swap = swap_face(out, face, models, config.swap,
                                      cluster=None if clusters is None else clusters[i])
                method = swap.method
            else:
                out = obscure_face(out, face, config.mode, scale=config.obscure_scale)
                method = config.mode
            results[i] = FaceOutcome(index=number, face=face, method=method, swap=swap,
                                     time_ms=(time.perf_counter() - t0) * 1000)
        return out

    threads = torch.get_num_threads()
    workers = min(config.workers or threads, threads)
    groups = _apart(pixels.shape[:2], [i for i in order if is_selected(i + 1, config)], faces, models) \
        if config.mode == "swap" and workers > 1 else []
    if len(groups) < 2:
        out = run(order, pixels)
    else:
        out = _swap_apart(pixels, groups, faces, models, run, min(workers, len(groups)))
        for i in order:
            if i not in results:
                results[i] = FaceOutcome(index=i + 1, face=faces[i], method="kept", swap=None, time_ms=0.0)
    outcomes = [results[i] for i in range(len(faces))]
    return (out if out is not pixels else pixels.copy()), outcomes


def footprint(shape: tuple[int, int], face: Face, models: SwapModels) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: every pixel swapping ``face`` reads or writes: its aligned crop (the generator's crop,
    the upscaler's and the blend's are the same area), the box twice over (the identity judge's chip, the
    attribute network's crop, a fallback's obscured ellipse), plus a margin; clipped to the photo."""
    h, w = shape
    m = crop_matrix(face.landmarks, 1, models.G.cfg.align_template)
    corners = m @ np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]], np.float64).T  # [2, 4]
    (bx0, by0, bx1, by1), half = face.box.astype(np.float64), face.size
    c = np.array([(bx0 + bx1) / 2, (by0 + by1) / 2])
    lo = np.minimum(corners.min(axis=1), c - half) - 4
    hi = np.maximum(corners.max(axis=1), c + half) + 4
    return (max(int(lo[0]), 0), max(int(lo[1]), 0), min(int(np.ceil(hi[0])), w), min(int(np.ceil(hi[1])), h))


def _apart(shape: tuple[int, int], order: list[int], faces: list[Face], models: SwapModels) -> list[list[int]]:
    """The faces ``order`` (indices) split into groups whose footprints do not touch those of another group (faces
    that touch, also through others, share a group), each group in ``order``'s order."""
    boxes = {i: footprint(shape, faces[i], models) for i in order}
    parent = {i: i for i in order}

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a in order:
        for b in order:
            if a < b:
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
                if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1:
                    parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


_THREADS_LOCK = threading.Lock()  # torch's thread count is process-wide: one photo at a time may share it out


def _swap_apart(pixels: np.ndarray, groups: list[list[int]], faces: list[Face], models: SwapModels, run,
                workers: int) -> np.ndarray:
    """Run ``run(group, pixels)`` for each group in ``workers`` threads, each on the original photo, and put the
    groups' footprints together. Groups do not touch, so each face sees exactly the pixels it would one by one:
    the result is the same. Torch's threads are shared out among the workers meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    groups = sorted(groups, key=lambda g: -sum(faces[i].size ** 2 for i in g))  # the biggest work first
    with _THREADS_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // workers))
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deid-faces") as pool:
                outs = list(pool.map(lambda g: run(g, pixels), groups))
        finally:
            torch.set_num_threads(threads)
    out = pixels.copy()
    for g, o in zip(groups, outs):
        for i in g:
            x0, y0, x1, y1 = footprint(pixels.shape[:2], faces[i], models)
            out[y0:y1, x0:x1] = o[y0:y1, x0:x1]
    return out


def is_selected(number: int, config: PhotoConfig) -> bool:
    """Whether face ``number`` (1-based, largest first) is anonymised under ``--only``/``--skip``."""
    return (not config.only or number in config.only) and number not in config.skip


def _anonymize_loaded(img: LoadedImage, detector: FaceDetector, config: PhotoConfig, models: SwapModels | None,
                      t: dict[str, float]) -> tuple[np.ndarray, list[FaceOutcome]]:
    """Detect and anonymise a decoded photo, recording stage times (seconds) in ``t``."""
    t0 = time.perf_counter()
    faces = detect_faces(img.pixels, detector)
    t["detect"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result, outcomes = anonymize_faces(img.pixels, faces, config, models)
    t["anonymize"] = time.perf_counter() - t0
    return result, outcomes


def anonymize_photo(src: str | Path, dst: str | Path, *, detector: FaceDetector, config: PhotoConfig,
                    models: SwapModels | None = None) -> tuple[PhotoReport, np.ndarray, np.ndarray]:
    """Anonymise the photo ``src`` into ``dst`` (same size and format; metadata dropped, ICC kept).

    Returns:
        the report, the original pixels and the anonymised pixels (``[H, W, 3]`` uint8 RGB), for previews.

    Raises:
        InputError: ``src`` cannot be read, or ``dst`` would overwrite it.
    """
    check_output_path(src, dst)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    img = read_image(src)
    t["read"] = time.perf_counter() - t0
    result, outcomes = _anonymize_loaded(img, detector, config, models, t)
    t0 = time.perf_counter()
    write_image(result, dst, like=img)
    t["write"] = time.perf_counter() - t0
    report = PhotoReport(source=str(src), output=str(dst), width=img.width, height=img.height,
                         faces=tuple(outcomes), timings_ms={k: v * 1000 for k, v in t.items()})
    return report, img.pixels, result


@dataclass(frozen=True, eq=False)
class AnonymizedPhoto:
    """An anonymised photo held in memory, encoded, and its report."""

    data: bytes  # the encoded file: the source's format and size, metadata dropped, ICC kept
    format: str  # PIL format name: "JPEG", "PNG", "WEBP", "TIFF" or "BMP"
    width: int  # pixels, after the source's EXIF orientation
    height: int  # pixels
    faces: tuple[FaceOutcome, ...]  # every detected face, in number order (largest first)
    timings_ms: dict[str, float]  # wall time per stage: read, detect, anonymize, encode


def anonymize_bytes(data: bytes, config: PhotoConfig, *, detector: FaceDetector, models: SwapModels | None,
                    max_pixels: int, name: str = "upload") -> AnonymizedPhoto:
    """``anonymize_photo`` for a photo in memory (the HTTP API): decode, detect, anonymise, encode. Nothing is
    written anywhere.

    Args:
        data: the encoded photo (JPEG, PNG, WebP, TIFF or BMP).
        config: mode, selection and swap settings (``detector`` carries the detection settings).
        detector: the loaded detector.
        models: loaded swap models; required for mode "swap".
        max_pixels: refuse larger photos (width * height) before decoding them.
        name: how error messages name the photo.

    Raises:
        InputError: the photo cannot be decoded (empty, not an image, truncated, corrupt, too large).
    """
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    img = decode_image(data, name=name, max_pixels=max_pixels)
    t["read"] = time.perf_counter() - t0
    result, outcomes = _anonymize_loaded(img, detector, config, models, t)
    t0 = time.perf_counter()
    encoded = encode_image(result, like=img)
    t["encode"] = time.perf_counter() - t0
    return AnonymizedPhoto(data=encoded, format=img.format, width=img.width, height=img.height,
                           faces=tuple(outcomes), timings_ms={k: v * 1000 for k, v in t.items()})


def preview_sheet(before: np.ndarray, after: np.ndarray, faces: list[Face]) -> np.ndarray:
    """Before | after side by side, with the numbered boxes drawn on both (``[H, 2W + gap, 3]`` uint8 RGB)."""
    from .io.preview import draw_faces

    gap = np.full((before.shape[0], max(before.shape[1] // 100, 4), 3), 255, np.uint8)
    return np.concatenate([draw_faces(before, faces), gap, draw_faces(after, faces)], axis=1)


def plan_outputs(inputs: list[Path], out: Path) -> list[tuple[Path, Path]]:
    """Pair every input photo with its output path.

    A single file input with an ``out`` that is not an existing folder gives ``out`` itself. Otherwise ``out`` is a
    folder: files go to ``out/<name>``, folders are walked recursively and mirrored under ``out``.
    Non-image files inside folders are skipped; a file given by name is always tried (and reported if unreadable).
    """
    from .io.images import is_image_path

    if len(inputs) == 1 and not inputs[0].is_dir() and not out.is_dir() and out.suffix:
        return [(inputs[0], out)]
    pairs = []
    for src in inputs:
        if src.is_dir():
            for p in sorted(src.rglob("*")):
                if p.is_file() and is_image_path(p) and out.resolve() not in p.resolve().parents:
                    pairs.append((p, out / p.relative_to(src)))
        else:
            pairs.append((src, out / src.name))
    return pairs
