"""Video: real H.264/AAC clips made from public-domain photos, decoded and encoded through PyAV.

Clips (``deid.eval.clips``) carry the true face box of every frame, so the tests check that every face region
changed in every frame, that frame count, timestamps, rotation and audio survive, and that the batch command
resumes and reports bad files without stopping.
"""

from __future__ import annotations

import dataclasses
import json

import av
import numpy as np
import pytest
from click.testing import CliRunner

from deid.cli.main import main
from deid.config import DetectConfig, PhotoConfig, TrackConfig, VideoConfig
from deid.errors import InputError
from deid.eval.clips import Mover, make_clip
from deid.io.video import VideoWriter, probe_video, read_frames
from deid.track import FaceTracker, OneEuro, box_iou
from deid.types import Face
from deid.video import anonymize_video, report_path

# two faces on separate paths, the second entering on frame 7 (not a detection frame with --detect-every 3)
MOVERS = [Mover("astronaut", 100, 70, 100, 120, 110), Mover("camera-flipped", 64, 250, 150, 220, 170, 0.3, 1.0)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "two.mp4", MOVERS, width=320, height=240, frames=24, fps=24)


@pytest.fixture(scope="module")
def swap_models():
    from deid.swap import load_swap_models

    return load_swap_models()


@pytest.fixture(scope="module")
def detector():
    from deid.detect import FaceDetector

    return FaceDetector(DetectConfig(min_face=20))


