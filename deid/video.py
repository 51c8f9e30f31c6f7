"""Video anonymisation: decode -> detect every Nth frame, track in between -> anonymise every track -> encode.

Built on the photo pipeline's pieces (detector, swap models, blending, obscuring) with what video needs on top:

* **Two threads at work.** With more than one torch thread, decoding and detection run in a worker thread ahead
  of tracking, anonymising and encoding (``VideoConfig.detect_ahead``); the output is the same.

* **No leaks.** Every detection starts or continues a track, and a track lives on by optical flow for a grace
  period after its last detection. Every ``VideoConfig.full_detect_every``-th detection frame runs all the
  detector's passes, the others its upright passes only (the turned and border passes are ~60 % of a 720p
  detection); a track those miss goes on by flow, and only a full detection counts it missed. Frames are held back
  until the next full detection: a face first detected there (or at any detection before it) is followed backwards
  through the held frames, so a face entering the picture, tilted or cut by the edge too, is covered from its first
  visible frame, not from the detection that found it; where the flow loses a face only the turned or border passes
  found, the held frames get its oldest known position blurred. The last frame is always a full detection frame.
  A track whose position is uncertain (missed detection, flow lost) is blurred, never left as it was.
* **One synthetic person per track.** The track's first frame fixes its labels (gender, age), its identity seed and
  the identity rows of W+; the identity guard checks it then and again every ``guard_every`` frames, with a margin
  over the threshold, and a track that still looks like the original falls back to ``SwapConfig.fallback`` for the
  rest of the video. Tracks that start under ``SMALL_FACE`` pixels or read as younger than
  ``SwapConfig.min_swap_age`` (babies) are obscured, not swapped. Frames where the
  head is turned beyond ``SwapConfig.max_turn``, the lower face looks covered (``max_cover_contrast``, a mask) or
  the frame's edge cuts the face (``max_outside``) are obscured; the track's synthetic person comes back when the
  face can be swapped again (with hysteresis).
* **No flicker, no jitter.** Landmarks are One-Euro filtered (``deid.track``) before alignment; the kept W+ rows
  (pose, lighting) are a running average over frames; noise is constant; grain follows the frame.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .align import align_face
from .config import SwapConfig, VideoConfig
from .detect import FaceDetector, detect_faces
from .io.images import check_output_path
from .io.video import VideoFrame, VideoInfo, VideoWriter, probe_video, read_frames
from .obscure import obscure_face
from .swap import (SwapModels, encode_crop, face_labels, first_unrecognisable, guard_tries, identity_seed,
                   paste_synthetic, render_ws, unswappable, will_upscale)
from .track import FaceTracker, TrackedFace, backtrack
from .types import Face

# One guard check stands for many frames of a moving face, and the judge's distance wanders between frames (about
# 0.05 for large faces, more for small ones, where dlib sees few pixels): in video, a face must be this much
# farther than SwapConfig.threshold, both when swapped and when obscured.
GUARD_MARGIN_SMALL = 0.1  # faces under SMALL_FACE pixels (tracks that grow from small)
GUARD_MARGIN = 0.05
SMALL_FACE = 80  # a track that starts smaller than this (box side, px) is obscured, not swapped
TURN_HYSTERESIS = 0.1  # a turned track is swapped again once Face.turn is this far back inside SwapConfig.max_turn
COVER_HYSTERESIS = 0.8  # ... and a covered one once the lower-face contrast is under this share of its limit
CUT_HYSTERESIS = 0.5  # ... and a cut one once the share of its box outside the frame is under this share of its limit

__all__ = ["TrackReport", "VideoReport", "anonymize_video", "plan_video_outputs", "report_path"]


@dataclass
class TrackReport:
    """What happened to one track (one person's appearance) in a video."""

    track_id: int
    first_frame: int
    last_frame: int
    frames: int = 0  # frames the track was anonymised in
    detected: int = 0  # of which the detector confirmed the face
    backfilled: int = 0  # frames before its first detection, recovered by backward flow
    uncertain: int = 0  # frames blurred because the position was uncertain
    turned: int = 0  # frames obscured because the head was turned beyond SwapConfig.max_turn
    covered: int = 0  # frames obscured because the lower face looked covered (SwapConfig.max_cover_contrast)
    cut: int = 0  # frames obscured because the frame's edge cut the face (SwapConfig.max_outside)
    method: str = ""  # "swap", or the mode used (blur/pixelate/solid; a swap's fallback after the guard)
    seed: int = -1  # identity seed of the synthetic person; -1 when not swapped
    tries: int = 0  # identities tried at the start
    female: float = float("nan")  # encoder's estimate at the track's start
    age: float = float("nan")
    guard_checks: int = 0
    min_identity_distance: float = float("nan")  # smallest original <-> output distance of the accepted identity
    fallback_frame: int = -1  # frame where the guard switched the track to the fallback; -1 = never
    # why the track fell back: "guard" (no try passed at its start, or a later check recognised the person),
    # "small" (it started under SMALL_FACE px) or "young" (read as younger than SwapConfig.min_swap_age at its
    # start; no try for these two); "" for a track swapped to its end
    fallback_reason: str = ""
    fallback_checks: int = field(default=0, repr=False)  # frames obscured as a fallback (re-check clock)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("track_id", "first_frame", "last_frame", "frames", "detected", "backfilled",
                                            "uncertain", "turned", "covered", "cut",
                                            "method", "seed", "tries", "guard_checks", "fallback_frame",
                                            "fallback_reason")}
        for k in ("female", "age", "min_identity_distance"):
            v = getattr(self, k)
            d[k] = None if math.isnan(v) else round(float(v), 4)
        return d


