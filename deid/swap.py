"""Identity swap: keep pose, age and gender, replace who the person is; an identity guard fails closed.

For each face: the encoder gives its W+ code; the attribute network (``deid.attributes``; the encoder's own head when it
is absent) estimates its gender and age. New identities are drawn from seeds (mapping network conditioned on those
labels, truncated toward the centre of that age/gender; for an unconditional generator, moved along its gender/age
directions); the W+ rows in ``SwapConfig.keep_layers`` (by default the coarse rows: pose and head shape; chosen by
measurement, see the field) come from the original, the rest from the new identity; colour and lighting return through
the colour matching. Where the generator has directions (``<name>.directions.safetensors``; the shipped one does), each
new identity is then steered along them until the attribute network reads the original's gender and age on it
(``SwapConfig.attribute_steps``, ``deid.directions.steer_attributes``). With ``SwapConfig.candidates`` > 1, that many
are rendered in one batch and ranked by how well the attribute network finds the original's gender and age in them; by
default they are tried in seed order. The tries are blended (upscaled first where the face is drawn larger than the
generator's output; after the first try such faces are screened without the upscaler, and only a try that passes is
upscaled and judged again) and the identity judge compares each result with the original, in batches of 1, 2, 4, 8
(``guard_batches``); a try that passes must pass in slightly moved, grown and shrunk boxes too
(``SwapConfig.guard_jitter``: other pipelines draw their own boxes) and in the box the face detector
(``SwapModels.detector``) finds in the result. Closer than ``threshold + margin``: the next try
counts (after ``retry_after`` tries, retries: the kept rows moved ``retry_mix`` of the way toward the new identity,
optionally fewer of them, ``retry_keep_layers``); after ``max_tries`` the face is obscured (``fallback``). No face that
still matches is returned. A face whose head is turned beyond ``max_turn`` (``Face.turn``: the generator cannot draw it)
or whose lower half looks covered (``max_cover_contrast``, ``deid.occlusion``: a mask derails the encoder, and a new
face would unmask the person) or that the photo's edge cuts (more than ``max_outside`` of its box beyond it) gets the
fallback without a try, as does a face read as younger than ``min_swap_age`` (babies: drawn poorly, hardly told
apart by the judge).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .align import align_face
from .attributes import DEFAULT_ATTRIBUTES, AttributeEstimator
from .blend import blend_face
from .errors import ModelError
from .config import SwapConfig
from .detect import FaceDetector, find_again
from .directions import AttributeDirections, directions_path, load_directions, steer_attributes
from .generate import truncation_centre, z_from_seed
from .invert import load_encoder
from .io.images import to_tensor, to_uint8
from .io.weights import MODELS_DIR, default_model_path, load_generator
from .labels import decode_age, encode_labels
from .nets.encoder import Encoder
from .nets.generator import Generator
from .obscure import obscure_face
from .occlusion import lower_face_contrast
from .superres import DEFAULT_SUPERRES, FaceUpscaler, needs_upscale
from .types import AlignedFace, Face, SwapResult

__all__ = ["SwapModels", "load_swap_models", "swap_ws", "identity_seed", "swap_face", "encode_crop", "render_ws",
           "face_labels", "label_vector", "ranked_identities", "Candidate", "paste_synthetic", "guard_tries",
           "guard_batches", "first_unrecognisable", "will_upscale", "is_turned", "is_covered", "is_cut",
           "outside_share", "unswappable", "obscured", "jittered"]


@dataclass
class SwapModels:
    """Everything the swap needs, loaded once (CLI start-up, server lifespan)."""

    G: Generator
    E: Encoder
    judge: object  # deid.eval.identity.IdentityJudge
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # gender/age in W: imposed on the new identities of a generator without label input; for any generator, the
    # directions the new identities are steered along (SwapConfig.attribute_steps)
    directions: AttributeDirections | None = None
    attributes: AttributeEstimator | None = None  # gender/age of faces; None = the encoder's attribute head
    upscaler: FaceUpscaler | None = None  # detail for faces drawn larger than the generator's output; None = off
    # finds each passing try's face again in the result: the guard judges it in that box too (the box another
    # pipeline draws around the new face, which may lie farther than the nearby boxes); None = off
    detector: FaceDetector | None = None


def load_swap_models(generator: str | Path | None = None, encoder: str | Path | None = None, *,
                     device: torch.device | str = "cpu", attributes: str | Path | None = None,
                     upscaler: str | Path | None = None) -> SwapModels:
    """Load generator, its encoder (refusing a mismatched pair), the identity judge, the attribute network
    (``attributes``) and the super-resolution network (``upscaler``; both default to the shipped ones, or none when
    they are not installed; the upscaler only for a generator whose output size it reads); for a generator without
    label input, also its attribute directions (``<name>.directions.safetensors``) when they exist."""
    from .eval.identity import IdentityJudge

    gpath = Path(generator) if generator else default_model_path("deid64.safetensors")
    epath = Path(encoder) if encoder else default_model_path("deid64-encoder.safetensors")
    G = load_generator(gpath, device=device)
    E = load_encoder(epath, generator_path=gpath, device=device)
    directions = None
    if directions_path(gpath).is_file():
        directions = load_directions(directions_path(gpath), w_dim=G.w_dim)
    if attributes is not None or (MODELS_DIR / DEFAULT_ATTRIBUTES).is_file():
        estimator = AttributeEstimator.load(attributes, device=device)
    else:
        estimator = None
    up = None
    if upscaler is not None or (MODELS_DIR / DEFAULT_SUPERRES).is_file():
        up = FaceUpscaler.load(upscaler, device=device)
        if up.net.cfg.in_resolution != G.img_resolution:
            if upscaler is not None:
                raise ModelError(f"{upscaler}: upscales {up.net.cfg.in_resolution} px faces, the generator draws "
                                 f"{G.img_resolution} px")
            up = None
    return SwapModels(G=G, E=E, judge=IdentityJudge.default(), device=torch.device(device), directions=directions,
                      attributes=estimator, upscaler=up, detector=FaceDetector(device=device))


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
    """The faces of W+ ``ws`` ``[N, num_ws, w_dim]`` as ``[S, S, 3]`` uint8 RGB (N = 1) or ``[N, S, S, 3]``
    (const noise)."""
    from .device import fast_inference

    with fast_inference(models.device, ws.shape[0], min_batch=1):
        img = models.G.synthesis(ws, noise_mode="const").float()
    out = np.stack([to_uint8(i) for i in img])
    return out[0] if len(out) == 1 else out


def face_labels(models: SwapModels, frame: np.ndarray, face: Face, head: torch.Tensor | None = None
                ) -> tuple[float, float]:
    """P(female) and age in years of ``face``: the attribute network's estimate, or (without one) the encoder's
    attribute head ``head`` ``[1, 2]`` (computed here when None)."""
    if models.attributes is not None:
        p, age = models.attributes.estimate_faces(frame, [face])
        return float(p[0]), float(age[0])
    if head is None:
        G = models.G
        _, head = encode_crop(models, align_face(frame, face, G.img_resolution, G.cfg.align_template).image)
    return float(torch.sigmoid(head[0, 0])), float(decode_age(float(head[0, 1].clamp(0, 1.05))))


def label_vector(G: Generator, female: float, age: float, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """The generator's label input ``[1, c_dim]`` for (P(female), age); None for a generator without labels."""
    if not G.c_dim:
        return None
    return torch.from_numpy(encode_labels(age, float(round(female)))).to(device)


