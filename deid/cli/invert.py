"""``deid invert``: project every face of a photo into the generator's latent space."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np


@click.command()
@click.argument("photo", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .npz: ws [F, num_ws, w_dim], boxes [F, 4], landmarks [F, 5, 2], scores [F].")
@click.option("--recon-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write face_<n>.png per face: aligned crop | reconstruction.")
@click.option("--steps", default=0, show_default=True, help="Refinement steps after the encoder (0 = encoder only).")
@click.option("--identity-weight", default=1.0, show_default=True,
              help="Weight of the identity term in refinement (the identity judge's descriptor distance; 0 = off).")
@click.option("--min-face", default=16, show_default=True, help="Smallest face to find, in pixels.")
@click.option("--generator", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Generator (default: shipped).")
@click.option("--encoder", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Its encoder (default: shipped).")
@click.option("--device", default="auto", show_default=True)
def invert(photo, out, recon_dir, steps, identity_weight, min_face, generator, encoder, device) -> None:
    """Invert every face of PHOTO to W+ (encoder, then optional refinement).

    \b
    Example:
        deid invert samples/group.jpg --out latents.npz --recon-dir recon/ --steps 30
    """
    import torch

    from ..align import align_face
    from ..config import DetectConfig
    from ..detect import FaceDetector, detect_faces
    from ..device import resolve_device
    from ..generate import synthesize
    from ..invert import invert_faces, load_encoder
    from ..io.images import read_image, write_image
    from ..io.weights import default_model_path, load_generator
    from ..train.encoder import load_discriminator

    dev = resolve_device(device)
    gpath = Path(generator) if generator else default_model_path("deid64.safetensors")
    G = load_generator(gpath, device=dev)
    E = load_encoder(encoder or default_model_path("deid64-encoder.safetensors"), generator_path=gpath, device=dev)
    D = None
    if steps > 0 and generator is None:
        D = load_discriminator(default_model_path("deid64-disc.safetensors"), G, device=dev)
    img = read_image(photo)
    faces = detect_faces(img.pixels, FaceDetector(DetectConfig(min_face=min_face), device=dev))
    aligned = [align_face(img.pixels, f, G.img_resolution, G.cfg.align_template) for f in faces]
    judge = None
    if steps > 0 and identity_weight > 0:
        from ..eval.identity import IdentityJudge

        judge = IdentityJudge.default()
    latents = invert_faces(aligned, G, E, steps=steps, D=D, judge=judge, identity_weight=identity_weight, device=dev)
    out.parent.mkdir(parents=True, exist_ok=True)
    ws = np.stack([l.ws for l in latents]) if latents else np.zeros((0, G.num_ws, G.w_dim), np.float32)
    np.savez(out, ws=ws, boxes=np.array([f.box for f in faces], np.float32).reshape(-1, 4),
             landmarks=np.array([f.landmarks for f in faces], np.float32).reshape(-1, 5, 2),
             scores=np.array([f.score for f in faces], np.float32))
    if recon_dir is not None and latents:
        recon_dir.mkdir(parents=True, exist_ok=True)
        recon = synthesize(G, torch.from_numpy(ws).to(dev))
        for i, (a, r) in enumerate(zip(aligned, recon), start=1):
            write_image(np.concatenate([a.image, r], axis=1), recon_dir / f"face_{i}.png")
    click.echo(f"{photo}: {len(faces)} face(s) inverted ({'encoder' if steps == 0 else f'encoder + {steps} steps'})"
               f" -> {out}")
