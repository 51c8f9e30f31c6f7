"""The face HTTP API (FastAPI): ``create_app(config)`` builds it, ``serve(config)`` runs it with uvicorn.

Endpoints:
    GET  /healthz               liveness, the loaded models, the queues
    POST /v1/faces/generate     seed (+ options) -> image URL and W+ latent
    GET  /v1/images/{image_id}  the generated image (PNG, JPEG or WebP), until it expires
    POST /v1/faces/anonymize    multipart photo upload (+ the options of ``deid photo``) -> the anonymised photo,
                                inline (base64), and the per-face report
    GET  /openapi.json          the OpenAPI schema (and /docs)

The models are loaded once, in the lifespan handler, into ``app.state``: the generator, the face detector, and for
anonymize mode "swap" the encoder and the identity judge (when the shipped encoder is missing, "swap" gets 503 and the
other modes are still served). Generate requests go through ``deid.server.batcher.Batcher`` (bounded queue, one
worker, batched synthesis on a worker thread); generated images are kept in a bounded ``deid.server.store.ImageStore``.
Uploads stay in memory and go through ``deid.server.anonymize.AnonymizeWorker`` (one photo at a time on its own
thread, bounded queue); they never reach the image store or the disk. ``DeidError``\\ s become HTTP errors:
``ConfigError`` 422, ``InputError`` 400, ``ModelError`` 500.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..config import DetectConfig, PhotoConfig, ServerConfig
from ..detect import FaceDetector
from ..errors import ConfigError, DeidError, InputError, ModelError
from ..generate import FaceSpec, parse_layer_range
from ..nets.generator import Generator
from ..swap import SwapModels
from ..photo import anonymize_bytes
from .anonymize import AnonymizeWorker, detector_with, load_swap, parse_form, parse_options, photo_config, split_form
from .batcher import Batcher, FaceJob, QueueFullError
from .schemas import (
    IMAGE_FORMATS,
    MAX_SIZE,
    MIN_SIZE,
    AnonymizeResponse,
    ErrorBody,
    FaceReport,
    GenerateRequest,
    GenerateResponse,
    Health,
    anonymize_form_schema,
)
from .store import ImageStore

__all__ = ["create_app", "serve", "load_model"]

log = logging.getLogger(__name__)

_ERRORS = {413: {"model": ErrorBody, "description": "Request body too large."},
           503: {"model": ErrorBody, "description": "Queue full; retry after the Retry-After seconds."}}
ANONYMIZE_PATH = "/v1/faces/anonymize"
_ALL_MODES = ("swap", "blur", "pixelate", "solid")
_NO_ENCODER = "the encoder of this server's generator is not installed"


def load_model(model: str | None, *, device: Any) -> Generator:
    """The generator as ``deid generate --model`` loads it: deid safetensors, or an official checkpoint."""
    from ..io.weights import load_generator

    if model is not None and not str(model).endswith(".safetensors"):
        from ..io.foreign import load_any_generator

        return load_any_generator(model, device=device)
    return load_generator(model, device=device)


def create_app(config: ServerConfig) -> FastAPI:
    """The ASGI app for ``config``. Nothing is loaded until the app starts (lifespan).

    Example:
        >>> app = create_app(ServerConfig(model="models/deid64.safetensors", device="cpu"))
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from ..device import resolve_device

        device = resolve_device(config.device)
        G = await asyncio.to_thread(load_model, config.model, device=device)
        detector = await asyncio.to_thread(FaceDetector, DetectConfig(), device=device)
        swap_models, swap_unavailable = None, None
        try:
            swap_models = await asyncio.to_thread(load_swap, G, generator_path=config.model,
                                                  encoder_path=config.encoder, device=device)
        except ModelError as exc:
            if config.encoder is not None:  # asked for explicitly: a broken pair must not start half-working
                raise
            swap_unavailable = _NO_ENCODER
            log.warning("anonymize mode 'swap' unavailable (blur, pixelate and solid still served): %s", exc)
        store = ImageStore(max_items=config.store_max_items, max_bytes=config.store_max_bytes,
                           ttl_s=config.store_ttl_s, directory=config.store_dir)
        batcher = Batcher(G, device=device, max_batch=config.max_batch, max_queue=config.max_queue)
        batcher.start()
        anonymizer = AnonymizeWorker(max_queue=config.max_anonymize_queue)
        app.state.config = config
        app.state.G = G
        app.state.device = device
        app.state.store = store
        app.state.batcher = batcher
        app.state.detector = detector
        app.state.swap_models = swap_models
        app.state.swap_unavailable = swap_unavailable
        app.state.anonymizer = anonymizer
        log.info("generator loaded: %s, %d px, %s; anonymize modes: %s", config.model or "default",
                 G.img_resolution, device, ", ".join(_modes(swap_models)))
        try:
            yield
        finally:
            await batcher.stop()
            await asyncio.to_thread(anonymizer.close)
            store.close()

    app = FastAPI(
        title="deid face generation and anonymisation",
        version=__version__,
        description="Synthetic faces from seeds (StyleGAN2-style generator); identical requests give byte-identical "
                    "images. Photo anonymisation: every face swapped for a synthetic person, or blurred, pixelated "
                    "or covered; uploads are processed in memory and never stored.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes,
                       path_limits={ANONYMIZE_PATH: config.max_upload_bytes})
    app.add_exception_handler(DeidError, _deid_error)
    app.add_exception_handler(QueueFullError, _queue_full)
    app.include_router(router)
    return app


