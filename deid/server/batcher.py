"""Batched face generation for the HTTP API: one worker, one asyncio queue, one forward pass per batch.

Requests wait in a bounded ``asyncio.Queue``. A single worker task takes the first waiting request plus every
other one already queued (up to ``max_batch``), and runs them in a one-thread executor, so the event loop keeps
answering while torch works:

1. mapping, per request: ``seed_ws`` (and ``mix_ws`` for style mixing), the very functions ``deid generate`` uses, so
   the returned W+ equals the CLI's ``--latent-out`` bit for bit;
2. synthesis, batched: one ``synthesize`` call over every request's W+, with const noise;
3. per request again: resize (PIL Lanczos) to the asked size, then encode as PNG, JPEG or WebP.

Why every forward pass is padded to ``max_batch`` rows: the synthesis network is per-sample (const noise, no
batch statistics), but CPU and GPU kernels (GEMM, oneDNN/cuDNN convolutions) choose their blocking and reduction
order from the batch size, so the same W+ gives float results that differ in the last bits (~1e-5) between batch
sizes 1, 2, 3, ... and those differences flip a few uint8 pixels after rounding. For a fixed batch size the result of
a row depends neither on its position nor on the other rows (checked by ``tests/test_server.py``), so padding every
pass to ``max_batch`` rows (copies of the last real row) makes a request's image independent of what it was batched
with. The price is latency when the server is idle (a lone request pays for ``max_batch`` rows); ``--max-batch 1``
gives the lowest latency, and then the image equals what ``deid generate`` writes.
"""

from __future__ import annotations

import asyncio
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from PIL import Image

from ..errors import DeidError
from ..generate import FaceSpec, mix_ws, seed_ws, synthesize
from ..nets.generator import Generator

__all__ = ["FaceJob", "FaceResult", "QueueFullError", "Batcher", "face_ws", "render_faces", "encode_face",
           "run_jobs", "CONTENT_TYPES"]

log = logging.getLogger(__name__)

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Encoder settings: the same as deid.io.images.write_image uses for a plain RGB file of that format, so that a PNG from
# the API and one from ``deid generate`` are the same bytes. None of them writes a timestamp.
_ENCODE = {
    "png": ("PNG", {"compress_level": 6}),
    "jpeg": ("JPEG", {"quality": 95, "subsampling": 2, "optimize": True}),  # subsampling 2 = 4:2:0
    "webp": ("WEBP", {"quality": 95, "method": 4}),
}


class QueueFullError(Exception):
    """The request queue is full (or the server is stopping); the client should retry later (HTTP 503)."""


@dataclass(frozen=True)
class FaceJob:
    """One validated generate request."""

    spec: FaceSpec  # seed, truncation psi, age and gender; the content face when mixing
    style: FaceSpec | None = None  # face whose W+ rows ``layers`` replace the content's; None = no style mixing
    layers: range | None = None  # W+ rows taken from ``style``; None when not mixing
    size: int = 0  # side of the returned square image, pixels; 0 = the generator's native resolution
    format: str = "png"  # "png", "jpeg" or "webp"

    def __post_init__(self):
        if (self.style is None) != (self.layers is None):
            raise ValueError("style and layers go together")
        if self.format not in _ENCODE:
            raise ValueError(f"format must be one of {', '.join(_ENCODE)}, got {self.format!r}")
        if self.size < 0:
            raise ValueError(f"size must be >= 0, got {self.size}")


@dataclass(frozen=True, eq=False)
class FaceResult:
    """What one request gets back."""

    image: bytes  # the encoded image file
    content_type: str  # "image/png", "image/jpeg" or "image/webp"
    ws: np.ndarray  # [num_ws, w_dim] float32, the W+ the image was synthesized from


