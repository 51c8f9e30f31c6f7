"""``deid faces``: list the faces of a photo (numbering used by ``--only``/``--skip``)."""

from __future__ import annotations

import json

import click

from ..config import DetectConfig
from ..detect import FaceDetector, detect_faces
from ..device import resolve_device
from ..io.images import check_output_path, read_image, write_image
from ..io.preview import draw_faces
from ..types import Face
from .photo import detect_config

_LANDMARK_NAMES = ("left eye", "right eye", "nose", "mouth left", "mouth right")


@click.command()
@click.argument("photo", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write this image (PNG recommended) with numbered boxes and landmark dots.")
@click.option("--min-face", type=int, default=DetectConfig.min_face, show_default=True,
              help="Smallest face to find: box side in pixels of the photo.")
@click.option("--threshold", type=float, default=DetectConfig.min_score, show_default=True,
              help="Minimum detection score, in [0, 1).")
@click.option("--upright-only", is_flag=True,
              help="Skip the passes that look for heads tilted beyond ~35 degrees (as `deid photo --upright-only`).")
@click.option("--no-border", is_flag=True,
              help="Skip the passes that look for faces cut by the photo's edge (as `deid photo --no-border`).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def faces(photo: str, as_json: bool, preview: str | None, min_face: int, threshold: float, upright_only: bool,
          no_border: bool, device: str) -> None:
    """List the faces found in PHOTO, numbered from 1, largest first.

    Each face has its box (x0, y0, x1, y1 in pixels of the photo as displayed, after EXIF rotation), its score and
    five landmarks (eyes, nose, mouth corners; "left" is the left of the image).

    \b
    Examples:
      deid faces group.jpg
      deid faces group.jpg --json > faces.json
      deid faces group.jpg --preview group-faces.png --min-face 24
      deid faces crowd.png --threshold 0.95 --device cpu
    """
    if preview is not None:
        check_output_path(photo, preview)
    image = read_image(photo)
    config = detect_config(min_face, threshold, upright_only, no_border)
    found = detect_faces(image.pixels, FaceDetector(config, device=resolve_device(device)))
    if as_json:
        click.echo(json.dumps(_as_json(photo, image.width, image.height, found), indent=2))
    else:
        click.echo(_as_table(photo, image.width, image.height, found))
    if preview is not None:
        write_image(draw_faces(image.pixels, found), preview)
        click.echo(f"preview written to {preview}", err=as_json)


def _as_json(photo: str, width: int, height: int, found: list[Face]) -> dict:
    return {"file": photo, "width": width, "height": height,
            "faces": [{"id": i, **face.to_dict()} for i, face in enumerate(found, start=1)]}


def _as_table(photo: str, width: int, height: int, found: list[Face]) -> str:
    """One header line, then one row per face: number, box, score and the five landmarks."""
    count = f"{len(found)} face{'s' if len(found) != 1 else ''}" if found else "no faces found"
    lines = [f"{photo}: {width}x{height}, {count}"]
    if not found:
        return lines[0]
    head = f"{'#':>3}  {'x0':>7} {'y0':>7} {'x1':>7} {'y1':>7}  {'score':>6}"
    head += "".join(f"  {name:>16}" for name in _LANDMARK_NAMES)
    lines.append(head)
    for i, face in enumerate(found, start=1):
        x0, y0, x1, y1 = (float(v) for v in face.box)
        row = f"{i:>3}  {x0:7.1f} {y0:7.1f} {x1:7.1f} {y1:7.1f}  {face.score:6.3f}"
        row += "".join(f"  {f'({x:.1f}, {y:.1f})':>16}" for x, y in face.landmarks.astype(float))
        lines.append(row)
    return "\n".join(lines)
