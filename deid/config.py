"""One frozen dataclass per stage, each field with its meaning; validated in ``__post_init__``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["GeneratorConfig", "DiscriminatorConfig", "TrainConfig", "config_from_dict", "ServerConfig"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def config_from_dict(cls: type, data: dict[str, Any]):
    """Build a config dataclass from a plain dict (JSON/TOML), refusing unknown keys with a clear error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**kwargs)


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a style-based generator (StyleGAN2 family). Official configurations fit the same fields."""

    z_dim: int = 512  # input latent (Z) dimensionality
    c_dim: int = 0  # conditioning label dimensionality; 0 = unconditional
    w_dim: int = 512  # intermediate latent (W) dimensionality
    img_resolution: int = 64  # output resolution, a power of two from 8 to 1024
    img_channels: int = 3  # number of output colour channels
    mapping_layers: int = 8  # layers in the mapping MLP z -> w
    mapping_lr_multiplier: float = 0.01  # learning-rate multiplier of the mapping network
    channel_base: int = 16384  # channels at resolution r = min(channel_base // r, channel_max)
    channel_max: int = 512  # maximum number of channels in any layer
    conv_clamp: float | None = None  # clamp convolution outputs to +-X; None = disable (official models use 256)
    use_noise: bool = True  # per-layer noise inputs; False = none
    c_labels: tuple[str, ...] = ()  # meaning of each conditioning dimension, e.g. ("female", "age"); len == c_dim
    align_template: str = "deid"  # crop template the model was trained on: "deid" (tight) or "ffhq" (official)

    def __post_init__(self):
        _check(self.img_resolution >= 8 and self.img_resolution <= 1024, "img_resolution must be in 8..1024")
        _check(2 ** int(math.log2(self.img_resolution)) == self.img_resolution, "img_resolution must be a power of two")
        _check(self.z_dim > 0 and self.w_dim > 0, "z_dim and w_dim must be positive")
        _check(self.c_dim >= 0, "c_dim must be >= 0")
        _check(self.mapping_layers >= 1, "mapping_layers must be >= 1")
        _check(self.channel_base > 0 and self.channel_max > 0, "channel_base and channel_max must be positive")
        _check(len(self.c_labels) in (0, self.c_dim), "c_labels must name every conditioning dimension")
        _check(self.align_template in ("deid", "ffhq"), "align_template must be 'deid' or 'ffhq'")

    def channels(self, res: int) -> int:
        """Feature maps of the synthesis block at resolution ``res``."""
        return min(self.channel_base // res, self.channel_max)

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """Number of per-layer w vectors (W+): one per synthesis conv plus the last toRGB."""
        return 2 * len(self.block_resolutions)

    @classmethod
    def preset(cls, name: str, **overrides) -> "GeneratorConfig":
        """Named configurations.

        ``deid64``: the shipped default (64 px, tight crop, conditioned on gender and age).
        ``ffhq256``/``ffhq512``/``ffhq1024``: the official StyleGAN2 FFHQ configurations.
        ``tiny32``: a 32 px toy for tests.
        """
        presets = {
            "deid64": dict(z_dim=256, w_dim=256, c_dim=2, c_labels=("female", "age"), img_resolution=64,
                           channel_base=4096, channel_max=128, mapping_layers=8),
            "deid128": dict(z_dim=256, w_dim=256, c_dim=2, c_labels=("female", "age"), img_resolution=128,
                            channel_base=8192, channel_max=128, mapping_layers=8),
            "ffhq256": dict(img_resolution=256, channel_base=16384, conv_clamp=256, align_template="ffhq"),
            "ffhq512": dict(img_resolution=512, channel_base=32768, conv_clamp=256, align_template="ffhq"),
            "ffhq1024": dict(img_resolution=1024, channel_base=32768, conv_clamp=256, align_template="ffhq"),
            "tiny32": dict(z_dim=32, w_dim=32, img_resolution=32, channel_base=512, channel_max=32, mapping_layers=2),
        }
        if name not in presets:
            raise ConfigError(f"unknown generator preset {name!r}; choose from {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Architecture of the residual discriminator (StyleGAN2 'resnet')."""

    c_dim: int = 0  # conditioning label dimensionality; 0 = unconditional
    img_resolution: int = 64  # input resolution
    img_channels: int = 3  # input colour channels
    channel_base: int = 16384  # channels at resolution r = min(channel_base // r, channel_max)
    channel_max: int = 512  # maximum channels
    cmap_dim: int | None = None  # projection dimensionality for conditioning; None = channels at 4x4
    mbstd_group_size: int = 4  # group size of the minibatch-stddev layer
    mbstd_num_channels: int = 1  # features of the minibatch-stddev layer

    def __post_init__(self):
        _check(self.img_resolution >= 8 and 2 ** int(math.log2(self.img_resolution)) == self.img_resolution,
               "img_resolution must be a power of two >= 8")
        _check(self.mbstd_group_size >= 1 and self.mbstd_num_channels >= 1, "mbstd settings must be >= 1")

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @classmethod
    def for_generator(cls, g: GeneratorConfig, **overrides) -> "DiscriminatorConfig":
        """The discriminator that mirrors generator ``g``."""
        base = dict(c_dim=g.c_dim, img_resolution=g.img_resolution, img_channels=g.img_channels,
                    channel_base=g.channel_base, channel_max=g.channel_max)
        return cls(**{**base, **overrides})


