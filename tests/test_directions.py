"""InterFaceGAN-style gender/age directions in W for generators without label input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deid.cli.main import main
from deid.config import GeneratorConfig, SwapConfig
from deid.directions import directions_path, fit_directions, load_directions, save_directions
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


def test_cli_refuses_conditional_generator_and_reports_unjudgeable_faces(tmp_path):
    cond = tmp_path / "cond.safetensors"
    save_generator(Generator(GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age"))), cond)
    res = CliRunner().invoke(main, ["directions", str(cond), "--samples", "4"])
    assert res.exit_code == 1 and "conditional generator" in res.output and "Traceback" not in res.output
    unc = tmp_path / "unc.safetensors"
    save_generator(Generator(GeneratorConfig.preset("tiny32")), unc)
    res = CliRunner().invoke(main, ["directions", str(unc), "--samples", "8", "--threads", "1"])
    assert res.exit_code == 1 and "could be judged" in res.output  # random weights draw no faces
    assert not directions_path(unc).exists()
