"""Request and response bodies of the HTTP API (pydantic). Validation errors become HTTP 422 with the field named.

Models are strict (a seed must be a JSON integer, not "42" or 42.0) and refuse unknown fields, so a misspelt
option is reported instead of silently ignored.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MIN_SIZE", "MAX_SIZE", "StyleMixing", "GenerateRequest", "GenerateResponse", "Health", "ErrorBody",
           "parse_resolution"]

MIN_SIZE = 16  # smallest side (pixels) a face can be resampled to
MAX_SIZE = 1024  # largest side (pixels) a face can be resampled to
_SEED_MAX = 2**32 - 1  # NVIDIA's seed convention: np.random.RandomState(seed), seed in [0, 2^32)
_RESOLUTION_RE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def parse_resolution(text: str) -> int:
    """``"SxS"`` -> S. Raises ``ValueError`` with a message for the client when not of that form or not square."""
    found = _RESOLUTION_RE.fullmatch(text.strip().lower())
    if found is None:
        raise ValueError(f"resolution must look like '256x256' (width x height in pixels), got {text!r}")
    width, height = int(found.group(1)), int(found.group(2))
    if width != height:
        raise ValueError(f"resolution must be square (faces are square crops), got {width}x{height}")
    return width


class StyleMixing(BaseModel):
    """Style mixing: the face of ``content_seed`` with the W+ rows ``layers`` taken from ``style_seed``."""

    model_config = _STRICT

    content_seed: int = Field(ge=0, le=_SEED_MAX, description="Seed of the face that gives the other W+ rows.")
    style_seed: int = Field(ge=0, le=_SEED_MAX, description="Seed of the face whose W+ rows `layers` are taken.")
    layers: str = Field(
        "fine", max_length=32,
        description="W+ rows taken from `style_seed`: 'A-B' (inclusive, e.g. '0-3'), or 'coarse' (pose, head shape), "
                    "'middle' (features, expression) or 'fine' (colours, texture).",
    )


class GenerateRequest(BaseModel):
    """A synthetic face from a seed. The same request always gives a byte-identical image."""

    model_config = ConfigDict(
        **_STRICT,
        json_schema_extra={"examples": [{"seed": 42, "resolution": "256x256", "truncation_psi": 0.7, "format": "png"},
                                        {"seed": 7, "age": 30, "gender": "female", "format": "webp"}]},
    )

    seed: int | None = Field(
        None, ge=0, le=_SEED_MAX,
        description="Seed of the face, in [0, 2^32). Omitted = a random seed, returned in the response. Not allowed "
                    "together with `style_mixing` (whose `content_seed` plays its part).",
    )
    resolution: str | None = Field(
        None, max_length=16,
        description=f"Size of the returned image as 'WxH' pixels. It must be square: the model's native size "
                    f"(see GET /healthz) or any size from {MIN_SIZE}x{MIN_SIZE} to {MAX_SIZE}x{MAX_SIZE}, resampled "
                    f"from the native size with a Lanczos filter. Omitted = native. Non-square or out-of-range "
                    f"sizes get 422.",
        examples=["256x256"],
    )
    truncation_psi: float = Field(
        0.7, ge=0.0, le=1.0,
        description="Truncation: 1 = no truncation (most varied faces), 0 = the average face.",
    )
    format: Literal["png", "jpeg", "webp"] = Field("png", description="Image file format.")
    age: float | None = Field(
        None, ge=0, le=120,
        description="Target age in years (conditional models only; 422 on an unconditional model). Omitted = drawn "
                    "from the seed.",
    )
    gender: Literal["female", "male"] | None = Field(
        None, description="Target gender (conditional models only; 422 on an unconditional model). Omitted = drawn "
                          "from the seed.",
    )
    style_mixing: StyleMixing | None = Field(None, description="Style mixing of two seeds; omitted = none.")

    @field_validator("resolution")
    @classmethod
    def _check_resolution(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return f"{parse_resolution(value)}x{parse_resolution(value)}"


class GenerateResponse(BaseModel):
    """Where to fetch the face, and the latent it was made from."""

    seed: int = Field(description="The seed used (the given one, a random one, or style_mixing.content_seed).")
    image_url: str = Field(description="GET this URL for the image; it expires (see the server's store TTL).")
    latent_vector: str = Field(
        description="W+ of the face: base64 of float32 little-endian bytes, row-major, shape `latent_shape`.")
    latent_shape: list[int] = Field(description="[num_ws, w_dim] of `latent_vector`.")
    generation_time_ms: float = Field(
        description="Milliseconds the server spent on the request: queue wait, the batched forward pass, resize and "
                    "encoding.")


class Health(BaseModel):
    """Liveness, the loaded model and the queue."""

    status: Literal["ok"] = "ok"
    model_loaded: bool = Field(description="Whether the generator is loaded (the server only starts once it is).")
    model: str = Field(description="File name of the weights, or 'default' for the shipped model.")
    resolution: int = Field(description="Native resolution of the generator, pixels (square).")
    conditional: bool = Field(description="Whether `age` and `gender` are accepted.")
    num_ws: int = Field(description="Rows of W+.")
    w_dim: int = Field(description="Width of W+.")
    device: str = Field(description="Where the generator runs, e.g. 'cpu' or 'cuda:0'.")
    max_batch: int = Field(description="Requests per forward pass.")
    queued: int = Field(description="Generate requests waiting now.")
    running: int = Field(description="Generate requests in the forward pass running now.")
    batches: int = Field(description="Forward passes run so far.")
    largest_batch: int = Field(description="Most requests in one forward pass so far.")
    images_stored: int = Field(description="Images currently held by the image store.")


class ErrorBody(BaseModel):
    """Body of every error response other than 422."""

    detail: str
