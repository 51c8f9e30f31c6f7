"""The face-generation HTTP API (FastAPI): ``create_app(config)`` builds it, ``serve(config)`` runs it with uvicorn.

Endpoints:
    GET  /healthz               liveness, the loaded model, the queue
    POST /v1/faces/generate     seed (+ options) -> image URL and W+ latent
    GET  /v1/images/{image_id}  the generated image (PNG, JPEG or WebP), until it expires
    GET  /openapi.json          the OpenAPI schema (and /docs)

The generator is loaded once, in the lifespan handler, into ``app.state``. Generate requests go through
``deid.server.batcher.Batcher`` (bounded queue, one worker, batched synthesis on a worker thread); images are kept in
a bounded ``deid.server.store.ImageStore``. ``DeidError``\\ s become HTTP errors: ``ConfigError`` 422, ``InputError``
400, ``ModelError`` 500.
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
from ..config import ServerConfig
from ..errors import ConfigError, DeidError, InputError, ModelError
from ..generate import FaceSpec, parse_layer_range
from ..nets.generator import Generator
from .batcher import Batcher, FaceJob, QueueFullError
from .schemas import MAX_SIZE, MIN_SIZE, ErrorBody, GenerateRequest, GenerateResponse, Health
from .store import ImageStore

__all__ = ["create_app", "serve", "load_model"]

log = logging.getLogger(__name__)

_ERRORS = {413: {"model": ErrorBody, "description": "Request body too large."},
           503: {"model": ErrorBody, "description": "Queue full; retry after the Retry-After seconds."}}


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
        store = ImageStore(max_items=config.store_max_items, max_bytes=config.store_max_bytes,
                           ttl_s=config.store_ttl_s, directory=config.store_dir)
        batcher = Batcher(G, device=device, max_batch=config.max_batch, max_queue=config.max_queue)
        batcher.start()
        app.state.config = config
        app.state.G = G
        app.state.device = device
        app.state.store = store
        app.state.batcher = batcher
        log.info("generator loaded: %s, %d px, %s", config.model or "default", G.img_resolution, device)
        try:
            yield
        finally:
            await batcher.stop()
            store.close()

    app = FastAPI(
        title="deid face generation",
        version=__version__,
        description="Synthetic faces from seeds (StyleGAN2-style generator). Identical requests give byte-identical "
                    "images.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
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
                  largest_batch=state.batcher.largest_batch, images_stored=len(state.store))


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
    """ASGI middleware: 413 for a request body over ``max_bytes``, declared (Content-Length) or streamed (chunked).

    A declared size is refused before any byte is read. Otherwise the body is read here, at most ``max_bytes`` of it,
    and handed on whole; JSON bodies of a few KiB make buffering cheap, and the app never sees a partial body.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_error(send, 400, "invalid Content-Length")
                return
            if int(declared) > self.max_bytes:
                await _send_error(send, 413, f"request body larger than {self.max_bytes} bytes")
                return
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the client went away
                return
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_bytes:
                await _send_error(send, 413, f"request body larger than {self.max_bytes} bytes")
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


async def _send_error(send: Any, status: int, detail: str) -> None:
    body = JSONResponse({"detail": detail}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
