"""``deid serve``: the face-generation HTTP API."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import ServerConfig
from ..errors import ConfigError

_MIB = 1024 * 1024


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 = all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Generator weights (.safetensors with .json, official .pkl or rosinality .pt); default = shipped.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Generate requests per forward pass (every pass is padded to this size; 1 = lowest latency).")
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(1),
              help="Generate requests waiting at most; more get 503 with Retry-After.")
@click.option("--max-body-kb", default=64, show_default=True, type=click.IntRange(1),
              help="Largest request body in KiB; larger gets 413.")
@click.option("--store-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep generated images as files in this folder instead of in memory.")
@click.option("--store-max-items", default=1024, show_default=True, type=click.IntRange(1),
              help="Images kept at most (oldest evicted first).")
@click.option("--store-max-mb", default=256.0, show_default=True, type=click.FloatRange(4),
              help="Encoded image MiB kept at most (oldest evicted first).")
@click.option("--store-ttl", default=600.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds an image stays fetchable.")
def serve(host, port, model, device, max_batch, max_queue, max_body_kb, store_dir, store_max_items, store_max_mb,
          store_ttl) -> None:
    """Serve face generation over HTTP (FastAPI + uvicorn) until interrupted.

    POST /v1/faces/generate returns an image URL (GET /v1/images/ID) and the W+ latent; GET /healthz reports the
    model; the OpenAPI schema is at /openapi.json and interactive docs at /docs. Needs `pip install deid[server]`.

    \b
    Examples:
        deid serve --port 8000
        deid serve --model models/deid64.safetensors --device cpu --max-batch 1
        curl -s localhost:8000/v1/faces/generate -H 'content-type: application/json' \\
             -d '{"seed": 42, "resolution": "256x256", "format": "png"}'
    """
    try:
        from ..server import serve as run_server
    except ImportError as exc:
        raise ConfigError(f"deid serve needs FastAPI and uvicorn: pip install 'deid[server]' ({exc})") from exc
    config = ServerConfig(host=host, port=port, model=model, device=device, max_batch=max_batch, max_queue=max_queue,
                          max_body_bytes=max_body_kb * 1024, store_dir=None if store_dir is None else str(store_dir),
                          store_max_items=store_max_items, store_max_bytes=int(store_max_mb * _MIB),
                          store_ttl_s=store_ttl)
    run_server(config)
