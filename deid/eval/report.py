"""Anonymisation report: compare a folder of originals with its anonymised copy, face by face.

Files are paired by relative path (an anonymised file may change the extension, e.g. ``a.jpg`` -> ``a.png``).
Faces are found in each original with deid's detector; anonymisation keeps the geometry, so the same box is
measured in both images:

* re-identification: dlib descriptor distance below ``threshold`` (``IdentityJudge``),
* gender agreement and age error (``AttributeJudge``; anonymisation should keep them),
* re-detection: an independent detector (dlib HOG) still finds a face at the box (also reported on the originals,
  to show what the detector finds at all),
* leaks: faces left as they were, mean absolute difference inside the box below ``leak_level`` levels (of 255).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DetectConfig
from ..detect import FaceDetector, detect_faces
from ..errors import DeidError, InputError
from ._common import IMAGE_SUFFIXES, list_images, read_image
from .attributes import AttributeJudge
from .detection import IndependentDetector, redetected
from .identity import SAME_PERSON_THRESHOLD, IdentityJudge

__all__ = ["Judges", "FaceRow", "Summary", "AnonymizationReport", "evaluate_anonymization", "pair_files",
           "format_table", "LEAK_LEVEL"]

LEAK_LEVEL = 2.0  # mean absolute difference (0..255 levels) under which a face counts as left unchanged


@dataclass(frozen=True)
class Judges:
    """Every model the report needs, loaded once."""

    faces: FaceDetector  # finds the faces in the originals (the pipeline's own detector)
    identity: IdentityJudge
    attributes: AttributeJudge
    redetector: IndependentDetector  # the independent detector of the re-detection rate

    @classmethod
    def load(cls, *, device: torch.device | str = "cpu", detect: DetectConfig = DetectConfig(),
             redetector: str = "hog") -> "Judges":
        """Load the shipped models (``redetector``: ``"hog"`` or ``"cnn"``)."""
        return cls(faces=FaceDetector(detect, device=device), identity=IdentityJudge.default(),
                   attributes=AttributeJudge.default(), redetector=IndependentDetector.load(redetector))


@dataclass(frozen=True)
class FaceRow:
    """One face of one original, measured in the original and in its anonymised copy."""

    file: str  # path relative to the originals folder
    index: int  # face number in the original, largest first (as ``deid faces`` numbers them)
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 pixels in the original
    identity_distance: float  # dlib descriptor distance, original vs anonymised (same person below the threshold)
    reidentified: bool  # identity_distance < threshold
    gender_original: str  # "female" or "male"
    gender_anonymized: str
    age_original: float  # apparent age in years
    age_anonymized: float
    redetected: bool  # the independent detector finds a face at the box in the anonymised image
    detected_original: bool  # ... and in the original
    pixel_change: float  # mean absolute difference inside the box, 0..255 levels
    leak: bool  # pixel_change < leak level: the face was left as it was

    @property
    def gender_agrees(self) -> bool:
        return self.gender_original == self.gender_anonymized

    @property
    def age_error(self) -> float:
        """Absolute apparent-age change in years."""
        return abs(self.age_anonymized - self.age_original)


@dataclass(frozen=True)
class Summary:
    """Totals over every face. Rates are in [0, 1] and NaN when there is no face."""

    files: int  # image pairs evaluated
    faces: int  # faces found in the originals
    reid_rate: float  # share of faces still recognised as the same person (lower is better)
    gender_agreement: float  # share of faces whose apparent gender is kept (higher is better)
    age_mae: float  # mean absolute apparent-age change in years (lower is better)
    redetect_rate: float  # share of faces the independent detector finds after anonymisation
    redetect_rate_original: float  # share it finds in the originals (its recall, for reference)
    leaks: int  # faces left unchanged
    seconds: float  # wall time of the evaluation

    @classmethod
    def of(cls, rows: list[FaceRow], files: int, seconds: float) -> "Summary":
        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else math.nan

        return cls(files=files, faces=len(rows), reid_rate=mean([r.reidentified for r in rows]),
                   gender_agreement=mean([r.gender_agrees for r in rows]), age_mae=mean([r.age_error for r in rows]),
                   redetect_rate=mean([r.redetected for r in rows]),
                   redetect_rate_original=mean([r.detected_original for r in rows]),
                   leaks=sum(r.leak for r in rows), seconds=seconds)


@dataclass(frozen=True)
class AnonymizationReport:
    """Per-face rows, the summary, and the files that could not be evaluated."""

    original_dir: str
    anonymized_dir: str
    rows: tuple[FaceRow, ...]
    summary: Summary
    skipped: tuple[tuple[str, str], ...]  # (relative path, reason)
    threshold: float  # identity distance threshold used
    leak_level: float  # pixel-change level used

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes None)."""
        def clean(v):
            if isinstance(v, float):
                return None if math.isnan(v) else round(v, 4)
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        rows = [{**asdict(r), "gender_agrees": r.gender_agrees, "age_error": r.age_error} for r in self.rows]
        return clean({"original_dir": self.original_dir, "anonymized_dir": self.anonymized_dir,
                      "threshold": self.threshold, "leak_level": self.leak_level, "summary": asdict(self.summary),
                      "skipped": [{"file": f, "reason": why} for f, why in self.skipped], "faces": rows})