@dataclass
class VideoReport:
    """Result of anonymising one video."""

    source: str
    output: str
    info: VideoInfo
    frames: int = 0  # frames written
    detection_frames: int = 0
    full_detection_frames: int = 0  # of which ran all the detector's passes (the others: upright only)
    frames_with_faces: int = 0
    face_frames: int = 0  # (track, frame) pairs anonymised
    uncertain_face_frames: int = 0  # of which blurred for an uncertain position
    fallback_face_frames: int = 0  # of which obscured because the swap's guard rejected it
    turned_face_frames: int = 0  # of which obscured because the head was turned beyond SwapConfig.max_turn
    covered_face_frames: int = 0  # of which obscured because the lower face looked covered (a mask)
    cut_face_frames: int = 0  # of which obscured because the frame's edge cut the face
    tracks: list[TrackReport] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        total = self.timings_s.get("total", 0.0)
        return self.frames / total if total > 0 else 0.0

    def to_dict(self) -> dict:
        return {"source": self.source, "output": self.output, "input": self.info.to_dict(), "frames": self.frames,
                "detection_frames": self.detection_frames, "full_detection_frames": self.full_detection_frames,
                "frames_with_faces": self.frames_with_faces,
                "face_frames": self.face_frames, "uncertain_face_frames": self.uncertain_face_frames,
                "fallback_face_frames": self.fallback_face_frames, "turned_face_frames": self.turned_face_frames,
                "covered_face_frames": self.covered_face_frames, "cut_face_frames": self.cut_face_frames,
                "processing_fps": round(self.fps, 2),
                "tracks": [t.to_dict() for t in self.tracks],
                "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()}, "warnings": self.warnings}


@dataclass
class _SwapState:
    """The synthetic person of one track.

    The kept W+ rows (pose, lighting) are encoded on detection frames only ("anchors", each a running average with
    the previous one) and interpolated linearly for the frames in between, which are rendered after the next
    anchor is known: the latent path is smooth and the encoder runs once per ``detect_every`` frames. The generator
    runs at the anchors only; a frame between two anchors gets the cross-fade of their two faces (the latents move
    linearly and little between anchors, where the generator is close to linear), then is upscaled, blended and,
    every ``guard_every`` frames, judged like any other.
    """

    new_ws: torch.Tensor  # [1, num_ws, w_dim]: identity rows fixed for the track
    seed: int
    keep: list[int]  # the W+ rows that follow the original face (the accepted try's kept rows)
    prev: tuple[int, torch.Tensor | None]  # (frame index, kept rows) of the last anchor used
    mix: float = 0.0  # the kept rows move this share toward new_ws's own (a retry's SwapConfig.retry_mix)
    # the coming anchors, once encoded (more than one while frames are held across detections: VideoConfig)
    next: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    frames_since_check: int = 0
    renders: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> the face rendered at that anchor
    upscaled: dict[int, np.ndarray] = field(default_factory=dict)  # the same, upscaled (once, when a frame needs it)
    steer: torch.Tensor | float = 0.0  # [1, 1, w_dim]: the accepted try's move along the attribute directions, which
    #                                    the kept rows of every anchor take too (deid.swap.ranked_identities)


@dataclass
class _Held:
    frame: VideoFrame
    gray: np.ndarray
    faces: list[TrackedFace]
    backfilled: list[tuple[int, Face]] = field(default_factory=list)


def _with_last(it: Iterator[VideoFrame]) -> Iterator[tuple[VideoFrame, bool]]:
    prev = None
    for x in it:
        if prev is not None:
            yield prev, False
        prev = x
    if prev is not None:
        yield prev, True


def _detected(src: str | Path, detector: FaceDetector, every: int, full_every: int, clock: dict[str, float],
              parallel: bool | None = None) -> Iterator[tuple[VideoFrame, list[Face] | None, bool]]:
    """The frames of ``src`` with their detections: on every ``every``-th frame and the last, None on the others;
    and whether that detection was full. Every ``full_every``-th detection frame (and the last) runs all of
    ``detector``'s passes; the others its upright passes only (``VideoConfig.full_detect_every``). Adds the seconds
    spent decoding and detecting to ``clock["decode"]`` and ``clock["detect"]``."""
    upright = copy.copy(detector)  # shares the networks
    upright.config = dataclasses.replace(detector.config, rotations=(), border_min_face=0)
    t0 = time.perf_counter()
    n = 0
    for frame, last in _with_last(read_frames(src)):
        t1 = time.perf_counter()
        clock["decode"] += t1 - t0
        dets, full = None, False
        if frame.index % every == 0 or last:
            full = n % full_every == 0 or last
            n += 1
            dets = detect_faces(frame.pixels, detector if full else upright, parallel=parallel)
            clock["detect"] += time.perf_counter() - t1
        yield frame, dets, full
        t0 = time.perf_counter()


class _Ahead:
    """Runs an iterator in a worker thread, at most ``depth`` items ahead of the consumer (video: decoding and
    detection run while the previous frames are tracked, anonymised and encoded; torch releases the GIL in its
    kernels). Errors raised by the iterator come out of the consumer's loop at the same place; ``close()`` stops
    the worker (also when the consumer stops early)."""

    def __init__(self, it: Iterator, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(it,), name="deid-video-ahead", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterator) -> None:
        try:
            for x in it:
                if not self._put(("item", x)):
                    return
            self._put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator:
        while True:
            kind, x = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise x
            yield x

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _cover_lost_path(held: list[_Held], path: list[Face | None], tf: TrackedFace) -> None:
    """A new face found only by the turned or border passes may have been in any held frame (the upright-only
    detections since the last full one cannot see it): where the backward flow lost it, its oldest known position
    is obscured as uncertain (fail closed: a patch before the face came in, rather than a frame that shows it)."""
    known = next((p for p in path if p is not None), tf.raw)
    for h, pos in zip(held, path):
        if pos is None:
            h.faces.append(TrackedFace(tf.track_id, known, "uncertain", known, -1))


def _margin(face: Face, config: SwapConfig) -> float:
    """The video guard's margin over the threshold: its own (one check stands for many frames), or the photo
    guard's ``config.margin`` where that is larger."""
    return max(GUARD_MARGIN_SMALL if face.size < SMALL_FACE else GUARD_MARGIN, config.margin)


def _union(a: Face, b: Face) -> Face:
    box = np.concatenate([np.minimum(a.box[:2], b.box[:2]), np.maximum(a.box[2:], b.box[2:])])
    return Face(box=box, score=a.score, landmarks=a.landmarks)


class _Anonymizer:
    """Per-video state: tracks' synthetic identities and the report counters."""

    def __init__(self, config: VideoConfig, models: SwapModels | None, report: VideoReport):
        self.cfg, self.models, self.report = config, models, report
        self.swap_cfg = config.photo.swap
        self.states: dict[int, _SwapState | str] = {}  # track -> swap state, or the obscure mode it fell back to
        # the limits a turned, covered or cut track must come back inside before it is swapped again (hysteresis)
        cfg = self.swap_cfg
        self.back_cfg = dataclasses.replace(
            cfg, max_turn=max(cfg.max_turn - TURN_HYSTERESIS, 1e-3) if cfg.max_turn else 0.0,
            max_cover_contrast=cfg.max_cover_contrast * COVER_HYSTERESIS,
            max_outside=cfg.max_outside * CUT_HYSTERESIS if cfg.max_outside < 1 else 1.0)
        # tracks that cannot be swapped now (turned, covered or cut: _unswappable) -> the obscure mode they get
        # meanwhile
        self.unswappable_modes: dict[int, str] = {}
        self.tracks: dict[int, TrackReport] = {}
        # detection frames seen before a track's synthetic person exists (it is created when the track's first held
        # frame is rendered): their anchors are encoded once it does, instead of every held frame after its start
        self.unstarted: dict[int, list[tuple[VideoFrame, Face]]] = {}

    def _track(self, track_id: int, index: int) -> TrackReport:
        tr = self.tracks.get(track_id)
        if tr is None:
            tr = self.tracks[track_id] = TrackReport(track_id, first_frame=index, last_frame=index)
        tr.last_frame = index
        return tr

    def frame(self, frame: VideoFrame, faces: list[TrackedFace], backfilled: list[tuple[int, Face]]) -> np.ndarray:
        out = frame.pixels
        items = [(tf.track_id, tf.face, tf.status, tf.raw) for tf in faces]
        items += [(tid, f, "backfilled", f) for tid, f in backfilled]
        if items:
            self.report.frames_with_faces += 1
        # small faces first, so that a large face's blend is not undone by a later paste beside it
        for track_id, face, status, raw in sorted(items, key=lambda x: x[1].size):
            tr = self._track(track_id, frame.index)
            tr.frames += 1
            tr.detected += status == "detected"
            tr.backfilled += status == "backfilled"
            self.report.face_frames += 1
            out = self._face(out, frame, track_id, face, status, raw, tr)
        return out if out is not frame.pixels else frame.pixels.copy()

    def _face(self, out: np.ndarray, frame: VideoFrame, track_id: int, face: Face, status: str, raw: Face,
              tr: TrackReport) -> np.ndarray:
        scale = self.cfg.photo.obscure_scale
        mode = self.cfg.photo.mode
        if status == "uncertain":
            tr.uncertain += 1
            self.report.uncertain_face_frames += 1
            return obscure_face(out, _union(face, raw), self.cfg.uncertain_mode, scale=scale)
        if mode != "swap":
            tr.method = mode
            return obscure_face(out, _union(face, raw), mode, scale=scale)
        why = self._unswappable(track_id, frame.pixels, face)
        if why:
            if why == "turned":
                tr.turned += 1
                self.report.turned_face_frames += 1
            elif why == "covered":
                tr.covered += 1
                self.report.covered_face_frames += 1
            else:
                tr.cut += 1
                self.report.cut_face_frames += 1
            return self._obscure_unswappable(out, track_id, face, raw, tr)
        state = self.states.get(track_id)
        if state is None:
            out, state = self._start(out, frame, face, tr)
            self.states[track_id] = state
            if isinstance(state, str):
                self.report.fallback_face_frames += 1
            elif state.keep:
                for later, at in self.unstarted.pop(track_id, []):
                    if later.index > state.prev[0]:
                        self._add_anchor(state, later, at)
            return out
        if isinstance(state, str):
            self.report.fallback_face_frames += 1
            result = obscure_face(out, _union(face, raw), state, scale=scale)
            tr.fallback_checks += 1
            every = self.cfg.guard_every
            if state != "solid" and every and tr.fallback_checks % every == 0 and self._recognisable(out, result, face):
                self.states[track_id] = tr.method = "solid"
                result = obscure_face(out, _union(face, raw), "solid", scale=scale)
            return result
        return self._swap(out, frame, face, raw, state, tr, track_id)

    def _unswappable(self, track_id: int, pixels: np.ndarray, face: Face) -> str:
        """Why the track's face cannot be swapped in this frame (``deid.swap.unswappable`` on the original
        ``pixels``): "cut", "turned", "covered" or "". With hysteresis: a track in that state stays in it until its face
        is back inside the stricter limits of ``self.back_cfg``, so a face near a limit does not flip between
        swapped and obscured from frame to frame."""
        was = track_id in self.unswappable_modes
        why = unswappable(pixels, face, self.back_cfg if was else self.swap_cfg)
        if was and not why:
            del self.unswappable_modes[track_id]
        return why

    def _obscure_unswappable(self, out: np.ndarray, track_id: int, face: Face, raw: Face,
                             tr: TrackReport) -> np.ndarray:
        """A frame of a turned, covered or cut face: obscured with the fallback; as in photos, on the first frame of each
        such stretch the judge checks the obscured face, and a face it still recognises is filled for the rest of it."""
        scale = self.cfg.photo.obscure_scale
        mode = self.unswappable_modes.get(track_id)
        if mode is None:
            mode = self.swap_cfg.fallback
            result = obscure_face(out, _union(face, raw), mode, scale=scale)
            if mode != "solid" and self._recognisable(out, result, face):
                mode = "solid"
            self.unswappable_modes[track_id] = mode
            tr.method = tr.method or mode  # a track never swappable reports the mode it got
        return obscure_face(out, _union(face, raw), mode, scale=scale)

    @torch.no_grad()
    def _encode(self, pixels: np.ndarray, face: Face):
        G = self.models.G
        aligned = align_face(pixels, face, G.img_resolution, G.cfg.align_template)
        ws, attrs = encode_crop(self.models, aligned.image)
        return aligned, ws, attrs

    def _start(self, out: np.ndarray, frame: VideoFrame, face: Face, tr: TrackReport):
        """First frame of a track: labels, identity seed, guard; returns the frame and the track's state."""
        judge, cfg = self.models.judge, self.swap_cfg
        aligned, ws, head = self._encode(out, face)
        tr.female, tr.age = face_labels(self.models, out, face, head)
        original = judge.embed(out, face)
        # A face that starts under SMALL_FACE pixels is not swapped: there the judge's distance wanders by more than
        # any margin between two checks (benchmarks/video.py caught a 40 px swap that dlib re-identified on a frame
        # between checks), so the guard cannot vouch for a swap over the frames it does not check.
        # A face read as younger than min_swap_age is not swapped either (deid.swap.swap_face: babies).
        untried = "small" if face.size < SMALL_FACE else "young" if tr.age < cfg.min_swap_age else ""
        tries = iter(())
        if not untried:
            seeds = [identity_seed(cfg, aligned.image, original, k) for k in range(max(cfg.candidates, cfg.max_tries))]
            tries = guard_tries(self.models, ws, face, (tr.female, tr.age), seeds, cfg)
        attempt, cand, result, dist = first_unrecognisable(self.models, out, face, aligned, original, tries, cfg,
                                                           margin=_margin(face, cfg), grain=frame.index, age=tr.age)
        tr.tries, tr.guard_checks = attempt, tr.guard_checks + attempt
        if cand is not None:
            tr.method, tr.seed, tr.min_identity_distance = "swap", cand.seed, dist
            keep = list(cand.kept)
            kept = ws[:, keep].clone() if keep else None
            new_ws = cand.ws.clone()
            steer = cand.steer if cand.steer is not None else torch.zeros_like(ws[:, :1])
            if keep and cand.mix:  # a retry: new_ws holds the new identity's own kept rows, mixed in at each render
                new_ws[:, keep] = ws[:, keep] + (cand.ws[:, keep] - steer - ws[:, keep]) / cand.mix
            return result, _SwapState(new_ws=new_ws, seed=cand.seed, keep=keep, prev=(frame.index, kept),
                                      mix=cand.mix if keep else 0.0, renders={frame.index if keep else -1: cand.image},
                                      steer=steer)
        # as in photos: the fallback must not be recognisable either, else the face is filled
        mode, scale = cfg.fallback, self.cfg.photo.obscure_scale
        result = obscure_face(out, face, mode, scale=scale)
        if mode != "solid" and self._recognisable(out, result, face, original):
            mode = "solid"
            result = obscure_face(out, face, mode, scale=scale)
        tr.method, tr.fallback_frame = mode, frame.index
        tr.fallback_reason = untried or "guard"
        return result, mode

    def _recognisable(self, before: np.ndarray, after: np.ndarray, face: Face,
                      original: np.ndarray | None = None) -> bool:
        """Whether an obscured face is within ``threshold`` (plus the video margin) of the original
        (``original``: its embedding, when already computed)."""
        judge = self.models.judge
        if original is None:
            original = judge.embed(before, face)
        dist = judge.distance(original, judge.embed(after, face))
        return dist < self.swap_cfg.threshold + _margin(face, self.swap_cfg)

    def anchor(self, frame: VideoFrame, faces: list[TrackedFace]) -> None:
        """Encode the kept rows of every swapped track on a detection frame, before the held frames are rendered."""
        for tf in faces:
            state = self.states.get(tf.track_id)
            if tf.status == "uncertain":
                continue
            if state is None and self.cfg.photo.mode == "swap":
                self.unstarted.setdefault(tf.track_id, []).append((frame, tf.face))
            elif isinstance(state, _SwapState) and state.keep:
                self._add_anchor(state, frame, tf.face)

    def _add_anchor(self, state: _SwapState, frame: VideoFrame, face: Face) -> None:
        """Encode the kept rows at detection frame ``frame`` (smoothed with the anchor before) as the track's next
        anchor."""
        last = state.next[-1] if state.next else state.prev
        if frame.index > last[0]:
            _, ws, _ = self._encode(frame.pixels, face)
            state.next.append((frame.index, self._smooth(last[1], ws[:, state.keep])))

    def forget_unstarted(self) -> None:
        """Drop the detection frames kept for tracks still without a synthetic person (called once every held
        frame is rendered: a track that did not start by then starts later, from frames of its own)."""
        self.unstarted.clear()

    def _smooth(self, prev: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
        a = self.cfg.latent_smoothing
        return new if prev is None else prev * a + new * (1 - a)

    @staticmethod
    def _anchor_face(models: SwapModels, state: _SwapState, index: int, kept: torch.Tensor | None,
                     upscaled: bool = False) -> np.ndarray:
        """The synthetic face at anchor ``index`` (kept rows ``kept``), rendered once (and upscaled once, when
        ``upscaled``); the last three anchors are kept."""
        if index not in state.renders:
            ws = state.new_ws.clone()
            if kept is not None:
                ws[:, state.keep] = (kept.lerp(ws[:, state.keep], state.mix) if state.mix else kept) + state.steer
            state.renders[index] = render_ws(models, ws)
            for old in sorted(state.renders)[:-3]:
                del state.renders[old]
                state.upscaled.pop(old, None)
        if not upscaled:
            return state.renders[index]
        if index not in state.upscaled:
            state.upscaled[index] = models.upscaler(state.renders[index])
        return state.upscaled[index]

    def _swap(self, out: np.ndarray, frame: VideoFrame, face: Face, raw: Face, state: _SwapState, tr: TrackReport,
              track_id: int) -> np.ndarray:
        aligned = align_face(out, face, self.models.G.img_resolution, self.models.G.cfg.align_template)
        models = self.models
        # frames between anchors cross-fade the anchors' faces after upscaling, so each is upscaled once (the
        # upscaler is 2/3 of a swapped face's time per frame; its outputs of two close faces fade as smoothly)
        hi = will_upscale(models, aligned)
        if not state.keep:
            synthetic = self._anchor_face(models, state, -1, None, hi)  # nothing follows the original: one face
        else:
            (i0, k0), nxt = state.prev, (state.next[0] if state.next else None)
            if nxt is not None and i0 < frame.index <= nxt[0]:
                a = (frame.index - i0) / (nxt[0] - i0)
                end = self._anchor_face(models, state, nxt[0], nxt[1], hi)
                if a < 1:
                    start = self._anchor_face(models, state, i0, k0, hi).astype(np.float32)
                    synthetic = np.rint(start + (end.astype(np.float32) - start) * a).astype(np.uint8)
                else:
                    synthetic = end
                if frame.index == nxt[0]:
                    state.prev = state.next.pop(0)
            else:  # no anchor ahead (the track was born in held frames, or lost its anchor): encode this frame
                _, ws, _ = self._encode(out, face)
                kept = self._smooth(k0, ws[:, state.keep])
                state.prev = (frame.index, kept)
                state.next = [a for a in state.next if a[0] > frame.index]
                synthetic = self._anchor_face(models, state, frame.index, kept, hi)
        result = paste_synthetic(models, out, face, aligned, synthetic, state.seed ^ frame.index, self.swap_cfg.blend)
        state.frames_since_check += 1
        every = self.cfg.guard_every
        if every and state.frames_since_check >= every:
            state.frames_since_check = 0
            judge = self.models.judge
            original = judge.embed(out, face)
            dist = judge.distance(original, judge.embed(result, face))
            tr.guard_checks += 1
            tr.min_identity_distance = min(tr.min_identity_distance, dist)
            if dist < self.swap_cfg.threshold + _margin(face, self.swap_cfg):  # drifted toward the original: fail closed
                mode, scale = self.swap_cfg.fallback, self.cfg.photo.obscure_scale
                result = obscure_face(out, _union(face, raw), mode, scale=scale)
                if mode != "solid" and self._recognisable(out, result, face):
                    mode = "solid"
                    result = obscure_face(out, _union(face, raw), mode, scale=scale)
                self.states[track_id] = mode
                tr.method, tr.fallback_frame, tr.fallback_reason = mode, frame.index, "guard"
                self.report.fallback_face_frames += 1
                return result
        return result


def anonymize_video(src: str | Path, dst: str | Path, *, detector: FaceDetector, config: VideoConfig,
                    models: SwapModels | None = None, info: VideoInfo | None = None,
                    progress: Callable[[int], None] | None = None,
                    observe: Callable[[int, list[tuple[int, Face, str]]], None] | None = None) -> VideoReport:
    """Anonymise every face of the video ``src`` into ``dst`` (same resolution, timestamps, rotation and audio).

    Args:
        src: the input video (never modified).
        dst: the output path; its suffix picks the container. Written atomically.
        detector: a loaded ``FaceDetector`` (its config sets the smallest face and thresholds).
        config: video settings; ``config.photo`` carries the mode and the swap settings.
        models: loaded swap models; required for mode "swap".
        info: ``probe_video(src)`` when already known.
        progress: called with the number of frames written since the previous call.
        observe: called once per frame, in order, with the frame index and every anonymised face as
            ``(track_id, smoothed face, status)``; status is "detected", "tracked", "uncertain" or "backfilled".

    Raises:
        InputError: ``src`` cannot be decoded (also part-way: the partial output is removed), or ``dst`` would
            overwrite it.
    """
    if config.photo.mode == "swap" and models is None:
        raise ValueError("mode 'swap' needs SwapModels (deid.swap.load_swap_models)")
    check_output_path(src, dst)
    t_start = time.perf_counter()
    info = info or probe_video(src)
    report = VideoReport(source=str(src), output=str(dst), info=info)
    t = {"decode": 0.0, "detect": 0.0, "track": 0.0, "anonymize": 0.0, "encode": 0.0}
    tracker = FaceTracker(config.track)
    anon = _Anonymizer(config, models, report)
    held: list[_Held] = []
    with VideoWriter(src, dst, info, codec=config.codec, crf=config.crf, preset=config.preset,
                     audio=config.audio) as writer:

        def emit(h: _Held) -> None:
            if observe is not None:
                observe(h.frame.index, [(tf.track_id, tf.face, tf.status) for tf in h.faces]
                        + [(tid, f, "backfilled") for tid, f in h.backfilled])
            t0 = time.perf_counter()
            pixels = anon.frame(h.frame, h.faces, h.backfilled)
            t1 = time.perf_counter()
            writer.write(pixels, h.frame.pts)
            t["anonymize"] += t1 - t0
            t["encode"] += time.perf_counter() - t1
            report.frames += 1
            if progress is not None:
                progress(1)

        # decoding and detection run in a worker thread, ahead of tracking, anonymising and encoding, when torch
        # has more than one thread; the two threads share them (torch's thread count is process-wide: halved for
        # the video, restored after). Measured: benchmarks/video.py --threads 2 [--no-ahead]
        threads = torch.get_num_threads()
        use_ahead = config.detect_ahead and threads > 1
        source = _detected(src, detector, config.detect_every, config.full_detect_every, t,
                           parallel=use_ahead or None)
        ahead = None
        if use_ahead:
            torch.set_num_threads(threads // 2)
            ahead = _Ahead(source, depth=2 * config.detect_every + 2)
        try:
            for frame, dets, full in (ahead if ahead is not None else source):
                is_det = dets is not None
                if is_det:
                    report.detection_frames += 1
                    report.full_detection_frames += full
                t0 = time.perf_counter()
                gray = FaceTracker.gray(frame.pixels)
                # a track the upright passes alone miss (tilted, cut by the edge) is followed by flow until the next
                # full detection, which alone counts it missed
                live = tracker.step(frame.pixels, frame.time, dets, gray=gray, partial=is_det and not full)
                current = _Held(frame, gray, live)
                if is_det:
                    born = [tf for tf in live if tf.age == 0]
                    if born and held:  # follow new faces back through the held frames
                        grays = [h.gray for h in held] + [gray]
                        for tf in born:
                            path = backtrack(grays, tf.raw, config.track)
                            for h, pos in zip(held, path):
                                if pos is not None:
                                    h.backfilled.append((tf.track_id, pos))
                            if tf.raw.found_by != "upright":
                                _cover_lost_path(held, path, tf)
                    t["track"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    anon.anchor(frame, live)
                    t["anonymize"] += time.perf_counter() - t0
                if full:
                    # frames are held until a full detection has looked at them (or after them): a face that only
                    # its turned or border passes find is followed back through every frame since the last one
                    for h in held:
                        emit(h)
                    held = []
                    emit(current)
                    anon.forget_unstarted()
                else:
                    if not is_det:
                        t["track"] += time.perf_counter() - t0
                    held.append(current)
        finally:
            if ahead is not None:
                ahead.close()
                torch.set_num_threads(threads)
            else:
                source.close()
        for h in held:  # not reached: the last frame is a detection frame
            emit(h)
    report.tracks = [anon.tracks[k] for k in sorted(anon.tracks)]
    if info.frames and report.frames < info.frames:
        report.warnings.append(f"the header announces {info.frames} frames, {report.frames} decoded")
    t["total"] = time.perf_counter() - t_start
    report.timings_s = t
    return report


def report_path(output: Path) -> Path:
    """Where the JSON report of an output video goes: beside it, ``<name>.json``."""
    return output.with_name(output.name + ".json")


def plan_video_outputs(inputs: list[Path], out: Path) -> list[tuple[Path, Path]]:
    """Pair every input video with its output path.

    A single file input with an ``out`` that has a video suffix and is not an existing folder gives ``out`` itself
    (``deid video in.mp4 -o out.mp4``). Otherwise ``out`` is a folder: files go to ``out/<name>``, folders are walked
    and mirrored under it (hidden files, such as unfinished outputs, are skipped).
    """
    from .io.video import is_video_path

    if len(inputs) == 1 and not inputs[0].is_dir() and not out.is_dir() and is_video_path(out):
        return [(inputs[0], out)]
    pairs = []
    for src in inputs:
        if src.is_dir():
            for p in sorted(src.rglob("*")):
                if p.is_file() and is_video_path(p) and out.resolve() not in p.resolve().parents \
                        and not p.name.startswith("."):
                    pairs.append((p, out / p.relative_to(src)))
        else:
            pairs.append((src, out / src.name))
    return pairs
