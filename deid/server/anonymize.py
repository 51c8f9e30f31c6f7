"""Photo anonymisation for the HTTP API: the multipart upload, kept in memory, and one photo at a time on a thread.

Nothing of an upload touches the disk. ``BodySizeLimit`` buffers the body in memory (at most
``ServerConfig.max_upload_bytes``); ``parse_form`` splits it with python-multipart's streaming parser into in-memory
parts (Starlette's own form parsing spools files over 1 MiB to temporary files, so it is not used); the photo is
decoded with ``deid.io.images.decode_image`` and the result encoded with ``encode_image``, and it goes back inline in
the response, never into the image store.

The pipeline is the one of ``deid photo`` (``deid.photo.anonymize_photo``): decode -> ``detect_faces`` ->
``anonymize_faces`` -> encode like the source (same format and size, metadata dropped, ICC kept).

``AnonymizeWorker`` runs it on its own thread, one photo at a time with a bounded number waiting, so the event loop
(``/healthz``, generate) stays responsive and a burst of uploads gets 503 instead of piling up in memory.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..config import DetectConfig, PhotoConfig, SwapConfig
from ..detect import FaceDetector
from ..nets.generator import Generator
from ..swap import SwapModels
from .batcher import QueueFullError
from .schemas import AnonymizeOptions, parse_face_numbers

__all__ = ["IMAGE_FIELD", "FormPart", "parse_form", "split_form", "parse_options", "photo_config",
           "detector_with", "load_swap", "AnonymizeWorker"]

T = TypeVar("T")

IMAGE_FIELD = "image"  # form field that carries the photo
_MAX_PARTS = 32  # form parts accepted at most (the photo and ~10 options need far fewer)


# ---------------------------------------------------------------------------------------------------------------------
# The form


@dataclass(eq=False)
class FormPart:
    """One part of a multipart/form-data body."""

    name: str  # the field name
    filename: str | None  # the file name the client sent; None = a plain text field
    data: bytearray  # the part's bytes, in memory


def parse_form(body: bytes, content_type: str, *, max_parts: int = _MAX_PARTS) -> list[FormPart]:
    """Split a multipart/form-data ``body`` into its parts, in memory.

    Raises:
        HTTPException: 415 when ``content_type`` is not multipart/form-data; 400 when the body is malformed or
            truncated, or has more than ``max_parts`` parts. The detail is one line naming the cause.
    """
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        shown = content_type.split(";")[0].strip() or "none"
        raise HTTPException(415, f"send the photo as multipart/form-data with the file in field '{IMAGE_FIELD}' "
                                 f"(got content type {shown})")
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "malformed multipart body: the content type has no boundary")
    parts: list[FormPart] = []
    headers: dict[bytes, bytes] = {}
    field, value = bytearray(), bytearray()
    ended = False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def on_headers_finished() -> None:
        if len(parts) >= max_parts:
            raise HTTPException(400, f"malformed multipart body: more than {max_parts} parts")
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise HTTPException(400, "malformed multipart body: a part has no 'Content-Disposition: form-data; "
                                     "name=...' header")
        filename = options.get(b"filename")
        parts.append(FormPart(name=name.decode("utf-8", "replace"),
                              filename=None if filename is None else filename.decode("utf-8", "replace"),
                              data=bytearray()))
        headers.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(memoryview(data)[start:end])

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_end": on_end})
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise HTTPException(400, f"malformed multipart body ({_one_line(exc)})") from None
    if not ended:
        raise HTTPException(400, "malformed multipart body: it ends before its closing boundary (truncated upload?)")
    return parts


def split_form(parts: list[FormPart]) -> tuple[bytes, dict[str, str]]:
    """The photo and the text fields of a parsed form.

    Raises:
        RequestValidationError: no photo, two photos, a field given twice or not UTF-8 (422, naming the field).
    """
    images = [p for p in parts if p.name == IMAGE_FIELD]
    if not images:
        _refuse((IMAGE_FIELD,), None, f"the photo is missing: send it as the file field '{IMAGE_FIELD}'")
    if len(images) > 1:
        _refuse((IMAGE_FIELD,), None, "one photo per request")
    fields: dict[str, str] = {}
    for part in parts:
        if part.name == IMAGE_FIELD:
            continue
        if part.name in fields:
            _refuse((part.name,), None, "field given more than once")
        try:
            fields[part.name] = part.data.decode("utf-8")
        except UnicodeDecodeError:
            _refuse((part.name,), None, "field is not UTF-8 text")
    return bytes(images[0].data), fields


def parse_options(fields: dict[str, str]) -> AnonymizeOptions:
    """Validate the text fields. Raises ``RequestValidationError`` (422, pydantic's shape, ``loc`` = body.field)."""
    try:
        return AnonymizeOptions.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError([{"type": e["type"], "loc": ("body", *e["loc"]), "msg": e["msg"],
                                       "input": e.get("input")} for e in exc.errors(include_url=False)]) from None


def photo_config(options: AnonymizeOptions) -> PhotoConfig:
    """The ``PhotoConfig`` that ``deid photo`` builds from the same options (``ConfigError`` -> 422); one face at a
    time (``workers=1``): the server shares the CPU among requests, and torch's thread count is process-wide."""
    return PhotoConfig(mode=options.mode, workers=1, only=parse_face_numbers(options.only), skip=parse_face_numbers(options.skip),
                       detect=DetectConfig(min_face=options.min_face, min_score=options.det_threshold),
                       swap=SwapConfig(seed=options.seed, key=options.key, psi=options.psi,
                                       threshold=options.threshold, max_turn=options.max_turn,
                                       max_cover_contrast=options.max_cover_contrast,
                                       max_outside=options.max_outside, min_swap_age=options.min_swap_age,
                                       max_tries=options.max_tries))


def _refuse(loc: tuple[str, ...], value: Any, msg: str) -> NoReturn:
    raise RequestValidationError([{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": value}])


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split()) or type(obj).__name__


# ---------------------------------------------------------------------------------------------------------------------
# The pipeline


def detector_with(detector: FaceDetector, config: DetectConfig) -> FaceDetector:
    """``detector`` with another ``DetectConfig``, sharing its loaded MTCNN (no loading, no I/O).

    MTCNN's stage thresholds and pyramid factor are fixed when it is built, so they must stay the loaded ones; the
    other fields (minimum face size and score, working size, tiling, NMS) are read on every call. The copy shares the
    MTCNN, which ``detect_faces`` reconfigures per call: use both from one thread at a time (the worker's).
    """
    if config == detector.config:
        return detector
    if config.thresholds != detector.config.thresholds or config.factor != detector.config.factor:
        raise ValueError("thresholds and factor are fixed when the detector is loaded")
    clone = copy.copy(detector)
    clone.config = config
    return clone


def load_swap(G: Generator, *, generator_path: str | None, encoder_path: str | None,
              device: torch.device | str) -> SwapModels:
    """The swap models around the server's loaded generator: its encoder (refused unless trained for exactly that
    generator file) and the identity judge. ``deid.swap.load_swap_models`` without loading the generator again.

    Args:
        G: the loaded generator.
        generator_path: the file G was loaded from; None = the shipped ``models/deid64.safetensors``.
        encoder_path: its encoder; None = the shipped ``models/deid64-encoder.safetensors``.
        device: where the encoder goes (G's device).

    Raises:
        ModelError: the encoder or the judge is missing, malformed, or the encoder belongs to another generator.
    """
    from ..eval.identity import IdentityJudge
    from ..invert import load_encoder
    from ..io.weights import default_model_path

    gpath = Path(generator_path) if generator_path else default_model_path("deid64.safetensors")
    epath = Path(encoder_path) if encoder_path else default_model_path("deid64-encoder.safetensors")
    E = load_encoder(epath, generator_path=gpath, device=device)
    return SwapModels(G=G, E=E, judge=IdentityJudge.default(), device=torch.device(device))


# ---------------------------------------------------------------------------------------------------------------------
# The worker


class AnonymizeWorker:
    """Runs blocking jobs on one thread, one at a time, with at most ``max_queue`` more waiting.

    Args:
        max_queue: jobs waiting at most while one runs; ``run`` raises ``QueueFullError`` (HTTP 503) beyond.

    Example:
        >>> worker = AnonymizeWorker(max_queue=4)
        >>> photo = await worker.run(deid.photo.anonymize_bytes, data, config, detector=det, models=None, max_pixels=50_000_000)
        >>> worker.close()
    """

    def __init__(self, *, max_queue: int):
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.max_queue = max_queue
        self.pending = 0  # jobs inside: the running one plus the waiting ones (event-loop thread only)
        self.completed = 0  # jobs finished so far, including failed and cancelled ones
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deid-anonymize")
        self._closed = False

    @property
    def full(self) -> bool:
        """Whether ``run`` would refuse a job now."""
        return self._closed or self.pending > self.max_queue

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the worker thread and return its result (or raise its exception).

        A job whose caller goes away (the client disconnects) is dropped if it has not started yet; once started, it
        finishes and still holds its place until then.

        Raises:
            QueueFullError: ``max_queue`` jobs are already waiting, or the worker is closed.
        """
        if self._closed:
            raise QueueFullError("the server is shutting down")
        if self.pending > self.max_queue:
            raise QueueFullError(f"one photo is being anonymised and {self.max_queue} are waiting")
        loop = asyncio.get_running_loop()
        future = self._executor.submit(fn, *args, **kwargs)
        self.pending += 1  # released when the job is done, not when the caller stops waiting

        def release(_: object) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._release)

        future.add_done_callback(release)
        return await asyncio.wrap_future(future, loop=loop)

    def _release(self) -> None:
        self.pending -= 1
        self.completed += 1

    def close(self) -> None:
        """Refuse new jobs, drop the waiting ones, wait for the running one and release the thread (blocking)."""
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
