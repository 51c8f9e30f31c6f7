"""``deid faces``: table, JSON and preview output on a composed photo; one-line errors on bad input."""

from __future__ import annotations

import json
import re
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

from deid.cli.main import main
from deid.io.images import read_image, write_image


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory, scene_720p):
    """The 1280x720 seven-face scene saved as a PNG."""
    return write_image(scene_720p.image, tmp_path_factory.mktemp("cli") / "group.png")


def run(*args: str):
    return CliRunner().invoke(main, ["faces", *args, "--device", "cpu"])


def test_table_lists_every_face_numbered_largest_first(scene_file):
    result = run(str(scene_file))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"{scene_file}: 1280x720, 7 faces"
    assert "score" in lines[1] and "left eye" in lines[1] and "mouth right" in lines[1]
    rows = lines[2:]
    assert [int(r.split()[0]) for r in rows] == list(range(1, 8))
    widths = [float(r.split()[3]) - float(r.split()[1]) for r in rows]
    assert widths[0] == max(widths)
    assert all(len(re.findall(r"\(\s*[\d.]+, [\d.]+\)", r)) == 5 for r in rows), "five landmarks per row"


def test_json_output(scene_file):
    result = run(str(scene_file), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["file"] == str(scene_file) and (data["width"], data["height"]) == (1280, 720)
    assert [f["id"] for f in data["faces"]] == list(range(1, 8))
    for face in data["faces"]:
        assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and 0.9 <= face["score"] <= 1
    sizes = [max(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1]) for f in data["faces"]]
    assert sizes == sorted(sizes, reverse=True)


def test_preview_is_written_and_json_stays_parseable(scene_file, tmp_path):
    out = tmp_path / "preview.png"
    result = run(str(scene_file), "--json", "--preview", str(out))
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # the "preview written" note goes to stderr
    assert "preview written" in result.stderr
    preview, original = read_image(out), read_image(scene_file)
    assert preview.format == "PNG" and preview.size == original.size
    changed = np.any(preview.pixels != original.pixels, axis=2)
    assert 0.001 < changed.mean() < 0.1, "boxes and dots drawn, the rest untouched"


def test_preview_refuses_to_overwrite_the_photo(scene_file):
    before = scene_file.read_bytes()
    result = run(str(scene_file), "--preview", str(scene_file))
    assert result.exit_code == 1
    assert "overwrite the input" in result.output and "Traceback" not in result.output
    assert scene_file.read_bytes() == before


def test_photo_without_faces(tmp_path):
    path = write_image(np.full((120, 160, 3), 128, np.uint8), tmp_path / "wall.jpg")
    result = run(str(path))
    assert result.exit_code == 0
    assert result.stdout.strip() == f"{path}: 160x120, no faces found"
    assert json.loads(run(str(path), "--json").stdout)["faces"] == []


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _truncated_jpeg(tmp_path) -> bytes:
    rng = np.random.default_rng(0)
    full = write_image(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), tmp_path / "full.jpg")
    return full.read_bytes()[:4000]


@pytest.mark.parametrize("name, content, cause", [
    ("cut.jpg", "truncated", "truncated image file"),
    ("empty.png", b"", r"empty file \(0 bytes\)"),
    ("notes.jpg", b"not a photo at all\n" * 10, "not an image"),
    ("bomb.png", "bomb", "image too large"),
    ("missing.jpg", None, "no such file"),
    ("folder.jpg", "dir", "is a directory"),
])
def test_bad_input_gives_one_line_error(tmp_path, name, content, cause):
    path = tmp_path / name
    if content == "truncated":
        path.write_bytes(_truncated_jpeg(tmp_path))
    elif content == "bomb":
        path.write_bytes(_png_claiming(40000, 40000))
    elif content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    result = run(str(path))
    assert result.exit_code == 1
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    message = result.output.strip()
    assert "\n" not in message
    assert re.match(rf"Error: {re.escape(str(path))}: {cause}", message), message


@pytest.mark.parametrize("args, text", [(["--min-face", "2"], "min_face must be >= 4"),
                                        (["--threshold", "1.5"], "min_score must be in"),
                                        (["--device", "tpu9"], "unknown device")])
def test_bad_options_give_one_line_errors(scene_file, args, text):
    result = CliRunner().invoke(main, ["faces", str(scene_file), *args])
    assert result.exit_code == 1 and text in result.output and "Traceback" not in result.output


def test_upright_only_skips_the_turned_passes(tmp_path, astronaut):
    """A head turned 90 degrees is found by default, its landmarks measuring the turn; --upright-only (the faster,
    upright search) either misses it or, with the default thresholds' low R-net bar, takes it for an upright face."""
    import cv2

    turned = cv2.rotate(astronaut, cv2.ROTATE_90_CLOCKWISE)
    path = write_image(np.ascontiguousarray(turned), tmp_path / "lying.png")
    default, upright = run(str(path), "--json"), run(str(path), "--json", "--upright-only")
    assert default.exit_code == 0 and upright.exit_code == 0, default.output + upright.output
    def eyes(face: dict) -> np.ndarray:  # left eye -> right eye
        return np.subtract(face["landmarks"][1], face["landmarks"][0])

    (face,) = json.loads(default.stdout)["faces"]
    dx, dy = eyes(face)
    assert abs(dy) > 3 * abs(dx)  # eyes one above the other: the turned pass's detection
    for face in json.loads(upright.stdout)["faces"]:
        dx, dy = eyes(face)
        assert abs(dy) < abs(dx)