def region_change(a: np.ndarray, b: np.ndarray, box: np.ndarray) -> float:
    """Mean absolute difference inside the inner 60 % of ``box`` (the face itself, not its surroundings)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    x0, x1, y0, y1 = int(x0 + 0.2 * w), int(x1 - 0.2 * w), int(y0 + 0.2 * h), int(y1 - 0.2 * h)
    return float(np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1]).mean())


def test_clip_decodes_with_audio_and_known_faces(clip, detector):
    info = probe_video(clip.path)
    assert (info.width, info.height, info.frames, info.codec, info.audio_codec) == (320, 240, 24, "h264", "aac")
    assert info.fps == pytest.approx(24, rel=0.02)
    frames = list(read_frames(clip.path))
    assert len(frames) == 24 and frames[0].pixels.shape == (240, 320, 3)
    # the clip's ground truth is where the detector finds the faces
    found = detector(frames[12].pixels)
    assert len(found) == 2
    truth = np.stack([b for _, b in clip.boxes[12]])
    assert box_iou(truth, np.stack([f.box for f in found])).max(axis=1).min() > 0.5


def test_writer_keeps_variable_timing_rotation_and_audio(tmp_path):
    src = make_clip(tmp_path / "vfr.mp4", [], width=96, height=64, frames=12, fps=30, vfr=True, rotation=90)
    info = probe_video(src.path)
    assert info.rotation == 90 and (info.width, info.height, info.coded_width, info.coded_height) == (96, 64, 64, 96)
    frames = list(read_frames(src.path))
    assert frames[0].pixels.shape == (64, 96, 3)  # upright: as displayed
    for audio, name in ((True, "out.mp4"), (False, "mute.mp4")):
        with VideoWriter(src.path, tmp_path / name, info, audio=audio) as w:
            for f in frames:
                w.write(f.pixels, f.pts)
        again = probe_video(tmp_path / name)
        assert again.rotation == 90 and (again.width, again.height, again.coded_width) == (96, 64, 64)
        assert [f.time for f in read_frames(tmp_path / name)] == pytest.approx([f.time for f in frames], abs=1e-3)
        assert (again.audio_codec == "aac") == audio
    gaps = np.diff([f.time for f in frames])
    assert gaps.max() > 1.8 * gaps.min()  # really variable
    assert not list(tmp_path.glob(".*part*")), "temporary files left behind"


def test_writer_removes_partial_output_on_error(tmp_path):
    src = make_clip(tmp_path / "a.mp4", [], width=64, height=48, frames=4, audio=False)
    info = probe_video(src.path)
    with pytest.raises(RuntimeError):
        with VideoWriter(src.path, tmp_path / "b.mp4", info) as w:
            w.write(np.zeros((48, 64, 3), np.uint8), 0)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == [src.path]


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated", "text"])
def test_bad_videos_fail_with_one_line_naming_the_file(tmp_path, clip, damage):
    bad = tmp_path / f"bad-{damage}.mp4"
    data = clip.path.read_bytes()
    bad.write_bytes({"empty": b"", "garbage": bytes(range(256)) * 20, "truncated": data[: len(data) // 2],
                     "text": b"hello, not a video\n"}[damage])
    with pytest.raises(InputError) as err:
        probe_video(bad)
        list(read_frames(bad))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_tracker_follows_a_moving_face_between_detections(clip, detector):
    frames = list(read_frames(clip.path))
    tracker = FaceTracker(TrackConfig())
    ids = set()
    for f in frames[:7]:  # only the astronaut is visible
        dets = detector(f.pixels) if f.index % 3 == 0 else None
        live = tracker.step(f.pixels, f.time, dets)
        assert len(live) == 1
        ids.add(live[0].track_id)
        truth = clip.boxes[f.index][0][1]
        assert box_iou(truth, live[0].raw.box)[0, 0] > 0.6, f"frame {f.index}: flow lost the face"
        assert live[0].status == ("detected" if f.index % 3 == 0 else "tracked")
    assert ids == {1}


def test_tracker_marks_missed_faces_uncertain_then_ends_them():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    face = Face(box=[40, 30, 80, 80], score=0.99, landmarks=[[52, 48], [68, 48], [60, 58], [53, 68], [67, 68]])
    tracker = FaceTracker(TrackConfig(grace=1))
    assert [t.status for t in tracker.step(img, 0.0, [face])] == ["detected"]
    assert [t.status for t in tracker.step(img, 0.04, None)] == ["tracked"]
    assert [t.status for t in tracker.step(img, 0.08, [])] == ["uncertain"]  # missed once: within grace
    assert [t.status for t in tracker.step(img, 0.12, None)] == ["uncertain"]
    assert tracker.step(img, 0.16, []) == [] and tracker.ended == [1]


def test_one_euro_removes_jitter_but_follows_motion():
    rng = np.random.default_rng(0)
    f = OneEuro(min_cutoff=1.0, beta=0.02)
    still = [f(np.array([100.0]) + rng.normal(0, 2, 1), 1 / 30, scale=100) for _ in range(60)]
    assert np.std(np.diff(np.ravel(still[20:]))) < 0.5 * np.std(np.diff(rng.normal(0, 2, 40)))
    f = OneEuro(min_cutoff=1.0, beta=0.02)
    moving = [f(np.array([10.0 * i]), 1 / 30, scale=100) for i in range(60)]
    assert abs(moving[-1][0] - 590) < 15  # lag under 1.5 frames of motion


def test_swap_video_changes_every_face_in_every_frame(clip, detector, swap_models, tmp_path):
    out = tmp_path / "anon.mp4"
    cfg = VideoConfig(photo=PhotoConfig(mode="swap"), detect_every=3)
    rep = anonymize_video(clip.path, out, detector=detector, config=cfg, models=swap_models)
    info = probe_video(out)
    assert (info.width, info.height, info.frames, info.audio_codec) == (320, 240, 24, "aac")
    assert info.fps == pytest.approx(24, rel=0.02)
    src, dst = list(read_frames(clip.path)), list(read_frames(out))
    assert len(dst) == 24
    for i, boxes in enumerate(clip.boxes):
        for j, box in boxes:
            assert region_change(src[i].pixels, dst[i].pixels, box) > 8, f"frame {i}: face {j} left as it was"
    # the entering face was covered from its first frame (7), before its first detection (9), by backward flow
    assert min(i for i, b in enumerate(clip.boxes) if any(j == 1 for j, _ in b)) == 7
    d = rep.to_dict()
    assert d["frames"] == 24 and d["detection_frames"] == 9  # 0, 3, ..., 21 and the last frame
    assert d["full_detection_frames"] == 4  # 0, 9, 18 and the last (the default: every third detection)
    assert len(rep.tracks) >= 2 and sum(t.backfilled for t in rep.tracks) >= 2
    big = [t for t in rep.tracks if t.first_frame == 0]
    assert big and big[0].tries >= 1  # the 100 px face was tried for a swap; the 64 px one only obscured
    assert all(t.tries == 0 and t.method in ("pixelate", "solid") for t in rep.tracks if t.first_frame > 0)
    for t in rep.tracks:
        assert t.method in ("swap", "pixelate", "solid") and t.frames > 0
        if t.method == "swap":
            assert t.seed >= 0 and t.min_identity_distance >= 0.6
    # far from the faces the frame is untouched (up to re-encoding)
    assert np.abs(src[12].pixels[200:, :40].astype(int) - dst[12].pixels[200:, :40]).mean() < 4
    assert clip.path.exists() and probe_video(clip.path).frames == 24  # the input is untouched


def test_swapped_track_renders_at_detection_frames_only(clip, detector, swap_models, tmp_path, monkeypatch):
    """A swapped track runs the generator at its anchors (detection frames) and cross-fades the two anchor faces in
    the frames between; every frame still changes the face. (A low guard threshold makes the swap pass here: the
    point is the rendering, not the guard.)"""
    import deid.video
    from deid.config import SwapConfig

    renders, upscaled = [], []
    real_render = deid.video.render_ws
    monkeypatch.setattr(deid.video, "render_ws", lambda m, ws: renders.append(1) or real_render(m, ws))
    assert swap_models.upscaler is not None
    up_cls = type(swap_models.upscaler)
    real_up = up_cls.__call__
    monkeypatch.setattr(up_cls, "__call__", lambda self, face: upscaled.append(1) or real_up(self, face))
    cfg = VideoConfig(photo=PhotoConfig(mode="swap", swap=SwapConfig(threshold=0.2)), detect_every=3)
    out = tmp_path / "anon.mp4"
    rep = anonymize_video(clip.path, out, detector=detector, config=cfg, models=swap_models)
    swapped = [t for t in rep.tracks if t.method == "swap"]
    assert swapped and swapped[0].frames == 24
    assert 0 < len(renders) <= rep.detection_frames  # not one per frame (24)
    assert 0 < len(upscaled) <= rep.detection_frames + swapped[0].tries  # anchors upscaled once each, not per frame
    src, dst = list(read_frames(clip.path)), list(read_frames(out))
    for i, boxes in enumerate(clip.boxes):
        for j, box in boxes:
            assert region_change(src[i].pixels, dst[i].pixels, box) > 8, f"frame {i}: face {j} left as it was"


def test_a_track_born_in_held_frames_renders_at_detection_frames_only(swap_models, detector, tmp_path, monkeypatch):
    """A face entering on frame 1 is first detected on frame 3 (upright-only), its frames held until the full
    detection on frame 9; its synthetic person starts on frame 1 when those are rendered. The detection frames it was
    seen on before that (3, 6, 9) become its anchors then: the generator runs per anchor, not per held frame."""
    import deid.video
    from deid.config import SwapConfig

    clip = make_clip(tmp_path / "enter.mp4", [Mover("astronaut", 100, 160, 120, 180, 125, 0.04, 1.0)],
                     width=320, height=240, frames=24, fps=24)
    assert not clip.boxes[0] and clip.boxes[1]
    renders, seen = [], {}
    real_render = deid.video.render_ws
    monkeypatch.setattr(deid.video, "render_ws", lambda m, ws: renders.append(1) or real_render(m, ws))
    cfg = VideoConfig(photo=PhotoConfig(mode="swap", swap=SwapConfig(threshold=0.2)), detect_every=3,
                      full_detect_every=3)
    rep = anonymize_video(clip.path, tmp_path / "anon.mp4", detector=detector, config=cfg, models=swap_models,
                          observe=lambda i, faces: seen.setdefault(i, {s for _, _, s in faces}))
    assert seen[1] == {"backfilled"} and seen[3] == {"detected"}
    (t,) = rep.tracks
    assert t.method == "swap" and t.first_frame == 1 and t.frames == 23
    assert len(renders) <= rep.detection_frames + 1  # anchors (and the start), not one per frame (23)
    src, dst = list(read_frames(clip.path)), list(read_frames(tmp_path / "anon.mp4"))
    for i, boxes in enumerate(clip.boxes):
        for _, box in boxes:
            assert region_change(src[i].pixels, dst[i].pixels, box) > 8, f"frame {i}: the face left as it was"


def test_blur_mode_and_no_audio(clip, detector, tmp_path):
    out = tmp_path / "blur.mkv"
    cfg = VideoConfig(photo=PhotoConfig(mode="blur"), detect_every=2, audio=False)
    rep = anonymize_video(clip.path, out, detector=detector, config=cfg)
    info = probe_video(out)
    assert info.audio_codec is None and info.frames in (0, 24) and rep.frames == 24
    src, dst = list(read_frames(clip.path)), list(read_frames(out))
    assert len(dst) == 24
    for i, boxes in enumerate(clip.boxes):
        for _, box in boxes:
            assert region_change(src[i].pixels, dst[i].pixels, box) > 8
    assert {t.method for t in rep.tracks} == {"blur"}


def test_detecting_ahead_in_a_worker_gives_the_same_video(clip, detector, tmp_path, monkeypatch):
    """Decoding and detection in a worker thread (torch with > 1 thread) change nothing in the output; a file
    that breaks part-way still fails with the input error, from the worker, and leaves no partial output."""
    import torch

    import deid.video

    threads = torch.get_num_threads()
    workers = []
    real = deid.video._Ahead
    monkeypatch.setattr(deid.video, "_Ahead", lambda *a, **k: workers.append(1) or real(*a, **k))
    try:
        torch.set_num_threads(2)
        outs = {}
        for ahead in (False, True):
            boxes = []
            cfg = VideoConfig(photo=PhotoConfig(mode="blur"), detect_every=3, detect_ahead=ahead)
            rep = anonymize_video(clip.path, tmp_path / f"{ahead}.mp4", detector=detector, config=cfg,
                                  observe=lambda i, faces: boxes.append([(tid, f.box) for tid, f, _ in faces]))
            outs[ahead] = (rep.detection_frames, [(t.first_frame, t.frames, t.method) for t in rep.tracks], boxes,
                           np.stack([f.pixels for f in read_frames(tmp_path / f"{ahead}.mp4")]).astype(np.int16))
        assert workers == [1] and torch.get_num_threads() == 2  # restored after the video
        assert outs[True][:2] == outs[False][:2]
        for a, b in zip(outs[True][2], outs[False][2]):  # the same faces, tracks and boxes (to float rounding:
            assert [t for t, _ in a] == [t for t, _ in b]  # the worker's torch runs on fewer threads)
            assert all(np.abs(x - y).max() < 1e-2 for (_, x), (_, y) in zip(a, b))
        # Pixel noise of a few levels (two runs of the same path differ by such noise, too). A sub-pixel change in a
        # blur edge can flip one of the H.264 encoder's block decisions, which then carries through the P-frames up to
        # the next key frame: seen once in ~15 runs as ~200 values (4e-5 of them) off by up to 13 around one face.
        diff = np.abs(outs[True][3] - outs[False][3])
        assert (diff > 4).mean() < 1e-3 and diff.mean() < 0.05 and np.percentile(diff, 99.9) <= 4
        real_read = deid.video.read_frames

        def breaks(path):  # decoding fails part-way (as a damaged file does, in the worker)
            for f in real_read(path):
                if f.index == 10:
                    raise InputError(path, "decoding failed at frame 10 (test)")
                yield f

        monkeypatch.setattr(deid.video, "read_frames", breaks)
        cfg = VideoConfig(photo=PhotoConfig(mode="blur"), detect_every=3)
        with pytest.raises(InputError, match="frame 10"):
            anonymize_video(clip.path, tmp_path / "cut.mp4", detector=detector, config=cfg)
        assert len(workers) == 2 and not list(tmp_path.glob("*cut*")), "partial output left behind"
    finally:
        torch.set_num_threads(threads)


def test_cli_batch_resumes_and_reports_bad_files(clip, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "good.mp4").write_bytes(clip.path.read_bytes())
    (inp / "broken.mp4").write_bytes(clip.path.read_bytes()[:3000])
    (inp / "notes.txt").write_text("not a video")
    out = tmp_path / "out"
    args = ["video", str(inp), "-o", str(out), "--mode", "pixelate", "--threads", "1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.mp4" in errors[0]
    assert (out / "good.mp4").exists() and not (out / "broken.mp4").exists()
    report = json.loads(report_path(out / "good.mp4").read_text())
    assert report["frames"] == 24 and report["input"]["audio"] == "aac" and report["tracks"]
    assert {"decode", "detect", "track", "anonymize", "encode", "total"} <= set(report["timings_s"])
    mtime = (out / "good.mp4").stat().st_mtime_ns
    res = CliRunner().invoke(main, args)  # resume: the finished video is skipped
    assert "done already" in res.output and (out / "good.mp4").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in inp.iterdir()) == ["broken.mp4", "good.mp4", "notes.txt"]


def test_video_refuses_to_overwrite_its_input(clip, detector):
    with pytest.raises(InputError):
        anonymize_video(clip.path, clip.path, detector=detector, config=VideoConfig(photo=PhotoConfig(mode="blur")))
    assert av.open(str(clip.path)).streams.video[0].frames == 24


@pytest.mark.parametrize("suffix, video_codec, audio_codec", [(".mp4", "h264", "aac"), (".webm", "vp9", "opus"),
                                                              (".mkv", "h264", "pcm_s16le")])
def test_audio_the_container_cannot_hold_is_reencoded(tmp_path, suffix, video_codec, audio_codec):
    from fractions import Fraction

    src = tmp_path / "pcm.mkv"
    with av.open(str(src), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream("pcm_s16le", rate=16000)
        a.layout = "mono"
        for i in range(10):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        tone = (np.sin(np.arange(6400) * 0.1) * 8000).astype(np.int16)[None]
        af = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        for p in a.encode(af):
            out.mux(p)
        for p in a.encode():
            out.mux(p)
    info = probe_video(src)
    dst = tmp_path / f"out{suffix}"
    with VideoWriter(src, dst, info) as w:
        for f in read_frames(src):
            w.write(f.pixels, f.pts)
    again = probe_video(dst)
    assert (again.codec, again.audio_codec) == (video_codec, audio_codec)
    assert len(list(read_frames(dst))) == 10
    with av.open(str(dst)) as c:
        seconds = sum(fr.samples / fr.sample_rate for fr in c.decode(c.streams.audio[0]))
    assert seconds == pytest.approx(0.4, abs=0.15)


def test_missed_detection_blurs_the_tracked_face_instead_of_leaving_it(clip, detector, tmp_path, monkeypatch):
    import deid.video as video_mod

    calls = {"n": 0}
    real = video_mod.detect_faces

    def flaky(pixels, det, **kw):  # the detector misses every face on its third call (frame 6)
        calls["n"] += 1
        return [] if calls["n"] == 3 else real(pixels, det, **kw)

    monkeypatch.setattr(video_mod, "detect_faces", flaky)
    seen: dict[int, set[str]] = {}
    out = tmp_path / "flaky.mp4"
    cfg = VideoConfig(photo=PhotoConfig(mode="pixelate"), detect_every=3, full_detect_every=1)  # all full
    rep = anonymize_video(clip.path, out, detector=detector, config=cfg,
                          observe=lambda i, faces: seen.setdefault(i, {s for _, _, s in faces}))
    assert seen[6] == {"uncertain"} and seen[7] - {"backfilled"} == {"uncertain"} and "detected" in seen[9]
    assert rep.uncertain_face_frames >= 3 and sum(t.uncertain for t in rep.tracks) >= 3
    src, dst = list(read_frames(clip.path)), list(read_frames(out))
    for i in (6, 7, 8):
        for _, box in clip.boxes[i]:
            assert region_change(src[i].pixels, dst[i].pixels, box) > 8, f"frame {i} left as it was"


def test_a_tilted_head_only_full_detections_find_is_covered_from_its_first_frame(detector, tmp_path):
    """Every other detection frame runs the upright passes only (VideoConfig.full_detect_every 2). A head tilted
    75 degrees, which only the turned passes find, enters on frame 1: the upright detection on frame 3 misses it, the
    full one on frame 6 finds it, and frames 1-5, held until then, get it by backward flow. Once found, the upright
    detections that miss it leave it to flow: it is not blurred as "uncertain" between full detections."""
    from deid.detect import FaceDetector

    movers = [Mover("astronaut", 90, 120, 110, 190, 130, 0.04, 1.0, roll=75.0)]
    clip = make_clip(tmp_path / "tilted.mp4", movers, width=320, height=240, frames=24, fps=24)
    assert not clip.boxes[0] and clip.boxes[1]
    src = list(read_frames(clip.path))
    upright = FaceDetector(dataclasses.replace(detector.config, rotations=(), border_min_face=0))
    assert not upright(src[3].pixels) and detector(src[6].pixels), "the clip no longer tests the turned passes"
    assert [f.found_by for f in detector(src[6].pixels)] == ["turned"]
    seen: dict[int, set[str]] = {}
    out = tmp_path / "anon.mp4"
    cfg = VideoConfig(photo=PhotoConfig(mode="pixelate"), detect_every=3, full_detect_every=2)
    rep = anonymize_video(clip.path, out, detector=detector, config=cfg,
                          observe=lambda i, faces: seen.setdefault(i, {s for _, _, s in faces}))
    assert rep.detection_frames == 9 and rep.full_detection_frames == 5 and len(rep.tracks) == 1  # 0 6 12 18 23
    assert all(seen[i] == {"backfilled"} for i in range(1, 6)) and seen[6] == {"detected"}
    assert all(seen[i] and "uncertain" not in seen[i] for i in range(6, 24)), seen
    dst = list(read_frames(out))
    for i, boxes in enumerate(clip.boxes):
        for _, box in boxes:
            assert region_change(src[i].pixels, dst[i].pixels, box) > 8, f"frame {i}: the tilted face left as it was"


def test_a_tilted_head_the_backward_flow_loses_is_blurred_in_the_held_frames(detector, tmp_path, monkeypatch):
    """Fail closed: when the backward flow loses a face only a full detection found (here: after one frame back),
    the held frames before it get the face's oldest known position blurred as uncertain, not nothing."""
    import deid.video

    real = deid.video.backtrack

    def short(grays, face, config):  # the flow loses the face after one frame
        path = real(grays, face, config)
        return [None] * (len(path) - 1) + path[-1:]

    monkeypatch.setattr(deid.video, "backtrack", short)
    movers = [Mover("astronaut", 90, 120, 110, 126, 112, 0.04, 1.0, roll=75.0)]  # (nearly still)
    clip = make_clip(tmp_path / "tilted.mp4", movers, width=320, height=240, frames=24, fps=24)
    seen: dict[int, set[str]] = {}
    cfg = VideoConfig(photo=PhotoConfig(mode="pixelate"), detect_every=3, full_detect_every=2)
    anonymize_video(clip.path, tmp_path / "anon.mp4", detector=detector, config=cfg,
                    observe=lambda i, faces: seen.setdefault(i, {s for _, _, s in faces}))
    assert seen[0] == set()  # (no face yet; a full detection looked at it)
    assert all(seen[i] == {"uncertain"} for i in range(1, 5)) and seen[5] == {"backfilled"}, seen
    src, dst = list(read_frames(clip.path)), list(read_frames(tmp_path / "anon.mp4"))
    for i, boxes in enumerate(clip.boxes):
        for _, box in boxes:
            assert region_change(src[i].pixels, dst[i].pixels, box) > 8, f"frame {i}: the tilted face left as it was"


