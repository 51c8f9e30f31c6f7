"""``deid dataset``: mirrored tree, bad files, resuming (also after kill -9), consistent keyed pseudonyms without
biometric data on disk, and worker processes. Blur mode for the CLI, tiny random swap models for the swap."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import compose_scene
from PIL import Image

import deid.swap as swap_module
from deid.cli.dataset import SHARED_PHOTO_OPTIONS
from deid.cli.dataset import dataset as dataset_command
from deid.cli.main import main
from deid.cli.photo import photo as photo_command
from deid.config import DetectConfig, PhotoConfig, SwapConfig
from deid.dataset import ERRORS_NAME, JOURNAL_NAME, SUMMARY_NAME, DatasetConfig, cluster_identities, sanitize_dataset
from deid.errors import ConfigError
from deid.eval.identity import IdentityJudge
from deid.invert import save_encoder
from deid.io.weights import save_generator
from deid.swap import SwapModels

FAST = ["--mode", "blur", "--min-face", "40", "--device", "cpu"]  # min-face 40: no small-face tiles, fast detection
FAST_DETECT = DetectConfig(min_face=40)
RUN_FILES = {JOURNAL_NAME, SUMMARY_NAME, ERRORS_NAME}


@pytest.fixture(scope="module")
def tiny_models(tiny_swap_models):
    return tiny_swap_models


def _scene(astronaut, astronaut_face, i: int) -> np.ndarray:
    """``[240, 320, 3]`` uint8: one or two astronaut faces of 60..90 px (varied per ``i``)."""
    placements = [(100 + 7 * (i % 5), 110, 70 + 4 * (i % 5), -8 + 4 * (i % 5))]
    if i % 2:
        placements.append((245, 120, 60, 5))
    return compose_scene(astronaut, astronaut_face, (240, 320), placements, seed=i).image


def _make_tree(root, astronaut, astronaut_face, n: int, exts=(".jpg", ".png")) -> list[str]:
    names = []
    for i in range(n):
        rel = f"{'' if i % 3 == 0 else f'd{i % 3}/'}img{i:02d}{exts[i % len(exts)]}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_scene(astronaut, astronaut_face, i)).save(root / rel)
        names.append(rel)
    return names


def _files(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _errors(out) -> dict[str, str]:
    with open(out / ERRORS_NAME, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "reason"]
    return {r[0]: r[1] for r in rows[1:]}


def test_options_are_those_of_deid_photo():
    photo = {p.name: p for p in photo_command.params}
    mine = {p.name: p for p in dataset_command.params}
    for name in SHARED_PHOTO_OPTIONS:
        a, b = photo[name], mine[name]
        assert (a.opts, a.default, a.help, type(a.type)) == (b.opts, b.default, b.help, type(b.type)), name
    assert {"workers", "copy_other", "force", "dry_run"} <= set(mine)


def test_cluster_identities_joins_by_centroid_distance():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(128), rng.standard_normal(128)
    a, b = 0.6 * a / np.linalg.norm(a), 0.6 * b / np.linalg.norm(b)  # two people ~0.85 apart
    noise = lambda: 0.05 * rng.standard_normal(128) / np.sqrt(128)  # noqa: E731
    emb = np.stack([a + noise(), b + noise(), a + noise(), a + noise(), b + noise()])
    assert cluster_identities(emb).tolist() == [0, 1, 0, 0, 1]
    assert cluster_identities(emb, max_distance=0.01).tolist() == [0, 1, 2, 3, 4]
    assert cluster_identities(np.zeros((0, 128))).shape == (0,)


def test_cli_mirrors_tree_counts_and_copies_other_files(tmp_path, astronaut, astronaut_face):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _make_tree(src, astronaut, astronaut_face, 5, exts=(".jpg", ".png", ".webp", ".tif", ".bmp"))
    (src / "d1" / "notes.txt").write_text("caption")
    Image.fromarray(astronaut).save(src / "d2" / "anim.gif")  # a photo deid cannot anonymise
    (src / "summary.json").write_text("{}")  # clashes with the run's own summary
    r = CliRunner().invoke(main, ["dataset", str(src), str(out), *FAST])
    assert r.exit_code == 0, r.output
    assert set(_files(out)) == set(names) | RUN_FILES
    for rel in names:
        with Image.open(src / rel) as a, Image.open(out / rel) as b:
            assert (a.format, a.size) == (b.format, b.size)
    s = json.loads((out / SUMMARY_NAME).read_text())
    assert (s["images"], s["processed"], s["other_skipped"], s["other_copied"], s["errors"]) == (5, 5, 3, 0, [])
    assert s["faces_found"] == s["methods"]["blur"] == 7 and s["faces_swapped"] == 0
    assert "faces found" in r.output and "images/s" in r.output
    # second run: images are finished; --copy-other copies the text file and refuses the GIF and the clash
    r = CliRunner().invoke(main, ["dataset", str(src), str(out), *FAST, "--copy-other"])
    assert r.exit_code == 1 and "2 file(s) failed" in r.output
    assert (out / "d1" / "notes.txt").read_text() == "caption" and not (out / "d2" / "anim.gif").exists()
    errors = _errors(out)
    assert set(errors) == {"d2/anim.gif", "summary.json"} and "GIF" in errors["d2/anim.gif"]
    s = json.loads((out / SUMMARY_NAME).read_text())
    assert (s["processed"], s["resumed"], s["other_copied"], s["faces_found"]) == (0, 5, 1, 7)


def _png_bomb(path) -> None:
    """A 30000x30000 grayscale PNG header (900 Mpx) with a tiny payload: refused before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_bad_files_get_one_row_each_and_the_run_goes_on(tmp_path, astronaut, astronaut_face):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _make_tree(src, astronaut, astronaut_face, 2)
    good = (src / names[0]).read_bytes()
    (src / "empty.jpg").write_bytes(b"")
    (src / "truncated.jpg").write_bytes(good[: len(good) // 2])
    png = bytearray((src / names[1]).read_bytes())
    png[200:260] = bytes(60)  # zeroes in the compressed stream: a corrupt PNG
    (src / "corrupt.png").write_bytes(bytes(png))
    (src / "text.jpg").write_text("not a photo at all")
    _png_bomb(src / "bomb.png")
    # PNG data under a .jpg name: decoded by content, written as the JPEG its name asks for
    (src / "png-named.jpg").write_bytes((src / names[1]).read_bytes())
    r = CliRunner().invoke(main, ["dataset", str(src), str(out), *FAST])
    assert r.exit_code == 1, r.output
    errors = _errors(out)
    assert set(errors) == {"empty.jpg", "truncated.jpg", "corrupt.png", "text.jpg", "bomb.png"}
    assert "empty" in errors["empty.jpg"] and "truncated" in errors["truncated.jpg"]
    assert "corrupt" in errors["corrupt.png"] and "not an image" in errors["text.jpg"]
    assert "too large" in errors["bomb.png"]
    assert all(src.as_posix() not in reason for reason in errors.values())  # relative path column, short reason
    with Image.open(out / "png-named.jpg") as im:
        assert im.format == "JPEG"
    assert set(_files(out)) == set(names) | {"png-named.jpg"} | RUN_FILES
    assert "Traceback" not in r.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file without read permission")
def test_unreadable_file_is_reported(tmp_path, astronaut, astronaut_face):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _make_tree(src, astronaut, astronaut_face, 2)
    os.chmod(src / names[1], 0)
    try:
        r = CliRunner().invoke(main, ["dataset", str(src), str(out), *FAST])
    finally:
        os.chmod(src / names[1], 0o644)
    assert r.exit_code == 1
    assert "permission denied" in _errors(out)[names[1]]


def test_dry_run_lists_and_writes_nothing(tmp_path, astronaut, astronaut_face):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _make_tree(src, astronaut, astronaut_face, 3)
    (src / "notes.txt").write_text("x")
    r = CliRunner().invoke(main, ["dataset", str(src), str(out), *FAST, "--dry-run"])
    assert r.exit_code == 0, r.output
    assert not out.exists()
    for rel in names:
        assert f"anonymise {rel}" in r.output
    assert "skip      notes.txt" in r.output and "dry run, nothing written" in r.output


def test_resume_skips_finished_and_redoes_on_changed_settings(tmp_path, astronaut, astronaut_face, caplog):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _make_tree(src, astronaut, astronaut_face, 4)
    cfg = DatasetConfig(src, out, photo=PhotoConfig(mode="blur", detect=FAST_DETECT))
    first = sanitize_dataset(cfg)
    assert (first.processed, first.resumed, first.faces_found) == (4, 0, 6)
    stamp = (out / "img00.jpg").stat().st_mtime_ns
    again = sanitize_dataset(cfg)
    assert (again.processed, again.resumed, again.redone, again.faces_found) == (0, 4, 0, 6)
    assert (out / "img00.jpg").stat().st_mtime_ns == stamp
    with caplog.at_level(logging.WARNING, logger="deid.dataset"):
        changed = sanitize_dataset(DatasetConfig(src, out, photo=PhotoConfig(mode="pixelate", detect=FAST_DETECT)))
    assert (changed.processed, changed.redone, changed.methods) == (4, 4, {"pixelate": 6})
    assert "redoing 4 file(s) finished by an earlier run: settings changed 4" in caplog.text
    (out / names[1]).unlink()  # a lost output is made again
    (src / names[3]).write_bytes((src / names[1]).read_bytes())  # a changed input is redone
    redo = sanitize_dataset(DatasetConfig(src, out, photo=PhotoConfig(mode="pixelate", detect=FAST_DETECT)))
    assert (redo.processed, redo.resumed) == (2, 2)
    forced = sanitize_dataset(DatasetConfig(src, out, photo=PhotoConfig(mode="pixelate", detect=FAST_DETECT),
                                            force=True))
    assert (forced.processed, forced.resumed, forced.redone) == (4, 0, 0)


def test_refuses_out_dir_holding_in_dir(tmp_path):
    (tmp_path / "out" / "in").mkdir(parents=True)
    with pytest.raises(ConfigError, match="must not be IN_DIR or contain it"):
        sanitize_dataset(DatasetConfig(tmp_path / "out" / "in", tmp_path / "out", photo=PhotoConfig(mode="blur")))


def _deid(*args: str) -> list[str]:
    return [sys.executable, "-c", "from deid.cli.main import main; main()", *args]


def _children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (Linux ``/proc``)."""
    try:
        text = open(f"/proc/{pid}/task/{pid}/children").read()
    except OSError:
        return []
    return [int(v) for v in text.split()]


def _all_gone(pids: list[int], timeout: float) -> bool:
    """Whether every process in ``pids`` ends (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_kill_9_then_rerun_equals_an_uninterrupted_run(tmp_path, astronaut, astronaut_face):
    src = tmp_path / "in"
    names = _make_tree(src, astronaut, astronaut_face, 30)
    (src / "empty.jpg").write_bytes(b"")
    out, ref = tmp_path / "out", tmp_path / "ref"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # killed with two worker processes, resumed and compared with one: the workers must not change a byte
    proc = subprocess.Popen(_deid("dataset", str(src), str(out), *FAST, "--workers", "2"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / JOURNAL_NAME
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.002)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = journal.read_bytes().count(b"\n")
    assert proc.returncode == -signal.SIGKILL and 4 <= done_before < 31, "the kill did not land mid-run"
    assert len(workers) >= 2 and _all_gone(workers, timeout=10), "worker processes outlived the killed run"
    with open(journal, "ab") as f:  # as if killed while writing a line
        f.write(b'{"path": "img0')
    (out / ".img05.jpg.0123abcd.tmp").write_bytes(b"half")  # as if killed while writing an image
    rerun = subprocess.run(_deid("dataset", str(src), str(out), *FAST), env=env, capture_output=True, text=True)
    assert rerun.returncode == 1, rerun.stderr  # empty.jpg
    whole = subprocess.run(_deid("dataset", str(src), str(ref), *FAST), env=env, capture_output=True, text=True)
    assert whole.returncode == 1, whole.stderr
    resumed, reference = _files(out), _files(ref)
    assert set(resumed) == set(reference) == set(names) | RUN_FILES
    assert all(resumed[rel] == reference[rel] for rel in names)
    assert resumed[ERRORS_NAME] == reference[ERRORS_NAME]
    s = json.loads(resumed[SUMMARY_NAME])
    assert s["resumed"] >= done_before - 1 and s["processed"] + s["resumed"] == 30  # the error line is redone
    assert s["faces_found"] == json.loads(reference[SUMMARY_NAME])["faces_found"]


class _RecordingJudge:
    """The identity judge, keeping a copy of every descriptor it computes (to search the outputs for them)."""

    def __init__(self, judge: IdentityJudge):
        self._judge = judge
        self.seen: list[np.ndarray] = []

    def embed(self, image, box):
        e = self._judge.embed(image, box)
        self.seen.append(e)
        return e

    def embed_batch(self, image, boxes):
        e = self._judge.embed_batch(image, boxes)
        self.seen.extend(e)
        return e

    def embed_many(self, images, boxes):
        e = self._judge.embed_many(images, boxes)
        self.seen.extend(e)
        return e

    distance = staticmethod(IdentityJudge.distance)


def _longest_number_list(obj) -> int:
    if isinstance(obj, dict):
        return max((_longest_number_list(v) for v in obj.values()), default=0)
    if isinstance(obj, list):
        own = len(obj) if obj and all(isinstance(v, (int, float)) for v in obj) else 0
        return max([own] + [_longest_number_list(v) for v in obj])
    return 0


def test_key_gives_each_person_one_pseudonym_and_no_biometrics_on_disk(tmp_path, tiny_models, astronaut,
                                                                       astronaut_face, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, (size, angle) in enumerate([(80, 0), (95, 8), (70, -6)]):  # the same person in three photos
        scene = compose_scene(astronaut, astronaut_face, (240, 320), [(140 + 10 * i, 120, size, angle)], seed=i)
        Image.fromarray(scene.image).save(src / f"p{i}.png")
    calls = []
    real_seed = swap_module.identity_seed

    def spy(config, crop, embedding, attempt, *, cluster=None):
        seed = real_seed(config, crop, embedding, attempt, cluster=cluster)
        calls.append((cluster, attempt, seed))
        return seed

    monkeypatch.setattr(swap_module, "identity_seed", spy)
    judge = _RecordingJudge(tiny_models.judge)
    models = SwapModels(G=tiny_models.G, E=tiny_models.E, judge=judge)
    photo = PhotoConfig(detect=FAST_DETECT, swap=SwapConfig(key="correct horse battery", max_tries=2))
    s = sanitize_dataset(DatasetConfig(src, out, photo=photo), models=models)
    assert (s.images, s.faces_found, s.clusters, s.errors) == (3, 3, 1, ())
    first_tries = [c for c in calls if c[1] == 0]
    assert len(first_tries) == 3 and len({c[0] for c in first_tries}) == 1 and len({c[2] for c in first_tries}) == 1
    assert first_tries[0][0] == "p0.png#1"  # a cluster is named by its first face
    assert sum(s.tries_histogram.values()) == 3 and s.faces_swapped + sum(s.fallbacks.values()) == 3
    assert s.faces_swapped == 0 or s.distance_min >= 0.6
    # nothing the judge computed reaches the disk: neither as float32/float64 bytes nor as a JSON number list
    assert len(judge.seen) >= 3
    for rel, data in _files(out).items():
        for e in judge.seen:
            assert e.astype("<f4").tobytes()[:16] not in data and e.astype("<f8").tobytes()[:32] not in data, rel
        if rel in (SUMMARY_NAME, JOURNAL_NAME):
            for line in data.decode().splitlines() if rel == JOURNAL_NAME else [data.decode()]:
                assert _longest_number_list(json.loads(line)) <= 3, rel
    # the rerun recomputes the clusters, finds the same labels and skips every photo
    again = sanitize_dataset(DatasetConfig(src, out, photo=photo), models=models)
    assert (again.processed, again.resumed, again.clusters) == (0, 3, 1)
    # without a key each face gets its own new person
    calls.clear()
    plain = PhotoConfig(detect=FAST_DETECT, swap=SwapConfig(max_tries=1))
    sanitize_dataset(DatasetConfig(src, tmp_path / "plain", photo=plain), models=models)
    assert {c[0] for c in calls} == {None} and len({c[2] for c in calls if c[1] == 0}) == 3


def test_two_workers_match_one_process(tmp_path, tiny_models, astronaut, astronaut_face):
    src = tmp_path / "in"
    names = _make_tree(src, astronaut, astronaut_face, 4)
    gpath, epath = tmp_path / "m" / "g.safetensors", tmp_path / "m" / "e.safetensors"
    save_generator(tiny_models.G, gpath)
    save_encoder(tiny_models.E, epath)
    photo = PhotoConfig(detect=FAST_DETECT, swap=SwapConfig(key="correct horse battery", max_tries=1))
    runs = {}
    for workers in (1, 2):
        cfg = DatasetConfig(src, tmp_path / f"out{workers}", photo=photo, workers=workers, generator=str(gpath),
                            encoder=str(epath))
        runs[workers] = sanitize_dataset(cfg)
    one, two = runs[1], runs[2]
    assert (two.processed, two.faces_found, two.clusters, two.errors) == (4, 6, one.clusters, ())
    assert two.methods == one.methods and two.settings_hash == one.settings_hash
    a, b = _files(tmp_path / "out1"), _files(tmp_path / "out2")
    assert all(a[rel] == b[rel] for rel in names)
    with pytest.raises(ConfigError, match="workers=1 only"):
        sanitize_dataset(DatasetConfig(src, tmp_path / "x", photo=photo, workers=2), models=tiny_models)
