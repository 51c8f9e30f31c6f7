"""Official checkpoints without their code: NVIDIA network pickles and rosinality ``.pt`` files (tiny 32 px configs).

The NVIDIA files are real pickles written with the same nesting and reduce protocol as ``torch_utils.persistence``:
stand-in ``torch_utils``/``dnnlib``/``training`` modules exist only while the file is written and are removed before it
is read. rosinality files use rosinality's key names and shapes, and a reference forward of rosinality's math
(``model.py`` with the native ``upfirdn2d``) checks the converted generator image by image.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from deid.cli.main import main
from deid.config import GeneratorConfig
from deid.errors import ModelError
from deid.io.foreign import _fit_channels, load_any_generator, load_nvidia_pkl, load_rosinality
from deid.io.weights import load_generator, save_generator
from deid.nets.generator import Generator

_STANDIN_MODULES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util", "training",
                    "training.networks", "training.networks_stylegan2")


def _random_generator(c_dim: int = 0, seed: int = 0) -> Generator:
    """tiny32 generator with every tensor random (biases, noise strengths and w_avg too, so misplacement shows)."""
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig.preset("tiny32", c_dim=c_dim, conv_clamp=256.0, align_template="ffhq"))
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if not name.endswith("resample_filter"):
                t.copy_(torch.randn_like(t) * 0.5 + (1.0 if name.endswith("affine.bias") else 0.0))
    return G.eval()


# ---------------------------------------------------------------------------------------------------------------------
# NVIDIA pickles


@contextlib.contextmanager
def _nvidia_standins(module_src: str, networks: str = "training.networks"):
    """Register stand-ins of ``torch_utils.persistence``, ``dnnlib.util`` and ``training.networks*`` in sys.modules.

    Yields ``(persistent_class, EasyDict, network_module)``; the modules are removed again on exit.
    """
    mods = {name: types.ModuleType(name) for name in _STANDIN_MODULES}
    persistence, util = mods["torch_utils.persistence"], mods["dnnlib.util"]

    def _reconstruct_persistent_obj(meta):  # NVIDIA's would exec meta["module_src"]; must never be reached
        raise AssertionError("the stand-in reconstruct ran")

    _reconstruct_persistent_obj.__module__ = persistence.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    def persistent_class(orig_class):
        class Decorator(orig_class):
            _orig_module_src = module_src
            _orig_class_name = orig_class.__name__

            def __init__(self, *args, **kwargs):
                super().__init__()
                self._init_args = copy.deepcopy(args)
                self._init_kwargs = copy.deepcopy(kwargs)

            def __reduce__(self):  # as in torch_utils/persistence.py (version 6)
                fields = list(super().__reduce__())
                fields += [None] * max(3 - len(fields), 0)
                if fields[0] is not _reconstruct_persistent_obj:
                    meta = dict(type="class", version=6, module_src=self._orig_module_src,
                                class_name=self._orig_class_name, state=fields[2])
                    fields[0] = _reconstruct_persistent_obj
                    fields[1] = (meta,)
                    fields[2] = None
                return tuple(fields)

        Decorator.__name__ = orig_class.__name__
        return Decorator

    class EasyDict(dict):
        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name)

        def __setattr__(self, name, value):
            self[name] = value

    EasyDict.__module__, EasyDict.__qualname__ = util.__name__, "EasyDict"
    util.EasyDict = EasyDict
    saved = {name: sys.modules.get(name) for name in _STANDIN_MODULES}
    sys.modules.update(mods)
    try:
        yield persistent_class, EasyDict, mods[networks]
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def _network_classes(persistent_class, module) -> dict[str, type]:
    names = ["Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer", "ToRGBLayer",
             "FullyConnectedLayer", "Discriminator", "AugmentPipe", "SynthesisInput"]
    out = {}
    for name in names:
        orig = type(name, (nn.Module,), {"__module__": module.__name__})
        setattr(module, name, orig)
        out[name] = persistent_class(orig)
    return out


def _mirror(module: nn.Module, classes: dict[str, type], **init_kwargs) -> nn.Module:
    """The official module tree for a deid module: same names, tensors and plain attributes, persistent classes."""
    rec = classes[type(module).__name__](**init_kwargs)
    for name, p in module._parameters.items():
        rec.register_parameter(name, nn.Parameter(p.detach().clone()))
    for name, b in module._buffers.items():
        rec.register_buffer(name, b.detach().clone())
    for name, child in module._modules.items():
        rec.add_module(name, _mirror(child, classes))
    for key, value in vars(module).items():
        if not key.startswith("_") and isinstance(value, (bool, int, float, str)):
            setattr(rec, key, value)
    if hasattr(module, "weight_gain"):  # official layers compute gains with numpy: np.float64 in the pickle
        rec.weight_gain = np.float64(module.weight_gain)
    return rec


def _write_nvidia_pkl(path: Path, G_ema: Generator, G: Generator, *, layout: str = "ada", protocol: int = 4,
                      marker: Path | None = None, edit=None) -> None:
    """A network pickle as stylegan2-ada-pytorch ("ada") or the stylegan3 repo's StyleGAN2 ("sg3") writes it."""
    marker = marker or path.with_suffix(".ran")
    src = f"open({str(marker)!r}, 'w').write('module_src was executed')\nclass Generator: pass\n"
    networks = "training.networks" if layout == "ada" else "training.networks_stylegan2"
    with _nvidia_standins(src, networks) as (persistent_class, EasyDict, module):
        classes = _network_classes(persistent_class, module)
        cfg = G_ema.cfg
        kwargs = dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                      img_channels=cfg.img_channels, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers))
        synthesis = dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_fp16_res=4,
                         conv_clamp=cfg.conv_clamp)
        if layout == "ada":
            kwargs["synthesis_kwargs"] = EasyDict(architecture="skip", **synthesis)
        else:  # stylegan3 repo: synthesis kwargs are loose keywords of Generator
            kwargs.update(synthesis, fused_modconv_default="inference_only")
        if edit is not None:
            edit(kwargs, EasyDict)
        D = classes["Discriminator"](c_dim=cfg.c_dim, img_resolution=cfg.img_resolution)
        D.b4 = classes["FullyConnectedLayer"]()
        D.b4.weight = nn.Parameter(torch.randn(4, 4))
        augment = classes["AugmentPipe"](xflip=1)
        augment.register_buffer("p", torch.zeros([]))
        augment.wavelet = np.array([0.25, 0.5, 0.25])
        data = {"G": _mirror(G, classes, **kwargs), "D": D, "G_ema": _mirror(G_ema, classes, **kwargs),
                "augment_pipe": augment,
                "training_set_kwargs": EasyDict(class_name="training.dataset.ImageFolderDataset", path="ffhq.zip",
                                                use_labels=False, max_size=None, xflip=False, resolution=32)}
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=protocol)