@dataclass(frozen=True)
class TrainConfig:
    """Generator training (StyleGAN2 losses with DiffAugment). ``deid train generator`` fills it from flags."""

    data: str = ""  # prepared data file (``deid data prepare`` output, .safetensors)
    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig.preset("deid64"))
    holdout_shard: int | None = 3  # shard whose first ``holdout_count`` faces are kept out of training; None = none
    holdout_count: int = 1000  # faces held out for validation (inversion, swap benchmarks)
    batch: int = 16  # images per step
    total_kimg: float = 5000.0  # stop after this many thousand real images shown
    g_lr: float = 0.0025  # generator learning rate
    d_lr: float = 0.0025  # discriminator learning rate
    r1_gamma: float = 0.1  # R1 regularisation weight
    r1_interval: int = 16  # lazy regularisation: R1 every N steps
    ema_kimg: float = 5.0  # half-life of the generator EMA, in thousands of images
    ema_rampup: float | None = 0.05  # EMA half-life ramp-up as a fraction of images shown; None = disable
    style_mixing_prob: float = 0.9  # probability of mixing two latents in a generated batch
    augment: str = "color,translation,cutout"  # DiffAugment policy; "" = no augmentation
    mirror: bool = True  # random horizontal flips of real images
    mixed_precision: str = "auto"  # "auto" (bf16 on CPU, fp16 AMP on CUDA), "bf16", "fp16" or "off"
    channels_last: bool = True  # NHWC memory format (faster convolutions on CPU)
    seed: int = 0  # seed of every random stream of the run
    snapshot_kimg: float = 10.0  # checkpoint + sample grid every N thousand images
    fid_kimg: float = 100.0  # FID every N thousand images; 0 = never
    fid_samples: int = 2000  # generated images per training-time FID
    threads: int = 0  # CPU threads for torch; 0 = leave torch's default
    # Ages drawn more often (real faces and the labels of fakes alike): "LO-HI:FACTOR[,LO-HI:FACTOR...]", ages LO to
    # HI inclusive FACTOR times as often as the rest; "" = every face equally often (``parse_oversample``)
    oversample: str = ""

    def __post_init__(self):
        _check(self.batch >= 2, "batch must be >= 2")
        parse_oversample(self.oversample)
        _check(self.total_kimg > 0, "total_kimg must be positive")
        _check(self.r1_interval >= 1, "r1_interval must be >= 1")
        _check(0 <= self.style_mixing_prob <= 1, "style_mixing_prob must be in [0, 1]")
        _check(self.mixed_precision in ("auto", "bf16", "fp16", "off"), "mixed_precision: auto, bf16, fp16 or off")
        for p in filter(None, self.augment.split(",")):
            _check(p in ("color", "translation", "cutout"), f"unknown augmentation {p!r}")