def test_turned_heads_are_obscured_with_hysteresis(clip, detector, swap_models, tmp_path):
    """The clip's second face is scikit-image's cameraman, mirrored: a head turned near profile (Face.turn ~ -0.9).
    Its frames are obscured as turned; with the limit lifted it goes the small-face way instead (obscured, not
    tried, either way). A track's turn must come back TURN_HYSTERESIS inside the limit before it counts as frontal."""
    from deid.config import SwapConfig
    from deid.video import TURN_HYSTERESIS, VideoReport, _Anonymizer

    out = tmp_path / "turned.mp4"
    rep = anonymize_video(clip.path, out, detector=detector, config=VideoConfig(detect_every=3), models=swap_models)
    turned = [t for t in rep.tracks if t.turned]
    assert len(turned) == 1 and turned[0].first_frame > 0 and turned[0].tries == 0
    assert turned[0].method in ("pixelate", "solid") and rep.turned_face_frames == turned[0].turned >= 10
    assert rep.to_dict()["turned_face_frames"] == rep.turned_face_frames and rep.to_dict()["tracks"][1]["turned"] >= 0
    src, dst = list(read_frames(clip.path)), list(read_frames(out))
    for i, boxes in enumerate(clip.boxes):
        for j, box in boxes:
            assert region_change(src[i].pixels, dst[i].pixels, box) > 8, f"frame {i}: face {j} left as it was"
    lifted = VideoConfig(detect_every=3, photo=PhotoConfig(swap=SwapConfig(max_turn=0)))
    rep = anonymize_video(clip.path, tmp_path / "lifted.mp4", detector=detector, config=lifted, models=swap_models)
    assert rep.turned_face_frames == 0 and all(t.turned == 0 for t in rep.tracks)

    anon = _Anonymizer(VideoConfig(), swap_models, VideoReport("a", "b", probe_video(clip.path)))
    limit = SwapConfig().max_turn

    def face(turn: float) -> Face:
        return Face(np.array([0, 0, 20, 25]), 0.99, np.array([[0, 0], [10, 0], [5 + 5 * turn, 6], [1, 12], [9, 12]]))

    seen, pixels = [], np.full((40, 40, 3), 128, np.uint8)  # flat: nothing looks covered
    for turn in (0.0, limit + 0.05, limit - TURN_HYSTERESIS / 2, limit - TURN_HYSTERESIS * 1.5, limit - 0.05):
        why = anon._unswappable(7, pixels, face(turn))
        if why:  # as _face does: the turn is obscured
            anon.unswappable_modes.setdefault(7, "pixelate")
        seen.append(why)
    assert seen == ["", "turned", "turned", "", ""]



