"""InterFaceGAN-style gender/age directions in W for generators without label input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deid.cli.main import main
from deid.config import GeneratorConfig, SwapConfig
from deid.directions import (GENDER_MARGIN, SHIFT_MAX, AttributeDirections, directions_path, fit_directions,
                             load_directions, save_directions, steer_attributes)
from deid.errors import ModelError
from deid.io.weights import save_generator
from deid.nets.generator import Generator
from deid.swap import swap_ws

W_DIM = 16


def hidden_truth():
    rng = np.random.default_rng(1)
    g, a = rng.normal(size=W_DIM), rng.normal(size=W_DIM)
    return g / np.linalg.norm(g), a / np.linalg.norm(a)


def fake_setup(noise: float = 1.0):
    """w ~ N(0, 1); the "judge" reads gender and age off hidden linear functions of w (plus judge noise)."""
    g_true, a_true = hidden_truth()
    rng = np.random.default_rng(2)
    store: dict[int, np.ndarray] = {}

    def sample_w(n, seed):
        return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, W_DIM))).float()

    def render(w):  # stand-ins for images: keys to the code each came from
        keys = []
        for wi in w:
            keys.append(len(store))
            store[keys[-1]] = wi.numpy().astype(np.float64)
        return keys

    def label(key):
        w = store[key]
        if key % 10 == 0:
            return None  # the judge finds no face now and then
        p = 1 / (1 + np.exp(-4 * w @ g_true))
        return float(rng.random() < p), float(40 + 12 * w @ a_true + rng.normal(0, noise))

    return sample_w, render, label, g_true, a_true


def test_fit_recovers_hidden_directions():
    sample_w, render, label, g_true, a_true = fake_setup()
    d = fit_directions(sample_w, render, label, samples=1500, batch=50)
    assert d.samples == 1350  # every tenth face was not judged
    cos_g = float(d.gender @ torch.tensor(g_true, dtype=torch.float32)) / float(d.gender.norm())
    assert cos_g > 0.95
    a_orth = a_true - (a_true @ g_true) * g_true  # the fitted age direction is made orthogonal to gender
    cos_a = float(d.age @ torch.tensor(a_orth, dtype=torch.float32)) / float(d.age.norm()) / np.linalg.norm(a_orth)
    assert cos_a > 0.95
    assert abs(float(d.age @ d.gender)) < 1e-4
    assert d.gender_accuracy > 0.8 and d.age_mae < 5


def test_impose_sets_both_scores_exactly():
    sample_w, render, label, *_ = fake_setup()
    d = fit_directions(sample_w, render, label, samples=600, batch=50)
    w = torch.randn(5, W_DIM)
    target_g, target_a = torch.linspace(-3, 3, 5), torch.linspace(20, 70, 5)
    moved = d.impose(w, target_g, target_a)
    s_g, s_a = d.scores(moved)
    assert torch.allclose(s_g, target_g, atol=1e-4) and torch.allclose(s_a, target_a, atol=1e-3)


def test_save_load_and_width_check(tmp_path):
    sample_w, render, label, *_ = fake_setup()
    d = fit_directions(sample_w, render, label, samples=300, batch=50)
    p = directions_path(tmp_path / "ffhq.safetensors")
    assert p.name == "ffhq.directions.safetensors"
    save_directions(d, p)
    back = load_directions(p, w_dim=W_DIM)
    assert torch.equal(back.gender, d.gender) and back.age_bias == pytest.approx(d.age_bias)
    with pytest.raises(ModelError, match="w_dim 32"):
        load_directions(p, w_dim=32)
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError):
        load_directions(tmp_path / "bad.safetensors")


def test_swap_of_unconditional_generator_keeps_the_originals_scores():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.preset("tiny32")).eval()
    # directions in this G's W (w_dim may differ from the fake's): fit on its own mapping outputs
    w_dim = G.w_dim
    rng = np.random.default_rng(3)
    g_true = rng.normal(size=w_dim)

    def sw(n, seed):
        with torch.no_grad():
            return G.mapping(torch.from_numpy(np.random.default_rng(seed).normal(size=(n, G.z_dim))).float(), None)[:, 0]

    def lab(wi):
        return float(wi @ g_true > 0), float(40 + 5 * wi @ g_true[::-1].copy())

    d = fit_directions(sw, lambda w: list(w.numpy()), lab, samples=400, batch=50)
    ws = sw(1, 99)[:, None].expand(1, G.num_ws, -1).clone() + 0.3 * torch.randn(1, G.num_ws, w_dim)
    cfg = SwapConfig(keep_layers="coarse")
    new = swap_ws(G, ws, None, 7, cfg, directions=d)
    t_g, t_a = d.scores(ws.mean(dim=1))
    kept = set(cfg.kept_rows(G.num_ws))
    for r in range(G.num_ws):
        if r in kept:
            assert torch.equal(new[0, r], ws[0, r])
        else:
            s_g, s_a = d.scores(new[0, r])
            assert float(s_g) == pytest.approx(float(t_g), abs=1e-3) and float(s_a) == pytest.approx(float(t_a), abs=1e-2)
    plain = swap_ws(G, ws, None, 7, cfg)
    assert not torch.allclose(plain, new)


def test_cli_refuses_other_labels_and_reports_unjudgeable_faces(tmp_path):
    other = tmp_path / "other.safetensors"
    save_generator(Generator(GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("smile", "glasses"))), other)
    res = CliRunner().invoke(main, ["directions", str(other), "--samples", "4"])
    assert res.exit_code == 1 and "not on (female, age)" in res.output and "Traceback" not in res.output
    for name, extra in (("unc", {}), ("cond", dict(c_dim=2, c_labels=("female", "age")))):
        path = tmp_path / f"{name}.safetensors"
        save_generator(Generator(GeneratorConfig.preset("tiny32", **extra)), path)
        res = CliRunner().invoke(main, ["directions", str(path), "--samples", "8", "--threads", "1"])
        assert res.exit_code == 1 and "could be judged" in res.output, res.output  # random weights draw no faces
        assert not directions_path(path).exists()


def linear_reader(a_dir: torch.Tensor, g_dir: torch.Tensor, age_gain: float = 0.12, gender_gain: float = 2.0,
                  coupling: float = -0.8, base_logit: float = -3.0):
    """A stand-in attribute network: log1p(age) and the female logit are linear in the mean W+ row (with the age
    direction also pulling toward male, as the real one does), from a 30-year-old man (female logit ``base_logit``)
    at the origin."""
    calls = []

    def measure(ws):
        calls.append(ws.shape[0])
        m = ws.mean(dim=1)
        sa, sg = (m @ a_dir).numpy().astype(np.float64), (m @ g_dir).numpy().astype(np.float64)
        code = np.log1p(30.0) + age_gain * sa
        logit = base_logit + gender_gain * sg + coupling * sa
        return 1 / (1 + np.exp(-logit)), np.expm1(code)

    return measure, calls


def steering_setup():
    rng = np.random.default_rng(5)
    g = rng.normal(size=W_DIM)
    a = rng.normal(size=W_DIM)
    a -= (a @ g) / (g @ g) * g  # fitted directions are orthogonal
    d = AttributeDirections(torch.tensor(g * 3, dtype=torch.float32), 0.0, torch.tensor(a * 7, dtype=torch.float32),
                            30.0)
    return d, torch.tensor(a / np.linalg.norm(a), dtype=torch.float32), \
        torch.tensor(g / np.linalg.norm(g), dtype=torch.float32)


def test_steering_reaches_age_and_gender_where_the_first_gain_is_wrong():
    d, a_dir, g_dir = steering_setup()
    measure, calls = linear_reader(a_dir, g_dir)  # its gains differ from the defaults: the secant steps adapt
    ws = torch.zeros(3, 4, W_DIM)
    out, step = steer_attributes(ws, measure, female=0.9, age=20.0, directions=d, steps=4)
    assert list(step) == [len(calls) - 1] * 3  # the last step was the best
    p, age = measure(out)
    assert np.all(p > 0.85) and np.all(np.abs(np.log1p(age) - np.log1p(20.0)) < 0.06), (p, age)
    assert 2 <= len(calls) - 1 <= 5 and set(calls) == {3}  # the faces as given + at most 4 steps, one batch each
    # every row moved alike (the kept rows too)
    assert torch.allclose(out - out[:, :1], torch.zeros_like(out), atol=1e-5)
    # nothing to do: the faces come back as they were (a man of 30 read plainly male: past GENDER_MARGIN)
    plain, calls = linear_reader(a_dir, g_dir, base_logit=-(GENDER_MARGIN + 1))
    same, step = steer_attributes(ws, plain, female=0.0, age=30.5, directions=d, steps=3)
    assert torch.equal(same, ws) and len(calls) == 1 and list(step) == [0, 0, 0]
    # a man read as only somewhat male (logit -3) is moved further toward male, to the margin
    toward, step = steer_attributes(ws, measure, female=0.0, age=30.5, directions=d, steps=3)
    p, _ = measure(toward)
    assert np.all(np.log(p / (1 - p)) < -3.5) and np.all(step > 0)


def test_steering_is_bounded_and_keeps_the_best_step():
    d, a_dir, g_dir = steering_setup()
    measure, _ = linear_reader(a_dir, g_dir, age_gain=0.01)  # barely responds: the moves hit the bound
    ws = torch.zeros(2, 4, W_DIM)
    out, _ = steer_attributes(ws, measure, female=0.0, age=3.0, directions=d, steps=6)
    assert float((out[:, 0] @ a_dir).abs().max()) <= SHIFT_MAX + 1e-4
    calls = []

    def contrary(x):  # every move makes the reading worse: the faces come back as given
        calls.append(1)
        m = x.mean(dim=1)
        return np.full(len(x), 0.1), np.full(len(x), 40.0) + 50 * np.abs((m @ a_dir).numpy())

    back, step = steer_attributes(ws, contrary, female=0.0, age=20.0, directions=d, steps=3)
    assert torch.equal(back, ws) and len(calls) <= 4 and list(step) == [0, 0]