def pair_files(original_dir: str | Path, anonymized_dir: str | Path) -> tuple[list[tuple[Path, Path]],
                                                                               list[tuple[str, str]]]:
    """Pair each original with its anonymised copy: same relative path, or same path with another image extension.

    Returns:
        ``(pairs, missing)``: ``(original relative path, anonymised relative path)`` pairs, and
        ``(relative path, reason)`` for originals without a copy.

    Raises:
        InputError: a folder does not exist.
    """
    originals = list_images(original_dir)
    anonymized = set(list_images(anonymized_dir))
    pairs, missing = [], []
    for rel in originals:
        candidates = [rel] + [rel.with_suffix(s) for s in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES)]
        match = next((c for c in candidates if c in anonymized), None)
        if match is None:
            missing.append((str(rel), "no anonymised copy"))
        else:
            pairs.append((rel, match))
    return pairs, missing


def _pixel_change(a: np.ndarray, b: np.ndarray, box: np.ndarray) -> float:
    """Mean absolute difference of two same-size uint8 images inside ``box`` (clipped to the frame)."""
    h, w = a.shape[:2]
    x0, y0 = max(int(math.floor(box[0])), 0), max(int(math.floor(box[1])), 0)
    x1, y1 = min(int(math.ceil(box[2])), w), min(int(math.ceil(box[3])), h)
    if x1 <= x0 or y1 <= y0:
        return math.nan
    diff = np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1].astype(np.int16))
    return float(diff.mean())


def _read_pair(original: Path, anonymized: Path) -> tuple[np.ndarray, np.ndarray] | str:
    """Both images of a pair, or the reason they cannot be compared."""
    try:
        a = read_image(original)
    except InputError as exc:
        return exc.cause
    try:
        b = read_image(anonymized)
    except InputError as exc:
        return f"anonymised copy: {exc.cause}"
    if a.shape != b.shape:
        return f"anonymised copy is {b.shape[1]}x{b.shape[0]}, original {a.shape[1]}x{a.shape[0]}"
    return a, b


def _evaluate_pair(rel: str, original: np.ndarray, anonymized: np.ndarray, judges: Judges, *, threshold: float,
                   leak_level: float, min_iou: float) -> list[FaceRow]:
    """Rows of every face of one original."""
    faces = detect_faces(original, judges.faces)
    if not faces:
        return []
    boxes = np.stack([f.box for f in faces])  # [K, 4]
    emb_o = judges.identity.embed_batch(original, faces)  # Faces: a tilted head is judged turned upright
    emb_a = judges.identity.embed_batch(anonymized, faces)
    att_o = judges.attributes.estimate_batch(original, boxes)
    att_a = judges.attributes.estimate_batch(anonymized, boxes)
    found_o = redetected(original, boxes, judges.redetector, min_iou=min_iou)
    found_a = redetected(anonymized, boxes, judges.redetector, min_iou=min_iou)
    rows = []
    for i, box in enumerate(boxes):
        dist = IdentityJudge.distance(emb_o[i], emb_a[i])
        change = _pixel_change(original, anonymized, box)
        rows.append(FaceRow(file=rel, index=i + 1, box=tuple(round(float(v), 2) for v in box),
                            identity_distance=dist, reidentified=dist < threshold,
                            gender_original=att_o[i].gender, gender_anonymized=att_a[i].gender,
                            age_original=att_o[i].age, age_anonymized=att_a[i].age,
                            redetected=bool(found_a[i]), detected_original=bool(found_o[i]),
                            pixel_change=change, leak=bool(change < leak_level)))
    return rows