def parse_oversample(spec: str) -> list[tuple[float, float, float]]:
    """``TrainConfig.oversample`` as (lo, hi, factor) ranges; ConfigError names what is wrong."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            ages, factor = part.split(":")
            lo, hi = (float(a) for a in ages.split("-"))
            f = float(factor)
        except ValueError:
            raise ConfigError(f"oversample: {part!r} is not LO-HI:FACTOR (e.g. 3-17:2)") from None
        _check(0 <= lo <= hi, f"oversample: {part!r} needs 0 <= LO <= HI")
        _check(f > 0 and math.isfinite(f), f"oversample: {part!r} needs a positive FACTOR")
        out.append((lo, hi, f))
    return out


MTCNN_STOCK_THRESHOLDS = (0.6, 0.7, 0.7)  # facenet-pytorch's own P-, R- and O-net thresholds (training-crop prep)


@dataclass(frozen=True)
class DetectConfig:
    """Face detection (MTCNN from facenet-pytorch) over photos of any size."""

    min_face: int = 16  # smallest face to find, in original-image pixels (box side)
    # MTCNN P-, R- and O-net score thresholds. facenet-pytorch's (MTCNN_STOCK_THRESHOLDS) let the first two nets
    # drop faces whose lower half is covered, which O-net itself then scores >= 0.9. On 80 held-out UTKFace faces with
    # a drawn mask (nose to chin) on a plain 640x480 background (session 8): found at 80 px 0.36 -> 0.49, at 40 px
    # 0.29 -> 0.40; unmasked 1.00 both; no detection on 19 scikit-image photos without faces, the same faces on the
    # samples and the benchmark scenes; detection ~20 % slower (1080p, 2 threads: 0.97 -> 1.17 s). Lower P-net
    # thresholds found hardly more and cost more; (0.4, 0.2, 0.7) found a false face on a texture at 0.95. The final
    # bar (min_score) is unchanged
    thresholds: tuple[float, float, float] = (0.5, 0.3, 0.7)
    min_score: float = 0.9  # drop final detections scoring below this
    max_size: int = 1920  # longer side of the working image for the whole-image pass; larger photos are shrunk
    tile: int = 720  # tile side (pixels of the upscaled image) for the small-face pass; 0 = no tiling
    small_face: int = 24  # faces smaller than this (pixels, at working scale) get upscaled crops or tiles (deid.detect)
    nms_iou: float = 0.3  # boxes overlapping more than this (IoU) are merged, keeping the highest score
    factor: float = 0.709  # MTCNN pyramid scale step
    # extra passes over the photo turned by these angles (degrees, counter-clockwise), for heads tilted beyond what
    # MTCNN finds upright. On 48 held-out 100 px faces per angle (session 6), recall upright only -> with (-50, 50):
    # 39 -> 48 at +-45 deg, 24 -> 48 at 60, 10 -> 46 at 75, 3 -> 38 at 90 (48 px faces: 32 -> 39, 16 -> 33,
    # 6 -> 25, 2 -> 19); 1080p detection ~0.7 -> ~1.2 s on one thread. () = upright only (--upright-only)
    rotations: tuple[float, ...] = (-50.0, 50.0)
    rotated_min_face: int = 48  # smallest face the turned passes look for (original-image px; they cost less so)
    rotated_min_score: float = 0.9  # score a turned detection needs in the upright crop that confirms it
    # faces cut by the photo's edge (a selfie's neighbours, a crowd's rim): MTCNN misses most faces less than ~2/3
    # inside. The border passes (deid.detect._border_passes) search strips along the edges mirrored outward, from
    # faces of this size (original-image px; at least 20 px of the working image for photos shrunk to max_size) up;
    # 0 = off
    border_min_face: int = 40

    def __post_init__(self):
        _check(self.min_face >= 4, "min_face must be >= 4 pixels")
        _check(all(0 < abs(a) <= 180 for a in self.rotations), "rotations: angles in degrees, non-zero, within +-180")
        _check(self.rotated_min_face >= 12, "rotated_min_face must be >= 12 pixels")
        _check(self.border_min_face == 0 or self.border_min_face >= 12, "border_min_face must be 0 or >= 12 pixels")
        _check(0 <= self.rotated_min_score < 1, "rotated_min_score must be in [0, 1)")
        _check(all(0 < t < 1 for t in self.thresholds) and len(self.thresholds) == 3, "thresholds: three values in (0, 1)")
        _check(0 <= self.min_score < 1, "min_score must be in [0, 1)")
        _check(self.max_size >= 160, "max_size must be >= 160")
        _check(self.tile == 0 or self.tile >= 160, "tile must be 0 or >= 160")
        _check(0 < self.nms_iou < 1, "nms_iou must be in (0, 1)")
        _check(0.3 < self.factor < 0.95, "factor must be in (0.3, 0.95)")


@dataclass(frozen=True)
class EncoderConfig:
    """Encoder from an aligned face to W+ (e4e style: one base w plus per-layer offsets)."""

    img_resolution: int = 64  # input crop side (the generator's resolution)
    img_channels: int = 3  # input colour channels
    num_ws: int = 10  # rows of W+ to predict (the generator's num_ws)
    w_dim: int = 256  # width of w (the generator's w_dim)
    channel_base: int = 2048  # channels at resolution r = min(channel_base // r, channel_max)
    channel_max: int = 128  # maximum channels
    generator_sha256: str = ""  # sha256 of the generator weights the encoder was trained for; "" = not tied

    def __post_init__(self):
        _check(self.img_resolution >= 16 and 2 ** int(math.log2(self.img_resolution)) == self.img_resolution,
               "img_resolution must be a power of two >= 16")
        _check(self.num_ws >= 1 and self.w_dim >= 1, "num_ws and w_dim must be positive")

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @classmethod
    def for_generator(cls, g: GeneratorConfig, **overrides) -> "EncoderConfig":
        base = dict(img_resolution=g.img_resolution, img_channels=g.img_channels, num_ws=g.num_ws, w_dim=g.w_dim)
        return cls(**{**base, **overrides})


@dataclass(frozen=True)
class ServerConfig:
    """The HTTP API (``deid serve``): where it listens, which models, and the bounds on its work."""

    host: str = "127.0.0.1"  # interface to listen on; "0.0.0.0" = every interface
    port: int = 8000  # TCP port; 0 = any free port
    model: str | None = None  # generator weights (.safetensors + .json, official .pkl, rosinality .pt); None = shipped
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"; resolved once, when the server starts
    max_batch: int = 16  # generate requests per forward pass; every pass is padded to this size (see deid.server.batcher)
    max_queue: int = 64  # generate requests waiting for the generator; more get 503 with Retry-After
    retry_after_s: int = 1  # Retry-After (seconds) sent with 503 when the queue is full
    max_body_bytes: int = 64 * 1024  # largest request body; larger -> 413
    store_dir: str | None = None  # keep generated images as files in this folder; None = in memory
    store_max_items: int = 1024  # images kept at most; the oldest are evicted first
    store_max_bytes: int = 256 * 1024 * 1024  # encoded bytes kept at most; the oldest are evicted first
    store_ttl_s: float = 600.0  # seconds an image stays fetchable after it was generated
    # encoder of ``model`` for anonymize mode "swap" (.safetensors + .json, trained for that generator); None = the
    # shipped models/deid64-encoder.safetensors, and when that is missing the server still starts but refuses "swap"
    # (503) while serving blur, pixelate and solid. A given encoder that cannot be loaded stops the start-up.
    encoder: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024  # largest anonymize request body (photo + form fields); larger -> 413
    max_upload_pixels: int = 50_000_000  # largest uploaded photo (width * height, before decoding); larger -> 400
    max_anonymize_queue: int = 4  # anonymize requests waiting while one runs (one at a time); more get 503

    def __post_init__(self):
        _check(0 <= self.port <= 65535, "port must be in 0..65535")
        _check(1 <= self.max_batch <= 256, "max_batch must be in 1..256")
        _check(self.max_queue >= 1, "max_queue must be >= 1")
        _check(self.retry_after_s >= 1, "retry_after_s must be >= 1")
        _check(self.max_body_bytes >= 1024, "max_body_bytes must be >= 1024")
        _check(self.store_max_items >= 1, "store_max_items must be >= 1")
        # room for the largest image the API makes: 1024x1024 RGB, incompressible PNG (~3.2 MB)
        _check(self.store_max_bytes >= 4 * 1024 * 1024, "store_max_bytes must be >= 4 MiB")
        _check(self.store_ttl_s > 0, "store_ttl_s must be positive")
        _check(self.max_upload_bytes >= 1024, "max_upload_bytes must be >= 1024")
        _check(self.max_upload_pixels >= 1, "max_upload_pixels must be >= 1")
        _check(self.max_anonymize_queue >= 0, "max_anonymize_queue must be >= 0")


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Encoder training (``deid train encoder``) against a fixed generator."""

    data: str = ""  # prepared data file (``deid data prepare``)
    generator: str = ""  # generator weights (.safetensors + .json) the encoder is trained for
    discriminator: str = ""  # discriminator weights whose features give the feature loss
    encoder: EncoderConfig | None = None  # architecture; None = EncoderConfig.for_generator(G)
    holdout_shard: int | None = 3  # same held-out faces as the generator run (never trained on)
    holdout_count: int = 1000
    batch: int = 8  # real images per step (plus as many generated ones)
    total_kimg: float = 500.0  # stop after this many thousand real images
    lr: float = 0.0005  # Adam learning rate
    latent_weight: float = 1.0  # || E(G(w)) - w ||^2 on generated faces
    pixel_weight: float = 1.0  # L1 between a face and its reconstruction
    feature_weight: float = 1.0  # distance between discriminator features of a face and its reconstruction
    offset_weight: float = 0.002  # e4e regulariser: keeps W+ rows close to each other (near W)
    attribute_weight: float = 0.1  # gender/age head on real faces (UTKFace labels)
    mixing_prob: float = 0.5  # generated training faces use style mixing this often (covers W+)
    mixed_precision: str = "auto"  # "auto", "bf16", "fp16" or "off"
    seed: int = 0
    snapshot_kimg: float = 5.0  # checkpoint every N thousand real images
    threads: int = 0  # CPU threads; 0 = torch default

    def __post_init__(self):
        _check(self.batch >= 1, "batch must be >= 1")
        _check(self.total_kimg > 0 and self.lr > 0, "total_kimg and lr must be positive")
        _check(self.mixed_precision in ("auto", "bf16", "fp16", "off"), "mixed_precision: auto, bf16, fp16 or off")


