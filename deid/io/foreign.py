"""Official StyleGAN2 generators without their code: NVIDIA network pickles and rosinality checkpoints.

NVIDIA ``.pkl`` files (stylegan2-ada-pytorch, stylegan3) are pickles of ``torch_utils.persistence`` objects that carry
their module source and ``exec`` it on load. Here they are read with a restricted unpickler: only the globals in an
allow-list resolve, persistent objects become inert records of ``(class_name, state)``, and tensor storages are read
with ``torch.load(weights_only=True)``. The source text in the file is never run. rosinality ``.pt`` files are read with
``torch.load(weights_only=True)`` and renamed through an explicit regex table (as ``legacy.py`` does).

Both load into ``deid.nets.generator.Generator`` with ``load_state_dict(strict=True)``; deid runs every layer in float32
(official models run their top resolutions in float16, so images agree to float16 precision, not bit for bit).
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import GeneratorConfig
from ..errors import ConfigError, ModelError
from ..nets.generator import Generator
from . import weights

__all__ = ["load_nvidia_pkl", "load_rosinality", "load_any_generator"]

# ---------------------------------------------------------------------------------------------------------------------
# NVIDIA network pickles


class _Persistent:
    """Stand-in for a ``torch_utils.persistence`` object: its class name and ``__dict__``, with no code behind it."""

    def __init__(self, class_name: str, state: dict):
        self.class_name = class_name  # bare class name as pickled ("Generator"); the module is known only by its source
        self.state = state  # the module's __dict__: _parameters, _buffers, _modules, _init_kwargs, plain attributes

    def __repr__(self) -> str:
        return f"_Persistent({self.class_name!r})"


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict subclass): keeps the items, nothing else."""


