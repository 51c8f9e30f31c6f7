"""Turn a training run into shippable files: the EMA generator, and a compact bundle to resume training from."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..config import GeneratorConfig, config_from_dict
from ..errors import DeidError
from ..io.weights import atomic_save_file, save_generator
from ..nets.generator import Generator

__all__ = ["export_generator", "export_resume_bundle", "export_discriminator"]


def _checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    ckpt = Path(run_dir) / "checkpoint"
    if not (ckpt / "nets.safetensors").is_file():
        raise DeidError(f"{ckpt}: no checkpoint in this run folder")
    return load_file(str(ckpt / "nets.safetensors")), json.loads((ckpt / "state.json").read_text())


def export_generator(run_dir: str | Path, out_path: str | Path, *, info: dict | None = None) -> Generator:
    """Write the run's EMA generator as fp16 safetensors + JSON (``deid.io.weights.load_generator`` format)."""
    nets, state = _checkpoint(Path(run_dir))
    cfg = config_from_dict(GeneratorConfig, state["config"]["generator"])
    G = Generator(cfg)
    G.load_state_dict({k[len("G_ema.") :]: v for k, v in nets.items() if k.startswith("G_ema.")}, strict=True)
    meta = {"kimg": state["cur_nimg"] / 1000, "train_config": state["config"], **(info or {})}
    save_generator(G.eval(), out_path, dtype=torch.float16, info=meta)
    return G


def export_resume_bundle(run_dir: str | Path, out_path: str | Path) -> None:
    """G, D and G_ema in fp16 plus counters, enough to continue training in a fresh session (optimizers restart)."""
    nets, state = _checkpoint(Path(run_dir))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_file({k: v.half() if v.is_floating_point() else v for k, v in nets.items()}, out_path)
    doc = {"cur_nimg": state["cur_nimg"], "step": state["step"], "config": state["config"],
           "best_fid": state.get("best_fid")}
    out_path.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")


def export_discriminator(run_dir: str | Path, out_path: str | Path) -> None:
    """The run's discriminator in fp16 (keys ``D.*``): the feature network for encoder training and refinement."""
    nets, _ = _checkpoint(Path(run_dir))
    atomic_save_file({k: v.half() if v.is_floating_point() else v for k, v in nets.items() if k.startswith("D.")},
                     Path(out_path))