@dataclass(frozen=True)
class SwapConfig:
    """Identity swap in W+ with an identity guard that fails closed."""

    # W+ rows kept from the original: "A-B,C" or group names coarse/middle/fine. "coarse" (pose, head shape) won the
    # sweep of benchmarks/swap.py on 200 held-out faces (150 kimg models; the first 200 in file order, aged 10-11 and
    # 100+): fallback 12.5 % vs 14.0 % with the fine rows kept too and 22 % with the middle rows, gender agreement
    # 0.69 vs 0.665, same pose error (0.134); colour and lighting come back through the blend's colour matching.
    keep_layers: str = "coarse"
    psi: float = 0.7  # truncation of the new identity toward the centre of its age/gender
    seed: int = 0  # base seed of new identities; the face itself also enters, so each face gets its own
    key: str | None = None  # secret: new identity = keyed function of the face's identity embedding; None = off
    threshold: float = 0.6  # identity guard: anonymised face must be at least this far (dlib distance)
    # ... plus this margin. The guard measures in the detection box it was given; the same judge in the box MTCNN
    # finds in the result (as an independent pipeline looks) re-identified 2.8 % of 500 held-out swaps at margin 0,
    # 0.2 % at 0.015, 0 % at 0.02 and 0.03 (benchmarks/swap.py "re-id rd", session 4), for fallbacks 0.174 / 0.218 /
    # 0.230 / 0.260 (adults 0.02 / 0.04 / 0.04 / 0.08): 0.02, the smallest margin that re-identified none
    margin: float = 0.02
    # a try that passes in the detection box is judged again in boxes moved by this share of its size (and grown and
    # shrunk; deid.swap.jittered) and must pass in all of them: an independent pipeline draws its own box. With the
    # attribute steering (attribute_steps) and the detection box only, 4-6 of 500 held-out swaps that passed the
    # guard (0.62-0.67) were re-identified in the box MTCNN finds in the result (0.57-0.59, box IoU 0.77-0.86;
    # benchmarks/swap.py "re-id rd" 0.008-0.012); with these boxes, one one-year-old, whose swaps are now judged in
    # boxes twice as far too. Since session 16 every passing try is judged in them, however far it passed (see
    # the notes above deid.swap.GUARD_BATCH: a swap at 0.798 in the detection box read 0.575 in the box moved
    # left). 0 = the detection box only
    guard_jitter: float = 0.07
    # the guard gives up early (after its first 7 tries, deid.swap.HOPELESS_AFTER) on a face whose best try so far
    # stays this far under threshold + margin: on 200 held-out faces (session 4, all 16 tries computed) the 7 faces
    # that passed on a later try all had a best of >= 0.598 in their first 7, while 30 of the 51 faces that never
    # passed stayed under 0.58 (0.62 - 0.04): giving up on them saves 59 % of the tries the fallbacks cost, no swap
    # lost there. On all 500 held-out faces: fallbacks 0.230 -> 0.236 (3 faces; adults 0.04 -> 0.05), 814 -> 530 ms
    # per face. Session 23, with retries and 32 tries (see max_tries): 0.04 -> 0.08 (giving up only on a best under
    # 0.54): benchmarks/swap.py --group 10-17 (140 held-out faces, shipped 780 kimg models), max_tries 32: fallback
    # 0.071 -> 0.057, the same as never giving up (and as 64 tries without giving up); 558 -> 618 ms per face.
    # 0 = never give up early
    hopeless: float = 0.08
    # new identities the guard tries before falling back. 16 instead of 8 on 500 held-out faces (benchmarks/swap.py,
    # session 4, unranked): fallbacks 0.212 -> 0.176 (adults 0.05 -> 0.04, 10-17 0.06 -> 0.03, 0-9 0.63 -> 0.55),
    # gender/age unchanged; affordable since the identity judge runs in PyTorch and checks tries in doubling batches
    # (deid.swap.guard_batches). (Session 3: 4 -> 8 took fallbacks 0.246 -> 0.194.)
    # Session 23, 16 -> 32 (with hopeless 0.04 -> 0.08), shipped 780 kimg models, all 500 held-out faces: fallbacks
    # 0.304 -> 0.282 (18+ 0.03 -> 0.02, 10-17 0.11 -> 0.08, 0-9 0.93 -> 0.89), re-id 0 and re-id rd 0 both, age MAE
    # 5.3 both, pose error 0.113 -> 0.115, 549 -> 672 ms per face (the added time goes to faces that fall back);
    # gender agreement 0.940 -> 0.930, all of it in the 6 more one- and two-year-olds swapped (0-9: 0.900 over 10
    # faces -> 0.688 over 16; the judge reads these children's true gender 0.575 of the time, chance; 10-17 0.872 ->
    # 0.876, 18+ 0.981 both). 64 tries without giving up took 140 teenagers no further than 32 (0.057 both)
    max_tries: int = 32
    # new identities drawn, rendered in one batch and ranked by the attribute network (kept gender and age) before
    # the guard tries the best max_tries; 1 = no ranking: tried in seed order, rendered only as the guard needs them.
    # On 500 held-out faces (session 4, max_tries 8) ranking 8 vs none: fallback 0.212 both, gender agreement 0.863
    # vs 0.853, age MAE 8.1 vs 8.2 (within noise: +-3 points at 95 %), 510 vs 375 ms per face; so none by default
    candidates: int = 1
    # the guard's tries after the first retry_after are retries: they keep retry_keep_layers (None = keep_layers)
    # and move those kept rows retry_mix of the way toward the new identity (0 = the original's rows as they are).
    # The coarse rows carry the head's shape, which dlib reads as identity: of 70 held-out adults (session 11,
    # one-off script, 32 tries each, never giving up), 5 frontal faces got no try past the guard with the coarse
    # rows kept; with them half mixed all 5 passed within 4 tries (with none kept all 5 passed too, but the new
    # face's eyes and brows no longer sat where the original's were: doubled brows at the blend's edge).
    # benchmarks/swap.py, 500 held-out faces (session 11), retry_mix 0 -> these defaults: fallbacks 0.300 -> 0.238
    # (18+ 0.11 -> 0.02, 10-17 0.16 -> 0.06, 0-9 0.73 both: young children pass no guard, see retry_min_age),
    # re-identification 0 both (in the re-detected box 0.002 -> 0), gender agreement 0.849 -> 0.850, age MAE 8.7 ->
    # 8.6, pose error 0.101 -> 0.109, 272 -> 266 ms per face.
    # Fewer kept rows alone ("0-1", session 4) measured no fewer fallbacks. Retries only for faces estimated
    # retry_min_age or older: young children, whom dlib hardly tells apart, passed retries just over the bar in the
    # guard's box and were re-identified in the box MTCNN finds in the result (500 held-out faces: 3 one-year-olds,
    # re-detected distance 0.39-0.55 after 0.63-0.66 in the guard; the swaps of children without retries: none).
    # The bar was 10 until session 15: children of 10-12 whom the attribute network reads as 6-9 got no retries.
    # benchmarks/swap.py --group 10-17 (275 held-out faces), 10 -> 6: fallback 0.102 -> 0.084, re-id 0 and re-id rd 0
    # both, gender 0.842 -> 0.833, age MAE 7.7 both; --group 0-9 (265): the same in every column (those are read as
    # under 6, so they stay without retries and are judged in the farther boxes too); all 500: fallback 0.330 ->
    # 0.316 (10-17 0.14 -> 0.09), re-id 0 both, gender 0.899 -> 0.892, age MAE 5.6 -> 5.5
    retry_keep_layers: str | None = None
    retry_mix: float = 0.5
    retry_after: int = 3
    # Session 22: with the guard judging every passing try in the box MTCNN finds in the result (since session 18)
    # and a young child's in boxes twice as far (young_age), retries for young children re-identified none:
    # benchmarks/swap.py --group 0-9 (141 held-out faces, 780 kimg models), retry_min_age 6 -> 0: fallback 0.950 ->
    # 0.915, re-id 0 and re-id rd 0 both, gender agreement 0.857 -> 0.750 over 7 -> 12 swapped faces (the judge reads
    # these children's true gender 0.56 of the time), age MAE 4.7 -> 4.9, pose error 0.154 -> 0.151; all 500
    # (without the farther boxes for them then): faces of 10 and older unchanged. So no age bar by default; all 500
    # with it (shipped 780 kimg models): fallback 0.310 -> 0.304 (0-9 0.95 -> 0.93), re-id 0 and re-id rd 0, gender
    # agreement 0.936 -> 0.940, age MAE 5.3 both. Video (deid.video, which re-checks swaps on later frames) was not
    # measured with young children's retries
    retry_min_age: float = 0.0
    # a passing try of a face estimated younger than this is judged in boxes twice as far as guard_jitter's too
    # (deid.swap.first_unrecognisable): dlib tells young children apart the least, so their swaps pass nearest the
    # bar (it was retry_min_age's second role until session 22)
    young_age: float = 6.0
    # steps that move each new identity along the generator's gender and age directions (<name>.directions.
    # safetensors beside it) until the attribute network reads the original's gender and age on it (deid.directions.
    # steer_attributes); a face's later tries start from its first tries' move, with one step. 0 = off.
    # Why (session 13, one-off scripts, 240-320 training faces): the encoder's kept rows pull every face toward the
    # mean adult (a 2-year-old's reconstruction reads 17, a 72-year-old's 39) and the mapping network draws the
    # labels 10-17 as adults (10-14 -> 23), so the swapped faces read 21.5 -> 27.5 years on average to the judge.
    # benchmarks/swap.py, 500 held-out faces (session 13, with guard_jitter; see the model card): age MAE against
    # the original 8.6 -> 5.3 (0-9 12.8 -> 5.2, 10-17 11.6 -> 6.9, 18+ 6.0 -> 4.2; against the true ages 11.3 -> 7.3),
    # gender agreement 0.850 -> 0.872; fallbacks 0.238 -> 0.314 (0-9 0.73 -> 0.94: a toddler's face steered back to
    # a toddler's lies within dlib's threshold of the original, where the unsteered teenager's did not; 18+ 0.02 ->
    # 0.04), pose error 0.109 -> 0.121; time per face ~2x. Directions fitted with the independent judge's labels
    # (deid directions) read ages better than ones fitted with the attribute network's (age MAE 5.3 vs 5.8).
    # Steering only faces estimated 10 or older (attribute_min_age 10, no guard_jitter): age MAE 6.8, fallbacks 0.244.
    # 2 steps rather than 3 (and a 10 % age error left alone, deid.directions.AGE_TOLERANCE): ~70 -> ~45 ms per face
    # on one thread, which benchmarks/photo.py (8 faces, target 2 s) needs: 2.05-2.13 s -> 1.71-1.81 s
    attribute_steps: int = 2
    attribute_min_age: float = 0.0  # faces estimated younger are not steered (see attribute_steps); 0 = all
    fallback: str = "pixelate"  # what a face that cannot be swapped convincingly gets: blur, pixelate or solid
    # faces whose head is turned further than this (Face.turn: nose offset over half the eye distance) get the
    # fallback without a try: the default generator, trained on mostly frontal UTKFace faces, draws no head turned
    # beyond ~0.5, so the pasted face no longer fits the head. 120 held-out faces aged 13+ (session 9, one-off
    # script): landmark error of the swapped face (re-detected, / eye distance), median by |turn|: 0-0.2 0.085,
    # 0.2-0.4 0.097, 0.4-0.6 0.113, 0.6-0.8 0.115, 0.8-1.0 0.164, > 1.0 0.267 (the swapped faces' own turn stays
    # at ~0.5), and by eye most swaps beyond 0.8 show doubled features. 3.2 % of 1,496 UTKFace faces turn beyond
    # 0.8. 0 = swap whatever the turn (a generator trained on turned heads, e.g. FFHQ's, may take more)
    max_turn: float = 0.8
    # faces whose lower half looks covered (a mask, a scarf, a hand) get the fallback without a try: the encoder
    # derails on them and a pasted face would unmask the person (deid.occlusion.lower_face_contrast: how unlike
    # the nose bridge the cheeks + chin are in colour, relative to the bridge). Session 11: the earlier absolute
    # colour difference took darker skin for masks (shaded cheeks keep less absolute chroma): of 2,999 bare UTKFace
    # adults (one-off script, disjoint from the 1,159 the new measure was fitted on) it called covered white
    # 0.5 %, Black 3.0 %, Indian 2.3 %, Asian 0 %; the relative measure 0.5 %, 1.3 %, 1.5 %, 0.5 % (all 1.33 % ->
    # 0.87 %).
    # benchmarks/cover.py (900 other adults, a flat mask from under the eyes to the chin on every third): bare
    # above 25: 1.4 % (old 1.0 %; white 1.3, Black 2.7, Asian 2.0, Indian 0.6 %: 188 and fewer faces per group);
    # masks caught: white 0.92 (old 0.90), off-white 0.89 (0.86), grey 0.92 (0.89), black 0.96 (0.96), blue 0.95
    # (0.95), light blue 0.90 (0.88), navy 0.95 (0.95), beige 0.25 (0.27: skin-coloured masks are mostly not
    # caught). Session 27: wide smiles are most of its false alarms on children (3 of the 5 held-out 10-17-year-olds
    # called covered show teeth); neither a lower region without the chin nor the chin 0.2 eye distances lower helped
    # (600 faces aged 3+, one-off script: bare false alarms 0.5 % now, 1.2 % cheeks only, 0.7 % lower chin; masks
    # caught alike). 0 = no check
    max_cover_contrast: float = 25.0
    # faces cut by the photo's edge, with more than this share of their box outside it, get the fallback without a
    # try: the encoder sees the edge's pixels smeared over the missing part, and a whole new face cannot be pasted
    # into half of one. Checked by eye (session 10, one-off script): 4 held-out adults at 160 px moved over the
    # left edge, swapped with no limit: at 0.01-0.2 of the box outside all 9 swaps look right; at 0.26-0.34, 2 of
    # 5 are dark, broken faces; the README group sample cropped through a face (0.45 outside) gave half a face
    # with an eye on the cheek. 1 = swap whatever is cut
    max_outside: float = 0.2
    # faces the attribute network reads as younger than this (in years) get the fallback without a try: the
    # default generator draws babies poorly and dlib hardly tells them apart, so most fail the guard anyway and of
    # those that pass, most look wrong. Session 27 (benchmarks/swap.py --group 0-9, the shipped 780 kimg models: 265
    # held-out one- and two-year-olds, fallback 0.906), by eye (original | result at 128 px, one-off script): of
    # the 23 babies swapped (2 more swaps are adults, UTKFace label errors) about 16 look wrong (smudged mouths and
    # chins, dark or doubled eyes, a dark-skinned baby drawn pale, a close-up read as 66 and drawn old), 6 right;
    # deid's age reading of the 23: 1.0-2.2 for 21, 3.4 (one that looks right) and 66. 24 training faces aged 3-6
    # (every 37th): 10 swapped, 9 of them look right. Small faces are not taken for babies: the 995 held-out faces
    # drawn with a 20, 28, 40 or 64 px box in a larger photo (one-off script), 0 of 435-453 adults and 0-1 of
    # 270-277 teenagers read under 3 at each size, 93-97 % of the one- and two-year-olds found. 0 = swap any age
    min_swap_age: float = 3.0
    blend: str = "alpha"  # how the new face is pasted: "alpha" (feathered oval) or "poisson" (deid.blend)

    def __post_init__(self):
        _check(0.0 <= self.psi <= 1.0, "psi must be in [0, 1]")
        _check(self.threshold > 0, "threshold must be positive")
        _check(0 <= self.margin < 1, "margin must be in [0, 1)")
        _check(0 <= self.hopeless < 1, "hopeless must be in [0, 1)")
        _check(self.max_tries >= 1, "max_tries must be >= 1")
        _check(self.candidates >= 1, "candidates must be >= 1")
        _check(0 <= self.retry_mix <= 1, "retry_mix must be in [0, 1]")
        _check(self.retry_after >= 0, "retry_after must be >= 0")
        _check(self.retry_min_age >= 0, "retry_min_age must be >= 0")
        _check(self.young_age >= 0, "young_age must be >= 0")
        _check(self.attribute_steps >= 0, "attribute_steps must be >= 0 (0 = no steering)")
        _check(self.attribute_min_age >= 0, "attribute_min_age must be >= 0")
        _check(0 <= self.guard_jitter <= 0.3, "guard_jitter must be in [0, 0.3] (0 = the detection box only)")
        _check(self.fallback in ("blur", "pixelate", "solid"), "fallback must be blur, pixelate or solid")
        _check(self.blend in ("alpha", "poisson"), "blend must be alpha or poisson")
        _check(self.max_turn >= 0, "max_turn must be >= 0 (0 = no limit)")
        _check(self.max_cover_contrast >= 0, "max_cover_contrast must be >= 0 (0 = no check)")
        _check(0 <= self.max_outside <= 1, "max_outside must be in [0, 1] (1 = no check)")
        _check(self.min_swap_age >= 0, "min_swap_age must be >= 0 (0 = swap any age)")
        _check(self.key is None or len(self.key) >= 8, "key must be at least 8 characters")

    def kept_rows(self, num_ws: int) -> tuple[int, ...]:
        """The W+ row indices of ``keep_layers`` (``"A-B,C"``, group names, or ``""`` for none), validated."""
        from .nets.generator import layer_groups

        groups = layer_groups(num_ws)
        rows: list[int] = []
        for part in filter(None, self.keep_layers.replace(" ", "").lower().split(",")):
            if part in groups:
                rows.extend(groups[part])
                continue
            try:
                a, b = (int(v) for v in part.split("-", 1)) if "-" in part else (int(part), int(part))
            except ValueError as exc:
                raise ConfigError(f"keep_layers {self.keep_layers!r}: use rows like 0-3,8-9") from exc
            _check(0 <= a <= b < num_ws, f"keep_layers {part!r} outside 0-{num_ws - 1}")
            rows.extend(range(a, b + 1))
        return tuple(sorted(set(rows)))