def face_ws(G: Generator, job: FaceJob, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """W+ ``[1, num_ws, w_dim]`` float32 of one request, exactly as ``deid generate`` computes it."""
    ws = seed_ws(G, job.spec, device=device)
    if job.style is not None:
        assert job.layers is not None
        ws = mix_ws(ws, seed_ws(G, job.style, device=device), job.layers)
    return ws


@torch.no_grad()
def render_faces(G: Generator, ws: torch.Tensor, *, batch: int) -> np.ndarray:
    """Synthesize ``ws`` in forward passes of exactly ``batch`` rows (padded), so results do not depend on N.

    Args:
        G: the generator.
        ws: ``[N, num_ws, w_dim]`` float32 W+, on G's device.
        batch: rows per forward pass; the last pass is padded with copies of the last row.

    Returns:
        ``[N, R, R, 3]`` uint8 RGB in [0, 255], R = ``G.img_resolution``.
    """
    if ws.ndim != 3 or ws.shape[0] == 0:
        raise ValueError(f"ws must be [N, num_ws, w_dim] with N >= 1, got {list(ws.shape)}")
    out = []
    for start in range(0, ws.shape[0], batch):
        chunk = ws[start : start + batch]  # [n, num_ws, w_dim]
        n = chunk.shape[0]
        if n < batch:
            chunk = torch.cat([chunk, chunk[-1:].expand(batch - n, -1, -1)])
        out.append(synthesize(G, chunk)[:n])
    return np.concatenate(out)


def encode_face(pixels: np.ndarray, *, size: int, fmt: str) -> bytes:
    """Resize a square face (PIL Lanczos) and encode it.

    Args:
        pixels: ``[R, R, 3]`` uint8 RGB in [0, 255].
        size: output side in pixels; ``R`` or 0 = no resampling.
        fmt: "png", "jpeg" or "webp".

    Returns:
        The encoded file. The same pixels and options always give the same bytes.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8 or pixels.shape[0] != pixels.shape[1]:
        raise ValueError(f"pixels must be [R, R, 3] uint8, got {pixels.shape} {pixels.dtype}")
    pil_format, options = _ENCODE[fmt]
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if size and size != pixels.shape[0]:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format=pil_format, **options)
    return buf.getvalue()


def run_jobs(G: Generator, jobs: list[FaceJob], *, batch: int, device: torch.device | str = "cpu"
             ) -> list[FaceResult | DeidError]:
    """Mapping per job, one batched synthesis, then resize + encode per job (blocking; the worker's thread).

    A job whose mapping fails with a ``DeidError`` gets that error in its slot; the others still run.
    """
    all_ws: list[torch.Tensor | DeidError] = []
    for job in jobs:
        try:
            all_ws.append(face_ws(G, job, device=device))
        except DeidError as exc:
            all_ws.append(exc)
    good = [w for w in all_ws if isinstance(w, torch.Tensor)]
    images = iter(render_faces(G, torch.cat(good), batch=batch)) if good else iter(())
    results: list[FaceResult | DeidError] = []
    for job, ws in zip(jobs, all_ws):
        if isinstance(ws, DeidError):
            results.append(ws)
            continue
        data = encode_face(next(images), size=job.size, fmt=job.format)
        results.append(FaceResult(image=data, content_type=CONTENT_TYPES[job.format],
                                  ws=ws[0].cpu().numpy().astype(np.float32)))
    return results


@dataclass
class _Pending:
    job: FaceJob
    future: asyncio.Future


class Batcher:
    """The generate queue and its single worker.

    Args:
        G: the generator (eval mode, on ``device``); only the worker's thread touches it.
        device: where G lives.
        max_batch: requests per forward pass (and the padded size of every pass).
        max_queue: requests waiting at most; ``submit`` raises ``QueueFullError`` beyond.

    Example:
        >>> batcher = Batcher(G, device="cpu", max_batch=16, max_queue=64)
        >>> batcher.start()  # inside the running event loop
        >>> result = await batcher.submit(FaceJob(spec=FaceSpec(seed=42)))
        >>> await batcher.stop()
    """

    def __init__(self, G: Generator, *, device: torch.device | str, max_batch: int, max_queue: int):
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        self.G = G
        self.device = device
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batches = 0  # forward passes run so far
        self.largest_batch = 0  # most requests in one pass so far
        self.completed = 0  # requests answered so far (including per-request errors)
        self.running = 0  # requests in the forward pass running now
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deid-generator")
        self._task: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        """Requests waiting for the worker (not counting the batch it is running)."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._work(), name="deid-batcher")

    async def stop(self) -> None:
        """Stop the worker, fail the waiting requests with ``QueueFullError`` and release the thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(QueueFullError("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, job: FaceJob) -> FaceResult:
        """Queue ``job`` and wait for its result.

        Raises:
            QueueFullError: ``max_queue`` requests are already waiting, or the server is stopping.
            DeidError: the job's own inputs were refused by the library (e.g. a bad ``FaceSpec`` combination).
        """
        if self._task is None:
            raise QueueFullError("the generator worker is not running")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(job, future))
        except asyncio.QueueFull:
            raise QueueFullError(f"{self.max_queue} requests are already waiting") from None
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            while len(items) < self.max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            items = [p for p in items if not p.future.done()]  # drop requests whose client went away
            if not items:
                continue
            jobs = [p.job for p in items]
            self.running = len(items)
            try:
                results = await loop.run_in_executor(
                    self._executor, partial(run_jobs, self.G, jobs, batch=self.max_batch, device=self.device))
            except asyncio.CancelledError:
                self.running = 0
                for p in items:
                    if not p.future.done():
                        p.future.set_exception(QueueFullError("the server is shutting down"))
                raise
            except Exception as exc:  # a failed forward pass fails its requests, never the worker
                log.exception("generator batch of %d failed", len(items))
                results = [exc] * len(items)
            self.running = 0
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(items))
            self.completed += len(items)
            for pending, result in zip(items, results):
                if pending.future.done():
                    continue
                if isinstance(result, Exception):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