def _reconstruct_persistent_obj(meta: object) -> _Persistent:
    """Replaces ``torch_utils.persistence._reconstruct_persistent_obj``: records ``meta``, ignores ``module_src``."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise ModelError("malformed persistent object in network pickle (expected meta with type='class')")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise ModelError(f"malformed persistent object {meta['class_name']!r}: state is not a dict")
    return _Persistent(meta["class_name"], state)


def _load_storage(data: object) -> torch.TypedStorage:
    """Replaces ``torch.storage._load_from_bytes`` (which calls ``torch.load(weights_only=False)``)."""
    if not isinstance(data, bytes):
        raise ModelError("malformed tensor storage in network pickle")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if not isinstance(storage, torch.TypedStorage):
        raise ModelError(f"malformed tensor storage in network pickle (got {type(storage).__name__})")
    return storage


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` without the backward hooks and metadata stored in the file."""
    if not isinstance(storage, torch.TypedStorage):
        raise ModelError("malformed tensor in network pickle (storage is not a tensor storage)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        return torch._utils._rebuild_tensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """``torch._utils._rebuild_parameter[_with_state]``: a plain tensor (the generator is rebuilt, not unpickled)."""
    if not isinstance(data, torch.Tensor):
        raise ModelError("malformed parameter in network pickle")
    return data


def _numpy_globals() -> dict[tuple[str, str], object]:
    """numpy scalars and arrays: official layers store gains as ``np.float64``. Both numpy 1 and 2 module names."""
    import numpy as np

    mod = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out: dict[tuple[str, str], object] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(name, "scalar")] = mod.scalar
        out[(name, "_reconstruct")] = mod._reconstruct
    return out


# Every global a network pickle may name. Anything else is refused before it is imported or called.
_NVIDIA_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only ``_NVIDIA_GLOBALS`` (plus numpy reconstruction) and names what it refuses."""

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in _NVIDIA_GLOBALS:
            return _NVIDIA_GLOBALS[key]
        if module.split(".")[0] == "numpy":
            allowed = _numpy_globals()
            if key in allowed:
                return allowed[key]
        hint = ""
        if module.startswith("dnnlib.tflib"):
            hint = " (a TensorFlow StyleGAN pickle: deid reads PyTorch pickles from stylegan2-ada-pytorch or stylegan3)"
        raise ModelError(f"{self.path}: refused global {module}.{name} in network pickle; only tensors, plain "
                         f"containers and network records are read, and nothing in the file is run{hint}")

    def persistent_load(self, pid):
        raise ModelError(f"{self.path}: unexpected persistent id in network pickle (torch.save files are .pt)")


def _read_network_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        try:
            data = _RestrictedUnpickler(f, path).load()
        except ModelError:
            raise
        except Exception as exc:  # truncated or hand-made pickles fail in many ways; report them as one error
            raise ModelError(f"{path}: not a readable network pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a network pickle (expected a dict with G_ema, got {type(data).__name__})")
    return data


def _short_name(class_name: str) -> str:
    return class_name.rsplit(".", 1)[-1]


def _flatten(obj: _Persistent, prefix: str = "") -> dict[str, torch.Tensor]:
    """State dict of a recorded module tree, with dotted names (what ``nn.Module.state_dict`` would give)."""
    out: dict[str, torch.Tensor] = {}
    skip = obj.state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, t in (obj.state.get(group) or {}).items():
            if t is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise ModelError(f"{prefix}{name}: expected a tensor, got {type(t).__name__}")
            out[prefix + name] = t
    for name, child in (obj.state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _Persistent):
            raise ModelError(f"{prefix}{name}: not a StyleGAN network module ({type(child).__name__})")
        out.update(_flatten(child, f"{prefix}{name}."))
    return out


_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")


def _nvidia_config(G: _Persistent, path: Path) -> GeneratorConfig:
    """GeneratorConfig from the constructor arguments recorded by ``persistent_class`` (``_init_args/_init_kwargs``)."""
    args = G.state.get("_init_args", G.state.get("init_args")) or ()
    kwargs = dict(G.state.get("_init_kwargs", G.state.get("init_kwargs")) or {})
    kwargs.update(zip(_GENERATOR_ARGS, args))
    missing = [k for k in _GENERATOR_ARGS[:5] if k not in kwargs]
    if missing:
        raise ModelError(f"{path}: G_ema does not record its constructor arguments ({', '.join(missing)} missing)")
    mapping = dict(kwargs.get("mapping_kwargs") or {})
    # stylegan2-ada-pytorch passes synthesis_kwargs as one dict; the stylegan3 repo passes them as loose keywords.
    synthesis = {k: v for k, v in kwargs.items() if k not in _GENERATOR_ARGS}
    synthesis.update(kwargs.get("synthesis_kwargs") or {})

    unsupported = {
        "synthesis architecture": (synthesis.get("architecture", "skip"), "skip"),
        "synthesis activation": (synthesis.get("activation", "lrelu"), "lrelu"),
        "resample_filter": (list(synthesis.get("resample_filter", [1, 3, 3, 1])), [1, 3, 3, 1]),
        "mapping activation": (mapping.get("activation", "lrelu"), "lrelu"),
        "mapping layer_features": (mapping.get("layer_features") or kwargs["w_dim"], kwargs["w_dim"]),
    }
    if kwargs["c_dim"] > 0:
        unsupported["mapping embed_features"] = (mapping.get("embed_features") or kwargs["w_dim"], kwargs["w_dim"])
    for what, (got, ours) in unsupported.items():
        if got != ours:
            raise ModelError(f"{path}: {what} {got!r} is not implemented by deid's generator (it supports {ours!r})")

    conv_clamp = synthesis.get("conv_clamp")
    try:
        return GeneratorConfig(
            z_dim=int(kwargs["z_dim"]), c_dim=int(kwargs["c_dim"]), w_dim=int(kwargs["w_dim"]),
            img_resolution=int(kwargs["img_resolution"]), img_channels=int(kwargs["img_channels"]),
            mapping_layers=int(mapping.get("num_layers", 8)),
            mapping_lr_multiplier=float(mapping.get("lr_multiplier", 0.01)),
            channel_base=int(synthesis.get("channel_base", 32768)), channel_max=int(synthesis.get("channel_max", 512)),
            conv_clamp=None if conv_clamp is None else float(conv_clamp),
            use_noise=bool(synthesis.get("use_noise", True)),
            align_template="ffhq",
        )
    except ConfigError as exc:
        raise ModelError(f"{path}: unsupported generator configuration ({exc})") from exc


# Pickles record the bare class name ("Generator"); a dotted name, where given, must be one of these modules.
_NVIDIA_MODULES = (None, "training.networks", "training.networks_stylegan2")


def _check_nvidia_generator(G: object, path: Path) -> _Persistent:
    """Refuse anything but a StyleGAN2 Generator; pickles name only the bare class, so look at the tree too."""
    if not isinstance(G, _Persistent):
        raise ModelError(f"{path}: G_ema is not a network record ({type(G).__name__})")
    synthesis = (G.state.get("_modules") or {}).get("synthesis")
    children = (synthesis.state.get("_modules") or {}) if isinstance(synthesis, _Persistent) else {}
    module = G.class_name.rsplit(".", 1)[0] if "." in G.class_name else None
    if module == "training.networks_stylegan3" or "input" in children:  # StyleGAN3 synthesis starts from `input`
        raise ModelError(f"{path}: StyleGAN3 (alias-free) synthesis is not supported yet; StyleGAN2 pickles from the "
                         "stylegan3 repository (networks_stylegan2) do load")
    if _short_name(G.class_name) != "Generator" or module not in _NVIDIA_MODULES:
        raise ModelError(f"{path}: G_ema is a {G.class_name!r}, not a StyleGAN2 Generator")
    if "b4" not in children:
        raise ModelError(f"{path}: G_ema has no StyleGAN2 synthesis network (no synthesis.b4 block)")
    return G


def _load_matching(G: Generator, sd: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)`` with an error that lists the names and shapes that do not fit."""
    ours = G.state_dict()
    missing = sorted(set(ours) - set(sd))
    unexpected = sorted(set(sd) - set(ours))
    wrong = [f"{k} {list(sd[k].shape)} (expected {list(ours[k].shape)})" for k in ours
             if k in sd and sd[k].shape != ours[k].shape]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if names:
            problems.append(f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}")
    if problems:
        raise ModelError(f"{path}: weights do not fit a deid generator ({'; '.join(problems)})")
    G.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)


def load_nvidia_pkl(path: str | Path, *, device: torch.device | str = "cpu") -> Generator:
    """Load ``G_ema`` from an official NVIDIA network pickle without running code from the file.

    Reads stylegan2-ada-pytorch pickles (``training.networks.Generator``) and StyleGAN2 pickles from the stylegan3
    repository (``training.networks_stylegan2.Generator``), 'skip' architecture, conditional or not. Parameter names
    are the same on both sides (deid mirrors ``training/networks.py``), so the name map is the identity.

    Args:
        path: the ``.pkl`` file (a dict with ``G``, ``D``, ``G_ema``, ``training_set_kwargs``, ``augment_pipe``).
        device: where the module lives.

    Returns:
        The generator in eval mode, float32, with ``align_template="ffhq"``.

    Raises:
        ModelError: the file names a global outside the allow-list, is not a network pickle, or holds an architecture
            deid does not implement (StyleGAN3 synthesis, 'orig'/'resnet' synthesis, other filters).

    Example:
        >>> G = load_nvidia_pkl("stylegan2-ffhq-256x256.pkl", device="cpu")
        >>> img = G(torch.randn(1, G.z_dim), truncation_psi=0.7, noise_mode="const")  # [1, 3, 256, 256] in ~[-1, 1]
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: network pickle not found")
    data = _read_network_pickle(path)
    if "G_ema" not in data:
        raise ModelError(f"{path}: no G_ema in network pickle (keys: {', '.join(map(str, data))})")
    rec = _check_nvidia_generator(data["G_ema"], path)
    G = Generator(_nvidia_config(rec, path))
    _load_matching(G, _flatten(rec), path)
    return G.eval().requires_grad_(False).to(device)


# ---------------------------------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch checkpoints


def _ros_conv(k: int) -> str:
    """``convs.{k}``: two per block from 8x8 up; even ones upsample (conv0), odd ones do not (conv1)."""
    return f"synthesis.b{8 * 2 ** (k // 2)}.conv{k % 2}"


def _ros_noise(j: int) -> str:
    """``noises.noise_{j}``: one per conv in forward order, the 4x4 conv first."""
    return "synthesis.b4.conv1" if j == 0 else _ros_conv(j - 1)


# rosinality name -> deid name (None = FIR kernel buffer, checked but not copied: deid builds its own filter).
# Index 0 of ``style`` is PixelNorm, so ``style.{k}`` is ``fc{k-1}``.
_ROSINALITY_NAMES: list[tuple[str, Callable[[re.Match], str] | None]] = [
    (r"style\.(\d+)\.(weight|bias)", lambda m: f"mapping.fc{int(m[1]) - 1}.{m[2]}"),
    (r"latent_avg", lambda m: "mapping.w_avg"),
    (r"input\.input", lambda m: "synthesis.b4.const"),
    (r"conv1\.conv\.weight", lambda m: "synthesis.b4.conv1.weight"),
    (r"conv1\.conv\.modulation\.(weight|bias)", lambda m: f"synthesis.b4.conv1.affine.{m[1]}"),
    (r"conv1\.noise\.weight", lambda m: "synthesis.b4.conv1.noise_strength"),
    (r"conv1\.activate\.bias", lambda m: "synthesis.b4.conv1.bias"),
    (r"to_rgb1\.conv\.weight", lambda m: "synthesis.b4.torgb.weight"),
    (r"to_rgb1\.conv\.modulation\.(weight|bias)", lambda m: f"synthesis.b4.torgb.affine.{m[1]}"),
    (r"to_rgb1\.bias", lambda m: "synthesis.b4.torgb.bias"),
    (r"convs\.(\d+)\.conv\.weight", lambda m: f"{_ros_conv(int(m[1]))}.weight"),
    (r"convs\.(\d+)\.conv\.modulation\.(weight|bias)", lambda m: f"{_ros_conv(int(m[1]))}.affine.{m[2]}"),
    (r"convs\.(\d+)\.noise\.weight", lambda m: f"{_ros_conv(int(m[1]))}.noise_strength"),
    (r"convs\.(\d+)\.activate\.bias", lambda m: f"{_ros_conv(int(m[1]))}.bias"),
    (r"to_rgbs\.(\d+)\.conv\.weight", lambda m: f"synthesis.b{8 * 2 ** int(m[1])}.torgb.weight"),
    (r"to_rgbs\.(\d+)\.conv\.modulation\.(weight|bias)",
     lambda m: f"synthesis.b{8 * 2 ** int(m[1])}.torgb.affine.{m[2]}"),
    (r"to_rgbs\.(\d+)\.bias", lambda m: f"synthesis.b{8 * 2 ** int(m[1])}.torgb.bias"),
    (r"noises\.noise_(\d+)", lambda m: f"{_ros_noise(int(m[1]))}.noise_const"),
    (r"convs\.\d+\.conv\.blur\.kernel|to_rgbs\.\d+\.upsample\.kernel", None),
]

# rosinality's Blur (after an upsampling conv) and Upsample (skip image) kernels: outer([1, 3, 3, 1]) / 64 * 2**2.
_ROSINALITY_KERNEL = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64 * 4


def _rosinality_name(name: str) -> str | None:
    for pattern, target in _ROSINALITY_NAMES:
        m = re.fullmatch(pattern, name)
        if m:
            return None if target is None else target(m)
    raise ModelError(f"unknown tensor {name!r} in rosinality checkpoint")


def _fit_channels(channels: dict[int, int]) -> tuple[int, int]:
    """``(channel_base, channel_max)`` with ``min(channel_base // res, channel_max) == channels[res]`` for every res.

    rosinality's table (512 up to 32 px, then ``16384 * channel_multiplier / res``) gives channel_base 32768 for
    channel_multiplier 2 and 16384 for 1, with channel_max 512. Raises ``ModelError`` when no pair fits.
    """
    res = sorted(channels)
    cmax = channels[res[0]]
    below = [r for r in res if channels[r] < cmax]
    base = channels[below[0]] * below[0] if below else cmax * res[-1]
    if any(min(base // r, cmax) != channels[r] for r in res):
        table = ", ".join(f"{r}: {channels[r]}" for r in res)
        raise ModelError(f"channel counts {{{table}}} cannot be written as min(channel_base // res, channel_max)")
    return base, cmax


def _rosinality_config(sd: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Architecture from tensor shapes: size from the toRGB count, style_dim from style.1, n_mlp from style.*."""
    try:
        n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
        style_dim = sd["style.1.weight"].shape[1]
        n_up = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
        channels = {4: sd["input.input"].shape[1]}
        channels.update({8 * 2**i: sd[f"convs.{2 * i}.conv.weight"].shape[1] for i in range(n_up)})
        img_channels = sd["to_rgb1.conv.weight"].shape[1]
    except KeyError as exc:
        raise ModelError(f"not a rosinality generator state dict (no {exc.args[0]})") from exc
    base, cmax = _fit_channels(channels)
    try:
        return GeneratorConfig(z_dim=style_dim, w_dim=style_dim, img_resolution=4 * 2**n_up, img_channels=img_channels,
                               mapping_layers=n_mlp, mapping_lr_multiplier=0.01, channel_base=base, channel_max=cmax,
                               conv_clamp=None, align_template="ffhq")
    except ConfigError as exc:
        raise ModelError(f"unsupported rosinality generator ({exc})") from exc


def _squeezed(shape: torch.Size) -> list[int]:
    return [d for d in shape if d != 1]


def load_rosinality(path: str | Path, *, device: torch.device | str = "cpu") -> Generator:
    """Load ``g_ema`` from a rosinality/stylegan2-pytorch checkpoint (``torch.load(weights_only=True)``).

    The math is the same as deid's: ``EqualLinear`` scales weights by ``lr_mul / sqrt(in)`` and biases by ``lr_mul``
    (deid's ``FullyConnectedLayer``; the mapping uses lr_mul 0.01, rosinality's default, which a checkpoint does not
    record); ``ModulatedConv2d`` scales weights by ``1 / sqrt(fan_in)``, which demodulation cancels, and for toRGB
    (no demodulation) equals deid's ``weight_gain`` on the styles; ``FusedLeakyReLU`` is bias + lrelu(0.2) * sqrt(2).

    ``mapping.w_avg`` comes from ``latent_avg`` when the checkpoint has one (converted official weights); otherwise it
    is the mean w of 4096 z drawn with seed 0, as rosinality's ``mean_latent(4096)``.

    Args:
        path: the ``.pt`` file: a dict with ``g_ema`` and optionally ``latent_avg``, ``g``, ``d``, optimizers, ``args``.
        device: where the module lives.

    Returns:
        The generator in eval mode, float32, unconditional, ``conv_clamp=None``, ``align_template="ffhq"``.

    Example:
        >>> G = load_rosinality("550000.pt", device="cpu")
        >>> img = G(torch.randn(1, G.z_dim), noise_mode="const")  # rosinality's randomize_noise=False
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        # train.py stores its argparse.Namespace under "args": a plain attribute bag, safe to rebuild.
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or zip errors depending on the damage
        raise ModelError(f"{path}: not a readable weights-only torch checkpoint ({str(exc).splitlines()[0]})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("g_ema"), dict):
        raise ModelError(f"{path}: not a rosinality checkpoint (expected a dict with a g_ema state dict)")
    src = dict(ckpt["g_ema"])
    if isinstance(ckpt.get("latent_avg"), torch.Tensor):
        src["latent_avg"] = ckpt["latent_avg"].reshape(-1)
    try:
        cfg = _rosinality_config(src)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc

    G = Generator(cfg)
    sd = G.state_dict()
    filled: set[str] = set()
    for name, t in src.items():
        try:
            target = _rosinality_name(name)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from exc
        if target is None:
            if t.shape != _ROSINALITY_KERNEL.shape or not torch.allclose(t.float(), _ROSINALITY_KERNEL):
                raise ModelError(f"{path}: {name} is not the [1, 3, 3, 1] filter deid implements")
            continue
        if target not in sd:
            raise ModelError(f"{path}: {name} maps to {target}, which a {cfg.img_resolution} px generator lacks")
        # Layouts differ only by singleton dims: [1, O, I, k, k] -> [O, I, k, k], [1, 3, 1, 1] -> [3], [1] -> [].
        if _squeezed(t.shape) != _squeezed(sd[target].shape):
            raise ModelError(f"{path}: {name} {list(t.shape)} does not fit {target} {list(sd[target].shape)}")
        sd[target] = t.float().reshape(sd[target].shape)
        filled.add(target)
    # resample_filter buffers are deid's own [1, 3, 3, 1]; w_avg may be computed below.
    missing = sorted(k for k in sd if k not in filled and not k.endswith("resample_filter") and k != "mapping.w_avg")
    if missing:
        raise ModelError(f"{path}: g_ema lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    G.load_state_dict(sd, strict=True)
    if "mapping.w_avg" not in filled:
        with torch.no_grad():
            z = torch.randn(4096, cfg.z_dim, generator=torch.Generator().manual_seed(0))
            G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(dim=0))
    return G.eval().requires_grad_(False).to(device)


# ---------------------------------------------------------------------------------------------------------------------
# Dispatch

_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # pickled magic number opening old torch.save files


def _sniff(path: Path) -> str | None:
    """"safetensors", "torch" (zip or legacy torch.save), "pickle" or None, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    return None


def load_any_generator(path: str | Path, *, device: torch.device | str = "cpu") -> Generator:
    """Load a generator in any supported layout, chosen by content (not by file name).

    deid safetensors + JSON -> ``deid.io.weights.load_generator``; NVIDIA network pickle -> ``load_nvidia_pkl``;
    ``torch.save`` checkpoint -> ``load_rosinality``.

    Example:
        >>> G = load_any_generator("stylegan2-ffhq-256x256.pkl", device="cpu")
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: generator weights not found")
    kind = _sniff(path)
    if kind == "safetensors":
        return weights.load_generator(path, device=device)
    if kind == "pickle":
        return load_nvidia_pkl(path, device=device)
    if kind == "torch":
        return load_rosinality(path, device=device)
    raise ModelError(f"{path}: not a deid .safetensors generator, an NVIDIA network pickle (.pkl) or a "
                     "rosinality checkpoint (.pt)")