@pytest.mark.parametrize("layout, protocol, c_dim", [("ada", 3, 0), ("sg3", 4, 2)])
def test_nvidia_pkl_loads_without_their_code(tmp_path, layout, protocol, c_dim):
    src, other = _random_generator(c_dim, seed=1), _random_generator(c_dim, seed=2)
    path = tmp_path / "network-snapshot.pkl"
    _write_nvidia_pkl(path, src, other, layout=layout, protocol=protocol)
    assert not any(name in sys.modules for name in _STANDIN_MODULES)

    G = load_nvidia_pkl(path, device="cpu")

    assert not any(name in sys.modules for name in _STANDIN_MODULES)  # nothing was imported by name
    assert not path.with_suffix(".ran").exists()  # module_src was never executed
    assert G.cfg == GeneratorConfig.preset("tiny32", c_dim=c_dim, conv_clamp=256.0, align_template="ffhq")
    ours, theirs = G.state_dict(), src.state_dict()
    assert ours.keys() == theirs.keys()
    for name in theirs:  # G_ema, not G, and every tensor in its own place
        assert torch.equal(ours[name], theirs[name]), name
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0))
    c = torch.eye(3, c_dim) if c_dim else None
    img = G(z, c, truncation_psi=0.7, noise_mode="const")
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32
    torch.testing.assert_close(img, src(z, c, truncation_psi=0.7, noise_mode="const"), rtol=0, atol=0)


