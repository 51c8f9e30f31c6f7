"""Request and response bodies of the HTTP API (pydantic). Validation errors become HTTP 422 with the field named.

JSON models are strict (a seed must be a JSON integer, not "42" or 42.0). The form fields of an upload
(``AnonymizeOptions``) arrive as text, so they are converted ("42" -> 42) but still range-checked. Every model refuses
unknown fields, so a misspelt option is reported instead of silently ignored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import SwapConfig

__all__ = ["MIN_SIZE", "MAX_SIZE", "StyleMixing", "GenerateRequest", "GenerateResponse", "Health", "ErrorBody",
           "parse_resolution", "parse_face_numbers", "AnonymizeOptions", "anonymize_form_schema", "SwapReport",
           "FaceReport", "AnonymizeResponse", "IMAGE_FORMATS"]

MIN_SIZE = 16  # smallest side (pixels) a face can be resampled to
MAX_SIZE = 1024  # largest side (pixels) a face can be resampled to
_SEED_MAX = 2**32 - 1  # NVIDIA's seed convention: np.random.RandomState(seed), seed in [0, 2^32)
_RESOLUTION_RE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
# Formats an uploaded photo may have (and keeps): the API's name -> content type
IMAGE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "tiff": "image/tiff",
                 "bmp": "image/bmp"}


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
    modes: list[str] = Field(description="Modes POST /v1/faces/anonymize serves now: 'swap' only when the encoder "
                                         "and the identity judge are loaded.")
    swap_unavailable: str | None = Field(None, description="Why mode 'swap' is not served; null when it is.")
    anonymize_pending: int = Field(description="Anonymize requests inside the server now: running plus waiting.")
    max_upload_bytes: int = Field(description="Largest POST /v1/faces/anonymize body, bytes (photo + form fields).")


def parse_face_numbers(text: str) -> tuple[int, ...]:
    """``"1,3, 4"`` -> (1, 3, 4) (``deid photo --only/--skip``). Raises ``ValueError`` unless numbers >= 1."""
    try:
        numbers = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise ValueError(f"face numbers must look like 1,3,4, got {text!r}") from None
    if any(n < 1 for n in numbers):
        raise ValueError(f"face numbers start at 1, got {text!r}")
    return numbers


class AnonymizeOptions(BaseModel):
    """Form fields of ``POST /v1/faces/anonymize`` besides the photo: the options of ``deid photo``, same defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["swap", "blur", "pixelate", "solid"] = Field(
        "swap", description="swap: a synthetic person of the same age and gender (needs the encoder; 503 when the "
                            "server has none, see GET /healthz `modes`); blur, pixelate, solid: obscure the face.")
    only: str = Field(
        "", max_length=512,
        description="Anonymise only these faces, e.g. '1,3': numbers as in the response's `faces[].id` (1 = largest "
                    "face). Empty = every face.")
    skip: str = Field("", max_length=512, description="Leave these faces as they are, e.g. '2'.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Base seed of the new identities (mode swap).")
    key: str | None = Field(
        None, min_length=8, max_length=256,
        description="Secret: the same person gets the same synthetic person across photos (mode swap). "
                    "Omitted = off.")
    psi: float = Field(0.7, ge=0.0, le=1.0,
                       description="Truncation of new identities, 0..1 (lower = more typical faces; mode swap).")
    threshold: float = Field(
        0.6, gt=0.0, le=10.0,
        description="Identity guard: a swapped face must be at least this far from the original (dlib distance; "
                    "0.6 = same person); otherwise another identity is tried, then the face is pixelated.")
    max_turn: float = Field(
        SwapConfig.max_turn, ge=0.0, le=10.0,
        description="Faces turned further than this (nose offset from the eyes' midpoint over half the eye distance; "
                    "~0.5 = three-quarter view) are pixelated instead of swapped; 0 = no limit (mode swap).")
    max_cover_contrast: float = Field(
        SwapConfig.max_cover_contrast, ge=0.0, le=1000.0,
        description="Faces whose cheeks and chin look this unlike skin next to the nose bridge (a mask, a scarf; "
                    "bare faces mostly under 10) are pixelated instead of swapped; 0 = no check (mode swap).")
    max_outside: float = Field(
        SwapConfig.max_outside, ge=0.0, le=1.0,
        description="Faces with more than this share of their box beyond the photo's edge are pixelated instead of "
                    "swapped; 1 = swap whatever is cut (mode swap).")
    min_swap_age: float = Field(
        SwapConfig.min_swap_age, ge=0.0, le=200.0,
        description="Faces read as younger than this (years) are pixelated instead of swapped: the generator draws "
                    "babies poorly; 0 = swap any age (mode swap).")
    max_tries: int = Field(
        SwapConfig.max_tries, ge=1, le=256,
        description="New identities the identity guard tries before a face is pixelated (fewer: faster on faces "
                    "that are hard to swap, more of them pixelated; mode swap).")
    min_face: int = Field(16, ge=4, le=100_000, description="Smallest face to find, in pixels (box side).")
    det_threshold: float = Field(0.9, ge=0.0, lt=1.0, description="Minimum detection score, in [0, 1).")

    @field_validator("only", "skip")
    @classmethod
    def _check_numbers(cls, value: str) -> str:
        parse_face_numbers(value)
        return value

    @model_validator(mode="after")
    def _check_selection(self) -> "AnonymizeOptions":
        both = set(parse_face_numbers(self.only)) & set(parse_face_numbers(self.skip))
        if both:
            raise ValueError(f"face number(s) {', '.join(map(str, sorted(both)))} cannot be in both only and skip")
        return self