def evaluate_anonymization(
    original_dir: str | Path,
    anonymized_dir: str | Path,
    *,
    judges: Judges,
    threshold: float = SAME_PERSON_THRESHOLD,
    leak_level: float = LEAK_LEVEL,
    min_iou: float = 0.3,
    progress: Callable[[int, int], None] | None = None,
) -> AnonymizationReport:
    """Measure how well ``anonymized_dir`` hides the faces of ``original_dir`` and what it keeps.

    Args:
        original_dir: folder of original photos (searched recursively).
        anonymized_dir: folder of their anonymised copies, same relative paths and image sizes.
        judges: the loaded models (``Judges.load()``).
        threshold: identity distance under which a face counts as re-identified.
        leak_level: mean absolute pixel change (0..255) under which a face counts as left unchanged.
        min_iou: overlap needed for the independent detector's box to count as the face.
        progress: called as ``progress(done, total)`` after each pair.

    Returns:
        An ``AnonymizationReport``. Unreadable files, originals without a copy and pairs of different sizes are
        listed in ``skipped``, not raised.

    Raises:
        InputError: a folder does not exist.
        DeidError: the originals folder holds no image.

    Example:
        >>> report = evaluate_anonymization("photos", "photos-anon", judges=Judges.load())
        >>> report.summary.reid_rate, report.summary.leaks
    """
    start = time.perf_counter()
    original_dir, anonymized_dir = Path(original_dir), Path(anonymized_dir)
    pairs, skipped = pair_files(original_dir, anonymized_dir)
    if not pairs and not skipped:
        raise DeidError(f"{original_dir}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    rows: list[FaceRow] = []
    files = 0
    for n, (rel, rel_anon) in enumerate(pairs):
        images = _read_pair(original_dir / rel, anonymized_dir / rel_anon)
        if isinstance(images, str):
            skipped.append((str(rel), images))
        else:
            files += 1
            rows.extend(_evaluate_pair(str(rel), *images, judges, threshold=threshold, leak_level=leak_level,
                                       min_iou=min_iou))
        if progress:
            progress(n + 1, len(pairs))
    summary = Summary.of(rows, files, time.perf_counter() - start)
    return AnonymizationReport(original_dir=str(original_dir), anonymized_dir=str(anonymized_dir), rows=tuple(rows),
                               summary=summary, skipped=tuple(sorted(skipped)), threshold=threshold,
                               leak_level=leak_level)


def _fmt(v: float, spec: str) -> str:
    return "-" if isinstance(v, float) and math.isnan(v) else format(v, spec)


def format_table(reports: Mapping[str, AnonymizationReport]) -> str:
    """A plain-text table, one row per named report (e.g. one per anonymisation method)."""
    head = ["method", "files", "faces", "re-id rate", "gender agree", "age MAE", "HOG after", "HOG orig", "leaks",
            "time s"]
    lines = []
    for name, rep in reports.items():
        s = rep.summary
        lines.append([name, str(s.files), str(s.faces), _fmt(s.reid_rate, ".2f"), _fmt(s.gender_agreement, ".2f"),
                      _fmt(s.age_mae, ".1f"), _fmt(s.redetect_rate, ".2f"), _fmt(s.redetect_rate_original, ".2f"),
                      str(s.leaks), f"{s.seconds:.1f}"])
    widths = [max(len(r[i]) for r in [head] + lines) for i in range(len(head))]

    def fmt_row(cells: list[str]) -> str:  # method name left-aligned, numbers right-aligned
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded)

    return "\n".join([fmt_row(head), "  ".join("-" * w for w in widths)] + [fmt_row(r) for r in lines])
