"""Face detection: facenet-pytorch's MTCNN, wrapped for photos of any size and faces down to ~16 px.

Photos are searched whole at a capped working size (``DetectConfig.max_size``). When the smallest face asked for is
at least 16 px at that size, one pass goes down to it, and the faces it finds under ``small_face`` pixels are
re-detected in upscaled crops of their own, for accurate landmarks. When it is smaller (a large photo shrunk to the
working size), the whole pass stops at ``small_face`` pixels and the photo is also cut into overlapping tiles,
upscaled so such faces reach ``small_face`` pixels, and searched again. Heads tilted beyond what MTCNN finds
upright (~35 degrees) are looked for in the photo turned by ``DetectConfig.rotations`` (a coarse search, then each
face confirmed upright in a crop of its own). Faces cut by the photo's edge, which MTCNN misses when less than ~2/3
is inside, are looked for in strips along the edges mirrored outward (``DetectConfig.border_min_face``). Results are
mapped back to original pixels and merged by NMS; a face both searches found keeps the upright detection unless the
turned one measures it tilted more than 30 degrees; a border detection only adds faces no other pass found.
"""

from __future__ import annotations

import copy
import math
import threading
from concurrent.futures import ThreadPoolExecutor
import weakref

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou, nms

from .config import MTCNN_STOCK_THRESHOLDS, DetectConfig
from .types import Face

__all__ = ["FaceDetector", "detect_faces", "find_again"]

# MTCNN's P-net looks at 12x12 windows: a face of min_face_size pixels is scanned at scale 12 / min_face_size.
_PNET_WINDOW = 12
_DIRECT_MIN = 16  # the whole pass searches faces down to this size itself (then refines them); below, tiles
_REFINE_SIDE = 96  # side of the upscaled crop a small face is re-detected in


class FaceDetector:
    """MTCNN loaded once, plus the tiling logic.

    Example:
        >>> det = FaceDetector(DetectConfig(), device=torch.device("cpu"))
        >>> faces = det(image)  # image: [H, W, 3] uint8 RGB -> list[Face], largest first; [] when no face
    """

    def __init__(self, config: DetectConfig = DetectConfig(), *, device: torch.device | str = "cpu"):
        from facenet_pytorch import MTCNN  # the weights ship inside the facenet-pytorch wheel

        self.config = config
        self.device = torch.device(device)
        self._mtcnn = MTCNN(keep_all=True, min_face_size=20, thresholds=list(config.thresholds),
                            factor=config.factor, post_process=False, device=self.device)
        if self.device.type == "cpu":
            _speed_up_mtcnn(self._mtcnn)

    def _run(self, images: list[np.ndarray], min_face: float,
             thresholds: tuple[float, float, float] | None = None) -> list[np.ndarray]:
        """MTCNN on same-size images; returns per image ``[K, 15]`` float32 rows (box 4, score 1, landmarks 10).
        ``thresholds``: the three networks' score thresholds for this call (default: the config's). Safe to call
        from several threads at once (each call sets its settings on a view of its own)."""
        mtcnn = copy.copy(self._mtcnn)  # shares the three networks; min_face_size (and thresholds) are this call's
        mtcnn.min_face_size = max(int(math.floor(min_face)), _PNET_WINDOW)
        if thresholds is not None:
            mtcnn.thresholds = list(thresholds)
        batch = np.stack(images) if len(images) > 1 else images[0]
        with torch.inference_mode():
            boxes, probs, points = mtcnn.detect(batch, landmarks=True)
        if len(images) == 1:
            boxes, probs, points = [boxes], [probs], [points]
        out = []
        for b, p, l in zip(boxes, probs, points):
            if b is None or len(b) == 0:
                out.append(np.zeros((0, 15), np.float32))
                continue
            b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
            p = np.asarray(p, dtype=np.float32).reshape(-1, 1)
            l = np.asarray(l, dtype=np.float32).reshape(-1, 10)
            out.append(np.concatenate([b, p, l], axis=1))
        return out

    def __call__(self, image: np.ndarray) -> list[Face]:
        return detect_faces(image, self)


