"""The face-generation HTTP API (``deid serve``): FastAPI app, request batching and the image store.

Needs the ``server`` extra (``pip install deid[server]``: FastAPI and uvicorn). Nothing in the library imports this
package; the CLI imports it only when ``deid serve`` runs.
"""

from ..config import ServerConfig
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
]