def test_nvidia_pkl_refuses_forbidden_globals(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G": None, "G_ema": Payload()}))
    with pytest.raises(ModelError, match=r"refused global (posix|nt)\.system"):
        load_nvidia_pkl(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"G_ema": eval}))  # a builtin named as plain data is refused too
    with pytest.raises(ModelError, match=r"refused global builtins\.eval"):
        load_nvidia_pkl(path)


@pytest.mark.parametrize("change, message", [
    (lambda kw, ED: kw["synthesis_kwargs"].update(architecture="resnet"), "architecture 'resnet'"),
    (lambda kw, ED: kw["mapping_kwargs"].update(embed_features=8), "embed_features"),
])
def test_nvidia_pkl_refuses_other_architectures(tmp_path, change, message):
    G = _random_generator(c_dim=2)
    path = tmp_path / "other.pkl"
    _write_nvidia_pkl(path, G, G, edit=change)
    with pytest.raises(ModelError, match=message):
        load_nvidia_pkl(path)


def test_nvidia_pkl_refuses_stylegan3(tmp_path):
    path = tmp_path / "stylegan3-t.pkl"
    with _nvidia_standins("class Generator: pass\n", "training.networks") as (persistent_class, EasyDict, module):
        classes = _network_classes(persistent_class, module)
        G = classes["Generator"](z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3)
        G.synthesis = classes["SynthesisNetwork"](w_dim=8)
        G.synthesis.input = classes["SynthesisInput"](w_dim=8, channels=4, size=36)
        G.synthesis.input.register_buffer("freqs", torch.randn(4, 2))
        with open(path, "wb") as f:
            pickle.dump({"G": G, "D": None, "G_ema": G, "training_set_kwargs": None, "augment_pipe": None}, f)
    with pytest.raises(ModelError, match="StyleGAN3 .alias-free. synthesis is not supported yet"):
        load_nvidia_pkl(path)


# ---------------------------------------------------------------------------------------------------------------------
# rosinality checkpoints

_TINY_CHANNELS = {4: 32, 8: 32, 16: 32, 32: 16}  # rosinality's table scaled down; = tiny32 (base 512, max 32)
_BLUR = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64 * 4  # make_kernel(k) * 2**2


