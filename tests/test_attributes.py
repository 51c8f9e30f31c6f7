"""The attribute network (gender + age): soft age targets, augmentation, training that learns and resumes exactly,
the estimator's loading and its re-cutting of crops in another template."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

from deid.align import align_face
from deid.attributes import AttributeEstimator
from deid.errors import ModelError
from deid.nets.attributes import AGE_BINS, AttributeConfig, AttributeNet, age_targets
from deid.train.attributes import AttributeTrainConfig, augment, train_attributes

TINY = AttributeConfig(widths=(16, 16, 16, 16, 16))  # 8 channels: torch 2.14 CPU segfaults (channels_last fp32 backward)


def test_age_targets_are_distributions_with_the_right_mean():
    ages = np.array([0.0, 0.5, 4.0, 30.0, 33.5, 90.0, 120.0])
    t = age_targets(ages)
    assert t.shape == (len(ages), len(AGE_BINS))
    assert torch.allclose(t.sum(dim=1), torch.ones(len(ages)))
    expected = (t * torch.tensor(AGE_BINS)).sum(dim=1)
    assert torch.allclose(expected, torch.tensor(np.clip(ages, AGE_BINS[0], AGE_BINS[-1]), dtype=torch.float32))


def test_augment_keeps_shape_and_range_and_is_seeded():
    x = torch.rand(8, 3, 64, 64) * 2 - 1
    a = augment(x.clone(), torch.Generator().manual_seed(1))
    b = augment(x.clone(), torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, x)


def _data(tmp_path, n=128):
    """Prepared-data layout where gender is visible (bright = female) and age is not."""
    rng = np.random.default_rng(0)
    female = rng.integers(0, 2, n).astype(np.uint8)
    base = np.where(female[:, None, None, None] == 1, 190, 60)
    images = np.clip(base + rng.normal(0, 20, (n, 3, 64, 64)), 0, 255).astype(np.uint8)
    tensors = {"images": images, "age": rng.integers(1, 90, n).astype(np.int16), "female": female,
               "race": np.zeros(n, np.int8), "shard": (np.arange(n) % 4).astype(np.int8)}
    path = tmp_path / "data.safetensors"
    save_file(tensors, str(path), metadata={"template": "deid"})
    return path


def test_training_learns_gender_and_resumes_exactly(tmp_path):
    cfg = AttributeTrainConfig(data=str(_data(tmp_path)), epochs=4, batch=16, lr=5e-3, mixed_precision="off",
                               threads=1, net=TINY)
    straight = train_attributes(cfg, run_dir=tmp_path / "a", device=torch.device("cpu"))
    assert [s.epoch for s in straight] == [1, 2, 3, 4]
    assert straight[-1].gender_acc >= 0.9  # the held-out faces (shard 3) are never trained on
    assert (tmp_path / "a" / "attributes.safetensors").is_file()
    first = train_attributes(cfg, run_dir=tmp_path / "b", device=torch.device("cpu"), stop_after_epochs=2)
    rest = train_attributes(cfg, run_dir=tmp_path / "b", device=torch.device("cpu"))
    assert [s.epoch for s in first + rest] == [1, 2, 3, 4]
    a = load_file(str(tmp_path / "a" / "checkpoint" / "nets.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint" / "nets.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    est = AttributeEstimator.load(tmp_path / "a" / "attributes.safetensors")
    p, age = est.estimate(np.stack([np.full((64, 64, 3), v, np.uint8) for v in (230, 20)]))
    assert p.shape == age.shape == (2,) and ((AGE_BINS[0] <= age) & (age <= AGE_BINS[-1])).all()
    assert p[0] > 0.5 > p[1]  # bright = female in this data


def test_estimator_refuses_bad_files(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        AttributeEstimator.load(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    save_file({"x": np.zeros(3, np.float32)}, str(bad))
    bad.with_suffix(".json").write_text('{"config": {"resolution": 64}}')
    with pytest.raises(ModelError, match="not a deid attribute network"):
        AttributeEstimator.load(bad)


def test_from_crop_recuts_another_template(astronaut, astronaut_face):
    est = AttributeEstimator(AttributeNet(AttributeConfig()).eval())
    direct = est.crop(astronaut, astronaut_face)
    ffhq = align_face(astronaut, astronaut_face, 256, "ffhq").image
    recut = est.from_crop(ffhq[None], astronaut_face, 256, "ffhq")[0]
    assert recut.shape == direct.shape
    # the same face region: close to the directly aligned crop (resampling differs a little)
    assert np.abs(recut.astype(float) - direct.astype(float)).mean() < 12
    same = est.from_crop(direct[None], astronaut_face, 64, "deid")
    assert same[0] is direct or np.array_equal(same[0], direct)


def test_estimate_faces_averages_the_crop_and_its_mirror_image(astronaut, astronaut_face):
    torch.manual_seed(3)
    est = AttributeEstimator(AttributeNet(AttributeConfig()).eval())
    crop = est.crop(astronaut, astronaut_face)
    p0, a0 = est.estimate(crop)
    p1, a1 = est.estimate(np.ascontiguousarray(crop[:, ::-1]))
    assert not np.allclose(p0, p1)  # an untrained net reads the mirror image differently: the mean is not trivial
    p, age = est.estimate_faces(astronaut, [astronaut_face, astronaut_face])
    assert p.shape == age.shape == (2,)
    assert np.allclose(p, (p0 + p1) / 2, atol=1e-6) and np.allclose(age, (a0 + a1) / 2, atol=1e-4)
    plain = est.estimate_faces(astronaut, [astronaut_face], mirror=False)
    assert np.allclose(plain[0], p0) and np.allclose(plain[1], a0)
    empty = est.estimate_faces(astronaut, [])
    assert empty[0].shape == empty[1].shape == (0,)