def test_faces_cut_by_the_frame_edge_are_obscured_with_hysteresis(clip, swap_models):
    """A face with more than SwapConfig.max_outside of its box beyond the frame's edge is obscured ("cut", counted
    per track and video); it is swapped again only once under CUT_HYSTERESIS of that limit, so a face at the edge
    does not flip between the two from frame to frame."""
    from deid.config import SwapConfig
    from deid.io.video import VideoFrame
    from deid.track import TrackedFace
    from deid.video import CUT_HYSTERESIS, VideoReport, _Anonymizer

    report = VideoReport("a", "b", probe_video(clip.path))
    anon = _Anonymizer(VideoConfig(), swap_models, report)
    limit = SwapConfig().max_outside
    pixels = np.full((40, 40, 3), 128, np.uint8)

    def face(share: float) -> Face:  # a frontal face whose box has ``share`` of its width beyond the left edge
        x0 = -share * 20
        return Face(np.array([x0, 5, x0 + 20, 30]), 0.99,
                    np.array([[x0 + 5, 12], [x0 + 15, 12], [x0 + 10, 18], [x0 + 6, 24], [x0 + 14, 24]]))

    seen = []
    for share in (0.0, limit * 1.5, limit * (1 + CUT_HYSTERESIS) / 2, limit * CUT_HYSTERESIS / 2,
                  limit * (1 + CUT_HYSTERESIS) / 2):
        why = anon._unswappable(3, pixels, face(share))
        if why:  # as _face does: the face is obscured
            anon.unswappable_modes.setdefault(3, "pixelate")
        seen.append(why)
    assert seen == ["", "cut", "cut", "", ""]
    pixels = pixels.copy()
    pixels[5:30, 0:10] = np.arange(250, dtype=np.uint8).reshape(25, 10, 1)  # detail for the pixelation to remove
    tracked = TrackedFace(5, face(0.5), "detected", face(0.5), age=0)
    out = anon.frame(VideoFrame(index=0, pixels=pixels, pts=0, time=0.0), [tracked], [])
    assert report.cut_face_frames == 1 and anon.tracks[5].cut == 1 and anon.tracks[5].tries == 0
    assert report.to_dict()["cut_face_frames"] == 1 and anon.tracks[5].to_dict()["cut"] == 1
    assert not np.array_equal(out[5:30, 0:10], pixels[5:30, 0:10])  # the part inside is obscured

