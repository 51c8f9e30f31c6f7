"""Encoder network and its training loop (tiny generator, random data): shapes, learning, exact resume, tie."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

from deid.config import DiscriminatorConfig, EncoderConfig, EncoderTrainConfig, GeneratorConfig
from deid.io.weights import atomic_save_file, save_generator
from deid.nets.discriminator import Discriminator
from deid.nets.encoder import Encoder, offset_penalty
from deid.nets.generator import Generator
from deid.train.encoder import train_encoder


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    gcfg = GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age"))
    G = Generator(gcfg)
    gpath = tmp_path / "g.safetensors"
    save_generator(G, gpath, dtype=torch.float32)
    D = Discriminator(DiscriminatorConfig.for_generator(gcfg))
    dpath = tmp_path / "d.safetensors"
    atomic_save_file({f"D.{k}": v for k, v in D.state_dict().items()}, dpath)
    rng = np.random.default_rng(0)
    data = tmp_path / "data.safetensors"
    save_file({"images": rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8), "age": np.full(16, 40, np.int16),
               "female": (np.arange(16) % 2).astype(np.uint8), "race": np.zeros(16, np.int8),
               "shard": np.zeros(16, np.int8)}, str(data))
    cfg = EncoderTrainConfig(data=str(data), generator=str(gpath), discriminator=str(dpath), holdout_shard=None,
                             batch=2, total_kimg=0.008, snapshot_kimg=0.004, mixed_precision="off", threads=1)
    return cfg, G


def test_encoder_shapes_and_penalty():
    cfg = EncoderConfig(img_resolution=32, num_ws=8, w_dim=16, channel_base=256, channel_max=32)
    E = Encoder(cfg)
    ws, off, attrs = E(torch.randn(3, 3, 32, 32), w_avg=torch.ones(16))
    assert ws.shape == off.shape == (3, 8, 16) and attrs.shape == (3, 2)
    same = torch.ones(2, 8, 16)
    assert offset_penalty(same) == 0 and offset_penalty(torch.randn(2, 8, 16)) > 0
    # coarse rows read low-resolution features, fine rows high-resolution ones
    assert E.level_res[E._level(0)] == 4 and E.level_res[E._level(7)] == 16


def test_train_encoder_resume_exact(setup, tmp_path):
    cfg, _ = setup
    a, b = tmp_path / "a", tmp_path / "b"
    stats = train_encoder(cfg, device=torch.device("cpu"), run_dir=a)
    assert stats and all(np.isfinite(s.latent) for s in stats)
    train_encoder(cfg, device=torch.device("cpu"), run_dir=b, stop_after_kimg=0.004)
    train_encoder(cfg, device=torch.device("cpu"), run_dir=b)
    ta, tb = load_file(str(a / "checkpoint" / "nets.safetensors")), load_file(str(b / "checkpoint" / "nets.safetensors"))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_latent_loss_decreases(setup, tmp_path):
    import dataclasses

    cfg, _ = setup
    cfg = dataclasses.replace(cfg, total_kimg=0.16, snapshot_kimg=0.04, lr=0.002, feature_weight=0.0,
                              pixel_weight=0.0, latent_weight=1.0)
    stats = train_encoder(cfg, device=torch.device("cpu"), run_dir=tmp_path / "run")
    assert stats[-1].latent < stats[0].latent


def test_train_encoder_init_starts_from_an_exported_encoder(setup, tmp_path):
    import dataclasses

    from deid.invert import save_encoder

    cfg, _ = setup
    cfg = dataclasses.replace(cfg, total_kimg=0.002, snapshot_kimg=0.002, seed=5)

    def weights(run):
        return {k[2:]: v for k, v in load_file(str(run / "checkpoint" / "nets.safetensors")).items()
                if k.startswith("E.")}

    train_encoder(cfg, device=torch.device("cpu"), run_dir=tmp_path / "first")
    E = Encoder(EncoderConfig.for_generator(setup[1].cfg))
    E.load_state_dict(weights(tmp_path / "first"))
    save_encoder(E, tmp_path / "e.safetensors", dtype=torch.float32)
    cfg2 = dataclasses.replace(cfg, seed=9)
    train_encoder(cfg2, device=torch.device("cpu"), run_dir=tmp_path / "warm", init=tmp_path / "e.safetensors")
    train_encoder(cfg2, device=torch.device("cpu"), run_dir=tmp_path / "cold")
    ref = E.state_dict()

    def dist(w):
        return sum(float((w[k].float() - ref[k].float()).norm()) for k in ref)

    assert dist(weights(tmp_path / "warm")) < 0.2 * dist(weights(tmp_path / "cold"))