def anonymize_form_schema() -> dict[str, Any]:
    """OpenAPI schema of the multipart form of ``POST /v1/faces/anonymize``: the photo plus ``AnonymizeOptions``."""
    options = AnonymizeOptions.model_json_schema()
    image = {"type": "string", "format": "binary",
             "description": "The photo: JPEG, PNG, WebP, TIFF or BMP. The request body is limited (see GET /healthz "
                            "`max_upload_bytes`; larger -> 413)."}
    return {"title": "AnonymizeForm", "type": "object", "required": ["image"],
            "properties": {"image": image, **options["properties"]}}


class AttributesAfter(BaseModel):
    """The attribute estimates read again on the anonymised face."""

    female: float = Field(description="Estimated probability that the new face is female.")
    age: float = Field(description="Estimated age of the new face in years.")


class SwapReport(BaseModel):
    """What the identity swap did to one face (``deid.types.SwapResult``)."""

    tries: int = Field(description="New identities tried.")
    identity_distance: float = Field(
        description="dlib distance between the original and the result (larger = less alike; 0.6 = same person).")
    female: float = Field(description="Estimated probability that the person is female; the new face keeps it.")
    age: float = Field(description="Estimated age in years; the new face keeps it.")
    seed: int = Field(description="Seed of the accepted identity; -1 when the face fell back to obscuring.")
    after: AttributesAfter | None = Field(
        None, description="The same estimates on the anonymised face (swapped faces only).")
    fallback_reason: Literal["guard", "turned", "covered", "cut", "young"] | None = Field(
        None, description="Why the face fell back to obscuring: guard (every identity tried stayed recognisable), "
                          "turned (head turned beyond max_turn), covered (lower face covered), cut (by the photo's "
                          "edge, max_outside) or young (read as younger than min_swap_age); none of the last four is "
                          "tried. Absent for a swap.")


class FaceReport(BaseModel):
    """One detected face and what was done to it: an entry of ``deid photo --report``'s `faces`."""

    id: int = Field(description="Face number, 1 = largest (what `only` and `skip` refer to).")
    method: Literal["swap", "blur", "pixelate", "solid", "kept"] = Field(
        description="What the face got: 'kept' = left as it is (excluded by only/skip); a swap whose identity guard "
                    "failed shows its fallback (pixelate or solid).")
    box: list[float] = Field(description="[x0, y0, x1, y1] of the face in image pixels.")
    score: float = Field(description="Detector confidence in [0, 1].")
    landmarks: list[list[float]] = Field(
        description="[[x, y] * 5]: left eye, right eye, nose, left and right mouth corners (image left/right).")
    time_ms: float = Field(description="Milliseconds spent on this face.")
    swap: SwapReport | None = Field(None, description="Details when the swap ran (also when it fell back); "
                                                      "absent otherwise.")


class AnonymizeResponse(BaseModel):
    """The anonymised photo, inline, and what was done to every face.

    The image has the upload's format and size. EXIF (GPS, camera serial numbers, the embedded thumbnail), XMP, IPTC
    and comments are removed; the ICC colour profile and transparency are kept. The server keeps no copy.
    """

    image: str = Field(description="The anonymised image file, base64 (standard alphabet, padded).",
                       json_schema_extra={"contentEncoding": "base64"})
    format: Literal["jpeg", "png", "webp", "tiff", "bmp"] = Field(description="Its format: the upload's.")
    content_type: str = Field(description="Its media type, e.g. 'image/jpeg'.")
    width: int = Field(description="Width in pixels (the upload's, after its EXIF orientation is applied).")
    height: int = Field(description="Height in pixels.")
    mode: Literal["swap", "blur", "pixelate", "solid"] = Field(description="The mode requested.")
    faces: list[FaceReport] = Field(description="Every detected face, largest first (`id` order).")
    timings_ms: dict[str, float] = Field(
        description="Milliseconds per stage: queue (waiting for the worker), read (decode), detect, anonymize, "
                    "encode.")


class ErrorBody(BaseModel):
    """Body of every error response other than 422."""

    detail: str