def test_plan_single_file_output_or_folder(tmp_path):
    from deid.video import plan_video_outputs

    src = tmp_path / "in.mp4"
    src.write_bytes(b"x")
    assert plan_video_outputs([src], tmp_path / "out.mp4") == [(src, tmp_path / "out.mp4")]
    assert plan_video_outputs([src], tmp_path / "outdir") == [(src, tmp_path / "outdir" / "in.mp4")]
    (tmp_path / "folder.mp4").mkdir()  # an existing folder is a folder, whatever its name
    assert plan_video_outputs([src], tmp_path / "folder.mp4") == [(src, tmp_path / "folder.mp4" / "in.mp4")]
    sub = tmp_path / "shoot"
    sub.mkdir()
    for name in ("a.mov", ".b.part.mp4", "notes.txt"):
        (sub / name).write_bytes(b"x")
    assert plan_video_outputs([sub], tmp_path / "o.mp4") == [(sub / "a.mov", tmp_path / "o.mp4" / "a.mov")]


def test_a_track_read_as_a_baby_is_obscured_without_a_try(swap_models, astronaut, astronaut_face):
    """A track whose face is read as younger than SwapConfig.min_swap_age at its start is obscured, not swapped, and
    its report says why ("young"); below the reading the same start tries identities."""
    from deid.config import SwapConfig
    from deid.io.video import VideoFrame
    from deid.video import TrackReport, VideoReport, _Anonymizer

    def start(min_age: float) -> tuple[TrackReport, object, np.ndarray]:
        cfg = VideoConfig(photo=PhotoConfig(mode="swap", swap=SwapConfig(min_swap_age=min_age, max_tries=2)))
        anon = _Anonymizer(cfg, swap_models, VideoReport("in.mp4", "out.mp4", None))
        tr = TrackReport(1, first_frame=0, last_frame=0)
        out, state = anon._start(astronaut.copy(), VideoFrame(0, astronaut, None, 0.0), astronaut_face, tr)
        return tr, state, out

    tr, state, out = start(150.0)
    assert state in ("pixelate", "solid") and tr.method == state and tr.tries == 0
    assert tr.fallback_reason == "young" and tr.to_dict()["fallback_reason"] == "young" and tr.age < 150
    x0, y0, x1, y1 = astronaut_face.box.astype(int)
    assert np.abs(out[y0:y1, x0:x1].astype(int) - astronaut[y0:y1, x0:x1]).mean() > 10
    tr, state, _ = start(0.0)
    assert tr.tries >= 1 and tr.fallback_reason in ("", "guard") and (tr.method == "swap") == (tr.fallback_reason == "")


