"""Network weights: safetensors state dicts next to a JSON file of architecture hyperparameters.

Nothing here unpickles code: a model is built from its JSON config, then its tensors are loaded with
``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import GeneratorConfig, config_from_dict
from ..errors import ConfigError, ModelError
from ..nets.generator import Generator

__all__ = ["save_generator", "load_generator", "read_model_info", "default_generator_path", "default_model_path",
           "atomic_save_file", "save_net", "load_net"]

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def default_model_path(name: str = "deid64.safetensors") -> Path:
    """A shipped model file in ``models/`` (the generator ``deid64.safetensors``, its encoder
    ``deid64-encoder.safetensors``, its discriminator ``deid64-disc.safetensors``)."""
    p = MODELS_DIR / name
    if not p.is_file():
        raise ModelError(f"the shipped model models/{name} is missing from this install")
    return p


def default_generator_path() -> Path:
    """The shipped default generator (``models/deid64.safetensors``)."""
    return default_model_path("deid64.safetensors")


def _json_path(path: Path) -> Path:
    return path.with_suffix(".json")


def atomic_save_file(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def save_net(net: torch.nn.Module, path: str | Path, fmt: str, info: dict | None = None) -> None:
    """A helper network (``net.cfg`` a config dataclass) as fp16 safetensors plus ``path.json``
    (``{"format": fmt, "config": ..., "info": info}``), both written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_file({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path,
                     metadata={"format": fmt})
    doc = {"format": fmt, "config": dataclasses.asdict(net.cfg), "info": info or {}}
    tmp = _json_path(path).with_name(_json_path(path).name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(_json_path(path))


def load_net(path: str | Path, cfg_cls: type, net_cls: type, what: str) -> torch.nn.Module:
    """Read back what ``save_net`` wrote: ``net_cls(config_from_dict(cfg_cls, ...))`` with its tensors (float32, eval
    mode, no gradients). Raises ModelError naming ``path`` and ``what`` on missing or malformed files."""
    path = Path(path)
    if not path.is_file() or not _json_path(path).is_file():
        raise ModelError(f"{path}: {what} weights or their .json are missing")
    try:
        net = net_cls(config_from_dict(cfg_cls, json.loads(_json_path(path).read_text())["config"]))
        net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    except (KeyError, TypeError, ValueError, ConfigError, RuntimeError) as exc:
        raise ModelError(f"{path}: not a deid {what} ({str(exc).splitlines()[0]})") from exc
    return net.eval().requires_grad_(False)


def save_generator(G: Generator, path: str | Path, *, dtype: torch.dtype = torch.float16, info: dict | None = None) -> None:
    """Write ``G`` as ``path`` (safetensors, floats cast to ``dtype``) and ``path.json`` (config + ``info``).

    Buffers that are not learned (noise constants, filters) are kept so that "const" noise reproduces exactly.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in G.state_dict().items()}
    atomic_save_file(sd, path, metadata={"format": "deid-generator", "dtype": str(dtype)})
    doc = {"format": "deid-generator", "config": dataclasses.asdict(G.cfg), "info": info or {}}
    tmp = _json_path(path).with_name(_json_path(path).name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(_json_path(path))


def read_model_info(path: str | Path) -> dict:
    """The JSON document beside a weights file."""
    path = Path(path)
    jp = _json_path(path)
    if not jp.is_file():
        raise ModelError(f"{jp}: missing (every weights file needs its JSON config beside it)")
    try:
        return json.loads(jp.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{jp}: not valid JSON ({exc})") from exc


def load_generator(path: str | Path | None = None, *, device: torch.device | str = "cpu") -> Generator:
    """Build the generator described by ``path.json`` and load ``path`` into it (float32, eval mode).

    Args:
        path: a ``.safetensors`` file written by ``save_generator``; None = the shipped default.
        device: where the module lives.

    Example:
        >>> G = load_generator(device="cpu")
        >>> G.img_resolution
        64
    """
    path = default_generator_path() if path is None else Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: generator weights not found")
    doc = read_model_info(path)
    try:
        cfg = config_from_dict(GeneratorConfig, doc["config"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ModelError(f"{_json_path(path)}: bad generator config ({exc})") from exc
    G = Generator(cfg)
    try:
        sd = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    try:
        G.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the config in {_json_path(path).name}: {str(exc).splitlines()[0]}") from exc
    return G.eval().requires_grad_(False).to(device)
