"""``deid convert``: official StyleGAN2 generators to deid's safetensors + JSON format."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from ..io.foreign import load_any_generator
from ..io.weights import save_generator

_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@click.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output .safetensors file; its .json config is written beside it.")
@click.option("--dtype", type=click.Choice(list(_DTYPES)), default="float16", show_default=True,
              help="Storage dtype of the floating-point tensors (the generator always runs in float32).")
@click.pass_context
def convert(ctx: click.Context, src: Path, out: Path, dtype: str) -> None:
    """Convert an official StyleGAN2 generator SRC to deid's format, without running code from SRC.

    Reads NVIDIA network pickles from stylegan2-ada-pytorch or stylegan3 (.pkl, the G_ema network; StyleGAN2
    'skip' generators only), rosinality/stylegan2-pytorch checkpoints (.pt, g_ema) and deid files (re-saved).

    Examples:

    \b
      deid convert stylegan2-ffhq-256x256.pkl -o models/ffhq256.safetensors
      deid convert 550000.pt -o models/rosinality256.safetensors --dtype float32
    """
    if out.suffix != ".safetensors":
        ctx.fail(f"--output must end in .safetensors, got {out.name!r}")
    G = load_any_generator(src, device="cpu")
    save_generator(G, out, dtype=_DTYPES[dtype], info={"converted_from": src.name})
    click.echo(f"{out}: {G.img_resolution} px generator (z_dim {G.z_dim}, w_dim {G.w_dim}, c_dim {G.c_dim}), "
               f"{dtype}, config in {out.with_suffix('.json').name}")