class _MaxPoolChannelsLast(torch.nn.Module):
    """``MaxPool2d(k, s, ceil_mode=True)`` computed in channels-last layout (the networks run channels-last, see
    ``_speed_up_mtcnn``): the same numbers, but PyTorch's CPU kernel for plain NCHW float32 is slow (50 ms for the
    R-net's pool over 270 candidate crops, 8 ms this way)."""

    def __init__(self, pool: torch.nn.MaxPool2d):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.ceil_mode = (pool.kernel_size, pool.stride, pool.padding,
                                                                        pool.ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.max_pool2d(x.contiguous(memory_format=torch.channels_last), self.kernel_size,
                                              self.stride, self.padding, ceil_mode=self.ceil_mode)


class _ChannelsLastInput(torch.nn.Module):
    """Runs ``net`` (weights already channels-last) on a channels-last copy of its NCHW input."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net(x.contiguous(memory_format=torch.channels_last))


class _Source:
    """The image MTCNN is building its pyramid of, as one contiguous ``[H, W, 3]`` float32 array, made once for all
    the (10-15) levels instead of once per level. Each level is still resampled from the full image: resampling
    each from the previous, smaller level (tried in session 5: 1080p detection 0.86 -> 0.54 s) blurred the coarse
    levels enough to move large faces' landmarks by several pixels, and on 200 held-out faces the swap benchmark
    lost a face more to detection and fell back more often (0.275 vs 0.245). The image is held by a weak reference,
    so a new image (even at the same address) is converted anew."""

    def __init__(self):
        self.source = lambda: None
        self.array: np.ndarray | None = None

    def get(self, img: torch.Tensor) -> np.ndarray:
        if self.source() is not img:
            self.source = weakref.ref(img)
            self.array = np.ascontiguousarray(img[0].permute(1, 2, 0).numpy())
        return self.array


_LOCAL = threading.local()  # one per thread (the server may detect in several)
# runs a photo's turned passes beside its upright ones when torch has more than one thread (two threads' kernels at
# once keep both cores busier than one thread's intra-op parallelism; measured: benchmarks/detect.py --threads 2)
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="deid-detect")


def _area_resample(img: torch.Tensor, size: tuple[int, int], *, _torch_area=None) -> torch.Tensor:
    """facenet-pytorch's ``imresample`` (area interpolation of ``[N, 3, H, W]`` float images to ``size``), with the
    image pyramid's downscaling done by OpenCV's INTER_AREA, as the reference MTCNN code does: 8x faster than
    ``F.interpolate(mode="area")`` on a 720p frame (77 vs 9 ms for its largest level), from one contiguous copy of the
    image (``_Source``). Candidate crops (small, often upscaled) and CUDA tensors keep facenet-pytorch's own
    resampling."""
    h, w = img.shape[2:]
    if img.is_cuda or size[0] >= h or size[1] >= w or h * w < 128 * 128:
        return _torch_area(img, size)
    if img.shape[0] == 1:
        if not hasattr(_LOCAL, "source"):
            _LOCAL.source = _Source()
        out = cv2.resize(_LOCAL.source.get(img), (size[1], size[0]), interpolation=cv2.INTER_AREA)[None]
    else:
        arr = img.permute(0, 2, 3, 1).numpy()
        out = np.stack([cv2.resize(np.ascontiguousarray(a), (size[1], size[0]), interpolation=cv2.INTER_AREA)
                        for a in arr])
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def _speed_up_mtcnn(mtcnn) -> None:
    """Faster CPU paths for facenet-pytorch's MTCNN: its three networks in channels-last layout (same results to
    ~1e-4 px; convolutions, PReLU and max pooling are faster so on one thread) and OpenCV area resampling for its image
    pyramid (``_area_resample``). Channels-last pooling and OpenCV resampling took detection on a 720p frame from
    about 630 to about 350 ms on one thread (session 4); channels-last networks take it on a 1080p photo with 8
    faces from ~860 to ~700 ms (session 5). The resampling lives in facenet-pytorch's
    ``detect_face`` module; it is replaced there once, keeping the original for the cases it still serves."""
    from functools import partial

    from facenet_pytorch.models.utils import detect_face as df

    for attr in ("pnet", "rnet", "onet"):
        net = getattr(mtcnn, attr)
        for name, child in list(net.named_children()):
            if isinstance(child, torch.nn.MaxPool2d):
                setattr(net, name, _MaxPoolChannelsLast(child))
        setattr(mtcnn, attr, _ChannelsLastInput(net.to(memory_format=torch.channels_last)))
    if not getattr(df.imresample, "_deid", False):
        fast = partial(_area_resample, _torch_area=df.imresample)
        fast._deid = True
        df.imresample = fast


def _scaled(img: np.ndarray, s: float) -> np.ndarray:
    if abs(s - 1) < 1e-6:
        return img
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (max(int(round(w * s)), 1), max(int(round(h * s)), 1)), interpolation=interp)


def _tiles(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left corners of ``tile``-sized windows covering ``h x w`` with at least ``overlap`` pixels of overlap."""

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        k = math.ceil((n - overlap) / (tile - overlap))
        step = (n - tile) / (k - 1)
        return [int(round(i * step)) for i in range(k)]

    return [(y, x) for y in starts(h) for x in starts(w)]