@torch.no_grad()
def swap_ws(G: Generator, ws: torch.Tensor, c: torch.Tensor | None, seed: int, config: SwapConfig, *,
            directions: AttributeDirections | None = None, target: tuple[float, float] | None = None,
            mix: float = 0.0) -> torch.Tensor:
    """New W+ ``[1, num_ws, w_dim]``: a fresh identity for labels ``c`` ``[1, c_dim]``, with the original rows of
    ``config.keep_layers`` from ``ws`` ``[1, num_ws, w_dim]`` (moved ``mix`` of the way toward the new identity's;
    0 = the original's as they are).

    A generator without labels (``c`` None) with ``directions``: the new identity is moved along the gender and age
    directions until its predicted gender and age equal ``target`` (P(female), age in years), or, without a target,
    those read off the mean of the original's W+ rows.
    """
    z = z_from_seed(seed, G.z_dim).to(ws.device)
    new = G.mapping(z, c)
    if config.psi != 1:
        new = truncation_centre(G, c).lerp(new, config.psi)
    if c is None and directions is not None:
        if target is not None:
            p = min(max(target[0], 0.02), 0.98)
            female = torch.tensor([[float(np.log(p / (1 - p)))]], device=ws.device)
            age = torch.tensor([[target[1]]], device=ws.device)
        else:
            f, a = directions.scores(ws.mean(dim=1))  # [1], [1]
            female, age = f[:, None], a[:, None]
        new = directions.impose(new, female, age)
    keep = list(config.kept_rows(G.num_ws))
    new[:, keep] = ws[:, keep].lerp(new[:, keep], mix) if mix else ws[:, keep]
    return new


