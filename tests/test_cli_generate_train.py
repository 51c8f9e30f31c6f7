"""CLI: ``deid generate`` (byte-identical output, mixing, latents), ``deid train generator`` / ``export``,
``deid data prepare`` (skips without ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.numpy import save_file

from deid.cli.main import main
from deid.config import GeneratorConfig
from deid.io.weights import load_generator, save_generator
from deid.nets.generator import Generator

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces-train"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(1)
    G = Generator(GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age")))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_generator(G, path)
    return path


def _run(args):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    return res


def test_generate_is_byte_identical(tiny_model, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for p in (a, b):
        r = _run(["generate", "--model", str(tiny_model), "--seed", "42", "--psi", "0.7", "-o", str(p), "--device", "cpu"])
        assert r.exit_code == 0, r.output
    assert a.read_bytes() == b.read_bytes()
    assert Image.open(a).size == (32, 32)


def test_generate_count_age_gender_latents(tiny_model, tmp_path):
    out = tmp_path / "set"
    lat = tmp_path / "w.npy"
    r = _run(["generate", "--model", str(tiny_model), "--seed", "3", "--count", "4", "--out-dir", str(out),
              "--age", "30", "--gender", "female", "--latent-out", str(lat), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [f"seed{s:06d}.png" for s in range(3, 7)]
    G = load_generator(tiny_model)
    assert np.load(lat).shape == (4, G.num_ws, G.w_dim)


def test_generate_style_mixing(tiny_model, tmp_path):
    mixed, content = tmp_path / "m.png", tmp_path / "c.png"
    assert _run(["generate", "--model", str(tiny_model), "--mix-content", "1", "--mix-style", "2", "--mix-layers", "0-3",
                 "-o", str(mixed), "--device", "cpu"]).exit_code == 0
    assert _run(["generate", "--model", str(tiny_model), "--seed", "1", "-o", str(content), "--device", "cpu"]).exit_code == 0
    assert mixed.read_bytes() != content.read_bytes()


def test_generate_bad_options_one_line(tiny_model, tmp_path):
    r = CliRunner().invoke(main, ["generate", "--model", str(tiny_model), "--psi", "1.5", "-o", str(tmp_path / "x.png")])
    assert r.exit_code != 0 and "psi" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["generate", "--model", str(tiny_model), "--mix-content", "1", "-o", str(tmp_path / "x.png")])
    assert r.exit_code != 0 and "--mix-style" in r.output


def test_shipped_default_model_loads():
    G = load_generator(device="cpu")
    assert G.img_resolution == 64 and G.c_dim == 2
    img = G(torch.randn(2, G.z_dim), torch.tensor([[0.0, 0.7], [1.0, 0.7]]), noise_mode="const")
    assert img.shape == (2, 3, 64, 64) and torch.isfinite(img).all()


def test_train_and_export_cli(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.safetensors"
    save_file({"images": rng.integers(0, 256, (8, 3, 16, 16), dtype=np.uint8), "age": np.full(8, 30, np.int16),
               "female": np.zeros(8, np.uint8), "race": np.zeros(8, np.int8), "shard": np.zeros(8, np.int8)}, str(data))
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "generator", "--data", str(data), "--run-dir", str(run), "--preset", "tiny32",
                                  "--kimg", "0.008", "--fid-kimg", "0", "--device", "cpu"])
    assert r.exit_code != 0  # data crops (16 px) smaller than the model (32 px): clear one-line error
    assert "cannot train at 32 px" in r.output and "Traceback" not in r.output
    save_file({"images": rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8), "age": np.full(8, 30, np.int16),
               "female": np.zeros(8, np.uint8), "race": np.zeros(8, np.int8), "shard": np.zeros(8, np.int8)}, str(data))
    r = _run(["train", "generator", "--data", str(data), "--run-dir", str(run), "--preset", "tiny32", "--kimg", "0.008",
              "--batch", "4", "--snapshot-kimg", "0.004", "--fid-kimg", "0", "--precision", "off", "--threads", "1",
              "--lr", "0.001", "--oversample", "20-40:2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out, bundle = tmp_path / "g.safetensors", tmp_path / "b.safetensors"
    r = _run(["train", "export", str(run), "-o", str(out), "--bundle", str(bundle)])
    assert r.exit_code == 0, r.output
    G = load_generator(out)
    assert G.img_resolution == 32
    assert json.loads(out.with_suffix(".json").read_text())["info"]["kimg"] == 0.008
    run2 = tmp_path / "run2"
    r = _run(["train", "generator", "--data", str(data), "--run-dir", str(run2), "--preset", "tiny32", "--kimg",
              "0.012", "--batch", "4", "--snapshot-kimg", "0.004", "--fid-kimg", "0", "--precision", "off",
              "--warm-start", str(bundle), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    state = json.loads((run2 / "checkpoint" / "state.json").read_text())
    assert state["cur_nimg"] == 12
    # a warm start continues the bundle's run: its rate and age mix, not the command line's defaults
    assert (state["config"]["g_lr"], state["config"]["oversample"]) == (0.001, "20-40:2")
    run3 = tmp_path / "run3"  # ... unless told otherwise, as on resume
    r = _run(["train", "generator", "--data", str(data), "--run-dir", str(run3), "--preset", "tiny32", "--kimg",
              "0.012", "--batch", "4", "--snapshot-kimg", "0.004", "--fid-kimg", "0", "--precision", "off",
              "--warm-start", str(bundle), "--lr", "0.0005", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads((run3 / "checkpoint" / "state.json").read_text())["config"]["g_lr"] == 0.0005
    r = _run(["train", "generator", "--data", str(data), "--run-dir", str(tmp_path / "run4"), "--preset", "deid64",
              "--kimg", "0.012", "--fid-kimg", "0", "--warm-start", str(bundle), "--device", "cpu"])
    assert r.exit_code != 0 and "generator config differs" in r.output and "Traceback" not in r.output


@pytest.mark.data
@pytest.mark.skipif(not (SHARED / "labels.csv").is_file(), reason="training data ../shared/data/faces-train is absent")
def test_data_prepare_on_real_faces(tmp_path):
    out = tmp_path / "p.safetensors"
    r = _run(["data", "prepare", str(SHARED), "-o", str(out), "--limit", "20", "--resolution", "64", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    from deid.train.data import FaceDataset

    ds = FaceDataset(out, 64)
    assert 18 <= len(ds) <= 20 and ds.images.dtype == torch.uint8
    assert "kept" in r.output


def test_train_attributes_and_superres_cli(tmp_path):
    """The two helper networks train from the command line on 128 px prepared data and write loadable models."""
    from deid.attributes import AttributeEstimator
    from deid.superres import FaceUpscaler

    rng = np.random.default_rng(0)
    data = tmp_path / "d.safetensors"
    save_file({"images": rng.integers(0, 256, (12, 3, 128, 128), dtype=np.uint8), "age": np.full(12, 30, np.int16),
               "female": (np.arange(12) % 2).astype(np.uint8), "race": np.zeros(12, np.int8),
               "shard": (np.arange(12) % 4).astype(np.int8)}, str(data))
    r = _run(["train", "attributes", "--data", str(data), "--run-dir", str(tmp_path / "attr"), "--epochs", "1",
              "--precision", "off", "--threads", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "held-out gender" in r.output
    AttributeEstimator.load(tmp_path / "attr" / "attributes.safetensors")
    r = _run(["train", "superres", "--data", str(data), "--run-dir", str(tmp_path / "sr"), "--steps", "2", "--batch", "2",
              "--precision", "off", "--threads", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "held-out PSNR" in r.output
    assert FaceUpscaler.load(tmp_path / "sr" / "superres.safetensors").scale == 2


def test_truncation_centre_interpolates_cached_label_means(tiny_model):
    """A continuous label (age 34.37) gets the multilinear blend of the cached means at the grid points around it:
    close to the exact mean of that label (far closer than the mean's own sampling noise), and computed once."""
    from deid.generate import CENTRE_STEP, _centre, truncation_centre
    from deid.labels import encode_labels

    G = load_generator(tiny_model)
    assert torch.equal(truncation_centre(G, None), G.mapping.w_avg)
    _centre.cache_clear()
    c = torch.from_numpy(encode_labels(34.37, 1.0))
    got = truncation_centre(G, c)
    assert _centre.cache_info().misses == 2  # female is exactly on the grid: two age neighbours only
    exact = G.mean_w(c, num_samples=1024)[0]
    noise = (G.mean_w(c, num_samples=1024, seed=1)[0] - exact).norm()
    assert (got - exact).norm() < 0.2 * noise
    assert torch.equal(truncation_centre(G, c), got) and _centre.cache_info().misses == 2
    on_grid = torch.tensor([[1.0, 20 * CENTRE_STEP]])
    assert torch.allclose(truncation_centre(G, on_grid), _centre(G, (1.0, round(20 * CENTRE_STEP, 6))))