def _rosinality_state_dict(channels: dict[int, int], style_dim: int = 32, n_mlp: int = 2, seed: int = 0):
    """``Generator.state_dict()`` key names and shapes of rosinality's model.py, random values."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, offset=0.0):
        return torch.randn(*shape, generator=gen) * scale + offset

    sd = {}
    for i in range(1, n_mlp + 1):  # style.0 is PixelNorm
        sd[f"style.{i}.weight"] = rnd(style_dim, style_dim, scale=1 / 0.01)  # EqualLinear stores weight / lr_mul
        sd[f"style.{i}.bias"] = rnd(style_dim, scale=10.0)  # used as bias * lr_mul

    def styled_conv(prefix, in_ch, out_ch, upsample):
        sd[f"{prefix}.conv.weight"] = rnd(1, out_ch, in_ch, 3, 3)
        sd[f"{prefix}.conv.modulation.weight"] = rnd(in_ch, style_dim)
        sd[f"{prefix}.conv.modulation.bias"] = rnd(in_ch, scale=0.2, offset=1.0)
        if upsample:
            sd[f"{prefix}.conv.blur.kernel"] = _BLUR.clone()
        sd[f"{prefix}.noise.weight"] = rnd(1, scale=0.3)
        sd[f"{prefix}.activate.bias"] = rnd(out_ch, scale=0.2)

    def to_rgb(prefix, in_ch, upsample):
        if upsample:
            sd[f"{prefix}.upsample.kernel"] = _BLUR.clone()
        sd[f"{prefix}.bias"] = rnd(1, 3, 1, 1, scale=0.2)
        sd[f"{prefix}.conv.weight"] = rnd(1, 3, in_ch, 1, 1)
        sd[f"{prefix}.conv.modulation.weight"] = rnd(in_ch, style_dim)
        sd[f"{prefix}.conv.modulation.bias"] = rnd(in_ch, scale=0.2, offset=1.0)

    size = max(channels)
    log_size = int(math.log2(size))
    sd["input.input"] = rnd(1, channels[4], 4, 4)
    styled_conv("conv1", channels[4], channels[4], False)
    to_rgb("to_rgb1", channels[4], False)
    for layer_idx in range((log_size - 2) * 2 + 1):
        res = (layer_idx + 5) // 2
        sd[f"noises.noise_{layer_idx}"] = rnd(1, 1, 2**res, 2**res)
    in_ch = channels[4]
    for i in range(3, log_size + 1):
        out_ch = channels[2**i]
        styled_conv(f"convs.{2 * (i - 3)}", in_ch, out_ch, True)
        styled_conv(f"convs.{2 * (i - 3) + 1}", out_ch, out_ch, False)
        to_rgb(f"to_rgbs.{i - 3}", out_ch, True)
        in_ch = out_ch
    return sd


def _ref_upfirdn2d(x, kernel, up, pad):
    """rosinality ``op/upfirdn2d.py`` ``upfirdn2d_native`` for down = 1 and non-negative padding."""
    n, c, h, w = x.shape
    x = x.reshape(n * c, 1, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n * c, 1, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    x = F.conv2d(x, torch.flip(kernel, [0, 1]).view(1, 1, *kernel.shape))
    return x.reshape(n, c, x.shape[2], x.shape[3])


def _ref_linear(x, weight, bias, lr_mul=1.0, activate=False):
    """EqualLinear (``fused_lrelu`` = bias, leaky_relu(0.2), * sqrt(2))."""
    out = F.linear(x, weight * (lr_mul / math.sqrt(weight.shape[1])))
    if activate:
        return F.leaky_relu(out + bias * lr_mul, 0.2) * math.sqrt(2)
    return out + bias * lr_mul


def _ref_modconv(sd, prefix, x, style, demodulate=True, upsample=False):
    """ModulatedConv2d, fused (grouped) path."""
    weight = sd[f"{prefix}.conv.weight"]  # [1, O, I, k, k]
    batch, in_ch, h, w = x.shape
    out_ch, k = weight.shape[1], weight.shape[3]
    s = _ref_linear(style, sd[f"{prefix}.conv.modulation.weight"], sd[f"{prefix}.conv.modulation.bias"])
    weight = weight / math.sqrt(in_ch * k * k) * s.view(batch, 1, in_ch, 1, 1)
    if demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(batch, out_ch, 1, 1, 1)
    if upsample:
        weight = weight.transpose(1, 2).reshape(batch * in_ch, out_ch, k, k)
        out = F.conv_transpose2d(x.reshape(1, batch * in_ch, h, w), weight, padding=0, stride=2, groups=batch)
        out = out.view(batch, out_ch, out.shape[2], out.shape[3])
        return _ref_upfirdn2d(out, sd[f"{prefix}.conv.blur.kernel"], 1, (1, 1))
    weight = weight.reshape(batch * out_ch, in_ch, k, k)
    return F.conv2d(x.reshape(1, batch * in_ch, h, w), weight, padding=k // 2, groups=batch).view(batch, out_ch, h, w)


def _ref_styled_conv(sd, prefix, x, style, noise, upsample=False):
    out = _ref_modconv(sd, prefix, x, style, upsample=upsample)
    out = out + sd[f"{prefix}.noise.weight"] * noise
    return F.leaky_relu(out + sd[f"{prefix}.activate.bias"].view(1, -1, 1, 1), 0.2) * math.sqrt(2)


def _ref_to_rgb(sd, prefix, x, style, skip=None):
    out = _ref_modconv(sd, prefix, x, style, demodulate=False) + sd[f"{prefix}.bias"]
    if skip is not None:
        out = out + _ref_upfirdn2d(skip, sd[f"{prefix}.upsample.kernel"], 2, (2, 1))
    return out


def _ref_generator(sd, z, truncation=1.0, truncation_latent=None, n_mlp=2):
    """rosinality ``Generator.forward([z], truncation=..., randomize_noise=False)``."""
    x = z * torch.rsqrt(torch.mean(z**2, dim=1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        x = _ref_linear(x, sd[f"style.{i}.weight"], sd[f"style.{i}.bias"], lr_mul=0.01, activate=True)
    if truncation < 1:
        x = truncation_latent + truncation * (x - truncation_latent)
    num_up = len([k for k in sd if k.endswith(".upsample.kernel")])
    latent = x.unsqueeze(1).repeat(1, 2 * (num_up + 1), 1)
    noise = [sd[f"noises.noise_{j}"] for j in range(2 * num_up + 1)]
    out = sd["input.input"].repeat(z.shape[0], 1, 1, 1)
    out = _ref_styled_conv(sd, "conv1", out, latent[:, 0], noise[0])
    skip = _ref_to_rgb(sd, "to_rgb1", out, latent[:, 1])
    i = 1
    for b in range(num_up):
        out = _ref_styled_conv(sd, f"convs.{2 * b}", out, latent[:, i], noise[2 * b + 1], upsample=True)
        out = _ref_styled_conv(sd, f"convs.{2 * b + 1}", out, latent[:, i + 1], noise[2 * b + 2])
        skip = _ref_to_rgb(sd, f"to_rgbs.{b}", out, latent[:, i + 2], skip)
        i += 2
    return skip


def _write_rosinality(path: Path, sd: dict, latent_avg: torch.Tensor | None) -> None:
    ckpt = {"g": {k: v + 1 for k, v in sd.items()}, "d": {"convs.0.0.weight": torch.randn(16, 3, 1, 1)},
            "g_ema": sd, "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "params": [0, 1]}]},
            "d_optim": {"state": {}, "param_groups": []},
            "args": argparse.Namespace(size=32, n_mlp=2, latent=32, channel_multiplier=2, r1=10.0), "ada_aug_p": 0.0}
    if latent_avg is not None:
        ckpt["latent_avg"] = latent_avg
    torch.save(ckpt, path)


def test_rosinality_matches_reference_forward(tmp_path):
    sd = _rosinality_state_dict(_TINY_CHANNELS)
    latent_avg = torch.randn(32, generator=torch.Generator().manual_seed(5))
    path = tmp_path / "550000.pt"
    _write_rosinality(path, sd, latent_avg)

    G = load_rosinality(path, device="cpu")

    assert G.cfg == GeneratorConfig.preset("tiny32", align_template="ffhq")
    ours = G.state_dict()
    assert torch.equal(ours["mapping.fc1.weight"], sd["style.2.weight"])
    assert torch.equal(ours["mapping.w_avg"], latent_avg)
    assert torch.equal(ours["synthesis.b4.const"], sd["input.input"][0])
    assert torch.equal(ours["synthesis.b16.conv0.weight"], sd["convs.2.conv.weight"][0])
    assert torch.equal(ours["synthesis.b32.conv1.noise_const"], sd["noises.noise_6"][0, 0])
    assert torch.equal(ours["synthesis.b8.conv1.noise_strength"], sd["convs.1.noise.weight"][0])
    assert torch.equal(ours["synthesis.b32.torgb.bias"], sd["to_rgbs.2.bias"].flatten())
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    for psi in (1.0, 0.7):
        img = G(z, truncation_psi=psi, noise_mode="const")
        ref = _ref_generator(sd, z, truncation=psi, truncation_latent=latent_avg)
        assert img.shape == ref.shape == (3, 3, 32, 32)
        torch.testing.assert_close(img, ref, rtol=1e-4, atol=1e-4)


def test_rosinality_without_latent_avg_uses_mean_latent(tmp_path):
    path = tmp_path / "010000.pt"
    _write_rosinality(path, _rosinality_state_dict(_TINY_CHANNELS, seed=3), latent_avg=None)
    G = load_rosinality(path)
    z = torch.randn(4096, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(G.mapping.w_avg, G.mapping(z)[:, 0].mean(dim=0))


def test_rosinality_refuses_unknown_layouts(tmp_path):
    path = tmp_path / "bad.pt"
    sd = _rosinality_state_dict({4: 32, 8: 16, 16: 32, 32: 16})  # channels that grow again: no channel_base fits
    _write_rosinality(path, sd, None)
    with pytest.raises(ModelError, match="cannot be written as min"):
        load_rosinality(path)
    sd = _rosinality_state_dict(_TINY_CHANNELS)
    sd["convs.0.conv.blur.kernel"] = torch.ones(4, 4) / 4
    _write_rosinality(path, sd, None)
    with pytest.raises(ModelError, match="not the \\[1, 3, 3, 1\\] filter"):
        load_rosinality(path)
    sd = _rosinality_state_dict(_TINY_CHANNELS)
    sd["style.1.extra"] = torch.zeros(1)
    _write_rosinality(path, sd, None)
    with pytest.raises(ModelError, match="unknown tensor 'style.1.extra'"):
        load_rosinality(path)


def test_rosinality_channel_tables_fit():
    def table(cm):
        return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm,
                1024: 16 * cm}

    assert _fit_channels(table(2)) == (32768, 512)
    assert _fit_channels(table(1)) == (16384, 512)
    assert _fit_channels({4: 512, 8: 512, 16: 512, 32: 512}) == (16384, 512)
    with pytest.raises(ModelError):
        _fit_channels(table(4))


# ---------------------------------------------------------------------------------------------------------------------
# Dispatch and CLI


def test_load_any_generator_dispatches_by_content(tmp_path):
    src = _random_generator()
    deid_path = tmp_path / "g.safetensors"
    save_generator(src, deid_path, dtype=torch.float32)
    pkl = tmp_path / "weights.bin"  # the name says nothing; the content decides
    _write_nvidia_pkl(pkl, src, src)
    pt = tmp_path / "ckpt.pkl"
    _write_rosinality(pt, _rosinality_state_dict(_TINY_CHANNELS), None)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    assert torch.equal(load_any_generator(deid_path).synthesis.b32.torgb.weight, src.synthesis.b32.torgb.weight)
    assert torch.equal(load_any_generator(pkl).synthesis.b32.torgb.weight, src.synthesis.b32.torgb.weight)
    assert load_any_generator(pt).cfg.channel_base == 512
    with pytest.raises(ModelError, match="not a deid .safetensors generator"):
        load_any_generator(junk)


def test_cli_convert(tmp_path):
    src = _random_generator(c_dim=2)
    pkl = tmp_path / "network-snapshot-000100.pkl"
    _write_nvidia_pkl(pkl, src, src)
    runner = CliRunner()
    out16, out32 = tmp_path / "out" / "g16.safetensors", tmp_path / "out" / "g32.safetensors"
    res = runner.invoke(main, ["convert", str(pkl), "-o", str(out16)])
    assert res.exit_code == 0, res.output
    assert "32 px generator" in res.output and out16.with_suffix(".json").is_file()
    res = runner.invoke(main, ["convert", str(pkl), "-o", str(out32), "--dtype", "float32"])
    assert res.exit_code == 0, res.output

    z, c = torch.randn(2, 32, generator=torch.Generator().manual_seed(0)), torch.eye(2)
    ref = src(z, c, noise_mode="const")
    torch.testing.assert_close(load_generator(out32)(z, c, noise_mode="const"), ref, rtol=0, atol=0)
    torch.testing.assert_close(load_generator(out16)(z, c, noise_mode="const"), ref, rtol=0.05, atol=0.05)
    assert load_generator(out16).cfg.align_template == "ffhq"

    pt = tmp_path / "550000.pt"
    _write_rosinality(pt, _rosinality_state_dict(_TINY_CHANNELS), None)
    res = runner.invoke(main, ["convert", str(pt), "-o", str(tmp_path / "ros.safetensors")])
    assert res.exit_code == 0, res.output

    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04K\x01.")  # a pickle of the int 1
    res = runner.invoke(main, ["convert", str(junk), "-o", str(tmp_path / "x.safetensors")])
    assert res.exit_code == 1 and "not a network pickle" in res.output
    res = runner.invoke(main, ["convert", str(pkl), "-o", str(tmp_path / "x.pt")])
    assert res.exit_code == 2 and "must end in .safetensors" in res.output
