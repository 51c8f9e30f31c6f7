"""Run-folder checkpoints shared by every training loop: a ``checkpoint/`` folder replaced atomically.

Layout: ``nets.safetensors`` (prefixed state dicts), ``optim.pt`` (optimizer and RNG states, read back with
``torch.load(weights_only=True)``) and ``state.json`` (counters and the run's config).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..io.weights import atomic_save_file

__all__ = ["save_checkpoint", "load_checkpoint", "prefixed", "unprefixed"]


def prefixed(**modules: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One flat dict of tensors ``{"<name>.<key>": tensor}`` from several modules."""
    out = {}
    for name, m in modules.items():
        out.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
    return out


def unprefixed(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The state dict of module ``name`` out of a ``prefixed`` dict."""
    return {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}


def save_checkpoint(run_dir: Path, tensors: dict[str, torch.Tensor], optim: dict, state: dict) -> None:
    """Write ``run_dir/checkpoint`` as a complete new folder, then rename it into place (never half written)."""
    tmp = run_dir / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_save_file(tensors, tmp / "nets.safetensors")
    torch.save(optim, tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    final, old = run_dir / "checkpoint", run_dir / "checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(ckpt_dir: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read back what ``save_checkpoint`` wrote: (tensors, optimizer/RNG dict, state)."""
    tensors = load_file(str(ckpt_dir / "nets.safetensors"))
    optim = torch.load(ckpt_dir / "optim.pt", weights_only=True, map_location="cpu")
    state = json.loads((ckpt_dir / "state.json").read_text())
    return tensors, optim, state
