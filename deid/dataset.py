"""Dataset sanitisation: anonymise every photo of a folder tree into a mirrored tree, resumably (``deid dataset``).

One run:

1. **Scan** ``in_dir`` recursively (sorted; ``out_dir`` is left out when it lies inside). Files with a suffix
   ``deid photo`` reads are images; the rest are skipped and counted, or copied with ``copy_other``, except files
   whose content is an image (a GIF, or a JPEG named ``.dat``): those are never copied, they are reported as errors.
2. **Cluster identities** (mode "swap" with a key only): every selected face of every image is detected and described
   by the identity judge (dlib, 128-D); faces closer than ``CLUSTER_DISTANCE`` to a cluster's centroid join it
   (greedy, in file order). Each face's new identity is then derived from the key and its cluster's label, so the
   same person gets the same synthetic person in every photo of the run (the keyed tries come in the same order
   everywhere; where the identity guard rejects the first for one photo, that photo gets the next: privacy before
   consistency). Descriptors stay in memory for this step only; they are never written anywhere.
3. **Anonymise** the images not finished yet, in this process or in ``workers`` spawned processes (each loads the
   detector and models once). Every output is written atomically (``write_image``); only then is the file's line
   appended to the journal ``.deid-journal.jsonl`` in ``out_dir``.
4. **Report**: ``errors.csv`` (relative path, reason) and ``summary.json`` in ``out_dir``; a ``DatasetSummary``.

Resuming: a file is skipped when the journal says it was finished with the same settings hash (options, models, deid
version; the key enters only through a slow key-derivation function), from the same input (size and mtime), with the
same identity-cluster labels, and its output still exists. Anything else is redone, so a run killed at any point
(Ctrl-C, ``kill -9``) and started again gives the same files as an uninterrupted run. Failed files are retried on
every run.

Example:
    >>> cfg = DatasetConfig(in_dir="shoot", out_dir="shoot-anon", photo=PhotoConfig(mode="blur"), workers=2)
    >>> summary = sanitize_dataset(cfg)
    >>> summary.images, summary.faces_found, len(summary.errors)
    (214, 587, 0)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import hmac
import io
import itertools
import json
import logging
import multiprocessing
import os
import re
import secrets
import shutil
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .config import PhotoConfig
from .detect import FaceDetector, detect_faces
from .errors import ConfigError, DeidError, InputError, ModelError
from .io.images import check_output_path, is_image_path, read_image, write_image
from .photo import anonymize_faces, is_selected
from .swap import SwapModels, load_swap_models
from .types import Face, FaceOutcome

if TYPE_CHECKING:
    from .eval.identity import IdentityJudge

__all__ = ["DatasetConfig", "DatasetSummary", "PlannedFile", "FileResult", "sanitize_dataset", "cluster_identities",
           "JOURNAL_NAME", "SUMMARY_NAME", "ERRORS_NAME", "CLUSTER_DISTANCE"]

logger = logging.getLogger(__name__)

JOURNAL_NAME = ".deid-journal.jsonl"  # in out_dir: one JSON line per finished file, append-only
SUMMARY_NAME = "summary.json"  # in out_dir: counts of the whole dataset (DatasetSummary.to_dict)
ERRORS_NAME = "errors.csv"  # in out_dir: one row (path, reason) per file that failed in the last run
CLUSTER_DISTANCE = 0.5  # a face joins an identity cluster closer than this to its centroid (dlib distance)
_RUN_FILES = frozenset({JOURNAL_NAME, SUMMARY_NAME, ERRORS_NAME})
# temporary files of write_image and of this module: ".<name>.<8 hex digits>.tmp" beside the final file
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
# leading bytes of image formats, to refuse copying a photo that has a non-image suffix (it would leak faces)
_IMAGE_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
                (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"))
_FTYP_IMAGE_BRANDS = (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis")  # HEIF/AVIF at bytes 8..12
_PARENT_POLL_S = 0.5  # how often a worker checks that the main process still exists, seconds
_KEY_KDF_ITERATIONS = 200_000  # PBKDF2 rounds before the key enters the settings hash (slows guessing a weak key)

Progress = Callable[[str, int, int], None]  # (stage: "identities" or "anonymise", files done, files in the stage)


@dataclass(frozen=True)
class DatasetConfig:
    """A dataset run (``deid dataset``)."""

    in_dir: Path  # folder read recursively; never modified
    out_dir: Path  # mirrored tree of outputs, plus the journal, summary.json and errors.csv; created when missing
    photo: PhotoConfig = field(default_factory=PhotoConfig)  # anonymisation settings, as for ``deid photo``
    workers: int = 1  # processes anonymising in parallel; 1 = everything in the calling process
    copy_other: bool = False  # copy non-image files into out_dir; False = skip and count them
    force: bool = False  # redo every file, ignoring what the journal says was finished
    dry_run: bool = False  # only plan: list what would be done (DatasetSummary.plan), write nothing
    generator: str | None = None  # mode "swap": generator weights; None = shipped models/deid64.safetensors
    encoder: str | None = None  # mode "swap": its encoder; None = shipped models/deid64-encoder.safetensors
    device: str = "cpu"  # torch device of every process ("cpu", "cuda", "cuda:N"); "auto" is resolved by the caller

    def __post_init__(self):
        object.__setattr__(self, "in_dir", Path(self.in_dir))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.device.strip().lower() == "auto":
            raise ConfigError("DatasetConfig.device must be resolved (deid.device.resolve_device), not 'auto'")


@dataclass(frozen=True)
class FileResult:
    """What happened to one file: a line of the journal. Counts and guard statistics only, never face data."""

    path: str  # relative to in_dir, with "/" separators
    status: str  # "done" (image anonymised), "copied" (non-image copied) or "error"
    reason: str = ""  # why it failed ("error" only): one line
    faces: int = 0  # faces found
    methods: dict[str, int] = field(default_factory=dict)  # faces per method: "swap", "blur", ..., "kept"
    tries: tuple[int, ...] = ()  # identities tried per face that went through the swap (fallbacks included)
    distances: tuple[float, ...] = ()  # identity distance original <-> result of each swapped face


@dataclass(frozen=True)
class PlannedFile:
    """One line of a dry run."""

    path: str  # relative to in_dir, with "/" separators
    action: str  # "anonymise", "redo", "finished", "copy", "copied", "skip" or "error"
    note: str = ""  # why (for "redo", "skip" and "error")


@dataclass(frozen=True)
class DatasetSummary:
    """Counts of a dataset run. Face and guard counts cover every finished image, earlier runs included."""

    in_dir: str
    out_dir: str
    settings_hash: str  # hex digest of the anonymisation settings (key, options, models, deid version)
    images: int  # image files found (by suffix)
    processed: int  # images anonymised by this run
    resumed: int  # images skipped because an earlier run finished them with the same settings
    redone: int  # images an earlier run finished with other settings, redone by this run
    faces_found: int  # faces detected in the finished images
    faces_swapped: int  # faces replaced by a synthetic person (mode "swap", the guard accepted)
    methods: dict[str, int]  # faces per method over the finished images ("swap", "pixelate", ..., "kept")
    fallbacks: dict[str, int]  # mode "swap": faces obscured because the guard rejected every identity, per method
    errors: tuple[tuple[str, str], ...]  # (relative path, reason) of every file that failed in this run
    other_skipped: int  # non-image files not copied
    other_copied: int  # non-image files present in out_dir as copies (this run or earlier)
    clusters: int | None  # identity clusters found (mode "swap" with a key); None = no clustering
    tries_histogram: dict[int, int]  # identities tried -> faces, for the faces that went through the swap
    distance_min: float | None  # smallest identity distance original <-> swapped face; None = no swapped face
    distance_median: float | None  # median of the same
    seconds: float  # wall time of this run
    images_per_s: float  # images anonymised by this run per second of wall time
    dry_run: bool = False  # True: nothing was done; see ``plan``
    plan: tuple[PlannedFile, ...] = ()  # dry run only: what would be done to each file, in file order

    def to_dict(self) -> dict:
        """The summary as plain JSON data (``summary.json``); the dry-run plan is left out."""
        d = dataclasses.asdict(self)
        d.pop("plan")
        d["errors"] = [{"path": p, "reason": r} for p, r in self.errors]
        d["tries_histogram"] = {str(k): v for k, v in sorted(self.tries_histogram.items())}
        for k in ("distance_min", "distance_median", "seconds", "images_per_s"):
            d[k] = None if d[k] is None else round(d[k], 4)
        return d


# ----------------------------------------------------------------------------------------------------------------
# Public entry point


def sanitize_dataset(config: DatasetConfig, *, progress: Progress | None = None,
                     models: SwapModels | None = None) -> DatasetSummary:
    """Anonymise every image under ``config.in_dir`` into the mirrored tree ``config.out_dir`` (see module doc).

    Args:
        config: folders, anonymisation settings and run options.
        progress: called as ``progress(stage, done, total)`` when a stage starts (``done`` = 0) and after every
            file; stages are "identities" (mode "swap" with a key) and "anonymise". None = no reports.
        models: preloaded ``SwapModels`` for mode "swap" with ``workers`` = 1 (tests, notebooks); None =
            load ``config.generator``/``config.encoder`` (each worker loads its own).

    Returns:
        The ``DatasetSummary``, also written to ``out_dir/summary.json`` (not in a dry run).

    Raises:
        ConfigError: the folders overlap the wrong way round, or ``models`` is given with several workers.
        InputError: ``in_dir`` is not a folder.
        ModelError: mode "swap" and the models cannot be found or loaded.

    Example:
        >>> s = sanitize_dataset(DatasetConfig("in", "out", PhotoConfig(mode="blur")))
        >>> s.processed, s.errors
        (30, ())
    """
    t_start = time.perf_counter()
    in_dir, out_dir = _check_folders(config)
    if models is not None and config.workers > 1:
        raise ConfigError("preloaded models serve workers=1 only; with several workers each loads its own")
    images, others = scan_tree(in_dir, out_dir)
    base_hash = settings_hash(config, models)
    previous = {} if config.force else read_journal(out_dir / JOURNAL_NAME)
    if config.dry_run:
        return _dry_run(config, images, others, previous, base_hash, time.perf_counter() - t_start)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir, keep=set(others))
    tools = _Tools(config, models=models)
    with _Executor(config, tools) as run, _Journal(out_dir / JOURNAL_NAME) as journal:
        found, errors, n_clusters = _identity_pass(config, images, run, progress)
        jobs, finished, changed = _pending_images(config, images, found, errors, previous, base_hash)
        if changed:
            logger.warning("redoing %d file(s) finished by an earlier run: %s", len(changed),
                           ", ".join(f"{why} {n}" for why, n in sorted(Counter(changed.values()).items())))
        results = _anonymise_pass(jobs, run, journal, base_hash, progress)
        copies = _copy_others(config, others, previous, journal, base_hash) if config.copy_other else []
    errors.update({r.path: r.reason for r in results + copies if r.status == "error"})
    finished.update({r.path: dataclasses.asdict(r) for r in results if r.status == "done"})
    summary = _summarize(config, base_hash, images, others, finished, errors, copies,
                         processed=sum(r.status == "done" for r in results), redone=len(changed),
                         clusters=n_clusters, seconds=time.perf_counter() - t_start)
    _write_reports(out_dir, summary)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Scanning and planning


def _check_folders(config: DatasetConfig) -> tuple[Path, Path]:
    in_dir, out_dir = config.in_dir.resolve(), config.out_dir.resolve()
    if not in_dir.is_dir():
        raise InputError(config.in_dir, "not a folder")
    if out_dir == in_dir or out_dir in in_dir.parents:
        raise ConfigError(f"OUT_DIR {config.out_dir} must not be IN_DIR or contain it (outputs would overwrite "
                          "the photos)")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(config.out_dir, "exists and is not a folder")
    return in_dir, out_dir


def scan_tree(in_dir: Path, out_dir: Path) -> tuple[list[str], list[str]]:
    """Every regular file under ``in_dir`` (recursively, sorted, ``out_dir`` left out), split by suffix.

    Returns:
        (image paths, other paths), relative to ``in_dir`` with "/" separators.
    """
    images, others = [], []
    for p in sorted(in_dir.rglob("*")):
        if not p.is_file() or out_dir == p.resolve() or out_dir in p.resolve().parents:
            continue
        rel = p.relative_to(in_dir).as_posix()
        (images if is_image_path(p) else others).append(rel)
    return images, others


def _sniff_image(path: Path) -> str | None:
    """The image format a file's leading bytes announce (JPEG, PNG, GIF, ...), whatever its suffix; None = none."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp" and head[8:12] in _FTYP_IMAGE_BRANDS:
        return "HEIF/AVIF"
    return None


