"""Face super-resolution: the network's shapes, training that beats bicubic on learnable data and resumes exactly,
loading, and its use when a generated face is pasted larger than it was drawn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

from deid.align import align_face
from deid.errors import ModelError
from deid.nets.superres import SuperResConfig, SuperResNet
from deid.superres import FaceUpscaler, needs_upscale
from deid.swap import paste_synthetic
from deid.train.superres import SuperResTrainConfig, train_superres

TINY = SuperResConfig(in_resolution=32, channels=16, blocks=2)


def test_network_doubles_the_side():
    net = SuperResNet(TINY).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert y.shape == (2, 3, 64, 64) and y.min() >= -1 and y.max() <= 1


def _data(tmp_path, n=64):
    """64 px 'faces' with sharp stripes: detail that bicubic upscaling blurs and a network can learn."""
    rng = np.random.default_rng(0)
    xx = np.arange(64)
    images = np.empty((n, 3, 64, 64), np.uint8)
    for i in range(n):
        period = rng.integers(3, 7)
        stripes = ((xx[None, :] + xx[:, None] * rng.integers(0, 2)) // period % 2) * 160 + 40
        images[i] = stripes[None]
    tensors = {"images": images, "age": np.full(n, 30, np.int16), "female": np.zeros(n, np.uint8),
               "race": np.zeros(n, np.int8), "shard": (np.arange(n) % 4).astype(np.int8)}
    path = tmp_path / "data.safetensors"
    save_file(tensors, str(path), metadata={"template": "deid"})
    return path


def test_training_beats_bicubic_and_resumes_exactly(tmp_path):
    cfg = SuperResTrainConfig(data=str(_data(tmp_path)), steps=60, batch=8, patch=32, lr=3e-3, snapshot=30,
                              mixed_precision="off", threads=1, net=TINY)
    straight = train_superres(cfg, run_dir=tmp_path / "a", device=torch.device("cpu"))
    assert [s.step for s in straight] == [30, 60]
    assert straight[-1].psnr > straight[-1].psnr_bicubic  # held-out faces (shard 3)
    first = train_superres(cfg, run_dir=tmp_path / "b", device=torch.device("cpu"), stop_after_steps=30)
    rest = train_superres(cfg, run_dir=tmp_path / "b", device=torch.device("cpu"))
    assert [s.step for s in first + rest] == [30, 60]
    a = load_file(str(tmp_path / "a" / "checkpoint" / "nets.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint" / "nets.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    up = FaceUpscaler.load(tmp_path / "a" / "superres.safetensors")
    out = up(np.zeros((32, 32, 3), np.uint8))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_loader_refuses_bad_files(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        FaceUpscaler.load(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    save_file({"x": np.zeros(3, np.float32)}, str(bad))
    bad.with_suffix(".json").write_text('{"config": {"channels": 8}}')
    with pytest.raises(ModelError, match="not a deid super-resolution network"):
        FaceUpscaler.load(bad)


def test_big_faces_are_upscaled_before_pasting(tiny_swap_models, astronaut, astronaut_face):
    G = tiny_swap_models.G  # 32 px; the astronaut's face is ~100 px: its crop is magnified
    aligned = align_face(astronaut, astronaut_face, G.img_resolution, G.cfg.align_template)
    assert needs_upscale(aligned.matrix)
    assert not needs_upscale(align_face(astronaut, astronaut_face, 256, G.cfg.align_template).matrix)
    torch.manual_seed(0)
    up = FaceUpscaler(SuperResNet(dataclasses.replace(TINY, in_resolution=G.img_resolution)).eval())
    synthetic = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    plain = paste_synthetic(tiny_swap_models, astronaut, astronaut_face, aligned, synthetic, 3)
    with_up = dataclasses.replace(tiny_swap_models, upscaler=up)
    a = paste_synthetic(with_up, astronaut, astronaut_face, aligned, synthetic, 3)
    b = paste_synthetic(with_up, astronaut, astronaut_face, aligned, synthetic, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, plain)
    assert a.shape == astronaut.shape


def test_guard_screens_without_the_upscaler_but_judges_the_upscaled_face(tiny_swap_models, astronaut, astronaut_face):
    """From the second try on, a magnified face is screened without the upscaler; what the guard returns is always
    the upscaled paste, and its distance is that paste's distance."""
    from deid.config import SwapConfig
    from deid.swap import SCREEN_SLACK, Candidate, first_unrecognisable, will_upscale

    G = tiny_swap_models.G
    torch.manual_seed(0)
    up = FaceUpscaler(SuperResNet(dataclasses.replace(TINY, in_resolution=G.img_resolution)).eval())
    models = dataclasses.replace(tiny_swap_models, upscaler=up)
    aligned = align_face(astronaut, astronaut_face, G.img_resolution, G.cfg.align_template)
    assert will_upscale(models, aligned)
    judge = models.judge
    original = judge.embed(astronaut, astronaut_face.box)
    rng = np.random.default_rng(2)
    cands = [Candidate(seed=i, ws=torch.zeros(1, G.num_ws, G.cfg.w_dim),
                       image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(5)]

    def dist(c, upscale):
        out = paste_synthetic(models, astronaut, astronaut_face, aligned, c.image, c.seed, upscale=upscale)
        return judge.distance(original, judge.embed(out, astronaut_face.box)), out

    cands.sort(key=lambda c: dist(c, True)[0])  # the last is the only one at the bar
    bar, last_up = dist(cands[-1], True)
    cfg = SwapConfig(threshold=bar, hopeless=0.0, max_tries=len(cands))
    attempt, cand, out, d = first_unrecognisable(models, astronaut, astronaut_face, aligned, original, iter(cands), cfg)
    if dist(cands[-1], False)[0] >= bar - SCREEN_SLACK:
        assert (attempt, cand.seed, d) == (len(cands), cands[-1].seed, bar) and np.array_equal(out, last_up)
    else:  # screened out: nothing passes
        assert cand is None and out is None and attempt == len(cands)
