"""``deid serve``: the face HTTP API (generation and photo anonymisation)."""

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
@click.option("--encoder", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Encoder of the generator, for anonymize mode swap (default: shipped "
                   "models/deid64-encoder.safetensors; without it, swap gets 503 and the other modes still work).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Generate requests per forward pass (every pass is padded to this size; 1 = lowest latency).")
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(1),
              help="Generate requests waiting at most; more get 503 with Retry-After.")
@click.option("--max-body-kb", default=64, show_default=True, type=click.IntRange(1),
              help="Largest JSON request body in KiB; larger gets 413.")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=click.FloatRange(0.001),
              help="Largest anonymize upload (photo + form fields) in MiB; larger gets 413.")
@click.option("--max-upload-mpx", default=50.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Largest uploaded photo in megapixels (checked before decoding); larger gets 400.")
@click.option("--anonymize-queue", default=4, show_default=True, type=click.IntRange(0),
              help="Anonymize requests waiting while one runs (one at a time); more get 503 with Retry-After.")
@click.option("--store-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep generated images as files in this folder instead of in memory.")
@click.option("--store-max-items", default=1024, show_default=True, type=click.IntRange(1),
              help="Images kept at most (oldest evicted first).")
@click.option("--store-max-mb", default=256.0, show_default=True, type=click.FloatRange(4),
              help="Encoded image MiB kept at most (oldest evicted first).")
@click.option("--store-ttl", default=600.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds an image stays fetchable.")
def serve(host, port, model, encoder, device, max_batch, max_queue, max_body_kb, max_upload_mb, max_upload_mpx,
          anonymize_queue, store_dir, store_max_items, store_max_mb, store_ttl) -> None:
    """Serve face generation and photo anonymisation over HTTP (FastAPI + uvicorn) until interrupted.

    POST /v1/faces/generate returns an image URL (GET /v1/images/ID) and the W+ latent; POST /v1/faces/anonymize
    takes a photo (multipart field `image`, plus the options of `deid photo`) and returns the anonymised photo
    inline (base64) with a report of every face; uploads stay in memory and are never stored. GET /healthz reports
    the models; the OpenAPI schema is at /openapi.json and interactive docs at /docs. Needs `pip install deid[server]`.

    \b
    Examples:
        deid serve --port 8000
        deid serve --model models/deid64.safetensors --device cpu --max-batch 1
        curl -s localhost:8000/v1/faces/generate -H 'content-type: application/json' \\
             -d '{"seed": 42, "resolution": "256x256", "format": "png"}'
        curl -s localhost:8000/v1/faces/anonymize -F image=@group.jpg -F mode=blur -F skip=2 \\
             | jq -r .image | base64 -d > group-anon.jpg
    """
    try:
        from ..server import serve as run_server
    except ImportError as exc:
        raise ConfigError(f"deid serve needs FastAPI, uvicorn and python-multipart: pip install 'deid[server]' "
                          f"({exc})") from exc
    config = ServerConfig(host=host, port=port, model=model, encoder=encoder, device=device, max_batch=max_batch,
                          max_queue=max_queue, max_body_bytes=max_body_kb * 1024,
                          max_upload_bytes=int(max_upload_mb * _MIB), max_upload_pixels=int(max_upload_mpx * 1e6),
                          max_anonymize_queue=anonymize_queue,
                          store_dir=None if store_dir is None else str(store_dir), store_max_items=store_max_items,
                          store_max_bytes=int(store_max_mb * _MIB), store_ttl_s=store_ttl)
    run_server(config)