def serve(config: ServerConfig) -> None:
    """Run the API with uvicorn until interrupted (blocking)."""
    import uvicorn

    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info", server_header=False,
                timeout_graceful_shutdown=10)


# ---------------------------------------------------------------------------------------------------------------------
# Endpoints

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["service"])
async def healthz(request: Request) -> Health:
    """Liveness, the loaded model and the state of the queue."""
    state = request.app.state
    G: Generator = state.G
    model = "default" if state.config.model is None else Path(state.config.model).name  # no server paths
    return Health(model_loaded=True, model=model, resolution=G.img_resolution,
                  conditional=G.c_dim > 0, num_ws=G.num_ws, w_dim=G.w_dim, device=str(state.device),
                  max_batch=state.batcher.max_batch, queued=state.batcher.queued,
                  running=state.batcher.running, batches=state.batcher.batches,
                  largest_batch=state.batcher.largest_batch, images_stored=len(state.store),
                  modes=list(_modes(state.swap_models)), swap_unavailable=state.swap_unavailable,
                  anonymize_pending=state.anonymizer.pending, max_upload_bytes=state.config.max_upload_bytes)


def _modes(swap_models: object | None) -> tuple[str, ...]:
    return _ALL_MODES if swap_models is not None else _ALL_MODES[1:]


@router.post("/v1/faces/generate", response_model=GenerateResponse, responses=_ERRORS, tags=["faces"])
async def generate_face(body: GenerateRequest, request: Request) -> GenerateResponse:
    """Generate a face. Fetch it from `image_url` before it expires."""
    state = request.app.state
    job = _job(body, state.G)
    start = time.perf_counter()
    result = await state.batcher.submit(job)
    elapsed_ms = (time.perf_counter() - start) * 1000
    image_id = state.store.put(result.image, result.content_type)
    ws = result.ws.astype("<f4", copy=False)  # [num_ws, w_dim] float32 little-endian
    return GenerateResponse(
        seed=job.spec.seed,
        image_url=str(request.url_for("get_image", image_id=image_id)),
        latent_vector=base64.b64encode(np.ascontiguousarray(ws).tobytes()).decode("ascii"),
        latent_shape=list(ws.shape),
        generation_time_ms=round(elapsed_ms, 3),
    )


@router.get("/v1/images/{image_id}", name="get_image", tags=["faces"],
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                             "description": "The image."},
                       404: {"model": ErrorBody, "description": "Unknown or expired image id."}})
