"""``deid generate``: synthetic faces from seeds."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import ConfigError


@click.command()
@click.option("--seed", default=0, show_default=True, help="Seed of the (first) face.")
@click.option("--psi", default=0.7, show_default=True, help="Truncation psi in [0, 1]; lower = more typical faces.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Output PNG (single face).")
@click.option("--count", default=1, show_default=True, help="Number of faces (seeds SEED .. SEED+COUNT-1).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder when --count > 1.")
@click.option("--age", type=float, default=None, help="Target age in years (conditional models).")
@click.option("--gender", type=click.Choice(["female", "male"]), default=None, help="Target gender (conditional models).")
@click.option("--mix-content", type=int, default=None, help="Style mixing: seed giving the coarse content.")
@click.option("--mix-style", type=int, default=None, help="Style mixing: seed giving the styles of --mix-layers.")
@click.option("--mix-layers", default="fine", show_default=True,
              help="W+ rows taken from --mix-style: A-B (inclusive) or coarse, middle, fine.")
@click.option("--latent-out", type=click.Path(dir_okay=False, path_type=Path), help="Also save W+ as .npy "
              "([N, num_ws, w_dim] float32).")
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Generator weights (.safetensors with .json, official .pkl or rosinality .pt); default = shipped.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def generate(seed, psi, out, count, out_dir, age, gender, mix_content, mix_style, mix_layers, latent_out, model,
             device) -> None:
    """Generate synthetic faces. The same seed and options give a byte-identical PNG.

    \b
    Examples:
        deid generate --seed 42 --psi 0.7 -o face.png
        deid generate --seed 0 --count 100 --out-dir synth/ --age 30 --gender female
        deid generate --mix-content 1 --mix-style 2 --mix-layers 0-3 -o mixed.png
    """
    import torch

    from ..device import resolve_device
    from ..generate import FaceSpec, mix_ws, parse_layer_range, seed_ws, synthesize
    from ..io.images import write_image
    from ..io.weights import load_generator

    if (mix_content is None) != (mix_style is None):
        raise ConfigError("style mixing needs both --mix-content and --mix-style")
    if count < 1:
        raise ConfigError("--count must be >= 1")
    if count > 1 and out_dir is None:
        raise ConfigError("--count > 1 needs --out-dir")
    if count == 1 and out is None and out_dir is None:
        raise ConfigError("give -o FILE (or --out-dir DIR)")
    dev = resolve_device(device)
    if model is not None and not str(model).endswith(".safetensors"):
        from ..io.foreign import load_any_generator

        G = load_any_generator(model, device=dev)
    else:
        G = load_generator(model, device=dev)
    female = None if gender is None else float(gender == "female")
    all_ws, paths = [], []
    if mix_content is not None:
        layers = parse_layer_range(mix_layers, G.num_ws)
        wc = seed_ws(G, FaceSpec(seed=mix_content, psi=psi, age=age, female=female), device=dev)
        wsty = seed_ws(G, FaceSpec(seed=mix_style, psi=psi, age=age, female=female), device=dev)
        all_ws.append(mix_ws(wc, wsty, layers))
        paths.append(out or (out_dir / f"mix{mix_content:06d}-{mix_style:06d}.png"))
    else:
        for s in range(seed, seed + count):
            all_ws.append(seed_ws(G, FaceSpec(seed=s, psi=psi, age=age, female=female), device=dev))
            paths.append(out if (count == 1 and out is not None) else out_dir / f"seed{s:06d}.png")
    for ws, path in zip(all_ws, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(synthesize(G, ws)[0], path)
    if latent_out is not None:
        np.save(latent_out, torch.cat(all_ws).cpu().numpy().astype(np.float32))
    click.echo(f"wrote {len(paths)} face(s): {paths[0]}" + (f" ... {paths[-1]}" if len(paths) > 1 else ""))
