"""Generator training: losses, augmentation, one step, checkpoint and exact resume (tiny config, random data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

from deid.config import GeneratorConfig, TrainConfig
from deid.train.augment import diff_augment
from deid.train.data import FaceDataset
from deid.train.loop import train
from deid.train.losses import d_logistic_loss, d_r1_loss, g_nonsaturating_loss


@pytest.fixture()
def tiny_data(tmp_path):
    """A prepared-data file in the ``deid data prepare`` layout, with random 64 px faces."""
    rng = np.random.default_rng(0)
    n = 24
    tensors = {"images": rng.integers(0, 256, (n, 3, 64, 64), dtype=np.uint8),
               "age": rng.integers(1, 90, n).astype(np.int16), "female": rng.integers(0, 2, n).astype(np.uint8),
               "race": np.zeros(n, np.int8), "shard": (np.arange(n) % 4).astype(np.int8)}
    path = tmp_path / "data.safetensors"
    save_file(tensors, str(path), metadata={"template": "deid"})
    return path


def _cfg(data, **kw) -> TrainConfig:
    g = GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age"))
    base = dict(data=str(data), generator=g, batch=4, total_kimg=1, snapshot_kimg=0.016, fid_kimg=0, r1_interval=2,
                mixed_precision="off", seed=3, threads=1)
    return TrainConfig(**{**base, **kw})


def test_losses_signs():
    hi, lo = torch.full((4, 1), 5.0), torch.full((4, 1), -5.0)
    assert g_nonsaturating_loss(hi) < g_nonsaturating_loss(lo)
    assert d_logistic_loss(hi, lo) < d_logistic_loss(lo, hi)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    logits = (x * 2).sum(dim=[1, 2, 3])
    assert torch.allclose(d_r1_loss(logits, x), torch.tensor(4.0 * 3 * 64))


def test_diff_augment_differentiable_and_shapes():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    y = diff_augment(x, "color,translation,cutout")
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, ""), x)


def test_dataset_holdout_and_downsample(tiny_data):
    train_set = FaceDataset(tiny_data, 32, holdout_shard=0, split="train")
    val_set = FaceDataset(tiny_data, 32, holdout_shard=0, split="val")
    assert len(train_set) + len(val_set) == 24 and len(val_set) == 6
    part = FaceDataset(tiny_data, 32, holdout_shard=0, holdout_count=2, split="val")
    assert len(part) == 2
    x, c = train_set.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 3, 32, 32) and c.shape == (5, 2)
    assert x.min() >= -1 and x.max() <= 1


def test_oversampling_draws_the_named_ages_more_often(tiny_data):
    """``set_oversample``: faces in a range are drawn FACTOR times as often, as ``share`` predicts; the trainer's
    labels of fakes follow the same mix; a malformed spec is refused with the part named."""
    from deid.config import parse_oversample
    from deid.errors import ConfigError
    from deid.train.loop import Trainer

    ds = FaceDataset(tiny_data, 32)
    young = (ds.age >= 1) & (ds.age <= 30)
    assert 0 < young.sum() < len(ds)
    gen = torch.Generator().manual_seed(0)
    base = young[ds.indices(40000, gen).numpy()].mean()
    assert base == pytest.approx(young.mean(), abs=0.01) and ds.share(1, 30) == pytest.approx(young.mean())
    ds.set_oversample(parse_oversample("1-30:3"))
    expect = 3 * young.sum() / (3 * young.sum() + (~young).sum())
    assert ds.share(1, 30) == pytest.approx(expect)
    drawn = young[ds.indices(40000, gen).numpy()].mean()
    assert drawn == pytest.approx(expect, abs=0.01) and drawn > base + 0.1
    x, c = ds.sample(6, gen)  # batches keep their shapes
    assert x.shape == (6, 3, 32, 32) and c.shape == (6, 2)
    trainer = Trainer(_cfg(tiny_data, oversample="1-30:3"), ds, device=torch.device("cpu"))
    labels = trainer._fake_labels(40000)
    young_c = ds.c[torch.from_numpy(young)]
    hits = (labels[:, None, :] == young_c[None]).all(-1).any(-1).double().mean()  # a label row carries its age
    assert float(hits) == pytest.approx(expect, abs=0.02)
    assert parse_oversample("") == [] and parse_oversample("3-17:2, 80-120:1.5") == [(3, 17, 2), (80, 120, 1.5)]
    for bad in ("3-17", "17-3:2", "3-17:0", "a-b:2"):
        with pytest.raises(ConfigError, match="oversample"):
            parse_oversample(bad)
    with pytest.raises(ConfigError, match="oversample"):
        _cfg(tiny_data, oversample="3:17:2")


def test_train_writes_checkpoint_samples_log(tiny_data, tmp_path):
    run = tmp_path / "run"
    stats = train(_cfg(tiny_data, total_kimg=0.016), device=torch.device("cpu"), run_dir=run)
    assert stats and all(np.isfinite(s.g_loss) and np.isfinite(s.d_loss) for s in stats)
    assert (run / "checkpoint" / "nets.safetensors").is_file()
    assert json.loads((run / "checkpoint" / "state.json").read_text())["cur_nimg"] == 16
    assert list((run / "samples").glob("grid-*.png"))
    assert len((run / "log.jsonl").read_text().splitlines()) == len(stats)


def test_resume_is_exact(tiny_data, tmp_path):
    """Training 8 steps straight equals 4 steps, stop, resume, 4 steps: every weight identical."""
    cfg = _cfg(tiny_data, total_kimg=0.032, snapshot_kimg=0.016)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(cfg, device=torch.device("cpu"), run_dir=straight)
    train(cfg, device=torch.device("cpu"), run_dir=split, stop_after_kimg=0.016)
    assert json.loads((split / "checkpoint" / "state.json").read_text())["cur_nimg"] == 16
    train(cfg, device=torch.device("cpu"), run_dir=split)
    a = load_file(str(straight / "checkpoint" / "nets.safetensors"))
    b = load_file(str(split / "checkpoint" / "nets.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_with_a_lower_learning_rate(tiny_data, tmp_path, monkeypatch):
    """A later phase of a run: the resumed optimizers take the new rate (not the one in their stored state), the
    run's stored config records it, and a field that would change the networks cannot be overridden."""
    from deid.errors import DeidError
    from deid.train.loop import Trainer

    run = tmp_path / "run"
    train(_cfg(tiny_data, total_kimg=0.016), device=torch.device("cpu"), run_dir=run)
    seen = {}
    real_step = Trainer.step

    def spy(self):
        seen["g"] = [g["lr"] for g in self.opt_g.param_groups]
        seen["d"] = [g["lr"] for g in self.opt_d.param_groups]
        seen["ema"] = self.cfg.ema_kimg
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", spy)
    train(_cfg(tiny_data, total_kimg=0.024), device=torch.device("cpu"), run_dir=run,
          overrides={"g_lr": 0.001, "d_lr": 0.001, "ema_kimg": 10.0, "oversample": "1-30:2"})
    monkeypatch.undo()
    ratio = 2 / 3  # r1_interval 2: lazy regularisation scales D's rate
    assert seen["g"] == [0.001] and seen["d"] == [pytest.approx(0.001 * ratio)] and seen["ema"] == 10.0
    stored = json.loads((run / "checkpoint" / "state.json").read_text())
    assert stored["cur_nimg"] == 24 and stored["config"]["g_lr"] == 0.001 and stored["config"]["ema_kimg"] == 10.0
    assert stored["config"]["oversample"] == "1-30:2"
    with pytest.raises(DeidError, match="cannot override"):
        train(_cfg(tiny_data, total_kimg=0.032), device=torch.device("cpu"), run_dir=run, overrides={"batch": 8})


