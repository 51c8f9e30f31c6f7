"""``deid dataset``: sanitise a folder tree of photos into a mirrored tree, resumably."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import click

from ..config import PhotoConfig, SwapConfig
from .photo import _numbers, detect_config
from .photo import photo as _photo_command

# Options taken over from ``deid photo`` (the same click objects: same flags, defaults, help and meaning).
SHARED_PHOTO_OPTIONS = ("mode", "only", "skip", "min_face", "det_threshold", "upright_only", "no_border",
                        "threshold", "max_turn", "max_cover_contrast", "max_outside", "min_swap_age", "max_tries", "seed", "key", "psi", "generator",
                        "encoder", "device")


def _with_photo_options(command: click.Command) -> click.Command:
    """Insert the anonymisation options of ``deid photo`` after the command's arguments."""
    by_name = {p.name: p for p in _photo_command.params}
    shared = [copy.copy(by_name[name]) for name in SHARED_PHOTO_OPTIONS]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    own = [p for p in command.params if not isinstance(p, click.Argument)]
    command.params = arguments + shared + own
    return command


class _ProgressBars:
    """The library's ``progress(stage, done, total)`` shown as one tqdm bar per stage (images/s and ETA)."""

    _TITLES = {"identities": "finding identities", "anonymise": "anonymising"}

    def __init__(self):
        self._bar = None
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total, desc=self._TITLES.get(stage, stage), unit="img", file=sys.stderr,
                             dynamic_ncols=True)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@_with_photo_options
@click.command()
@click.argument("in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes anonymising in parallel; each loads the detector and models once.")
@click.option("--copy-other", is_flag=True,
              help="Copy files that are not images into OUT_DIR (default: skip and count them). Files holding "
                   "image data under another suffix (GIF, HEIC, a JPEG named .dat) are never copied.")
@click.option("--force", is_flag=True, help="Redo every file, even those an earlier run finished.")
@click.option("--dry-run", is_flag=True, help="List what would be done to each file; write nothing.")
def dataset(in_dir, out_dir, workers, copy_other, force, dry_run, mode, only, skip, min_face, det_threshold,
            upright_only, no_border, threshold, max_turn, max_cover_contrast, max_outside, min_swap_age, max_tries, seed,
            key, psi, generator, encoder, device) -> None:
    """Anonymise every photo under IN_DIR into the mirrored tree OUT_DIR, with the options of `deid photo`.

    Finished files are recorded in OUT_DIR/.deid-journal.jsonl: after Ctrl-C or a crash, the same command goes on
    where it stopped (files finished with other settings are redone). Files that cannot be read are listed in
    OUT_DIR/errors.csv (the run goes on; exit status 1); the counts go to OUT_DIR/summary.json. With --key and
    --mode swap, the same person gets the same synthetic person in every photo of the run.

    \b
    Examples:
        deid dataset photos/ photos-anon/ --workers 4
        deid dataset photos/ photos-anon/ --mode blur --copy-other --dry-run
        deid dataset photos/ photos-anon/ --key "$DEID_KEY"
    """
    from ..dataset import DatasetConfig, sanitize_dataset
    from ..device import resolve_device

    photo_cfg = PhotoConfig(mode=mode, only=_numbers(only), skip=_numbers(skip),
                            detect=detect_config(min_face, det_threshold, upright_only, no_border),
                            swap=SwapConfig(seed=seed, key=key, psi=psi, threshold=threshold, max_turn=max_turn,
                                            max_cover_contrast=max_cover_contrast, max_outside=max_outside,
                                            min_swap_age=min_swap_age,
                                            max_tries=max_tries))
    cfg = DatasetConfig(in_dir=in_dir, out_dir=out_dir, photo=photo_cfg, workers=workers, copy_other=copy_other,
                        force=force, dry_run=dry_run, generator=generator, encoder=encoder,
                        device=str(resolve_device(device)))
    bars = _ProgressBars()
    try:
        summary = sanitize_dataset(cfg, progress=bars)
    finally:
        bars.close()
    if dry_run:
        _echo_plan(summary)
        return
    _echo_summary(summary)
    if summary.errors:
        raise click.ClickException(f"{len(summary.errors)} file(s) failed; see {out_dir / 'errors.csv'}")


def _echo_plan(summary) -> None:
    for p in summary.plan:
        note = f"  ({p.note})" if p.note and p.action != "skip" else ""
        click.echo(f"{p.action:<9} {p.path}{note}")
    actions = {}
    for p in summary.plan:
        actions[p.action] = actions.get(p.action, 0) + 1
    click.echo("dry run, nothing written: " + (", ".join(f"{k} {v}" for k, v in sorted(actions.items())) or "no files"))


def _echo_summary(s) -> None:
    """The summary as a two-column table."""
    def counts(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

    rows = [
        ("images", f"{s.images} (anonymised now {s.processed}, finished earlier {s.resumed}, "
                   f"redone {s.redone}, failed {len(s.errors)})"),
        ("faces found", str(s.faces_found)),
        ("faces swapped", str(s.faces_swapped)),
        ("methods", counts(s.methods)),
        ("fallbacks", counts(s.fallbacks)),
        ("errors", str(len(s.errors))),
        ("non-images", f"skipped {s.other_skipped}, copied {s.other_copied}"),
    ]
    if s.tries_histogram:
        rows.append(("guard tries", counts({f"{k} tries": v for k, v in s.tries_histogram.items()})))
    if s.distance_min is not None:
        rows.append(("identity distance", f"min {s.distance_min:.3f}, median {s.distance_median:.3f}"))
    if s.clusters is not None:
        rows.append(("identity clusters", str(s.clusters)))
    rows.append(("time", f"{s.seconds:.1f} s ({s.images_per_s:.2f} images/s)"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
    for path, reason in s.errors[:10]:
        click.echo(f"error: {path}: {reason}", err=True)
    if len(s.errors) > 10:
        click.echo(f"... and {len(s.errors) - 10} more in errors.csv", err=True)