@dataclass(frozen=True)
class PhotoConfig:
    """Photo anonymisation (``deid photo``)."""

    mode: str = "swap"  # how faces are anonymised: "swap" (synthetic person), "blur", "pixelate" or "solid"
    only: tuple[int, ...] = ()  # 1-based face numbers (as ``deid faces`` prints them) to anonymise; () = all
    skip: tuple[int, ...] = ()  # 1-based face numbers to leave as they are
    obscure_scale: float = 1.3  # obscured ellipse = detection box enlarged by this factor
    detect: DetectConfig = field(default_factory=DetectConfig)  # detection settings
    swap: SwapConfig = field(default_factory=SwapConfig)  # identity swap settings (mode "swap")
    # swaps faces whose regions do not touch in this many threads at once (the torch threads shared among them;
    # same result as one by one). 0 = as many as torch has threads; 1 = one face at a time (the HTTP server, which
    # runs requests side by side)
    workers: int = 0

    def __post_init__(self):
        _check(self.workers >= 0, "workers must be >= 0")
        _check(self.mode in ("swap", "blur", "pixelate", "solid"),
               f"mode must be swap, blur, pixelate or solid, got {self.mode!r}")
        _check(all(i >= 1 for i in self.only + self.skip), "face numbers start at 1")
        _check(not (set(self.only) & set(self.skip)), "a face number cannot be in both --only and --skip")
        _check(1.0 <= self.obscure_scale <= 3.0, "obscure_scale must be in [1, 3]")