@dataclass
class Candidate:
    """One new identity for a face, rendered."""

    seed: int
    ws: torch.Tensor  # [1, num_ws, w_dim]
    image: np.ndarray  # [S, S, 3] uint8 RGB, in the generator's aligned crop
    kept: tuple[int, ...] = ()  # the W+ rows taken from the original face
    mix: float = 0.0  # ... moved this share of the way toward the new identity's (a retry, SwapConfig.retry_mix)
    female: float = float("nan")  # the attribute network's estimate on it (nan without one)
    age: float = float("nan")
    steer: torch.Tensor | None = None  # [1, 1, w_dim]: the move along the attribute directions in ws, every row


GENDER_WEIGHT = 20.0  # ranking: a full gender flip weighs as much as 20 years of age error
RANK_MAX_RESOLUTION = 256  # larger generators (FFHQ 1024) render candidates one by one, unranked: a batch costs seconds


@torch.no_grad()
def ranked_identities(models: SwapModels, ws: torch.Tensor, face: Face, labels: tuple[float, float],
                      seeds: list[int], config: SwapConfig, *, rank: bool = True, mix: float = 0.0,
                      start: torch.Tensor | None = None) -> list[Candidate]:
    """New identities for the face with W+ ``ws`` and labels (P(female), age), one per seed (kept rows mixed by
    ``mix``, see ``swap_ws``), rendered in one batch and ordered best first by ``GENDER_WEIGHT * |dP(female)| +
    |d age|`` (the attribute network on each candidate, warped into its own crop); in seed order when there is no
    attribute network or ``rank`` is False. With ``SwapConfig.attribute_steps`` and the generator's directions, each is
    first steered toward the labels (``deid.directions.steer_attributes``); ``start`` (``[1, 1, w_dim]``, the move
    earlier tries of the face needed) is where the steering starts, with one step then."""
    G = models.G
    c = label_vector(G, *labels, device=ws.device)
    news = torch.cat([swap_ws(G, ws, c, s, config, directions=models.directions, target=labels, mix=mix)
                      for s in seeds])
    est = models.attributes
    if config.attribute_steps and est is not None and models.directions is not None \
            and labels[1] >= config.attribute_min_age:
        renders, readings = [], []

        def measure(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
            faces = render_ws(models, x)
            renders.append(faces if faces.ndim == 4 else faces[None])
            readings.append(est.estimate(est.from_crop(renders[-1], face, G.img_resolution, G.cfg.align_template)))
            return readings[-1]

        steps = config.attribute_steps
        if start is not None:  # the earlier tries' move: most of it comes from the face, not the seed
            steps = min(steps, 1)
        steered, step = steer_attributes(news if start is None else news + start, measure, labels[0], labels[1],
                                         models.directions, steps)
        images = np.stack([renders[k][i] for i, k in enumerate(step)])
        read = (np.array([readings[k][0][i] for i, k in enumerate(step)]),
                np.array([readings[k][1][i] for i, k in enumerate(step)]))  # what the ranking reads: no second pass
        moves = (steered - news)[:, :1]
        news = steered
    else:
        images = render_ws(models, news)
        if images.ndim == 3:
            images = images[None]
        moves = read = None
    kept = config.kept_rows(G.num_ws)
    out = [Candidate(s, news[i : i + 1], images[i], kept, mix, steer=None if moves is None else moves[i : i + 1])
           for i, s in enumerate(seeds)]
    if est is None or len(out) == 1 or not rank:
        return out
    p, age = read if read is not None else est.estimate(est.from_crop(images, face, G.img_resolution,
                                                                       G.cfg.align_template))
    for cand, pi, ai in zip(out, p, age):
        cand.female, cand.age = float(pi), float(ai)
    score = GENDER_WEIGHT * np.abs(p - labels[0]) + np.abs(age - labels[1])
    return [out[i] for i in np.argsort(score, kind="stable")]


def paste_synthetic(models: SwapModels, frame: np.ndarray, face: Face, aligned: AlignedFace, synthetic: np.ndarray,
                    seed: int, blend: str = "alpha", *, upscale: bool = True) -> np.ndarray:
    """Blend the generated face ``synthetic`` (in ``aligned``'s crop) into a copy of ``frame`` (``blend``: see
    ``deid.blend.blend_face``); where the crop is drawn larger than its pixels and an upscaler is loaded, the face
    is upscaled first (unless ``upscale`` is False) and blended over a crop of the same, higher resolution. A
    ``synthetic`` already at the upscaler's resolution (video upscales its anchor faces once) is blended as it is."""
    up = models.upscaler
    if upscale and will_upscale(models, aligned):
        G = models.G
        side = G.img_resolution * up.scale
        hr = align_face(frame, face, side, G.cfg.align_template)
        if synthetic.shape[0] != side:
            synthetic = up(synthetic)
        return blend_face(frame, synthetic, hr.image, hr.matrix, seed=seed, method=blend)
    return blend_face(frame, synthetic, aligned.image, aligned.matrix, seed=seed, method=blend)


def will_upscale(models: SwapModels, aligned: AlignedFace) -> bool:
    """Whether ``paste_synthetic`` upscales the face of this crop (drawn larger than the generator's output)."""
    return models.upscaler is not None and needs_upscale(aligned.matrix)


def guard_tries(models: SwapModels, ws: torch.Tensor, face: Face, labels: tuple[float, float], seeds: list[int],
                config: SwapConfig) -> Iterator[Candidate]:
    """The new identities the identity guard tries, best ranked first, at most ``config.max_tries``. The tries after
    the first ``config.retry_after`` are retries: they keep ``config.retry_keep_layers`` (when set) and move the kept
    rows ``config.retry_mix`` of the way toward the new identity; drawn from the seeds not tried yet, rendered only
    when the first tries have failed. A face whose estimated age (``labels[1]``) is under ``config.retry_min_age``
    gets no retries.

    With ``config.key`` the seeds are tried in their own order: they are keyed pseudonyms (the same for every photo
    of the person), and a ranking, which depends on each photo's pose and light, would pick different ones. Without
    an attribute network, with ``config.candidates`` 1, or for a generator above ``RANK_MAX_RESOLUTION``, they are also
    tried in seed order, and rendered only as the guard asks for them (``guard_batches``).
    """
    rank = (config.key is None and config.candidates > 1 and models.attributes is not None
            and models.G.img_resolution <= RANK_MAX_RESOLUTION)
    moved: list[torch.Tensor] = []  # the attribute steering's moves so far: where later batches start

    def batch_of(seeds_: list[int], cfg: SwapConfig, mix: float, rank_: bool) -> list[Candidate]:
        start = torch.cat(moved).mean(dim=0, keepdim=True) if moved else None
        cands = ranked_identities(models, ws, face, labels, seeds_, cfg, rank=rank_, mix=mix, start=start)
        moved.extend(c.steer for c in cands if c.steer is not None)
        return cands

    def take(pool: list[int], cfg: SwapConfig, n: int, mix: float = 0.0) -> Iterator[Candidate]:
        if rank:  # all rendered in one batch, then ranked
            yield from batch_of(pool, cfg, mix, True)[:n]
        else:  # rendered only as far as the guard needs, in the guard's batches
            start = 0
            for size in guard_batches(models, cfg):
                batch = pool[start : min(start + size, n)]
                if not batch:
                    return
                start += len(batch)
                yield from batch_of(batch, cfg, mix, False)

    retries = (config.retry_keep_layers is not None or config.retry_mix > 0) and labels[1] >= config.retry_min_age
    if not retries or config.retry_after >= config.max_tries:
        yield from take(seeds, config, config.max_tries)
        return
    first = config.retry_after
    tried = set()
    for cand in take(seeds, config, first) if first else ():
        tried.add(cand.seed)
        yield cand
    retry = config if config.retry_keep_layers is None else \
        dataclasses.replace(config, keep_layers=config.retry_keep_layers)
    yield from take([s for s in seeds if s not in tried] or seeds, retry, config.max_tries - first,
                    mix=config.retry_mix)


SCREEN_SLACK = 0.03  # screening without the upscaler drops tries under bar - this (of the 348 tries: 24 % dropped,
#                     none of them passed upscaled; at bar itself 13 of the 226 that passed upscaled would be lost)
# Every try that passes is judged again in the nearby boxes of SwapConfig.guard_jitter, however far it passed. Until
# session 16 a try passing by 0.1 or more was not (to save time: benchmarks/photo.py's anonymise stage, 8 faces, took
# ~250 ms longer in one A/B run, but within that benchmark's run-to-run noise in interleaved reruns); with the 480
# kimg generator, of 207 held-out swaps (one-off script, the first 300 faces of benchmarks/swap.py, default config)
# 41 passed by 0.1 or more, and 2 of those read under the bar in a nearby box (0.798 -> 0.575 in the box moved left,
# 0.753 -> 0.575 in the grown one; drops from the detection box to the nearest-reading box: median 0.006, largest
# 0.224); the first was re-identified in the box MTCNN draws in the result (0.559, benchmarks/swap.py "re-id rd").
# benchmarks/swap.py, 500 held-out faces, before -> after: re-id rd 0.002 -> 0, fallbacks 0.296 both, gender
# agreement 0.920 -> 0.918, age MAE 6.0 both, 639 -> 641 ms per face; benchmarks/photo.py moved within its noise.
# Session 18: a passing try is judged in the box MTCNN finds the new face in too (SwapModels.detector,
# deid.detect.find_again; ~35 ms per passing try), since a one-year-old's swap with the 580 kimg models passed at 0.626
# (nearby and farther boxes included) and read 0.574 in the box MTCNN drew in the result (box IoU 0.53 with the
# guard's). benchmarks/swap.py, 500 held-out faces, before -> after: re-id rd 0.002 -> 0, fallbacks 0.318 -> 0.320
# (that face), gender agreement 0.927 -> 0.929, age MAE 5.95 -> 5.91.
GUARD_BATCH = 8  # most tries checked together: the batches double from 1 up to this
HOPELESS_AFTER = 7  # tries (batches 1 + 2 + 4) after which the guard may give up on a face (SwapConfig.hopeless)


def guard_batches(models: SwapModels, config: SwapConfig) -> list[int]:
    """How many tries the guard renders, pastes and checks at a time: 1, 2, 4, 8, 8, ... (the last batch what is
    left of ``config.max_tries``) for generators up to ``RANK_MAX_RESOLUTION``, where a batch through the generator
    and the identity network costs less per face than single faces, and most faces pass within the first few tries
    (so a doubling batch wastes little on them); one at a time for large generators (seconds a face)."""
    if models.G.img_resolution > RANK_MAX_RESOLUTION:
        return [1] * config.max_tries
    sizes, left, size = [], config.max_tries, 1
    while left > 0:
        sizes.append(min(size, left))
        left -= sizes[-1]
        size = min(size * 2, GUARD_BATCH)
    return sizes


def first_unrecognisable(models: SwapModels, frame: np.ndarray, face: Face, aligned: AlignedFace,
                         original: np.ndarray, tries: Iterator[Candidate], config: SwapConfig, *, margin: float = 0.0,
                         grain: int = 0, age: float | None = None
                         ) -> tuple[int, Candidate | None, np.ndarray | None, float]:
    """The identity guard: paste the ``tries`` in turn (in the batches of ``guard_batches``) and return the first
    whose face the identity judge finds at least ``config.threshold + margin`` from ``original`` (the original face's
    descriptor), as (its 1-based try number, the candidate, the new frame, the distance). When none is, or when after
    ``HOPELESS_AFTER`` tries the best is still ``config.hopeless`` under that bar: (the tries made, None, None, the
    best distance). After the first try, faces the upscaler enlarges are screened without it (only a try that passes
    so is upscaled and judged again; the upscaled result is what must pass).
    ``grain``: XORed into each candidate's seed for the blend's grain (video: the frame index). A try must pass in
    the nearby boxes of ``SwapConfig.guard_jitter`` too; for a face estimated younger than
    ``SwapConfig.young_age`` (``age``), also in boxes twice as far; and, with ``models.detector``, in the box
    it finds the new face in (``deid.detect.find_again``)."""
    judge = models.judge
    bar = config.threshold + margin
    young = age is not None and age < config.young_age
    others = []  # the boxes a passing try is judged in again
    if config.guard_jitter:
        others = jittered(face, config.guard_jitter) + (jittered(face, 2 * config.guard_jitter) if young else [])
    attempt, best = 0, 0.0
    for size in guard_batches(models, config):
        if config.hopeless and attempt >= HOPELESS_AFTER and best < bar - config.hopeless:
            break  # no try came near: the rest would fail too (measured, see SwapConfig.hopeless)
        chunk = [cand for _, cand in zip(range(size), tries)]
        if not chunk:
            break
        # from the second try on, a face drawn larger than the generator's output is screened without the upscaler
        # first: the judge's distance hardly changes with it (348 tries of held-out faces at 224 px, session 5:
        # correlation 0.989, upscaled - plain +0.003 +- 0.014), so a try that stays SCREEN_SLACK under the bar
        # plainly is dropped without upscaling it; any other is upscaled and judged again, and only that final
        # result counts. (The first try is upscaled at once: most faces pass with it.)
        screen = attempt > 0 and will_upscale(models, aligned)
        outs = [paste_synthetic(models, frame, face, aligned, c.image, c.seed ^ grain, config.blend,
                                upscale=not screen) for c in chunk]
        for cand, out, e in zip(chunk, outs, judge.embed_many(outs, [face] * len(outs))):
            attempt += 1
            dist = judge.distance(original, e)
            best = max(best, dist)
            if screen:
                if dist < bar - SCREEN_SLACK:
                    continue
                out = paste_synthetic(models, frame, face, aligned, cand.image, cand.seed ^ grain, config.blend)
                dist = judge.distance(original, judge.embed(out, face))
                best = max(best, dist)
            if dist >= bar:
                # another pipeline finds the face in a box of its own: the try must pass in nearby boxes too (for
                # young children, whom dlib tells apart the least, in farther boxes too) and in the box a detector
                # draws around the new face
                boxes = list(others)
                again = find_again(out, face, models.detector) if models.detector is not None else None
                if again is not None:
                    boxes.append(again)
                if boxes:
                    seen = judge.embed_many([out] * len(boxes), boxes)
                    dist = min([dist] + [judge.distance(original, e) for e in seen])
            if dist >= bar:
                return attempt, cand, out, dist
    return attempt, None, None, best


def jittered(face: Face, amount: float) -> list[Face]:
    """``face`` with its box moved by ``amount`` of its size left, right, up and down, and grown and shrunk by
    ``1.5 * amount`` about its centre (the boxes other detectors draw around the same face; landmarks as they are)."""
    x0, y0, x1, y1 = (float(v) for v in face.box)
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    boxes = [(cx + dx * w, cy + dy * h, w, h) for dx, dy in ((-amount, 0), (amount, 0), (0, -amount), (0, amount))]
    boxes += [(cx, cy, w * k, h * k) for k in (1 + 1.5 * amount, 1 - 1.5 * amount)]
    return [dataclasses.replace(face, box=np.array([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], np.float32))
            for bx, by, bw, bh in boxes]


@torch.no_grad()
def swap_face(frame: np.ndarray, face: Face, models: SwapModels, config: SwapConfig, *,
              cluster: str | None = None) -> tuple[np.ndarray, SwapResult]:
    """Swap one face of ``frame`` (``[H, W, 3]`` uint8 RGB); returns the new frame and what was done.

    The input frame is not modified. The guard compares the original face with the face in the returned frame, in
    the same box; when every try stays within ``threshold + margin``, the face is obscured with
    ``config.fallback``.
    ``cluster``: the face's identity-cluster label, used with ``config.key`` (see ``identity_seed``); None = none.
    """
    G, judge = models.G, models.judge
    original = judge.embed(frame, face)
    reason = unswappable(frame, face, config)
    if reason:  # a turned head or a covered face: no convincing swap, so none is tried (nor encoded)
        out, method, dist = obscured(frame, face, models, config, original)
        return out, SwapResult(method, 0, dist, *face_labels(models, frame, face), -1, reason=reason)
    aligned = align_face(frame, face, G.img_resolution, G.cfg.align_template)
    ws, head = encode_crop(models, aligned.image)
    female, age = face_labels(models, frame, face, head)
    if age < config.min_swap_age:  # a baby: the generator draws them poorly and the judge hardly tells them apart
        out, method, dist = obscured(frame, face, models, config, original)
        return out, SwapResult(method, 0, dist, female, age, -1, reason="young")
    seeds = [identity_seed(config, aligned.image, original, k, cluster=cluster)
             for k in range(max(config.candidates, config.max_tries))]
    tries = guard_tries(models, ws, face, (female, age), seeds, config)
    attempt, cand, out, dist = first_unrecognisable(models, frame, face, aligned, original, tries, config,
                                                    margin=config.margin, age=age)
    if cand is not None:
        female_after, age_after = face_labels(models, out, face)  # as read on the anonymised face
        return out, SwapResult("swap", attempt, dist, female, age, cand.seed,
                               female_after=female_after, age_after=age_after)
    out, method, dist = obscured(frame, face, models, config, original)
    return out, SwapResult(method, attempt, dist, female, age, -1, reason="guard")


def is_turned(face: Face, config: SwapConfig) -> bool:
    """Whether the head is turned further than ``config.max_turn`` (``Face.turn``), so it gets the fallback."""
    return config.max_turn > 0 and abs(face.turn) > config.max_turn


def is_covered(frame: np.ndarray, face: Face, config: SwapConfig) -> bool:
    """Whether the lower half of the face looks covered (``deid.occlusion.lower_face_contrast`` above
    ``config.max_cover_contrast``), so it gets the fallback."""
    return config.max_cover_contrast > 0 and lower_face_contrast(frame, face) > config.max_cover_contrast


def outside_share(face: Face, shape: tuple[int, ...]) -> float:
    """Share of the face's box that lies outside an image of ``shape`` (``[H, W, ...]``): 0 for a face wholly
    inside, 0.5 for one cut in half by the edge."""
    x0, y0, x1, y1 = (float(v) for v in face.box)
    area = max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6)
    inside = max(min(x1, shape[1]) - max(x0, 0.0), 0.0) * max(min(y1, shape[0]) - max(y0, 0.0), 0.0)
    return float(1.0 - inside / area)


