"""``deid photo`` with the obscuring modes: every face changed, selection, metadata, safety of inputs, batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deid.cli.main import main
from deid.config import PhotoConfig
from deid.obscure import obscure_face
from deid.photo import anonymize_faces


def _region_change(a: np.ndarray, b: np.ndarray, box) -> float:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return float(np.abs(a[y0:y1, x0:x1].astype(float) - b[y0:y1, x0:x1].astype(float)).mean())


@pytest.mark.parametrize("mode", ["blur", "pixelate", "solid"])
def test_every_face_region_changes(scene_720p, scene_720p_faces, mode):
    img = scene_720p.image
    before = img.copy()
    out, outcomes = anonymize_faces(img, scene_720p_faces, PhotoConfig(mode=mode))
    assert np.array_equal(img, before), "input array modified"
    assert len(outcomes) == len(scene_720p_faces) == 7
    for o in outcomes:
        assert o.method == mode
        # the face interior loses its detail: strong change for every size of face
        assert _region_change(img, out, o.face.box) > 4, (mode, o.index, o.face.size)
    # far from faces nothing changes
    assert np.array_equal(out[690:, :100], img[690:, :100])


def test_obscured_faces_lose_detail(astronaut, astronaut_face):
    out = obscure_face(astronaut, astronaut_face, "blur")
    x0, y0, x1, y1 = (int(v) for v in astronaut_face.box)
    lap_before = np.abs(np.diff(astronaut[y0:y1, x0:x1].astype(float), axis=1)).mean()
    lap_after = np.abs(np.diff(out[y0:y1, x0:x1].astype(float), axis=1)).mean()
    assert lap_after < lap_before / 3


def test_only_and_skip_select_by_number(scene_720p, scene_720p_faces):
    img = scene_720p.image
    out, outcomes = anonymize_faces(img, scene_720p_faces, PhotoConfig(mode="solid", skip=(2,)))
    assert [o.method for o in outcomes][:3] == ["solid", "kept", "solid"]
    assert _region_change(img, out, scene_720p_faces[1].box) < 1.0
    out, outcomes = anonymize_faces(img, scene_720p_faces, PhotoConfig(mode="solid", only=(1, 3)))
    assert [o.index for o in outcomes if o.method == "solid"] == [1, 3]


def _jpeg_with_metadata(pixels: np.ndarray, path) -> None:
    """A JPEG carrying GPS, a camera serial number and a comment (thumbnails: tests/test_io_images.py)."""
    im = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0xA431] = "SERIAL-123456"  # BodySerialNumber (in the Exif IFD, but PIL stores it here too)
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 5.0), 3: "E", 4: (4.0, 53.0, 40.0)})  # GPS
    im.save(path, "JPEG", exif=exif.tobytes(), comment=b"secret caption", quality=92)


def test_cli_photo_end_to_end(scene_720p, tmp_path):
    src = tmp_path / "group.jpg"
    _jpeg_with_metadata(scene_720p.image, src)
    original_bytes = src.read_bytes()
    assert b"SERIAL-123456" in original_bytes and b"secret caption" in original_bytes
    out, sheet, report = tmp_path / "anon.jpg", tmp_path / "sheet.png", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["photo", str(src), "-o", str(out), "--preview", str(sheet), "--report", str(report),
                                  "--mode", "pixelate", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert src.read_bytes() == original_bytes  # input untouched
    data = out.read_bytes()
    assert b"SERIAL-123456" not in data and b"secret caption" not in data and b"Exif" not in data
    with Image.open(out) as im:
        assert im.size == (1280, 720) and im.format == "JPEG"
    rep = json.loads(report.read_text())
    assert len(rep) == 1 and len(rep[0]["faces"]) == 7 and all(f["method"] == "pixelate" for f in rep[0]["faces"])
    assert set(rep[0]["timings_ms"]) == {"read", "detect", "anonymize", "write"}
    # the independent age/gender judge (deid[eval]) on each face before and after
    for f in rep[0]["faces"]:
        assert set(f["judge"]) == {"before", "after"} and f["judge"]["before"]["gender"] in ("female", "male")
        assert 0 < f["judge"]["before"]["age"] <= 80
    with Image.open(sheet) as im:
        assert im.size[0] > 2 * 1280 and im.size[1] == 720


def test_cli_refuses_out_equals_in(scene_720p, tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(scene_720p.image).save(src)
    before = src.read_bytes()
    r = CliRunner().invoke(main, ["photo", str(src), "-o", str(src), "--mode", "blur", "--device", "cpu"])
    assert r.exit_code != 0 and "overwrite" in r.output
    assert src.read_bytes() == before


def test_cli_batch_goes_on_after_bad_files(scene_720p, tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(scene_720p.image[:360, :640]).save(d / "sub" / "ok.png")
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("not an image")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["photo", str(d), "-o", str(out), "--mode", "blur", "--device", "cpu"])
    assert r.exit_code == 1
    assert (out / "sub" / "ok.png").is_file()
    lines = [l for l in r.output.splitlines() if l.startswith("error:")]
    assert len(lines) == 2 and any("empty.jpg" in l for l in lines) and any("notes.jpg" in l for l in lines)
    assert "Traceback" not in r.output
    assert not (out / "empty.jpg").exists()


def test_cli_photo_swap_with_poisson_blend(astronaut, tmp_path):
    """--blend poisson reaches the swap; every face is swapped or falls back, never left as it was."""
    src = tmp_path / "astro.png"
    Image.fromarray(astronaut).save(src)
    out, report = tmp_path / "anon.png", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["photo", str(src), "-o", str(out), "--blend", "poisson", "--report", str(report),
                                  "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rep = json.loads(report.read_text())
    assert [f["method"] for f in rep[0]["faces"]][0] in ("swap", "pixelate", "solid")
    with Image.open(out) as im:
        assert not np.array_equal(np.asarray(im), astronaut)
    r = CliRunner().invoke(main, ["photo", str(src), "-o", str(tmp_path / "x.png"), "--blend", "feather"])
    assert r.exit_code != 0 and "feather" in r.output


def test_cli_max_tries_bounds_the_guard(astronaut, tmp_path):
    """--max-tries reaches the identity guard: with a bar no swap can pass (--threshold 5) the face is pixelated
    after exactly that many tries; 0 is refused by name; ``deid dataset`` and ``deid video`` take the option too."""
    src = tmp_path / "astro.png"
    Image.fromarray(astronaut).save(src)
    out, report = tmp_path / "anon.png", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["photo", str(src), "-o", str(out), "--threshold", "5", "--max-tries", "2",
                                  "--report", str(report), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    face = json.loads(report.read_text())[0]["faces"][0]
    assert face["method"] in ("pixelate", "solid") and face["swap"]["tries"] == 2
    assert face["swap"].get("fallback_reason", "guard") == "guard"
    r = CliRunner().invoke(main, ["photo", str(src), "-o", str(tmp_path / "x.png"), "--max-tries", "0"])
    assert r.exit_code == 2 and "--max-tries" in r.output and not (tmp_path / "x.png").exists()
    for command in ("dataset", "video"):
        assert "--max-tries" in CliRunner().invoke(main, [command, "--help"]).output


def test_faces_apart_are_swapped_in_threads_with_the_same_result(scene_720p, scene_720p_faces, tiny_swap_models):
    """Faces whose regions do not touch are swapped side by side (one torch thread each); each sees exactly the
    pixels it would one by one, so the photo and the report are the same as one face at a time on one thread."""
    import torch

    from deid.photo import _apart, footprint

    img, faces = scene_720p.image, scene_720p_faces
    groups = _apart(img.shape[:2], list(range(len(faces))), faces, tiny_swap_models)
    assert len(groups) >= 3, "the scene's faces should be apart"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, one_rep = anonymize_faces(img, faces, PhotoConfig(workers=1), tiny_swap_models)
        torch.set_num_threads(2)
        two, two_rep = anonymize_faces(img, faces, PhotoConfig(workers=2), tiny_swap_models)
        assert torch.get_num_threads() == 2, "thread count restored"
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(one, two)
    assert [(o.method, o.swap.tries, o.swap.seed) for o in one_rep] == [(o.method, o.swap.tries, o.swap.seed)
                                                                       for o in two_rep]
    # every pixel a face changed lies inside its footprint
    changed = np.argwhere(np.any(one != img, axis=2))
    inside = np.zeros(img.shape[:2], bool)
    for f in faces:
        x0, y0, x1, y1 = footprint(img.shape[:2], f, tiny_swap_models)
        inside[y0:y1, x0:x1] = True
    assert len(changed) and inside[changed[:, 0], changed[:, 1]].all()


def test_cli_photo_pixelates_a_face_cut_by_the_edge(astronaut, astronaut_face, tmp_path):
    """A face cut in half by the photo's edge is found (border passes) and pixelated without a swap
    (``"fallback_reason": "cut"``); --no-border leaves it to MTCNN alone, which misses it (so the photo is left
    untouched: the reason the border passes exist); --max-outside 1 lets the swap try it."""
    from conftest import compose_scene

    scene = compose_scene(astronaut, astronaut_face, (480, 640), [(639, 200, 150, 0)], seed=3)
    src = tmp_path / "edge.png"
    Image.fromarray(scene.image).save(src)

    def anonymise(name: str, *extra: str) -> tuple[np.ndarray, list[dict]]:
        out, report = tmp_path / f"{name}.png", tmp_path / f"{name}.json"
        r = CliRunner().invoke(main, ["photo", str(src), "-o", str(out), "--report", str(report), "--device", "cpu",
                                      *extra])
        assert r.exit_code == 0, r.output
        with Image.open(out) as im:
            return np.asarray(im.convert("RGB")), json.loads(report.read_text())[0]["faces"]

    out, faces = anonymise("default")
    (face,) = faces
    assert face["method"] in ("pixelate", "solid") and face["swap"]["fallback_reason"] == "cut"
    assert face["swap"]["tries"] == 0 and face["box"][2] > 640
    assert _region_change(out, scene.image, [face["box"][0], face["box"][1], 639, face["box"][3]]) > 10
    out, faces = anonymise("no-border", "--no-border")
    assert faces == [] and np.array_equal(out, scene.image)
    _, faces = anonymise("tried", "--max-outside", "1")
    swap = faces[0]["swap"]
    assert swap["tries"] >= 1 and swap.get("fallback_reason", "guard") == "guard"
    # --min-swap-age above the face's reading: pixelated without a try, as a baby would be
    out, faces = anonymise("young", "--max-outside", "1", "--min-swap-age", "150")
    assert faces[0]["swap"]["fallback_reason"] == "young" and faces[0]["swap"]["tries"] == 0
    assert faces[0]["method"] in ("pixelate", "solid")
