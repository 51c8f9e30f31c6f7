"""``deid photo``: anonymise photos (newsroom use)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

from ..config import DetectConfig, PhotoConfig, SwapConfig
from ..errors import ConfigError, DeidError


def _numbers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise ConfigError(f"face numbers must look like 1,3,4, got {text!r}") from exc


def detect_config(min_face: int, det_threshold: float, upright_only: bool = False, no_border: bool = False
                  ) -> DetectConfig:
    """The detection settings of the command-line options (shared by photo, dataset, video and faces)."""
    return DetectConfig(min_face=min_face, min_score=det_threshold,
                        rotations=() if upright_only else DetectConfig.rotations,
                        border_min_face=0 if no_border else DetectConfig.border_min_face)


def unswappable_options(command):
    """``--max-tries`` (new identities the guard tries before the fallback) and ``--max-turn``,
    ``--max-cover-contrast``, ``--max-outside`` and ``--min-swap-age`` (faces given the fallback without a try), for
    photo and video."""
    command = click.option("--min-swap-age", type=click.FloatRange(min=0), default=SwapConfig.min_swap_age,
                           show_default=True,
                           help="Faces read as younger than this (years) are pixelated instead of swapped: the "
                                "generator draws babies poorly; 0 = swap any age.")(command)
    command = click.option("--max-tries", type=click.IntRange(min=1), default=SwapConfig.max_tries, show_default=True,
                           help="New identities the identity guard tries before a face is pixelated (fewer: faster "
                                "on faces that are hard to swap, more of them pixelated).")(command)
    command = click.option("--max-outside", default=SwapConfig.max_outside, show_default=True,
                           help="Faces with more than this share of their box beyond the photo's edge are pixelated "
                                "instead of swapped; 1 = swap whatever is cut.")(command)
    command = click.option("--max-cover-contrast", default=SwapConfig.max_cover_contrast, show_default=True,
                           help="Faces whose cheeks and chin look this unlike skin next to the nose bridge (a mask, a "
                                "scarf; bare faces mostly under 10) are pixelated instead of swapped; "
                                "0 = no check.")(command)
    return click.option("--max-turn", default=SwapConfig.max_turn, show_default=True,
                        help="Faces turned further than this (nose offset from the eyes' midpoint over half the eye "
                             "distance; ~0.5 = three-quarter view) are pixelated instead of swapped; 0 = no limit.")(command)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="Output file (one input photo) or folder (several photos or a folder).")
@click.option("--mode", type=click.Choice(["swap", "blur", "pixelate", "solid"]), default="swap", show_default=True,
              help="swap: a synthetic person of the same age and gender; blur/pixelate/solid: obscure the face.")
@click.option("--only", default="", help="Anonymise only these faces, e.g. 1,3 (numbers of `deid faces`).")
@click.option("--skip", default="", help="Leave these faces as they are, e.g. 2.")
@click.option("--min-face", default=16, show_default=True, help="Smallest face to find, in pixels.")
@click.option("--det-threshold", default=0.9, show_default=True, help="Minimum detection score.")
@click.option("--upright-only", is_flag=True,
              help="Skip the passes that look for heads tilted beyond ~35 degrees (faster; such faces may be missed).")
@click.option("--no-border", is_flag=True,
              help="Skip the passes that look for faces cut by the photo's edge (faster; such faces may be missed).")
@click.option("--threshold", default=0.6, show_default=True,
              help="Identity guard: a swapped face must be at least this far from the original (dlib distance; "
                   "0.6 = same person); otherwise another identity is tried, then the face is pixelated.")
@unswappable_options
@click.option("--seed", default=0, show_default=True, help="Base seed of the new identities.")
@click.option("--key", default=None, help="Secret: the same person gets the same synthetic person across photos.")
@click.option("--psi", default=0.7, show_default=True, help="Truncation of new identities (lower = more typical).")
@click.option("--blend", type=click.Choice(["alpha", "poisson"]), default="alpha", show_default=True,
              help="Paste new faces through a feathered oval (alpha), or solve them into the photo's lighting first "
                   "(poisson: better under side light and shadows).")
@click.option("--generator", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Generator (default: shipped models/deid64.safetensors).")
@click.option("--encoder", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Its encoder (default: shipped models/deid64-encoder.safetensors).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON report of every photo.")
@click.option("--preview", type=click.Path(path_type=Path),
              help="Before|after sheet with numbered boxes: a PNG file (one photo) or a folder (several).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def photo(inputs, out, mode, only, skip, min_face, det_threshold, upright_only, no_border, threshold, max_turn,
          max_cover_contrast, max_outside, min_swap_age, max_tries, seed, key, psi, blend, generator, encoder,
          report, preview, device) -> None:
    """Anonymise every face in photos. Output keeps each photo's size and format; EXIF (GPS, serials, the
    thumbnail), XMP, IPTC and comments are removed, ICC profiles kept. Inputs are never modified.

    \b
    Examples:
        deid photo samples/group.jpg -o group-anon.jpg --preview sheet.png --report report.json
        deid photo shoot/ -o shoot-anon/ --mode pixelate --report report.json
        deid photo press.jpg -o press-anon.jpg --skip 2
    """
    from ..detect import FaceDetector
    from ..device import resolve_device
    from ..io.images import write_image
    from ..photo import anonymize_photo, plan_outputs, preview_sheet
    from ..swap import load_swap_models

    cfg = PhotoConfig(mode=mode, only=_numbers(only), skip=_numbers(skip),
                      detect=detect_config(min_face, det_threshold, upright_only, no_border),
                      swap=SwapConfig(seed=seed, key=key, psi=psi, threshold=threshold, blend=blend,
                                        max_turn=max_turn, max_cover_contrast=max_cover_contrast,
                                        max_outside=max_outside, min_swap_age=min_swap_age, max_tries=max_tries))
    missing = [p for p in inputs if not p.exists()]
    pairs = plan_outputs([p for p in inputs if p.exists()], out)
    dev = resolve_device(device)
    detector = FaceDetector(cfg.detect, device=dev)
    models = load_swap_models(generator, encoder, device=dev) if mode == "swap" else None
    attr_judge = None
    if report is not None:
        try:  # the independent age/gender judge, when deid[eval] is installed: before/after per face in the report
            from ..eval.attributes import AttributeJudge

            attr_judge = AttributeJudge.default()
        except ImportError:
            click.echo("note: deid[eval] is not installed; the report has no independent age/gender check", err=True)
    reports, failed = [], len(missing)
    for p in missing:
        click.echo(f"error: {p}: no such file or folder", err=True)
    for src, dst in pairs:
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            rep, before, after = anonymize_photo(src, dst, detector=detector, config=cfg, models=models)
        except DeidError as exc:
            click.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        entry = rep.to_dict()
        if attr_judge is not None:
            from ..eval.attributes import attribute_check

            for face, check in zip(entry["faces"], attribute_check(attr_judge, before, after, [f.face for f in rep.faces])):
                face["judge"] = check
        reports.append(entry)
        counts = Counter(f.method for f in rep.faces if f.method != "kept")
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
        click.echo(f"{src} -> {dst}: {len(rep.faces)} face(s); anonymised: {summary}")
        if preview is not None:
            sheet_path = preview if len(pairs) == 1 and preview.suffix else preview / (dst.stem + "-preview.png")
            sheet_path.parent.mkdir(parents=True, exist_ok=True)
            write_image(preview_sheet(before, after, [f.face for f in rep.faces]), sheet_path)
    if report is not None:
        report.write_text(json.dumps(reports, indent=2) + "\n")
    if failed:
        raise click.ClickException(f"{failed} of {len(pairs) + len(missing)} input(s) failed")
