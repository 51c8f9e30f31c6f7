"""``deid eval anonymization`` and ``deid eval fid``: the measurement toolkit (needs ``deid[eval]``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
from tqdm import tqdm

from ..errors import InputError


def _api():
    """``deid.eval``, or a one-line error naming the missing extra."""
    try:
        from .. import eval as api
    except ImportError as exc:
        raise click.ClickException(f"deid eval needs the evaluation extra: pip install 'deid[eval]' ({exc})") from exc
    return api


def _bar(desc: str, unit: str) -> tuple[Callable[[int, int], None], tqdm]:
    """A tqdm bar on stderr (hidden when stderr is not a terminal) and the progress callback that drives it."""
    bar = tqdm(total=0, desc=desc, unit=unit, dynamic_ncols=True, disable=None, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return progress, bar


def _need_dir(path: Path) -> None:
    if not path.is_dir():
        raise InputError(path, "not a directory")


@click.group(name="eval")
def eval_group() -> None:
    """Measure anonymisation (identity, attributes, detection, leaks) and realism (FID, KID)."""


@eval_group.command("anonymization")
@click.option("--original", type=click.Path(path_type=Path), required=True, help="Folder of original photos.")
@click.option("--anonymized", type=click.Path(path_type=Path), required=True,
              help="Folder of their anonymised copies (same relative paths and sizes).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the per-face report as JSON here.  [default: no file]")
@click.option("--threshold", default=0.6, show_default=True,
              help="Identity distance under which a face counts as re-identified (dlib's rule).")
@click.option("--leak-level", default=2.0, show_default=True,
              help="Mean absolute pixel change (0-255) under which a face counts as left unchanged.")
@click.option("--redetector", type=click.Choice(["hog", "cnn"]), default="hog", show_default=True,
              help="Independent detector for the re-detection rate: dlib HOG or dlib CNN (MMOD, slower).")
@click.option("--min-face", default=16, show_default=True, help="Smallest face to find in the originals (pixels).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (face detection).")
def anonymization(original: Path, anonymized: Path, report_path: Path | None, threshold: float, leak_level: float,
                  redetector: str, min_face: int, device: str) -> None:
    """Compare ORIGINAL photos with their ANONYMIZED copies, face by face, and print one summary row.

    Faces are detected in the originals and measured at the same boxes in both images: re-identification rate
    (dlib descriptor distance below --threshold), gender agreement and age error (dlib-models age/gender networks),
    share still found by an independent detector, and faces left unchanged (leaks).

    \b
    Example:
        deid eval anonymization --original photos --anonymized photos-anon --report report.json
    """
    from ..config import DetectConfig
    from ..device import resolve_device

    _need_dir(original)
    _need_dir(anonymized)
    api = _api()
    judges = api.Judges.load(device=resolve_device(device), detect=DetectConfig(min_face=min_face),
                             redetector=redetector)
    progress, bar = _bar("evaluate", "img")
    try:
        report = api.evaluate_anonymization(original, anonymized, judges=judges, threshold=threshold,
                                            leak_level=leak_level, progress=progress)
    finally:
        bar.close()
    for rel, why in report.skipped:
        click.echo(f"skipped {rel}: {why}", err=True)
    click.echo(api.format_table({anonymized.name or str(anonymized): report}))
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        click.echo(f"report written to {report_path}", err=True)


@eval_group.command("fid")
@click.option("--real", type=click.Path(path_type=Path), required=True, help="Folder of real images.")
@click.option("--fake", type=click.Path(path_type=Path), required=True, help="Folder of generated images.")
@click.option("--batch", default=32, show_default=True, help="Images per Inception forward pass.")
@click.option("--kid-subsets", default=100, show_default=True, help="Random subsets for KID.")
@click.option("--kid-subset-size", default=1000, show_default=True, help="Largest KID subset.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def fid(real: Path, fake: Path, batch: int, kid_subsets: int, kid_subset_size: int, device: str) -> None:
    """FID and KID between the images of REAL and FAKE (Inception-v3 pool3, the reference FID network).

    Images of any size are resized to 299 px as the reference code does. FID needs thousands of images per side
    to be comparable with published numbers; KID is unbiased and usable with fewer.

    \b
    Example:
        deid eval fid --real data/faces --fake runs/g64/samples-50k
    """
    from ..device import resolve_device

    _need_dir(real)
    _need_dir(fake)
    api = _api()
    inception = api.InceptionFeatures.load(device=resolve_device(device))
    sets = {}
    for name, folder in (("real", real), ("fake", fake)):
        progress, bar = _bar(name, "img")
        try:
            sets[name] = api.image_folder_features(folder, inception, batch=batch, progress=progress)
        finally:
            bar.close()
        for rel, why in sets[name].skipped:
            click.echo(f"skipped {folder / rel}: {why}", err=True)
    a, b = sets["real"].features, sets["fake"].features
    kid_mean, kid_std = api.kid(a, b, num_subsets=kid_subsets, max_subset_size=kid_subset_size)
    click.echo(f"FID  {api.fid(a, b):.3f}")
    click.echo(f"KID  {kid_mean:.5f} ± {kid_std:.5f}")
    click.echo(f"({len(a)} real, {len(b)} fake images)")