def is_cut(frame: np.ndarray, face: Face, config: SwapConfig) -> bool:
    """Whether more than ``config.max_outside`` of the face's box lies beyond the edge of ``frame``, so it gets the
    fallback."""
    return config.max_outside < 1 and outside_share(face, frame.shape) > config.max_outside


def unswappable(frame: np.ndarray, face: Face, config: SwapConfig) -> str:
    """Why the face gets the fallback without a try: "cut" (by the frame's edge), "turned", "covered", or "" (it
    can be swapped)."""
    if is_cut(frame, face, config):
        return "cut"
    if is_turned(face, config):
        return "turned"
    if is_covered(frame, face, config):
        return "covered"
    return ""


def obscured(frame: np.ndarray, face: Face, models: SwapModels, config: SwapConfig,
             original: np.ndarray) -> tuple[np.ndarray, str, float]:
    """The face obscured with ``config.fallback``, or filled ("solid") when the judge still finds it within
    ``threshold + margin`` of ``original`` (its descriptor): (new frame, method, identity distance)."""
    judge, method = models.judge, config.fallback
    out = obscure_face(frame, face, method)
    dist = judge.distance(original, judge.embed(out, face))
    if dist < config.threshold + config.margin and method != "solid":  # still recognisable: cover it completely
        method = "solid"
        out = obscure_face(frame, face, method)
        dist = judge.distance(original, judge.embed(out, face))
    return out, method, dist