def detect_faces(image: np.ndarray, detector: FaceDetector, *, parallel: bool | None = None) -> list[Face]:
    """Find every face in ``image``.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        detector: a loaded ``FaceDetector`` (its ``config`` sets sizes and thresholds).
        parallel: run the turned and border passes in threads of their own, beside the upright ones; None = when
            torch has more than one thread. (Video sets it with one torch thread per stage: the passes then share
            the cores with the stages that anonymise and encode.)

    Returns:
        ``Face`` list in original-image pixels, sorted by size, largest first; empty when there is no face.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8 RGB, got {image.shape} {image.dtype}")
    cfg = detector.config
    h, w = image.shape[:2]
    rows = []
    s = min(1.0, cfg.max_size / max(h, w))
    work = _scaled(image, s)
    turned_job = cut_job = None
    if parallel is None:
        parallel = torch.get_num_threads() > 1
    if parallel:  # the turned and border passes meanwhile, in threads of their own
        if cfg.rotations:
            turned_job = _POOL.submit(_rotated_passes, work, cfg.rotations, detector, cfg.rotated_min_face * s,
                                      cfg.rotated_min_score)
        if cfg.border_min_face:
            cut_job = _POOL.submit(_border_passes, work, detector, cfg.border_min_face * s)
    if cfg.tile and cfg.min_face * s >= _DIRECT_MIN and cfg.min_face * s < cfg.small_face:
        # the whole pass can reach min_face itself: one pass down to it, then the small faces it found are
        # re-detected in upscaled crops of their own for accurate landmarks (what the tiles would give, for less)
        found = detector._run([np.ascontiguousarray(work)], min_face=cfg.min_face * s)[0]
        rows.append(_rescale(_refine_small(work, found, detector, cfg.small_face), 1 / s, 0, 0))
    else:
        # 1) whole image at the working size
        found = detector._run([np.ascontiguousarray(work)], min_face=max(cfg.min_face * s, cfg.small_face))[0]
        rows.append(_rescale(found, 1 / s, 0, 0))
        # 2) small faces: upscaled overlapping tiles
        if cfg.tile and cfg.min_face * s < cfg.small_face * 1.5:
            t = cfg.small_face / cfg.min_face  # original -> tile scale
            if t * max(h, w) > cfg.tile or t > 1:
                big = _scaled(image, t)
                bh, bw = big.shape[:2]
                tile = min(cfg.tile, max(bh, bw))
                th, tw = min(tile, bh), min(tile, bw)
                corners = _tiles(bh, bw, tile, overlap=int(cfg.small_face * 4))
                crops = [big[y : y + th, x : x + tw] for y, x in corners]
                crops = [np.ascontiguousarray(_pad_to(c, th, tw)) for c in crops]
                for i in range(0, len(crops), 8):
                    for (y, x), found in zip(corners[i : i + 8], detector._run(crops[i : i + 8], min_face=cfg.small_face)):
                        # only keep small faces here: big ones are cut by tile borders and the whole pass has them
                        keep = np.maximum(found[:, 2] - found[:, 0], found[:, 3] - found[:, 1]) < cfg.small_face * 3
                        rows.append(_rescale(found[keep], 1 / t, x, y))
    allrows = _filtered(np.concatenate(rows, axis=0), cfg)
    found_by = ["upright"] * len(allrows)
    # 3) heads tilted beyond what MTCNN finds upright: the working image turned by each angle (faces from
    # rotated_min_face px), each face found confirmed upright in a crop of its own, mapped back. They add faces the
    # upright passes missed, and replace upright detections of faces tilted more than _UPRIGHT_MAX_ROLL (whose
    # landmarks are poor); a face tilted less keeps the upright detection.
    if cfg.rotations:
        found = turned_job.result() if turned_job is not None else _rotated_passes(
            work, cfg.rotations, detector, cfg.rotated_min_face * s, cfg.rotated_min_score)
        turned = _filtered(_rescale(found, 1 / s, 0, 0), cfg)
        if len(turned):
            same = _same_face(turned, allrows, cfg.nms_iou)  # [T, U]
            # the tilt a turned detection measures is the reliable one (found upright in its crop; an upright
            # detection of a tilted face gets its landmarks, and so its tilt, wrong)
            add = (np.abs(_roll(turned)) > _UPRIGHT_MAX_ROLL) | ~same.any(axis=1)
            drop = same[add].any(axis=0)
            allrows = np.concatenate([allrows[~drop], turned[add]])
            found_by = [f for f, d in zip(found_by, drop) if not d] + ["turned"] * int(add.sum())
    # 4) faces cut by the photo's edge that the passes above missed (_border_passes)
    if cfg.border_min_face:
        found = cut_job.result() if cut_job is not None else _border_passes(work, detector, cfg.border_min_face * s)
        cut = _filtered(_rescale(found, 1 / s, 0, 0), cfg)
        if len(cut):
            new = cut[~_same_face(cut, allrows, cfg.nms_iou).any(axis=1)]
            allrows = np.concatenate([allrows, new])
            found_by += ["border"] * len(new)
    faces = [Face(box=r[:4], score=float(r[4]), landmarks=r[5:].reshape(5, 2), found_by=f)
             for r, f in zip(allrows, found_by)]
    faces.sort(key=lambda f: -f.size)
    return faces


_BORDER_FACE = 20  # px a face is in the strips of its size band
_BORDER_SPAN = 4  # each band covers faces of F..4F px; the next band's image is 4x smaller
_BORDER_HALF = 56  # px (band scale) a strip reaches into the image, and is mirrored beyond its edge
_BORDER_THRESHOLDS = MTCNN_STOCK_THRESHOLDS  # fewer candidates from the mirrored strips than DetectConfig's (1080p:
# border passes 229 -> 192 ms on one thread, 640x480 196 -> 141 ms; recall on cut faces about the same)


def _border_passes(image: np.ndarray, detector: FaceDetector, min_face: float) -> np.ndarray:
    """Faces cut by the edge of ``image``, from ``min_face`` px up, as detection rows in ``image`` pixels.

    MTCNN misses most faces less than ~2/3 inside the photo (its later networks see the part inside, stretched).
    Here each edge is searched in a strip mirrored outward (``BORDER_REFLECT_101``), so that a face cut near its
    middle looks whole: per band of face sizes (F..4F px, F from ``min_face``, at least 20, up in steps of 4x), the
    image is shrunk so the band's faces are 20-80 px, mirrored ``_BORDER_HALF`` px beyond each edge, and the four
    strips along the edges (twice that wide) are searched. Only detections centred inside the image whose box reaches
    beyond its edge are returned (a face wholly inside is the upright passes' to find; one centred outside is the
    mirror image of a face inside)."""
    h, w = image.shape[:2]
    rows = []
    face = max(float(min_face), float(_BORDER_FACE))  # (smaller faces would need the image enlarged)
    while face <= max(h, w):
        r = _BORDER_FACE / face
        small = _scaled(image, r)
        sh, sw = small.shape[:2]
        m = min(_BORDER_HALF, sh - 1, sw - 1)
        if m >= _PNET_WINDOW // 2:
            padded = cv2.copyMakeBorder(small, m, m, m, m, cv2.BORDER_REFLECT_101)
            ph, pw = padded.shape[:2]
            if min(sh, sw) <= 2 * m:  # the strips would overlap: the whole (small) image at once
                groups = [([padded], [(0, 0)])]
            else:
                groups = [([padded[: 2 * m], padded[ph - 2 * m :]], [(0, 0), (0, ph - 2 * m)]),
                          ([padded[:, : 2 * m], padded[:, pw - 2 * m :]], [(0, 0), (pw - 2 * m, 0)])]
            for strips, offsets in groups:
                found = detector._run([np.ascontiguousarray(t) for t in strips], min_face=_BORDER_FACE,
                                      thresholds=_BORDER_THRESHOLDS)
                rows += [_rescale(f, 1 / r, ox - m, oy - m) for f, (ox, oy) in zip(found, offsets)]
        face *= _BORDER_SPAN
    if not rows:
        return np.zeros((0, 15), np.float32)
    rows = np.concatenate(rows)
    c = _centres(rows)
    inside = (c[:, 0] >= 0) & (c[:, 0] < w) & (c[:, 1] >= 0) & (c[:, 1] < h)
    cut = (rows[:, 0] < 0) | (rows[:, 1] < 0) | (rows[:, 2] > w) | (rows[:, 3] > h)
    return rows[inside & cut]


def _refine_small(image: np.ndarray, rows: np.ndarray, detector: FaceDetector, small_face: int) -> np.ndarray:
    """Detections ``rows`` of ``image`` under ``small_face`` px re-detected in a crop of their own (2.7x the face,
    resized to ``_REFINE_SIDE`` px: the face becomes ~36 px), all crops in one batch; a re-detection near the same
    centre replaces the row's box and landmarks (its score only when higher). Rows without one are kept."""
    sizes = np.maximum(rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1])
    idx = np.nonzero(sizes < small_face)[0]
    if len(idx) == 0:
        return rows
    crops, maps = [], []
    for i in idx:
        cx, cy = (rows[i, 0] + rows[i, 2]) / 2, (rows[i, 1] + rows[i, 3]) / 2
        k = _REFINE_SIDE / max(sizes[i] * 2.7, 8.0)  # crop px per image px
        m = np.array([[k, 0, _REFINE_SIDE / 2 - k * cx], [0, k, _REFINE_SIDE / 2 - k * cy]], np.float64)
        crops.append(cv2.warpAffine(image, m, (_REFINE_SIDE, _REFINE_SIDE), flags=cv2.INTER_CUBIC,
                                    borderMode=cv2.BORDER_REPLICATE))
        maps.append((m, k * sizes[i]))
    out = rows.copy()
    for i, again in zip(idx, _redetect_in_crops(crops, maps, detector, small_face)):
        if again is not None:
            out[i] = again
            out[i, 4] = max(again[4], rows[i, 4])  # a weaker re-detection must not drop a face already found
    return out


