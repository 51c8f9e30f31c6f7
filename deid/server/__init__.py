"""The face HTTP API (``deid serve``): FastAPI app, request batching, the image store and photo anonymisation.

Needs the ``server`` extra (``pip install deid[server]``: FastAPI, uvicorn and python-multipart). Nothing in the
library imports this package; the CLI imports it only when ``deid serve`` runs.
"""

from ..config import ServerConfig
from ..photo import AnonymizedPhoto, anonymize_bytes
from .anonymize import AnonymizeWorker, parse_form
from .app import create_app, load_model, serve
from .batcher import Batcher, FaceJob, FaceResult, QueueFullError, encode_face, render_faces
from .store import ImageStore, StoredImage, is_image_id

__all__ = [
    "ServerConfig",
    "create_app",
    "serve",
    "load_model",
    "Batcher",
    "FaceJob",
    "FaceResult",
    "QueueFullError",
    "encode_face",
    "render_faces",
    "ImageStore",
    "StoredImage",
    "is_image_id",
    "AnonymizeWorker",
    "AnonymizedPhoto",
    "anonymize_bytes",
    "parse_form",
]