@dataclass(frozen=True)
class TrackConfig:
    """Face tracking between detection frames of a video (``deid.track``)."""

    match_iou: float = 0.3  # a detection continues a track when their boxes overlap at least this much (IoU)
    grace: int = 2  # detection frames a track may miss before it ends (it is "uncertain", so blurred, meanwhile)
    min_cutoff: float = 1.0  # One-Euro filter: cutoff frequency (Hz) while the face is still; lower = smoother
    beta: float = 0.02  # One-Euro filter: how fast the cutoff rises with speed (per % of face size / s)
    flow_points: int = 40  # points followed by optical flow inside a box between detections
    min_inliers: int = 6  # fewer consistent flow points than this: the track is uncertain for the frame

    def __post_init__(self):
        _check(0 < self.match_iou < 1, "match_iou must be in (0, 1)")
        _check(self.grace >= 0, "grace must be >= 0")
        _check(self.min_cutoff > 0 and self.beta >= 0, "min_cutoff must be > 0 and beta >= 0")
        _check(self.flow_points >= 4 and self.min_inliers >= 3, "flow_points >= 4 and min_inliers >= 3")


@dataclass(frozen=True)
class VideoConfig:
    """Video anonymisation (``deid video``)."""

    photo: PhotoConfig = field(default_factory=PhotoConfig)  # mode, detection and swap settings, as for photos
    detect_every: int = 3  # run the detector on every Nth frame (and the last); optical flow in between
    # every Nth detection frame (and the last) runs all the detector's passes, the others its upright passes only
    # (the turned and border passes cost ~60 % of a 720p detection); frames are held until a full detection, and a
    # face only it finds is followed back through them, so it is not left in the frames before. 1 = every one full.
    # benchmarks/video.py --threads 2 (720p, --detect-every 3; this 2-core machine has ~25 % slower spells):
    # 1 -> 7.5 fps, 2 -> 9.3-10.8, 3 -> 9.3-11.9 (median of 11 runs 11.3); no leaks in any
    full_detect_every: int = 3
    # decode and detect in a worker thread, ahead of tracking/anonymising/encoding, when torch has > 1 thread
    detect_ahead: bool = True
    track: TrackConfig = field(default_factory=TrackConfig)
    latent_smoothing: float = 0.5  # weight of the previous frame in the running average of the kept W+ rows
    guard_every: int = 30  # frames between identity-guard re-checks of a swapped track (0 = only at its start)
    uncertain_mode: str = "blur"  # what an uncertain track position gets (never left as it was)
    codec: str | None = None  # video codec; None = libx264 (libvpx-vp9 for .webm)
    crf: int = 18  # constant rate factor (quality; lower = better, larger files)
    preset: str = "veryfast"  # x264/x265 speed preset
    audio: bool = True  # copy the audio track

    def __post_init__(self):
        _check(self.detect_every >= 1, "detect_every must be >= 1")
        _check(self.full_detect_every >= 1, "full_detect_every must be >= 1")
        _check(0 <= self.latent_smoothing < 1, "latent_smoothing must be in [0, 1)")
        _check(self.guard_every >= 0, "guard_every must be >= 0")
        _check(self.uncertain_mode in ("blur", "pixelate", "solid"), "uncertain_mode must be blur, pixelate or solid")
        _check(0 <= self.crf <= 63, "crf must be in [0, 63]")