def _other_problem(rel: str, src: Path) -> str:
    """Why a non-image file must not be copied ("" = it may): a photo under another suffix, or a run-file name."""
    fmt = _sniff_image(src)
    if fmt:
        return f"{fmt} image data under a suffix deid does not anonymise; not copied (rename or convert it)"
    if rel in _RUN_FILES:
        return "name reserved for deid's run files in OUT_DIR; not copied"
    return ""


def _source_stamp(src: Path) -> list[int]:
    """``[size, mtime_ns]`` of an input file: a changed input is redone even when the journal lists it."""
    st = src.stat()
    return [st.st_size, st.st_mtime_ns]


def _finished_entry(entry: dict | None, src: Path, dst: Path, base_hash: str, labels_hash: str | None) -> str:
    """"" when the journal ``entry`` says this image is finished as it would be now; else why it is not: "new",
    "output missing", or what changed since: "settings changed", "input changed", "identity clusters changed"."""
    if entry is None or entry.get("status") != "done":
        return "new"
    if entry.get("settings") != base_hash:
        return "settings changed"
    if entry.get("source") != _source_stamp(src):
        return "input changed"
    if labels_hash is not None and entry.get("clusters") != labels_hash:
        return "identity clusters changed"
    if not dst.is_file():
        return "output missing"
    return ""