async def get_image(image_id: str, request: Request) -> Response:
    """A generated image, by the id in `image_url`."""
    image = request.app.state.store.get(image_id)  # malformed ids are unknown ids: never a path
    if image is None:
        return JSONResponse({"detail": "image not found (unknown id, or expired)"}, status_code=404)
    return Response(image.data, media_type=image.content_type,
                    headers={"Cache-Control": f"private, max-age={int(image.expires_in_s)}, immutable",
                             "X-Content-Type-Options": "nosniff"})


@router.post(
    ANONYMIZE_PATH, response_model=AnonymizeResponse, tags=["faces"], summary="Anonymise the faces of a photo",
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"multipart/form-data": {"schema": anonymize_form_schema()}}}},
    responses={400: {"model": ErrorBody, "description": "The upload is not a readable photo (empty, not an image, "
                                                        "truncated, corrupt, too many pixels) or not valid multipart."},
               413: {"model": ErrorBody, "description": "Request body larger than the upload limit (GET /healthz "
                                                        "`max_upload_bytes`)."},
               415: {"model": ErrorBody, "description": "The body is not multipart/form-data."},
               422: {"description": "The photo is missing, or a form field is invalid or unknown (`detail[].loc` "
                                    "names the field, as for every other 422)."},
               503: {"model": ErrorBody, "description": "Busy (Retry-After is set), or mode 'swap' is not available "
                                                        "on this server (no Retry-After; see GET /healthz `modes`)."}},
)
async def anonymize(request: Request) -> Response:
    """Anonymise every face of a photo, as `deid photo` does: upload it as multipart/form-data (file field `image`,
    options as text fields), get back the anonymised photo inline (base64 `image`: same format and size, EXIF with
    GPS, XMP and comments removed, ICC profile kept) and what was done to each face.

    The upload is processed in memory and never stored; the response is the only copy of the result. Photos are
    anonymised one at a time; when too many wait, the answer is 503 with Retry-After.

    Example:

        curl -s localhost:8000/v1/faces/anonymize -F image=@group.jpg -F mode=blur -F skip=2 \\
            | jq -r .image | base64 -d > group-anon.jpg
    """
    state = request.app.state
    worker: AnonymizeWorker = state.anonymizer
    if worker.full:  # before parsing megabytes that would be refused anyway
        raise QueueFullError("too many photos are waiting")
    data, fields = split_form(parse_form(await request.body(), request.headers.get("content-type", "")))
    config = photo_config(parse_options(fields))
    if config.mode == "swap" and state.swap_models is None:
        return JSONResponse({"detail": f"mode 'swap' is unavailable on this server ({state.swap_unavailable}); use "
                                       f"mode blur, pixelate or solid"}, status_code=503)
    body = await worker.run(_anonymize_response, data, config, detector=state.detector, models=state.swap_models,
                            max_pixels=state.config.max_upload_pixels, submitted=time.perf_counter())
    return Response(body, media_type="application/json")


def _anonymize_response(data: bytes, config: PhotoConfig, *, detector: FaceDetector, models: SwapModels | None,
                        max_pixels: int, submitted: float) -> bytes:
    """Run the pipeline and build the JSON response (blocking: the worker's thread, base64 and JSON included).

    ``submitted``: ``time.perf_counter()`` when the request was queued, for the "queue" timing.
    """
    queue_ms = (time.perf_counter() - submitted) * 1000
    photo = anonymize_bytes(data, config, detector=detector_with(detector, config.detect), models=models,
                            max_pixels=max_pixels)
    fmt = photo.format.lower()
    response = AnonymizeResponse(
        image=base64.b64encode(photo.data).decode("ascii"), format=fmt, content_type=IMAGE_FORMATS[fmt],
        width=photo.width, height=photo.height, mode=config.mode,
        faces=[FaceReport.model_validate(f.to_dict()) for f in photo.faces],
        timings_ms={k: round(v, 1) for k, v in {"queue": queue_ms, **photo.timings_ms}.items()},
    )
    return response.model_dump_json(exclude_none=True).encode()