def find_again(image: np.ndarray, face: Face, detector: FaceDetector) -> Face | None:
    """The face ``detector`` finds in ``image`` where ``face`` was (its centre within half its size), or None: run
    on a crop 2.7x the face around its centre, resized so the face is about ``_REFINE_SIDE / 2.7`` px. After a face
    was replaced, this is the box another pipeline draws around the new face (``deid.swap`` judges it there)."""
    size = max(face.size, 4.0)
    cx, cy = (float(face.box[0]) + float(face.box[2])) / 2, (float(face.box[1]) + float(face.box[3])) / 2
    half = 1.35 * size
    x0, y0 = int(math.floor(cx - half)), int(math.floor(cy - half))
    side = int(math.ceil(2 * half))
    h, w = image.shape[:2]
    region = image[max(y0, 0) : max(min(y0 + side, h), 0), max(x0, 0) : max(min(x0 + side, w), 0)]
    if region.size == 0:
        return None
    top, left = max(-y0, 0), max(-x0, 0)  # the part of the crop past the photo's edge: repeated edge pixels
    region = cv2.copyMakeBorder(region, top, side - region.shape[0] - top, left, side - region.shape[1] - left,
                                cv2.BORDER_REPLICATE)
    k = _REFINE_SIDE / side  # crop px per image px
    crop = cv2.resize(region, (_REFINE_SIDE, _REFINE_SIDE), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    m = np.array([[k, 0, -k * x0], [0, k, -k * y0]], np.float64)
    row = _redetect_in_crops([crop], [(m, k * size)], detector, 20)[0]
    if row is None:
        return None
    return Face(box=row[:4], score=float(row[4]), landmarks=row[5:].reshape(5, 2), found_by=face.found_by)


def _redetect_in_crops(crops: list[np.ndarray], maps: list[tuple[np.ndarray, float]], detector: FaceDetector,
                       min_face: float) -> list[np.ndarray | None]:
    """MTCNN on same-size ``crops`` (one batch); for each, with ``(m, size)`` its image -> crop transform and the
    face's expected size in crop pixels, the detection nearest the crop's centre (within half that size) mapped back
    to image pixels, or None."""
    if not crops:
        return []
    out: list[np.ndarray | None] = []
    half = crops[0].shape[0] / 2
    for again, (m, size) in zip(detector._run(crops, min_face=min_face), maps):
        d = np.hypot(*(_centres(again) - half).T) if len(again) else np.zeros(0)
        j = int(np.argmin(d)) if len(d) else -1
        out.append(_map_rows(again[j : j + 1], cv2.invertAffineTransform(m))[0] if j >= 0 and d[j] < 0.5 * size
                   else None)
    return out


def _map_rows(rows: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Detection rows through the similarity transform ``m`` (``[2, 3]``): landmarks exactly, each box as a box of
    its own shape, scaled, around its mapped centre."""
    out = rows.copy()
    out[:, 5:] = (rows[:, 5:].reshape(-1, 5, 2) @ m[:, :2].T + m[:, 2]).reshape(-1, 10)
    centre = _centres(rows) @ m[:, :2].T + m[:, 2]
    halfwh = np.stack([rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1]], axis=1) * (np.hypot(*m[:, 0]) / 2)
    out[:, 0:2], out[:, 2:4] = centre - halfwh, centre + halfwh
    return out


_UPRIGHT_MAX_ROLL = 30.0  # degrees: an upright detection of a face tilted more gives way to a turned pass's


def _filtered(rows: np.ndarray, cfg: DetectConfig) -> np.ndarray:
    """Detection rows scoring at least ``min_score`` and at least 0.8 ``min_face`` in size, merged by NMS."""
    sizes = np.maximum(rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1])
    rows = rows[(rows[:, 4] >= cfg.min_score) & (sizes >= cfg.min_face * 0.8)]
    if len(rows) > 1:
        keep = nms(torch.from_numpy(rows[:, :4]).float(), torch.from_numpy(rows[:, 4]).float(), cfg.nms_iou)
        rows = rows[keep.numpy()]
    return rows


def _same_face(a: np.ndarray, b: np.ndarray, iou: float) -> np.ndarray:
    """``[len(a), len(b)]``: whether detection rows of ``a`` and ``b`` are the same face (boxes overlapping more
    than ``iou``, or either box's centre inside the other: a turned pass sometimes finds a part of a face)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), bool)
    over = box_iou(torch.from_numpy(a[:, :4]).float(), torch.from_numpy(b[:, :4]).float()).numpy() > iou
    ca, cb = _centres(a), _centres(b)
    a_in_b = (ca[:, None, 0] > b[None, :, 0]) & (ca[:, None, 0] < b[None, :, 2]) \
        & (ca[:, None, 1] > b[None, :, 1]) & (ca[:, None, 1] < b[None, :, 3])
    b_in_a = (cb[None, :, 0] > a[:, None, 0]) & (cb[None, :, 0] < a[:, None, 2]) \
        & (cb[None, :, 1] > a[:, None, 1]) & (cb[None, :, 1] < a[:, None, 3])
    return over | a_in_b | b_in_a


def _roll(rows: np.ndarray) -> np.ndarray:
    """Tilt of each detection's eye line in its own frame, degrees (0 = level)."""
    d = rows[:, 7:9] - rows[:, 5:7]  # right eye - left eye (x, y)
    return np.degrees(np.arctan2(d[:, 1], d[:, 0])).astype(np.float32)


_COARSE_FACE = 16  # px the smallest face is in a turned pass's coarse search (12 px, P-net's window, lost a quarter)
_REFINE_TURNED = 128  # side of the upright crop a turned pass's face is confirmed in (the face ~47 px: O-net's 48)


def _rotated_passes(image: np.ndarray, angles: tuple[float, ...], detector: FaceDetector, min_face: float,
                    min_score: float) -> np.ndarray:
    """Faces of ``image`` found with the image turned by each of ``angles`` (degrees, counter-clockwise), as
    detection rows in ``image`` pixels.

    A coarse search first: the image shrunk so a face of ``min_face`` px is ``_COARSE_FACE`` px, turned on a canvas
    that holds all of it (all angles in one batch). Each face it finds is then confirmed in a crop of its own, turned
    so its eyes are level, ``_REFINE_TURNED`` px with the face at ~47 px (what MTCNN's last network sees): the
    detection there, mapped back, gives the landmarks, box and score (at least ``min_score``); a face the crop does
    not confirm is dropped."""
    r = min(1.0, _COARSE_FACE / max(min_face, 1.0))
    small = _scaled(image, r)
    sh, sw = small.shape[:2]
    turned, frames = [], []
    side = math.ceil(math.hypot(sh, sw))  # one canvas size for every angle (they run as one batch)
    for angle in angles:
        m = cv2.getRotationMatrix2D((sw / 2, sh / 2), angle, 1.0)
        m[:, 2] += (side / 2 - sw / 2, side / 2 - sh / 2)
        turned.append(cv2.warpAffine(small, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
        frames.append(cv2.invertAffineTransform(m) / r)
    coarse = np.concatenate([_map_rows(found, inv)  # turned px -> image px
                             for found, inv in zip(detector._run(turned, min_face=_COARSE_FACE), frames)])
    crops, maps = [], []
    half = _REFINE_TURNED / 2
    sizes = np.maximum(coarse[:, 2] - coarse[:, 0], coarse[:, 3] - coarse[:, 1])
    for (cx, cy), size, roll in zip(_centres(coarse), sizes, _roll(coarse)):
        k = _REFINE_TURNED / (2.7 * size)  # crop px per image px
        mc = cv2.getRotationMatrix2D((float(cx), float(cy)), float(roll), k)
        mc[:, 2] += (half - cx, half - cy)
        crops.append(cv2.warpAffine(image, mc, (_REFINE_TURNED, _REFINE_TURNED),
                                    flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        maps.append((mc, k * size))
    found = [row for row in _redetect_in_crops(crops, maps, detector, 24) if row is not None and row[4] >= min_score]
    return np.stack(found).astype(np.float32) if found else np.zeros((0, 15), np.float32)


def _centres(rows: np.ndarray) -> np.ndarray:
    return np.stack([(rows[:, 0] + rows[:, 2]) / 2, (rows[:, 1] + rows[:, 3]) / 2], axis=1)


def _pad_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    if img.shape[0] == h and img.shape[1] == w:
        return img
    return cv2.copyMakeBorder(img, 0, h - img.shape[0], 0, w - img.shape[1], cv2.BORDER_CONSTANT, value=0)


def _rescale(rows: np.ndarray, scale: float, ox: float, oy: float) -> np.ndarray:
    """Map detections from a scaled/tiled image back to original pixels (tile origin ``ox, oy`` in scaled pixels)."""
    out = rows.copy()
    out[:, [0, 2, 5, 7, 9, 11, 13]] += ox
    out[:, [1, 3, 6, 8, 10, 12, 14]] += oy
    out[:, [0, 1, 2, 3]] *= scale
    out[:, 5:] *= scale
    return out