def _dry_run(config: DatasetConfig, images: list[str], others: list[str], previous: dict[str, dict], base_hash: str,
             seconds: float) -> DatasetSummary:
    """Plan without writing. Identity clusters are not computed, so a keyed swap run may redo more than listed."""
    plan = []
    for rel in images:
        why = _finished_entry(previous.get(rel), config.in_dir / rel, config.out_dir / rel, base_hash, None)
        plan.append(PlannedFile(rel, "finished" if not why else "anonymise" if why == "new" else "redo", why))
    n_copied = n_skipped = 0
    for rel in others:
        problem = _other_problem(rel, config.in_dir / rel) if config.copy_other else ""
        if not config.copy_other:
            plan.append(PlannedFile(rel, "skip", "not an image"))
            n_skipped += 1
        elif problem:
            plan.append(PlannedFile(rel, "error", problem))
        elif _copy_finished(previous.get(rel), config.in_dir / rel, config.out_dir / rel):
            plan.append(PlannedFile(rel, "copied"))
            n_copied += 1
        else:
            plan.append(PlannedFile(rel, "copy"))
    plan.sort(key=lambda p: p.path)
    errors = tuple((p.path, p.note) for p in plan if p.action == "error")
    return DatasetSummary(
        in_dir=str(config.in_dir), out_dir=str(config.out_dir), settings_hash=base_hash, images=len(images),
        processed=0, resumed=sum(p.action == "finished" for p in plan), redone=sum(p.action == "redo" for p in plan),
        faces_found=0, faces_swapped=0, methods={}, fallbacks={}, errors=errors, other_skipped=n_skipped,
        other_copied=n_copied, clusters=None, tries_histogram={}, distance_min=None, distance_median=None,
        seconds=seconds, images_per_s=0.0, dry_run=True, plan=tuple(plan))


