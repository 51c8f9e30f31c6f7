"""Generator and discriminator networks: shapes, dtypes, truncation, style mixing, ops against plain definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deid.config import DiscriminatorConfig, GeneratorConfig
from deid.errors import ConfigError
from deid.generate import FaceSpec, mix_ws, parse_layer_range, seed_ws, synthesize, z_from_seed
from deid.nets import ops
from deid.nets.checks import assert_shape
from deid.nets.discriminator import Discriminator
from deid.nets.generator import Generator, layer_groups


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return Generator(GeneratorConfig.preset("tiny32")).eval()


@pytest.fixture(scope="module")
def Gc():
    torch.manual_seed(0)
    return Generator(GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age"))).eval()


def test_generator_shapes_and_num_ws(G):
    assert G.num_ws == 2 * int(math.log2(32)) - 2 == 8
    ws = G.mapping(torch.randn(3, G.z_dim))
    assert ws.shape == (3, G.num_ws, G.w_dim) and ws.dtype == torch.float32
    img = G.synthesis(ws, noise_mode="const")
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32


@pytest.mark.parametrize("res, expected", [(64, 10), (256, 14), (1024, 18)])
def test_num_ws_matches_official(res, expected):
    assert GeneratorConfig(img_resolution=res).num_ws == expected


def test_official_1024_config_fits():
    cfg = GeneratorConfig.preset("ffhq1024")
    assert [cfg.channels(r) for r in cfg.block_resolutions] == [512] * 5 + [256, 128, 64, 32]


def test_layer_groups_cover_all_ws():
    g = layer_groups(18)
    assert list(g["coarse"]) + list(g["middle"]) + list(g["fine"]) == list(range(18))


def test_truncation_psi_zero_gives_average(G):
    G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    ws = G.mapping(torch.randn(2, G.z_dim), truncation_psi=0.0)
    assert torch.allclose(ws, G.mapping.w_avg.expand_as(ws))
    ws_half = G.mapping(torch.ones(1, G.z_dim), truncation_psi=0.5)
    ws_full = G.mapping(torch.ones(1, G.z_dim))
    assert torch.allclose(ws_half, G.mapping.w_avg + 0.5 * (ws_full - G.mapping.w_avg), atol=1e-5)


def test_truncation_cutoff_only_first_layers(G):
    ws = G.mapping(torch.ones(1, G.z_dim), truncation_psi=0.0, truncation_cutoff=2)
    full = G.mapping(torch.ones(1, G.z_dim))
    assert torch.allclose(ws[:, :2], G.mapping.w_avg.expand(1, 2, -1))
    assert torch.allclose(ws[:, 2:], full[:, 2:])


def test_style_mixing_layer_range(G):
    a = seed_ws(G, FaceSpec(seed=1, psi=1.0))
    b = seed_ws(G, FaceSpec(seed=2, psi=1.0))
    layers = parse_layer_range("0-3", G.num_ws)
    m = mix_ws(a, b, layers)
    assert torch.equal(m[:, :4], b[:, :4]) and torch.equal(m[:, 4:], a[:, 4:])
    assert parse_layer_range("fine", G.num_ws) == layer_groups(G.num_ws)["fine"]
    with pytest.raises(ConfigError):
        parse_layer_range("3-99", G.num_ws)


def test_seed_is_nvidia_convention_and_deterministic(G):
    z = z_from_seed(42, G.z_dim)
    assert np.allclose(z.numpy(), np.random.RandomState(42).randn(1, G.z_dim))
    a = synthesize(G, seed_ws(G, FaceSpec(seed=42)))
    b = synthesize(G, seed_ws(G, FaceSpec(seed=42)))
    assert a.dtype == np.uint8 and a.shape == (1, 32, 32, 3) and np.array_equal(a, b)


def test_conditional_labels_change_output(Gc):
    young = synthesize(Gc, seed_ws(Gc, FaceSpec(seed=5, age=5, female=1)))
    old = synthesize(Gc, seed_ws(Gc, FaceSpec(seed=5, age=80, female=1)))
    assert not np.array_equal(young, old)
    with pytest.raises(ValueError):
        Gc.mapping(torch.randn(1, Gc.z_dim))  # labels missing


def test_unconditional_refuses_labels(G):
    with pytest.raises(ConfigError):
        seed_ws(G, FaceSpec(seed=1, age=30))


def test_noise_modes(G):
    ws = G.mapping(torch.randn(1, G.z_dim))
    for m in G.modules():
        if hasattr(m, "noise_strength"):
            m.noise_strength.data.fill_(0.5)
    c1, c2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    r1, r2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
    assert torch.equal(c1, c2) and not torch.equal(r1, r2)
    for m in G.modules():
        if hasattr(m, "noise_strength"):
            m.noise_strength.data.fill_(0.0)


def test_discriminator_shapes():
    D = Discriminator(DiscriminatorConfig(img_resolution=32, channel_base=512, channel_max=32, c_dim=2))
    out = D(torch.randn(4, 3, 32, 32), torch.rand(4, 2))
    assert out.shape == (4, 1) and out.dtype == torch.float32
    feats = D.features(torch.randn(2, 3, 32, 32))
    assert [f.shape[-1] for f in feats] == [16, 8, 4]


def test_assert_shape_names_dimension():
    with pytest.raises(ValueError, match="dimension 1"):
        assert_shape(torch.zeros(2, 4, 8, 8), [None, 3, 8, 8])
    with pytest.raises(ValueError, match="dimensions"):
        assert_shape(torch.zeros(2, 3), [None, 3, 8, 8])


def test_upsample2d_matches_plain_definition():
    """FIR upsampling = zero insertion, pad (2, 1), separable [1,3,3,1]/8 * 2 per axis."""
    x = torch.randn(1, 2, 5, 5)
    f = ops.setup_filter()
    up = torch.zeros(1, 2, 10, 10)
    up[:, :, ::2, ::2] = x
    k = torch.tensor([1.0, 3, 3, 1]) / 8 * 2
    k2 = (k[:, None] * k[None, :]).expand(2, 1, 4, 4)
    ref = F.conv2d(F.pad(up, [2, 1, 2, 1]), k2.flip([2, 3]), groups=2)
    assert torch.allclose(ops.upsample2d(x, f), ref, atol=1e-6)
    const = torch.ones(1, 1, 8, 8)
    assert torch.allclose(ops.upsample2d(const, f)[:, :, 2:-2, 2:-2], torch.ones(1, 1, 12, 12), atol=1e-6)
    assert torch.allclose(ops.downsample2d(const, f)[:, :, 1:-1, 1:-1], torch.ones(1, 1, 2, 2), atol=1e-6)


def test_modulated_conv_equals_per_sample_weights():
    """The non-grouped path equals modulating and demodulating each sample's weights explicitly."""
    torch.manual_seed(0)
    x, w, s = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.rand(3, 4) + 0.5
    out = ops.modulated_conv2d(x, w, s, padding=1)
    for n in range(3):
        wn = w * s[n].reshape(1, -1, 1, 1)
        wn = wn / wn.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        assert torch.allclose(out[n : n + 1], F.conv2d(x[n : n + 1], wn, padding=1), atol=1e-5)
    up = ops.modulated_conv2d(x, w, s, up=2, padding=1, resample_filter=ops.setup_filter(), flip_weight=False)
    assert up.shape == (3, 5, 12, 12)


