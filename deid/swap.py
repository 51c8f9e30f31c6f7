"""Identity swap: keep pose, age and gender, replace who the person is; an identity guard fails closed.

For each face: the encoder gives its W+ code and estimates its gender and age; a new identity is drawn from a seed
(mapping network conditioned on those labels, truncated toward the centre of that age/gender); the W+ rows in
``SwapConfig.keep_layers`` (by default the coarse rows: pose and head shape; chosen by measurement, see the field)
come from the original, the rest from the new identity; colour and lighting return through the colour matching. The face is generated, colour-matched, blended, and the identity judge
compares the result with the original. Closer than ``threshold``: another identity is tried; after ``max_tries``
the face is obscured (``fallback``). No face that still matches is returned.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .align import align_face
from .blend import blend_face
from .config import SwapConfig
from .directions import AttributeDirections, directions_path, load_directions
from .generate import truncation_centre, z_from_seed
from .invert import load_encoder
from .io.images import to_tensor, to_uint8
from .io.weights import default_model_path, load_generator
from .labels import decode_age
from .nets.encoder import Encoder
from .nets.generator import Generator
from .obscure import obscure_face
from .types import Face, SwapResult

__all__ = ["SwapModels", "load_swap_models", "swap_ws", "identity_seed", "swap_face", "encode_crop", "render_ws", "swap_labels"]


@dataclass
class SwapModels:
    """Everything the swap needs, loaded once (CLI start-up, server lifespan)."""

    G: Generator
    E: Encoder
    judge: object  # deid.eval.identity.IdentityJudge
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    directions: AttributeDirections | None = None  # gender/age in W, for a generator without label input


def load_swap_models(generator: str | Path | None = None, encoder: str | Path | None = None, *,
                     device: torch.device | str = "cpu") -> SwapModels:
    """Load generator, its encoder (refusing a mismatched pair) and the identity judge; for a generator without
    label input, also its attribute directions (``<name>.directions.safetensors``) when they exist."""
    from .eval.identity import IdentityJudge

    gpath = Path(generator) if generator else default_model_path("deid64.safetensors")
    epath = Path(encoder) if encoder else default_model_path("deid64-encoder.safetensors")
    G = load_generator(gpath, device=device)
    E = load_encoder(epath, generator_path=gpath, device=device)
    directions = None
    if not G.c_dim and directions_path(gpath).is_file():
        directions = load_directions(directions_path(gpath), w_dim=G.w_dim)
    return SwapModels(G=G, E=E, judge=IdentityJudge.default(), device=torch.device(device), directions=directions)


def identity_seed(config: SwapConfig, crop: np.ndarray, embedding: np.ndarray | None, attempt: int, *,
                  cluster: str | None = None) -> int:
    """Seed of the ``attempt``-th new identity for a face.

    Without a key: a hash of (base seed, the aligned crop's pixels, attempt), so the same face in the same photo always
    gets the same new person, and different faces get different ones. With a key: an HMAC of the identity
    embedding's signs under random hyperplanes (locality-sensitive: other photos of the same person tend to land on
    the same code), so reruns and other photos can give the same synthetic person. With a key and a ``cluster``
    label (an identity cluster of one ``deid dataset`` run, see ``deid.dataset``): an HMAC of the label, so every
    face of that cluster gets the same synthetic person.
    """
    if config.key and cluster is not None:
        digest = hmac.new(config.key.encode(), b"cluster\0" + cluster.encode() + b"\0" + bytes([attempt]),
                          hashlib.sha256).digest()
    elif config.key and embedding is not None:
        planes = np.random.RandomState(int.from_bytes(hashlib.sha256(config.key.encode()).digest()[:4], "little"))
        bits = (planes.randn(12, embedding.shape[0]) @ embedding > 0).astype(np.uint8).tobytes()
        digest = hmac.new(config.key.encode(), bits + bytes([attempt]), hashlib.sha256).digest()
    else:
        h = hashlib.sha256(config.seed.to_bytes(8, "little", signed=True))
        h.update(np.ascontiguousarray(crop).tobytes())
        h.update(bytes([attempt]))
        digest = h.digest()
    return int.from_bytes(digest[:4], "little")


@torch.no_grad()
def encode_crop(models: SwapModels, crop: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """W+ ``[1, num_ws, w_dim]`` and attributes ``[1, 2]`` (female logit, age code) of an aligned crop
    ``[S, S, 3]`` uint8, float32."""
    from .device import fast_inference

    G = models.G
    with fast_inference(models.device, 1):
        ws, _, attrs = models.E(to_tensor(crop).to(models.device), w_avg=G.mapping.w_avg)
    return ws.float(), attrs.float()


@torch.no_grad()
def render_ws(models: SwapModels, ws: torch.Tensor) -> np.ndarray:
    """The face of W+ ``ws`` ``[1, num_ws, w_dim]`` as ``[S, S, 3]`` uint8 RGB (const noise)."""
    from .device import fast_inference

    with fast_inference(models.device, ws.shape[0], min_batch=1):
        img = models.G.synthesis(ws, noise_mode="const")
    return to_uint8(img[0].float())


def swap_labels(G: Generator, attrs: torch.Tensor) -> tuple[float, float, torch.Tensor | None]:
    """From the encoder's attribute head ``[1, 2]``: P(female), the age code, and the generator's label vector
    ``[1, c_dim]`` (None for a generator without labels)."""
    female = float(torch.sigmoid(attrs[0, 0]))
    age_code = float(attrs[0, 1].clamp(0, 1.05))
    c = None
    if G.c_dim:
        c = torch.tensor([[round(female), age_code]], dtype=torch.float32, device=attrs.device)
    return female, age_code, c


@torch.no_grad()
def swap_ws(G: Generator, ws: torch.Tensor, c: torch.Tensor | None, seed: int, config: SwapConfig, *,
            directions: AttributeDirections | None = None) -> torch.Tensor:
    """New W+ ``[1, num_ws, w_dim]``: a fresh identity for labels ``c`` ``[1, c_dim]``, with the original rows of
    ``config.keep_layers`` from ``ws`` ``[1, num_ws, w_dim]``.

    A generator without labels (``c`` None) with ``directions``: the new identity is moved along the gender and age
    directions until its predicted gender and age equal those of the original (read off the mean of its W+ rows).
    """
    z = z_from_seed(seed, G.z_dim).to(ws.device)
    new = G.mapping(z, c)
    if config.psi != 1:
        new = truncation_centre(G, c).lerp(new, config.psi)
    if c is None and directions is not None:
        female, age = directions.scores(ws.mean(dim=1))  # [1], [1]
        new = directions.impose(new, female[:, None], age[:, None])
    keep = list(config.kept_rows(G.num_ws))
    new[:, keep] = ws[:, keep]
    return new


@torch.no_grad()
def swap_face(frame: np.ndarray, face: Face, models: SwapModels, config: SwapConfig, *,
              cluster: str | None = None) -> tuple[np.ndarray, SwapResult]:
    """Swap one face of ``frame`` (``[H, W, 3]`` uint8 RGB); returns the new frame and what was done.

    The input frame is not modified. The guard compares the original face with the face in the returned frame, in
    the same box; when every try stays within ``threshold``, the face is obscured with ``config.fallback``.
    ``cluster``: the face's identity-cluster label, used with ``config.key`` (see ``identity_seed``); None = none.
    """
    G, judge = models.G, models.judge
    aligned = align_face(frame, face, G.img_resolution, G.cfg.align_template)
    ws, attrs = encode_crop(models, aligned.image)
    female, age_code, c = swap_labels(G, attrs)
    original = judge.embed(frame, face.box)
    for attempt in range(config.max_tries):
        seed = identity_seed(config, aligned.image, original, attempt, cluster=cluster)
        synthetic = render_ws(models, swap_ws(G, ws, c, seed, config, directions=models.directions))
        out = blend_face(frame, synthetic, aligned.image, aligned.matrix, seed=seed)
        dist = judge.distance(original, judge.embed(out, face.box))
        if dist >= config.threshold:
            # the encoder's attribute head on the anonymised face: did age and gender survive the swap?
            _, after = encode_crop(models, align_face(out, face, G.img_resolution, G.cfg.align_template).image)
            female_after, age_code_after, _ = swap_labels(G, after)
            return out, SwapResult("swap", attempt + 1, dist, female, float(decode_age(age_code)), seed,
                                   female_after=female_after, age_after=float(decode_age(age_code_after)))
    method = config.fallback
    out = obscure_face(frame, face, method)
    dist = judge.distance(original, judge.embed(out, face.box))
    if dist < config.threshold and method != "solid":  # still recognisable: cover it completely
        method = "solid"
        out = obscure_face(frame, face, method)
        dist = judge.distance(original, judge.embed(out, face.box))
    return out, SwapResult(method, config.max_tries, dist, female, float(decode_age(age_code)), -1)