# ----------------------------------------------------------------------------------------------------------------
# Settings hash


def settings_hash(config: DatasetConfig, models: SwapModels | None = None) -> str:
    """Hex digest of everything that decides an output's pixels: photo settings, models (mode "swap") and deid's
    version. The key enters only through PBKDF2, so the hash in the journal does not make a weak key easy to test.
    The device and the worker count are left out (their float differences are below what the outputs show)."""
    photo = dataclasses.asdict(config.photo)
    key = config.photo.swap.key
    if key:
        photo["swap"]["key"] = hashlib.pbkdf2_hmac("sha256", key.encode(), b"deid dataset settings",
                                                   _KEY_KDF_ITERATIONS).hex()
    data = {"deid": __version__, "photo": photo,
            "models": _models_fingerprint(config, models) if config.photo.mode == "swap" else ""}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _model_paths(config: DatasetConfig) -> tuple[Path, Path]:
    """The generator and encoder files of mode "swap" (shipped defaults when not given)."""
    from .io.weights import default_model_path

    g = Path(config.generator) if config.generator else default_model_path("deid64.safetensors")
    e = Path(config.encoder) if config.encoder else default_model_path("deid64-encoder.safetensors")
    for p in (g, e):
        if not p.is_file():
            raise ModelError(f"{p}: model file not found")
    return g, e


def _models_fingerprint(config: DatasetConfig, models: SwapModels | None) -> str:
    h = hashlib.sha256()
    if models is not None:  # preloaded: hash the weights themselves
        for net in (models.G, models.E):
            for name, t in sorted(net.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().float().numpy().tobytes())
        return h.hexdigest()
    for p in _model_paths(config):
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _labels_hash(key: str, labels: list[str | None]) -> str:
    """Keyed digest of one image's face -> cluster labels (stored in the journal instead of the labels)."""
    text = "\n".join(label or "-" for label in labels)
    return hmac.new(key.encode(), b"labels\0" + text.encode(), hashlib.sha256).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