@pytest.mark.parametrize("conv_clamp", [None, 0.5])
def test_fused_inference_layers_equal_the_autograd_path(conv_clamp):
    """Without autograd the synthesis layers take the fused path (``ops.modulated_conv2d_lrelu``): the same images as
    the path training differentiates, with noise, clamping, upsampling layers and a batch."""
    from deid.config import GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig.preset("tiny32", conv_clamp=conv_clamp)).eval()
    for layer in G.synthesis.modules():
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(0.3)
    ws = G.mapping(torch.randn(3, G.z_dim), None).detach()
    with torch.no_grad():
        fused = G.synthesis(ws, noise_mode="const")
    with torch.enable_grad():
        plain = G.synthesis(ws, noise_mode="const").detach()
    assert torch.allclose(fused, plain, atol=1e-5)
    if conv_clamp is not None:  # the clamp is reached, so it is compared too
        x = G.synthesis.b4.const.unsqueeze(0).repeat(3, 1, 1, 1)
        with torch.no_grad():
            assert G.synthesis.b4.conv1(x, ws[:, 0], noise_mode="const").abs().max() <= conv_clamp + 1e-6


def test_fast_inference_thresholds_and_bf16_stays_close_to_float32():
    import contextlib

    from deid.config import GeneratorConfig
    from deid.device import fast_inference
    from deid.generate import synthesize
    from deid.nets.generator import Generator

    assert isinstance(fast_inference("cpu", 1), contextlib.nullcontext)  # the encoder's single faces
    assert isinstance(fast_inference("cpu", 100, min_batch=1000), contextlib.nullcontext)
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.preset("tiny32")).eval()
    with torch.no_grad():
        ws = G.mapping(torch.randn(4, G.z_dim), None)
    fast = synthesize(G, ws).astype(int)  # bf16 where the CPU has it
    with torch.no_grad():
        exact = ((G.synthesis(ws, noise_mode="const").permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).int().numpy()
    assert np.abs(fast - exact).mean() < 2.0 and np.abs(fast - exact).max() <= 24