def _job(body: GenerateRequest, G: Generator) -> FaceJob:
    """Check ``body`` against the loaded model and build its job. Problems become 422 naming the field."""
    if G.c_dim == 0:
        for name in ("age", "gender"):
            if getattr(body, name) is not None:
                _refuse((name,), getattr(body, name), f"this model is unconditional: {name} needs a conditional model")
    size = 0
    if body.resolution is not None:
        size = int(body.resolution.split("x")[0])
        if size != G.img_resolution and not MIN_SIZE <= size <= MAX_SIZE:
            _refuse(("resolution",), body.resolution,
                    f"resolution must be the native {G.img_resolution}x{G.img_resolution} or from "
                    f"{MIN_SIZE}x{MIN_SIZE} to {MAX_SIZE}x{MAX_SIZE}")
    female = None if body.gender is None else float(body.gender == "female")
    mixing = body.style_mixing
    if mixing is not None and body.seed is not None:
        _refuse(("seed",), body.seed, "give either seed or style_mixing (its content_seed is the seed)")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**32)
    try:
        if mixing is None:
            spec = FaceSpec(seed=seed, psi=body.truncation_psi, age=body.age, female=female)
            return FaceJob(spec=spec, size=size, format=body.format)
        try:
            layers = parse_layer_range(mixing.layers, G.num_ws)
        except ConfigError as exc:
            _refuse(("style_mixing", "layers"), mixing.layers, str(exc))
        content = FaceSpec(seed=mixing.content_seed, psi=body.truncation_psi, age=body.age, female=female)
        style = FaceSpec(seed=mixing.style_seed, psi=body.truncation_psi, age=body.age, female=female)
        return FaceJob(spec=content, style=style, layers=layers, size=size, format=body.format)
    except ConfigError as exc:  # FaceSpec's own checks; the schema already enforces the same ranges
        _refuse((), None, str(exc))


def _refuse(loc: tuple[str, ...], value: Any, msg: str) -> NoReturn:
    """Raise a 422 shaped like pydantic's (``detail: [{type, loc, msg, input}]``)."""
    raise RequestValidationError([{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": value}])


# ---------------------------------------------------------------------------------------------------------------------
# Errors and limits


async def _deid_error(request: Request, exc: Exception) -> JSONResponse:
    status = 422 if isinstance(exc, ConfigError) else 400 if isinstance(exc, InputError) else 500
    if isinstance(exc, ModelError):
        log.error("model error: %s", exc)
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def _queue_full(request: Request, exc: Exception) -> JSONResponse:
    retry = request.app.state.config.retry_after_s
    return JSONResponse({"detail": f"server busy: {exc}; retry in {retry} s"}, status_code=503,
                        headers={"Retry-After": str(retry)})


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over the limit, declared (Content-Length) or streamed (chunked).

    The limit is ``path_limits[path]`` for the paths listed there (uploads), ``max_bytes`` for every other path. A
    declared size is refused before any byte is read. Otherwise the body is read here, in memory, at most the limit of
    it, and handed on whole: JSON bodies are a few KiB, an upload is needed whole anyway, the app never sees a partial
    body, and nothing is spooled to disk.
    """

    def __init__(self, app: Any, max_bytes: int, path_limits: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_error(send, 400, "invalid Content-Length")
                return
            if int(declared) > limit:
                if int(declared) <= _DRAIN_MAX:
                    await _drain(receive)
                await _send_error(send, 413, f"request body larger than {limit} bytes")
                return
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the client went away
                return
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > limit:
                if message.get("more_body", False):
                    await _drain(receive)
                await _send_error(send, 413, f"request body larger than {limit} bytes")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()  # after the body: wait for http.disconnect as usual

        await self.app(scope, replay, send)


# A refused body of up to this many bytes is read and thrown away before the 413 goes out: a client still sending
# when the server closes the connection sees a reset instead of the answer. Larger bodies are cut off at once, and
# so is a client that sends nothing for _DRAIN_WAIT seconds (one waiting for the answer to its headers).
_DRAIN_MAX = 8 * 1024 * 1024
_DRAIN_WAIT = 0.5


async def _drain(receive: Any) -> None:
    seen = 0
    while seen <= _DRAIN_MAX:
        try:
            message = await asyncio.wait_for(receive(), _DRAIN_WAIT)
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_error(send: Any, status: int, detail: str) -> None:
    body = JSONResponse({"detail": detail}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
