"""``deid video``: anonymise video files and folders of them (resumable batch)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..config import PhotoConfig, SwapConfig, VideoConfig
from ..errors import DeidError, InputError
from .photo import detect_config, unswappable_options


def _eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="Output folder: each video goes to OUT/<name> with its report OUT/<name>.json; for one input "
                   "video, a file name with a video suffix (its report goes beside it).")
@click.option("--mode", type=click.Choice(["swap", "blur", "pixelate", "solid"]), default="swap", show_default=True,
              help="swap: one synthetic person per tracked face; blur/pixelate/solid: obscure faces.")
@click.option("--detect-every", default=3, show_default=True,
              help="Run the face detector on every Nth frame (and the last); optical-flow tracking in between.")
@click.option("--full-detect-every", default=3, show_default=True,
              help="Every Nth detection frame runs all passes (tilted heads, faces cut by the edge), the others the "
                   "upright passes only; frames wait for the next full detection, so no face it finds is left "
                   "before it. 1 = every detection full (slower).")
@click.option("--min-face", default=20, show_default=True, help="Smallest face to find, in pixels.")
@click.option("--det-threshold", default=0.9, show_default=True, help="Minimum detection score.")
@click.option("--upright-only", is_flag=True,
              help="Skip the passes that look for heads tilted beyond ~35 degrees (faster; such faces may be missed).")
@click.option("--no-border", is_flag=True,
              help="Skip the passes that look for faces cut by the photo's edge (faster; such faces may be missed).")
@click.option("--threshold", default=0.6, show_default=True,
              help="Identity guard (dlib distance): a swapped track closer than this to the original is pixelated.")
@unswappable_options
@click.option("--seed", default=0, show_default=True, help="Base seed of the new identities.")
@click.option("--key", default=None, help="Secret: the same person tends to get the same synthetic person.")
@click.option("--psi", default=0.7, show_default=True, help="Truncation of new identities (lower = more typical).")
@click.option("--codec", default=None, help="Video codec (default libx264; libvpx-vp9 for .webm), e.g. libx265.")
@click.option("--crf", default=18, show_default=True, help="Quality: constant rate factor (lower = better).")
@click.option("--no-audio", is_flag=True, help="Drop the audio track (default: copied unchanged).")
@click.option("--force", is_flag=True, help="Process videos again even when their output and report exist.")
@click.option("--generator", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Generator (default: shipped models/deid64.safetensors).")
@click.option("--encoder", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Its encoder (default: shipped models/deid64-encoder.safetensors).")
@click.option("--threads", default=0, show_default=True, help="CPU threads for torch (0 = default).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def video(inputs, out, mode, detect_every, full_detect_every, min_face, det_threshold, upright_only, no_border,
          threshold, max_turn, max_cover_contrast, max_outside, min_swap_age, max_tries, seed, key, psi, codec, crf, no_audio,
          force, generator, encoder, threads, device) -> None:
    """Anonymise every face in videos. Output keeps resolution, frame timing (variable too), rotation and audio.
    Inputs are never modified; a video whose output and report already exist is skipped (resume), unless --force.

    \b
    Examples:
        deid video interview.mp4 -o anonymized/
        deid video interview.mp4 -o interview-anon.mp4
        deid video footage/ -o footage-anon/ --detect-every 2 --crf 20
        deid video clip.mov -o out/ --mode blur --no-audio
    """
    import torch
    from tqdm import tqdm

    from ..detect import FaceDetector
    from ..device import resolve_device
    from ..io.video import probe_video
    from ..swap import load_swap_models
    from ..video import anonymize_video, plan_video_outputs, report_path

    if threads:
        torch.set_num_threads(threads)
    cfg = VideoConfig(photo=PhotoConfig(mode=mode, detect=detect_config(min_face, det_threshold, upright_only,
                                                                                no_border),
                                        swap=SwapConfig(seed=seed, key=key, psi=psi, threshold=threshold,
                                                        max_turn=max_turn, max_cover_contrast=max_cover_contrast,
                                                        max_outside=max_outside, min_swap_age=min_swap_age, max_tries=max_tries)),
                      detect_every=detect_every, full_detect_every=full_detect_every, codec=codec, crf=crf,
                      audio=not no_audio)
    failed = 0
    for p in inputs:
        if not p.exists():
            click.echo(f"error: {p}: no such file or folder", err=True)
            failed += 1
    pairs = plan_video_outputs([p for p in inputs if p.exists()], out)
    todo, infos = [], {}
    for src, dst in pairs:
        if not force and dst.exists() and report_path(dst).exists():
            click.echo(f"{src}: done already ({dst}); skipped")
            continue
        try:
            infos[src] = probe_video(src)
        except DeidError as exc:
            click.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        todo.append((src, dst))
    if todo:
        dev = resolve_device(device)
        detector = FaceDetector(cfg.photo.detect, device=dev)
        models = load_swap_models(generator, encoder, device=dev) if mode == "swap" else None
    total_frames = sum(max(infos[s].frames, 1) for s, _ in todo)
    done_frames, t_all = 0, time.perf_counter()
    for k, (src, dst) in enumerate(todo, 1):
        info = infos[src]
        bar = tqdm(total=info.frames or None, unit="frame", desc=f"[{k}/{len(todo)}] {src.name}", leave=True,
                   dynamic_ncols=True)

        def progress(n: int, bar=bar) -> None:
            nonlocal done_frames
            done_frames += n
            bar.update(n)
            elapsed = time.perf_counter() - t_all
            rate = done_frames / elapsed if elapsed > 0 else 0
            bar.set_postfix_str(f"all: {done_frames}/{total_frames} frames, ETA {_eta((total_frames - done_frames) / rate) if rate else '?'}",
                                refresh=False)

        try:
            if dst.exists() and not force:
                raise InputError(dst, "output exists without its report (an earlier run was cut off?); "
                                      "use --force to replace it")
            dst.parent.mkdir(parents=True, exist_ok=True)
            rep = anonymize_video(src, dst, detector=detector, config=cfg, models=models, info=info,
                                  progress=progress)
        except DeidError as exc:
            bar.close()
            click.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        bar.close()
        report_path(dst).write_text(json.dumps(rep.to_dict(), indent=2) + "\n")
        methods = sorted({t.method for t in rep.tracks})
        click.echo(f"{src} -> {dst}: {rep.frames} frames, {len(rep.tracks)} track(s) ({', '.join(methods) or 'none'}), "
                   f"{rep.uncertain_face_frames} uncertain face-frame(s) blurred, {rep.fps:.1f} frames/s")
    if failed:
        raise click.ClickException(f"{failed} of {len(pairs) + sum(not p.exists() for p in inputs)} input(s) failed")
