"""Video anonymisation: processing speed, leaks and temporal stability on a 720p 30 fps clip, CPU.

    python benchmarks/video.py [--seconds 5] [--detect-every 3] [--full-detect-every 3] [--min-face 20] [--mode swap]
                               [--threads 1] [--no-ahead] [--tilted] [--check-every 1] [--json out.json]

The clip (``deid.eval.clips``) is real H.264 + AAC: four public-domain faces (astronaut, camera man, mirrored
copies) of 40-160 px moving along straight lines, one entering half-way (``--tilted``: and a head tilted 70 degrees
entering at 30 %). Models are loaded before timing.

Measured:
* processing frames/s of ``anonymize_video`` (decode + detect + track + anonymise + encode), time per stage;
* leaks: faces re-detected (MTCNN) in the output whose dlib identity distance to the input face at the same
  place is under 0.6 (the same person), and true face regions left nearly unchanged (mean change < 4 levels);
* stability: dlib distance between a face's anonymised versions in consecutive frames (0 = the same person; the
  input's own frame-to-frame distance is shown beside it), and landmark jitter: RMS residual (px) of each face's
  landmarks around a straight-line fit (the faces move linearly), for the input's detections, the tracker's
  smoothed landmarks and the detections on the output.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import deid
from deid.config import DetectConfig, PhotoConfig, VideoConfig
from deid.detect import FaceDetector
from deid.eval.clips import Mover, make_clip
from deid.eval.identity import IdentityJudge
from deid.io.video import read_frames
from deid.track import box_iou
from deid.video import anonymize_video

MOVERS = [Mover("astronaut", 160, 220, 330, 420, 300),
          Mover("camera-flipped", 100, 1050, 250, 900, 280),
          Mover("astronaut-flipped", 60, 700, 560, 820, 540, 0.5, 1.0),
          Mover("camera", 40, 300, 620, 420, 600)]
TILTED = Mover("astronaut", 110, 1000, 480, 880, 520, 0.3, 1.0, roll=70.0)


def jitter(series: dict[int, np.ndarray]) -> float:
    """RMS residual (px) of ``{frame: [5, 2] landmarks}`` around a per-coordinate straight-line fit in time."""
    if len(series) < 4:
        return float("nan")
    t = np.array(sorted(series), np.float64)
    y = np.stack([series[int(i)].reshape(-1) for i in t])
    a = np.stack([t, np.ones_like(t)], 1)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(np.sqrt(np.mean((y - a @ coef) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--detect-every", type=int, default=3)
    ap.add_argument("--full-detect-every", type=int, default=VideoConfig.full_detect_every,
                    help="every Nth detection frame runs all passes, the others upright only (1 = all full)")
    ap.add_argument("--min-face", type=int, default=20)
    ap.add_argument("--mode", default="swap")
    ap.add_argument("--upright-only", action="store_true", help="process without the turned detection passes")
    ap.add_argument("--tilted", action="store_true",
                    help="add a fifth face, tilted 70 degrees (only the turned passes find it), entering at 30 %%")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-ahead", action="store_true",
                    help="decode and detect in the main thread (default: in a worker, when --threads > 1)")
    ap.add_argument("--check-every", type=int, default=1, help="re-detect leaks on every Nth output frame")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dump-leaks", type=Path, help="folder: write input|output crops of leaked faces")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="deid-video-"))
    frames_n = int(round(args.seconds * args.fps))
    movers = MOVERS + ([TILTED] if args.tilted else [])
    clip = make_clip(tmp / "clip720p.mp4", movers, width=1280, height=720, frames=frames_n, fps=args.fps)
    cfg = VideoConfig(photo=PhotoConfig(mode=args.mode, detect=DetectConfig(min_face=args.min_face,
                                                                           **({"rotations": ()} if args.upright_only else {}))),
                      detect_every=args.detect_every, full_detect_every=args.full_detect_every,
                      detect_ahead=not args.no_ahead)
    detector = FaceDetector(cfg.photo.detect)
    models = None
    if args.mode == "swap":
        from deid.swap import load_swap_models

        models = load_swap_models()
    judge = IdentityJudge.default()

    tracked: dict[int, dict[int, np.ndarray]] = defaultdict(dict)

    def observe(index: int, faces) -> None:
        for tid, face, status in faces:
            if status in ("detected", "tracked"):
                tracked[tid][index] = face.landmarks

    t0 = time.perf_counter()
    rep = anonymize_video(clip.path, tmp / "out.mp4", detector=detector, config=cfg, models=models, observe=observe)
    wall = time.perf_counter() - t0

    # ---- leaks and stability, against the clip's ground truth --------------------------------------------
    check = FaceDetector(DetectConfig(min_face=16))
    src = list(read_frames(clip.path))
    dst = list(read_frames(tmp / "out.mp4"))
    assert len(src) == len(dst) == frames_n, (len(src), len(dst))
    leaks, unchanged, redetected, face_frames = 0, 0, 0, 0
    leak_where: dict[int, list[int]] = defaultdict(list)
    emb_in: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    emb_out: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    lm_in: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    lm_out: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    for i in range(0, frames_n, args.check_every):
        a, b = src[i].pixels, dst[i].pixels
        truth = clip.boxes[i]
        if not truth:
            continue
        tb = np.stack([bx for _, bx in truth])
        for j, bx in truth:
            face_frames += 1
            x0, y0, x1, y1 = bx.astype(int)
            if np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1]).mean() < 4:
                unchanged += 1
        for det_img, lm_store in ((a, lm_in), (b, lm_out)):
            found = check(det_img)
            if not found:
                continue
            iou = box_iou(tb, np.stack([f.box for f in found]))
            for k, (j, bx) in enumerate(truth):
                m = int(iou[k].argmax())
                if iou[k, m] > 0.3:
                    lm_store[j][i] = found[m].landmarks
                    if det_img is b:
                        redetected += 1
                        e_in = judge.embed(a, found[m])
                        e_out = judge.embed(b, found[m])
                        if judge.distance(e_in, e_out) < 0.6:
                            leaks += 1
                            leak_where[j].append(i)
                            if args.dump_leaks:
                                import cv2

                                x0, y0, x1, y1 = (found[m].box + [-20, -20, 20, 20]).astype(int).clip(0)
                                cv2.imwrite(str(args.dump_leaks / f"leak-{i:04d}-{j}.png"), cv2.cvtColor(
                                    np.concatenate([a[y0:y1, x0:x1], b[y0:y1, x0:x1]], 1), cv2.COLOR_RGB2BGR))
        for j, bx in truth:
            emb_in[j][i] = judge.embed(a, bx)
            emb_out[j][i] = judge.embed(b, bx)

    def consecutive(store: dict[int, dict[int, np.ndarray]]) -> float:
        d = [IdentityJudge.distance(s[i], s[i + args.check_every]) for s in store.values() for i in s
             if i + args.check_every in s]
        return float(np.mean(d)) if d else float("nan")

    def mean_jitter(store) -> float:
        v = [jitter(s) for s in store.values() if len(s) >= 4]
        return float(np.nanmean(v)) if v else float("nan")

    t = rep.timings_s
    rows = [
        ("clip", f"1280x720, {args.fps:g} fps, {frames_n} frames, {len(movers)} faces 40-160 px, H.264 + AAC"),
        ("settings", f"mode {args.mode}, --detect-every {args.detect_every}, --full-detect-every "
                     f"{args.full_detect_every}, --min-face {args.min_face}, {args.threads} thread(s)"
                     + (", --tilted" if args.tilted else "")),
        ("processing fps", f"{rep.frames / wall:.2f}"),
        ("time per frame ms", ", ".join(f"{k} {1000 * t[k] / frames_n:.1f}" for k in
                                        ("decode", "detect", "track", "anonymize", "encode"))),
        ("tracks", f"{len(rep.tracks)} ({', '.join(f'{x.method} {x.frames}f' for x in rep.tracks)})"),
        ("face-frames uncertain (blurred)", f"{rep.uncertain_face_frames} of {rep.face_frames}"),
        ("face-frames fallback", f"{rep.fallback_face_frames}"),
        ("true face-frames checked", f"{face_frames}"),
        ("true faces left unchanged", f"{unchanged}"),
        ("faces re-detected in output", f"{redetected}"),
        ("leaked faces (re-detected, same person)", f"{leaks}" + "".join(
            f"; face {j} ({movers[j].source} {movers[j].size:g} px) frames {v[:8]}" for j, v in sorted(leak_where.items()))),
        ("consecutive-frame id distance, output", f"{consecutive(emb_out):.3f}"),
        ("consecutive-frame id distance, input", f"{consecutive(emb_in):.3f}"),
        ("landmark jitter px, input detections", f"{mean_jitter(lm_in):.2f}"),
        ("landmark jitter px, tracker (smoothed)", f"{mean_jitter(tracked):.2f}"),
        ("landmark jitter px, output re-detected", f"{mean_jitter(lm_out):.2f}"),
        ("peak RSS MB", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"),
    ]
    w = max(len(k) for k, _ in rows)
    print(f"deid {deid.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    if args.json:
        args.json.write_text(json.dumps({"rows": dict(rows), "report": rep.to_dict()}, indent=2) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