# Journal


def read_journal(path: Path) -> dict[str, dict]:
    """The journal's last line per file (later lines win); a torn last line (killed mid-write) is ignored."""
    entries: dict[str, dict] = {}
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return entries
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            entries[entry["path"]] = entry
    return entries


class _Journal:
    """Append-only JSON lines, one per finished file; every line is written with one ``write`` and fsynced."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = -1

    def __enter__(self) -> "_Journal":
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a torn line from a killed run: end it so that the next line parses
                    os.write(self._fd, b"\n")
        return self

    def append(self, entry: dict) -> None:
        os.write(self._fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
        os.fsync(self._fd)

    def __exit__(self, *exc) -> None:
        os.close(self._fd)


def _journal_entry(result: FileResult, base_hash: str, stamp: list[int], labels_hash: str | None) -> dict:
    entry = dataclasses.asdict(result)
    entry.update(settings=base_hash, source=stamp, clusters=labels_hash, time=round(time.time(), 3))
    return entry


def _remove_stale_temporaries(out_dir: Path, keep: set[str]) -> None:
    """Delete the temporary files a killed run left behind (never a finished output: those have no such name)."""
    for p in out_dir.rglob(".*.tmp"):
        rel = p.relative_to(out_dir).as_posix()
        if p.is_file() and _TEMPORARY.match(p.name) and rel not in keep:
            logger.info("removing %s, left by an interrupted run", p)
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# Identity clusters


def cluster_identities(embeddings: np.ndarray, max_distance: float = CLUSTER_DISTANCE) -> np.ndarray:
    """Greedy identity clustering: each face, in order, joins the cluster whose centroid (mean descriptor) is
    nearest if that is closer than ``max_distance``, else founds a new cluster.

    Args:
        embeddings: ``[N, D]`` float descriptors (the identity judge's ``[N, 128]``), in a fixed order.
        max_distance: Euclidean distance to a centroid below which a face joins that cluster.

    Returns:
        ``[N]`` int64 cluster numbers 0.., numbered in order of foundation.

    Example:
        >>> cluster_identities(np.array([[0.0, 0.0], [0.1, 0.0], [3.0, 0.0]]))
        array([0, 0, 1])
    """
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got {list(embeddings.shape)}")
    n = len(embeddings)
    labels = np.zeros(n, np.int64)
    sums, centroids, counts = np.zeros_like(embeddings), np.zeros_like(embeddings), np.zeros(n)  # [C <= N, D]
    found = 0  # clusters so far; work is O(faces x clusters x D)
    for i, e in enumerate(embeddings):
        best = -1
        if found:
            d = np.linalg.norm(centroids[:found] - e, axis=1)
            best = int(np.argmin(d)) if d.min() < max_distance else -1
        if best < 0:
            best, found = found, found + 1
        labels[i] = best
        sums[best] += e
        counts[best] += 1
        centroids[best] = sums[best] / counts[best]
    return labels


def _identity_pass(config: DatasetConfig, images: list[str], run: "_Executor",
                   progress: Progress | None) -> tuple[dict[str, "_Found"], dict[str, str], int | None]:
    """Mode "swap" with a key: detect and describe every selected face, cluster, label each face by its cluster.

    Returns:
        (image -> its faces and labels, image -> error of the images that could not be read, number of clusters);
        ``({}, {}, None)`` when there is nothing to cluster. The descriptors are dropped before returning.
    """
    if config.photo.mode != "swap" or not config.photo.swap.key:
        return {}, {}, None
    found: dict[str, _Found] = {}
    errors: dict[str, str] = {}
    _report(progress, "identities", 0, len(images))
    for done, item in enumerate(run.map("embed", [(rel,) for rel in images]), 1):
        if item.error:
            errors[item.path] = item.error
        else:
            found[item.path] = item
        _report(progress, "identities", done, len(images))
    order = [(rel, i) for rel in sorted(found) for i in range(len(found[rel].embeddings))]
    vectors = [found[rel].embeddings[i] for rel, i in order]
    numbers = cluster_identities(np.stack(vectors)) if vectors else np.zeros(0, np.int64)
    # a cluster's label names its first face ("path#face number"): stable when unrelated files come and go
    founders: dict[int, str] = {}
    labelled: dict[str, list[str | None]] = {rel: [None] * len(f.faces) for rel, f in found.items()}
    for (rel, i), c in zip(order, numbers, strict=True):
        number = found[rel].selected[i]
        founders.setdefault(int(c), f"{rel}#{number}")
        labelled[rel][number - 1] = founders[int(c)]
    result = {rel: _Found(rel, f.faces, (), (), labels=tuple(labelled[rel])) for rel, f in found.items()}
    return result, errors, len(founders)


# ----------------------------------------------------------------------------------------------------------------
# Per-file work (in this process or in a worker)


@dataclass(frozen=True)
class _Found:
    """Faces of one image from the identity pass. ``embeddings`` never leave memory."""

    path: str
    faces: tuple[Face, ...] = ()  # every detection, largest first
    selected: tuple[int, ...] = ()  # 1-based numbers of the faces described in ``embeddings``
    embeddings: tuple[np.ndarray, ...] = ()  # [128] float32 descriptor per selected face
    error: str = ""  # why the image could not be read ("" = it could)
    labels: tuple[str | None, ...] = ()  # per face: identity-cluster label, None = not anonymised


@dataclass(frozen=True)
class _Job:
    """One image to anonymise: faces and labels come from the identity pass, or are found by the worker."""

    path: str
    faces: tuple[Face, ...] | None = None  # None = detect
    labels: tuple[str | None, ...] | None = None  # None = no identity clusters
    labels_hash: str | None = None  # _labels_hash of ``labels``, for the journal; None = no identity clusters


class _Tools:
    """What one process needs, loaded once and on first use: the detector, the identity judge, the swap models."""

    def __init__(self, config: DatasetConfig, models: SwapModels | None = None):
        self.config = config
        self._detector = None
        self._models = models
        self._judge = models.judge if models is not None else None

    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.config.photo.detect, device=self.config.device)
        return self._detector

    def judge(self) -> "IdentityJudge":
        if self._judge is None:
            from .eval.identity import IdentityJudge

            self._judge = IdentityJudge.default()
        return self._judge

    def models(self) -> SwapModels | None:
        """The swap models in mode "swap" (None otherwise); they share the judge of the identity pass."""
        if self._models is None and self.config.photo.mode == "swap":
            g, e = _model_paths(self.config)
            if self._judge is not None:  # the identity pass loaded the judge already
                loaded = load_swap_models(g, e, device=self.config.device)
                self._models = SwapModels(G=loaded.G, E=loaded.E, judge=self._judge, device=loaded.device)
            else:
                self._models = load_swap_models(g, e, device=self.config.device)
                self._judge = self._models.judge
        return self._models


def _embed_file(tools: _Tools, rel: str) -> _Found:
    """Read one image, find its faces and describe the selected ones (identity pass)."""
    try:
        img = read_image(tools.config.in_dir / rel)
        faces = tuple(detect_faces(img.pixels, tools.detector()))
        selected = tuple(i + 1 for i in range(len(faces)) if is_selected(i + 1, tools.config.photo))
        vectors = tools.judge().embed_batch(img.pixels, [faces[n - 1] for n in selected])
    except InputError as exc:
        return _Found(rel, error=exc.cause)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a batch; it is reported in errors.csv
        logger.exception("%s: unexpected failure", rel)
        return _Found(rel, error=_internal_error(exc))
    return _Found(rel, faces, selected, tuple(vectors))


def _anonymise_file(tools: _Tools, job: _Job) -> FileResult:
    """Read, anonymise and write one image; failures become an "error" result, never an exception."""
    cfg = tools.config
    src, dst = cfg.in_dir / job.path, cfg.out_dir / job.path
    models = tools.models()  # outside the try: models that cannot be loaded stop the run (ModelError)
    try:
        check_output_path(src, dst)
        img = read_image(src)
        faces = list(job.faces) if job.faces is not None else detect_faces(img.pixels, tools.detector())
        out, outcomes = anonymize_faces(img.pixels, faces, cfg.photo, models, clusters=job.labels)
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_image(out, dst, like=img)
    except InputError as exc:
        return FileResult(job.path, "error", reason=exc.cause)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a batch; it is reported in errors.csv
        logger.exception("%s: unexpected failure", job.path)
        return FileResult(job.path, "error", reason=_internal_error(exc))
    return _file_result(job.path, outcomes)


def _internal_error(exc: Exception) -> str:
    return f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}"


def _file_result(rel: str, outcomes: list[FaceOutcome]) -> FileResult:
    swapped = [o.swap for o in outcomes if o.swap is not None]
    return FileResult(rel, "done", faces=len(outcomes), methods=dict(Counter(o.method for o in outcomes)),
                      tries=tuple(s.tries for s in swapped),
                      distances=tuple(round(s.distance, 4) for s in swapped if s.method == "swap"))


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy the bytes of ``src`` to ``dst`` through a temporary file and a rename (as ``write_image`` writes)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{secrets.token_hex(4)}.tmp"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_finished(entry: dict | None, src: Path, dst: Path) -> bool:
    return (entry is not None and entry.get("status") == "copied" and entry.get("source") == _source_stamp(src)
            and dst.is_file())


def _copy_others(config: DatasetConfig, others: list[str], previous: dict[str, dict], journal: _Journal,
                 base_hash: str) -> list[FileResult]:
    """Copy the non-image files (``copy_other``); returns one result per file copied, found copied, or refused."""
    results = []
    for rel in others:
        src, dst = config.in_dir / rel, config.out_dir / rel
        problem = _other_problem(rel, src)
        if problem:
            results.append(FileResult(rel, "error", reason=problem))
            continue
        result = FileResult(rel, "copied")
        try:
            if not config.force and _copy_finished(previous.get(rel), src, dst):
                results.append(result)
                continue
            stamp = _source_stamp(src)
            _copy_atomic(src, dst)
        except OSError as exc:
            results.append(FileResult(rel, "error", reason=f"cannot copy ({exc.strerror or exc})"))
            continue
        journal.append(_journal_entry(result, base_hash, stamp, None))
        results.append(result)
    return results


# ----------------------------------------------------------------------------------------------------------------
# Anonymisation pass and the process pool


def _pending_images(config: DatasetConfig, images: list[str], found: dict[str, _Found], errors: dict[str, str],
                    previous: dict[str, dict], base_hash: str) -> tuple[list[_Job], dict[str, dict], dict[str, str]]:
    """Split the images into jobs and finished ones.

    Returns:
        (jobs, finished image -> its journal entry, redone image -> what changed since it was finished).
    """
    jobs, finished, changed = [], {}, {}
    key = config.photo.swap.key
    for rel in images:
        if rel in errors:
            continue
        src, dst = config.in_dir / rel, config.out_dir / rel
        item = found.get(rel)
        labels_hash = _labels_hash(key, list(item.labels)) if item is not None else None
        try:
            why = _finished_entry(previous.get(rel), src, dst, base_hash, labels_hash)
        except OSError as exc:  # vanished or unreadable since the scan: read_image reports it in the job
            why = f"cannot stat ({exc.strerror})"
        if not why:
            finished[rel] = previous[rel]
            continue
        if why.endswith(" changed"):
            changed[rel] = why
        jobs.append(_Job(rel, item.faces if item else None, item.labels if item else None, labels_hash=labels_hash))
    return jobs, finished, changed


def _anonymise_pass(jobs: list[_Job], run: "_Executor", journal: _Journal, base_hash: str,
                    progress: Progress | None) -> list[FileResult]:
    """Anonymise the jobs; each finished file's journal line is written after its output exists."""
    stamps: dict[str, list[int]] = {}
    for job in jobs:  # the stamp of the input as planned: a file changed during the run is redone next time
        try:
            stamps[job.path] = _source_stamp(run.config.in_dir / job.path)
        except OSError:
            stamps[job.path] = [-1, -1]
    hashes = {job.path: job.labels_hash for job in jobs}
    results = []
    _report(progress, "anonymise", 0, len(jobs))
    for done, result in enumerate(run.map("anonymise", [(job,) for job in jobs]), 1):
        journal.append(_journal_entry(result, base_hash, stamps[result.path], hashes[result.path]))
        results.append(result)
        _report(progress, "anonymise", done, len(jobs))
    return results


def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


_TASKS = {"embed": _embed_file, "anonymise": _anonymise_file}
# A worker process's tools, set once by ``_init_worker`` (the process-pool initializer pattern: a worker process
# serves one run, so this is per-run state, never shared between runs).
_WORKER_TOOLS: _Tools | None = None


def _init_worker(config: DatasetConfig, threads: int, parent: int) -> None:
    import torch

    global _WORKER_TOOLS
    torch.set_num_threads(threads)
    _WORKER_TOOLS = _Tools(config)
    # ``parent`` comes from the main process: os.getppid() here would already name init if the main process died
    # while this worker was still starting
    threading.Thread(target=_exit_with_parent, args=(parent,), name="deid-parent-watch", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """End this worker once the main process is gone. After ``kill -9`` of the main process a worker would wait on
    its task queue forever (it holds both ends of the queue's pipe, so it never sees end-of-file)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def _run_in_worker(kind: str, args: tuple) -> object:
    return _TASKS[kind](_WORKER_TOOLS, *args)


class _Executor:
    """Runs per-file tasks here (``workers`` = 1) or in spawned worker processes, yielding results as they finish.

    The workers are a ``ProcessPoolExecutor``: a worker that dies (killed for memory, a crash in native code) breaks
    the pool with an error instead of leaving its task unanswered forever, as ``multiprocessing.Pool`` would.
    """

    def __init__(self, config: DatasetConfig, tools: _Tools):
        self.config = config
        self._tools = tools
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "_Executor":
        if self.config.workers > 1:
            import torch

            if self.config.photo.mode == "swap":
                _model_paths(self.config)  # fail now, not in every worker
            threads = max(1, torch.get_num_threads() // self.config.workers)  # no oversubscription of the cores
            ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and CUDA state
            self._pool = ProcessPoolExecutor(self.config.workers, mp_context=ctx, initializer=_init_worker,
                                             initargs=(self.config, threads, os.getpid()))
        return self

    def map(self, kind: str, args: list[tuple]) -> Iterator:
        if self._pool is None:
            return (_TASKS[kind](self._tools, *a) for a in args)
        return self._map_in_pool(kind, args)

    def _map_in_pool(self, kind: str, args: list[tuple]) -> Iterator:
        todo = iter(args)
        window = 4 * self.config.workers  # tasks queued at once: workers stay busy, memory stays bounded
        pending = {self._pool.submit(_run_in_worker, kind, a) for a in itertools.islice(todo, window)}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise DeidError("a worker process died (out of memory?); finished files are recorded in the "
                                    "journal: run the same command again to go on") from None
                yield result
                pending.update(self._pool.submit(_run_in_worker, kind, a) for a in itertools.islice(todo, 1))

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=exc[0] is None, cancel_futures=True)


# ----------------------------------------------------------------------------------------------------------------
# Summary


def _summarize(config: DatasetConfig, base_hash: str, images: list[str], others: list[str],
               finished: dict[str, dict], errors: dict[str, str], copies: list[FileResult], *, processed: int,
               redone: int, clusters: int | None, seconds: float) -> DatasetSummary:
    """Counts over every finished image (``finished``, this run and earlier ones) plus this run's errors."""
    methods: Counter = Counter()
    tries: Counter = Counter()
    distances: list[float] = []
    for rel in images:
        entry = finished.get(rel)
        if entry is None:
            continue
        methods.update(entry.get("methods", {}))
        tries.update(int(t) for t in entry.get("tries", ()))
        distances.extend(float(d) for d in entry.get("distances", ()))
    fallbacks = {m: n for m, n in methods.items() if m not in ("swap", "kept")} if config.photo.mode == "swap" else {}
    copied = sum(r.status == "copied" for r in copies)
    return DatasetSummary(
        in_dir=str(config.in_dir), out_dir=str(config.out_dir), settings_hash=base_hash, images=len(images),
        processed=processed, resumed=len(finished) - processed, redone=redone,
        faces_found=sum(int(finished[r].get("faces", 0)) for r in images if r in finished),
        faces_swapped=methods.get("swap", 0), methods=dict(sorted(methods.items())),
        fallbacks=dict(sorted(fallbacks.items())), errors=tuple(sorted(errors.items())),
        other_skipped=len(others) - (len(copies) if config.copy_other else 0), other_copied=copied,
        clusters=clusters, tries_histogram=dict(sorted(tries.items())),
        distance_min=min(distances) if distances else None,
        distance_median=statistics.median(distances) if distances else None,
        seconds=seconds, images_per_s=processed / seconds if seconds > 0 else 0.0)


def _write_reports(out_dir: Path, summary: DatasetSummary) -> None:
    """``errors.csv`` and ``summary.json``, each written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(summary.errors)
    _write_text_atomic(out_dir / ERRORS_NAME, buf.getvalue())
    _write_text_atomic(out_dir / SUMMARY_NAME, json.dumps(summary.to_dict(), indent=2) + "\n")


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