def test_a_track_swapped_on_a_retry_renders_its_mixed_head_rows_again(swap_models, astronaut, astronaut_face):
    """A track whose accepted try was a retry (kept rows half mixed with the new identity's, SwapConfig.retry_mix)
    renders the same face again at an anchor from the encoded rows: the mix is redone at every render, so the
    person does not drift back toward the original as anchors are re-encoded."""
    from deid.config import SwapConfig
    from deid.io.video import VideoFrame
    from deid.video import TrackReport, VideoReport, _Anonymizer, _SwapState

    cfg = VideoConfig(photo=PhotoConfig(mode="swap", swap=SwapConfig(threshold=0.2, retry_after=0)))
    anon = _Anonymizer(cfg, swap_models, VideoReport("in.mp4", "out.mp4", None))
    tr = TrackReport(1, first_frame=0, last_frame=0)
    _, state = anon._start(astronaut.copy(), VideoFrame(0, astronaut, None, 0.0), astronaut_face, tr)
    assert isinstance(state, _SwapState) and tr.method == "swap"
    assert state.mix == 0.5 and state.keep
    first = state.renders.pop(0)  # the face the guard passed
    again = _Anonymizer._anchor_face(swap_models, state, 0, state.prev[1])
    assert np.abs(again.astype(int) - first.astype(int)).max() <= 2
    # unmixed, the same rows would give another face
    plain = dataclasses.replace(state, mix=0.0, renders={})
    assert np.abs(_Anonymizer._anchor_face(swap_models, plain, 0, state.prev[1]).astype(int) - first).mean() > 1


