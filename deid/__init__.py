"""deid: privacy de-identification of faces with a style-based generator.

The public API, re-exported from the stage modules:

    >>> import deid
    >>> det = deid.FaceDetector(deid.DetectConfig(), device="cpu")
    >>> faces = deid.detect_faces(image, det)                      # image: [H, W, 3] uint8 RGB
    >>> models = deid.load_swap_models(device="cpu")
    >>> out, outcomes = deid.anonymize_faces(image, faces, deid.PhotoConfig(), models)
"""

__version__ = "0.1.0"

from .align import align_face, crop_matrix, paste_back  # noqa: E402
from .config import (  # noqa: E402
    DetectConfig,
    EncoderConfig,
    GeneratorConfig,
    PhotoConfig,
    SwapConfig,
    TrainConfig,
)
from .dataset import DatasetConfig, DatasetSummary, sanitize_dataset  # noqa: E402
from .detect import FaceDetector, detect_faces  # noqa: E402
from .device import resolve_device  # noqa: E402
from .errors import ConfigError, DeidError, InputError, ModelError  # noqa: E402
from .generate import FaceSpec, seed_ws, synthesize  # noqa: E402
from .io.images import read_image, write_image  # noqa: E402
from .io.weights import load_generator, save_generator  # noqa: E402
from .nets.generator import Generator  # noqa: E402
from .obscure import obscure_face  # noqa: E402
from .photo import anonymize_bytes, anonymize_faces, anonymize_photo  # noqa: E402
from .swap import SwapModels, load_swap_models, swap_face  # noqa: E402
from .types import AlignedFace, Face, FaceOutcome, Latent, PhotoReport, SwapResult  # noqa: E402

__all__ = [
    "__version__", "align_face", "crop_matrix", "paste_back", "DetectConfig", "EncoderConfig", "GeneratorConfig",
    "PhotoConfig", "SwapConfig", "TrainConfig", "FaceDetector", "detect_faces", "resolve_device", "ConfigError",
    "DeidError", "InputError", "ModelError", "FaceSpec", "seed_ws", "synthesize", "read_image", "write_image",
    "load_generator", "save_generator", "Generator", "obscure_face", "anonymize_faces", "anonymize_photo",
    "anonymize_bytes", "DatasetConfig", "DatasetSummary", "sanitize_dataset",
    "SwapModels", "load_swap_models", "swap_face", "AlignedFace", "Face", "FaceOutcome", "Latent", "PhotoReport",
    "SwapResult",
]