def test_bf16_step_runs(tiny_data, tmp_path):
    stats = train(_cfg(tiny_data, total_kimg=0.008, snapshot_kimg=0.008, mixed_precision="bf16"),
                  device=torch.device("cpu"), run_dir=tmp_path / "bf16")
    assert np.isfinite(stats[-1].g_loss)


def test_prepare_faces_round_trip(tmp_path, astronaut, astronaut_face, face_detector):
    """A faces-train folder built from the astronaut photo: prepared crops equal what align_face gives (layout
    [N, 3, R, R] really stored as such), labels kept, images without a face dropped and counted."""
    import csv
    import io
    import zipfile

    from PIL import Image

    from deid.align import align_face
    from deid.train.data import prepare_faces

    crop = astronaut[20:260, 110:350]  # a 240 px portrait around the face
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "PNG")
    blank = io.BytesIO()
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank, "PNG")
    with zipfile.ZipFile(tmp_path / "utkface-00.zip", "w") as z:
        z.writestr("40_1_0_x.jpg.chip.jpg", buf.getvalue())
        z.writestr("1_0_0_blank.jpg.chip.jpg", blank.getvalue())
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "shard", "age", "gender", "race", "source_repo", "source_path", "md5"])
        w.writerow(["40_1_0_x.jpg.chip.jpg", "utkface-00.zip", 40, 1, 0, "", "", ""])
        w.writerow(["1_0_0_blank.jpg.chip.jpg", "utkface-00.zip", 1, 0, 0, "", "", ""])
    stats = prepare_faces(tmp_path, tmp_path / "p.safetensors", detector=face_detector, resolution=64)
    assert (stats.seen, stats.kept, stats.no_face) == (2, 1, 1)
    ds = FaceDataset(tmp_path / "p.safetensors", 64)
    faces = face_detector(crop)
    expected = align_face(crop, faces[0], 64, "deid").image.transpose(2, 0, 1)
    assert np.array_equal(ds.images[0].numpy(), expected)
    assert int(ds.age[0]) == 40 and int(ds.female[0]) == 1


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_uses_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    """Emulated bf16 trains several times slower than float32 (2.2 vs 5.7 img/s on an AVX-512 Xeon without BF16),
    so "auto" is bf16 only on CPUs that compute it natively; explicit modes are kept."""
    import deid.device
    from deid.train.loop import autocast_for

    monkeypatch.setattr(deid.device, "native_bf16", lambda: native)
    ctx, scaler = autocast_for(torch.device("cpu"), "auto")
    assert scaler is None
    assert isinstance(ctx, torch.autocast) == native
    if native:
        assert ctx.fast_dtype == torch.bfloat16
    assert isinstance(autocast_for(torch.device("cpu"), "bf16")[0], torch.autocast)
    assert not isinstance(autocast_for(torch.device("cpu"), "off")[0], torch.autocast)