def test_anchors_keep_the_accepted_tries_attribute_move(swap_models):
    """The swap steers a new identity along the attribute directions, kept rows included; the anchors re-encode
    the kept rows from each detection frame, and must add the same move, else the person's age jumps there."""
    import torch

    from deid.swap import render_ws
    from deid.video import _Anonymizer, _SwapState

    G = swap_models.G
    torch.manual_seed(3)
    new_ws = G.mapping(torch.randn(1, G.z_dim), torch.tensor([[1.0, 0.6]])).detach()
    kept = new_ws[:, :4] + 0.3 * torch.randn(1, 4, G.w_dim)
    steer = 2.0 * (swap_models.directions.age / swap_models.directions.age.norm())[None, None]
    for mix in (0.0, 0.5):
        state = _SwapState(new_ws=new_ws.clone(), seed=1, keep=[0, 1, 2, 3], prev=(0, kept), mix=mix, steer=steer)
        face = _Anonymizer._anchor_face(swap_models, state, 5, kept)
        want = new_ws.clone()
        want[:, :4] = (kept.lerp(new_ws[:, :4], mix) if mix else kept) + steer
        assert np.array_equal(face, render_ws(swap_models, want))
        plain = render_ws(swap_models, torch.cat([kept.lerp(new_ws[:, :4], mix) if mix else kept, new_ws[:, 4:]], 1))
        assert not np.array_equal(face, plain)
