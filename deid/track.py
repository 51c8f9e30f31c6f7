"""Face tracking across video frames: detections every Nth frame, optical flow in between, smoothed landmarks.

A track follows one face. On a detection frame, detections are matched to the tracks' current boxes by IoU
(greedy, best pair first); unmatched detections start new tracks, and a track that finds no detection keeps
moving by optical flow for a grace period (``TrackConfig.grace``) before it ends. Between detection frames every
track moves by pyramidal Lucas-Kanade flow of points inside its box (a robust similarity transform, RANSAC), which
carries its box and its five landmarks. Landmarks are smoothed with a One-Euro filter (Casiez et al., CHI 2012):
strong smoothing while the face is still (no jitter), little while it moves (no lag).

Each step reports every live track as a ``TrackedFace``: "detected" (matched this frame), "tracked" (moved by
flow, its last detection matched) or "uncertain" (its last detection frame found nothing, or the flow lost it):
the video pipeline blurs uncertain faces rather than trusting a swap at a guessed position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .config import TrackConfig
from .types import Face

__all__ = ["TrackedFace", "FaceTracker", "box_iou", "OneEuro", "backtrack"]


@dataclass(frozen=True)
class TrackedFace:
    """One live track in one frame."""

    track_id: int  # 1-based, never reused within a video
    face: Face  # smoothed box and landmarks in frame pixels
    status: str  # "detected", "tracked" or "uncertain"
    raw: Face  # unsmoothed position (detection or flow)
    age: int  # frames since the track was born


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``[N, 4]`` and ``[M, 4]`` (xyxy). Returns ``[N, M]`` float32."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0).astype(np.float32)

class OneEuro:
    """One-Euro low-pass filter over a fixed-shape array, with the speed measured in face sizes per second."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, dt: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x
        dt = max(dt, 1e-3)
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        speed = np.abs(self.dx) / max(scale, 1e-6) * 100  # percent of the face size per second
        a = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self.x = a * x + (1 - a) * self.x
        return self.x.copy()

    def reset(self) -> None:
        self.x = self.dx = None


def _face_from(box: np.ndarray, landmarks: np.ndarray, score: float, found_by: str = "upright") -> Face:
    return Face(box=box.astype(np.float32), score=float(score), landmarks=landmarks.astype(np.float32),
                found_by=found_by)


def _points_in(box: np.ndarray, landmarks: np.ndarray, n: int) -> np.ndarray:
    """Points to follow: the landmarks plus a grid over the inner box (``[K, 1, 2]`` float32)."""
    x0, y0, x1, y1 = box
    k = max(int(np.sqrt(n)), 2)
    gx, gy = np.meshgrid(np.linspace(x0 + 0.15 * (x1 - x0), x1 - 0.15 * (x1 - x0), k),
                         np.linspace(y0 + 0.15 * (y1 - y0), y1 - 0.15 * (y1 - y0), k))
    pts = np.concatenate([landmarks.reshape(-1, 2), np.stack([gx.ravel(), gy.ravel()], 1)], 0)
    return pts.astype(np.float32).reshape(-1, 1, 2)


_LK_LEVELS = 3  # pyramid levels of the Lucas-Kanade flow


def flow_move(prev_gray: np.ndarray, gray: np.ndarray, box: np.ndarray, landmarks: np.ndarray,
              config: TrackConfig) -> tuple[np.ndarray, np.ndarray, bool]:
    """Move ``box`` ``[4]`` and ``landmarks`` ``[5, 2]`` from ``prev_gray`` to ``gray`` by Lucas-Kanade flow.

    Returns:
        new box, new landmarks, and whether the flow was reliable (enough consistent points, forward-backward).
    """
    pts = _points_in(box, landmarks, config.flow_points)
    side = max(box[2] - box[0], box[3] - box[1])
    win = int(np.clip(side / 4, 9, 41)) | 1
    params = dict(winSize=(win, win), maxLevel=_LK_LEVELS,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
    # LK builds an image pyramid of both frames on every call: hand it only the region the face can move in (the
    # largest motion its pyramid can follow, 2^levels windows, plus a face), not the whole frame (a 720p frame: ~3 ms
    # a call, 4 calls per face per frame)
    h, w = gray.shape[:2]
    margin = side + win * 2**_LK_LEVELS
    x0, y0 = int(max(np.floor(box[0] - margin), 0)), int(max(np.floor(box[1] - margin), 0))
    x1, y1 = int(min(np.ceil(box[2] + margin), w)), int(min(np.ceil(box[3] + margin), h))
    if x1 - x0 < 2 * win or y1 - y0 < 2 * win:  # the box lies (almost) outside the frame
        return box.copy(), landmarks.copy(), False
    off = np.array([x0, y0], np.float32)
    a, b = prev_gray[y0:y1, x0:x1], gray[y0:y1, x0:x1]
    nxt, st, _ = cv2.calcOpticalFlowPyrLK(a, b, pts - off, None, **params)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, nxt, None, **params)
    nxt, back = nxt + off, back + off
    fb = np.linalg.norm((back - pts).reshape(-1, 2), axis=1)
    good = (st.ravel() == 1) & (st2.ravel() == 1) & (fb < max(1.0, side * 0.03))
    if good.sum() < config.min_inliers:
        return box.copy(), landmarks.copy(), False
    m, inliers = cv2.estimateAffinePartial2D(pts[good], nxt[good], method=cv2.RANSAC,
                                             ransacReprojThreshold=max(1.0, side * 0.03))
    if m is None or inliers is None or inliers.sum() < config.min_inliers:
        return box.copy(), landmarks.copy(), False
    corners = np.array([[box[0], box[1]], [box[2], box[3]]], np.float64)
    new_c = corners @ m[:, :2].T + m[:, 2]
    s = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    cx, cy = new_c.mean(0)
    hw, hh = (box[2] - box[0]) / 2 * s, (box[3] - box[1]) / 2 * s  # keep the box axis-aligned
    new_box = np.array([cx - hw, cy - hh, cx + hw, cy + hh])
    new_lm = landmarks.astype(np.float64) @ m[:, :2].T + m[:, 2]
    ok = 0.7 < s < 1.4
    return new_box, new_lm, ok


def backtrack(frames_gray: list[np.ndarray], face: Face, config: TrackConfig) -> list[Face | None]:
    """Follow a face detected in the frame *after* ``frames_gray[-1]`` backwards through ``frames_gray``.

    ``frames_gray`` are the buffered frames since the previous detection frame, oldest first, followed by the
    detection frame itself as the last element. Returns one position per buffered frame (oldest first, the
    detection frame excluded); None where the flow lost the face (it was not there yet, or moved too fast).
    """
    out: list[Face | None] = [None] * (len(frames_gray) - 1)
    box, lm = face.box.astype(np.float64), face.landmarks.astype(np.float64)
    for i in range(len(frames_gray) - 1, 0, -1):
        box, lm, ok = flow_move(frames_gray[i], frames_gray[i - 1], box, lm, config)
        if not ok:
            break
        out[i - 1] = _face_from(box, lm, face.score, face.found_by)
    return out


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    born: int
    found_by: str = "upright"  # the detector search of its last detection (Face.found_by)
    missed: int = 0  # consecutive detection frames without a match
    lost_flow: bool = False
    filt: OneEuro = field(default=None)  # type: ignore[assignment]
    last_t: float = 0.0


class FaceTracker:
    """Follows faces through a video.

    Example:
        >>> tracker = FaceTracker(TrackConfig())
        >>> for f in frames:
        ...     live = tracker.step(f.pixels, f.time, detections=detect(f.pixels) if f.index % 3 == 0 else None)
    """

    def __init__(self, config: TrackConfig = TrackConfig()):
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._prev_gray: np.ndarray | None = None
        self._frame = -1
        self.ended: list[int] = []  # ids of tracks that ended at the last step

    @staticmethod
    def gray(rgb: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    def step(self, rgb: np.ndarray, t: float, detections: list[Face] | None = None, *,
             gray: np.ndarray | None = None, partial: bool = False) -> list[TrackedFace]:
        """Advance to a new frame at time ``t`` (seconds); ``detections`` on detection frames, None otherwise.
        ``partial``: the detections come from part of the detector's passes (video's upright-only detection frames),
        so a track they miss is not counted missed: it goes on by flow, as between detections."""
        cfg = self.config
        self._frame += 1
        gray = self.gray(rgb) if gray is None else gray
        self.ended = []
        # 1) move every track by flow
        if self._prev_gray is not None:
            for tr in self._tracks:
                tr.box, tr.landmarks, ok = flow_move(self._prev_gray, gray, tr.box, tr.landmarks, cfg)
                tr.lost_flow = tr.lost_flow or not ok
        self._prev_gray = gray
        matched: set[int] = set()
        if detections is not None:
            # 2) match detections to tracks, best IoU first
            pairs = []
            if self._tracks and detections:
                iou = box_iou(np.stack([tr.box for tr in self._tracks]), np.stack([d.box for d in detections]))
                pairs = sorted(((iou[i, j], i, j) for i in range(iou.shape[0]) for j in range(iou.shape[1])
                                if iou[i, j] >= cfg.match_iou), reverse=True)
            used_t, used_d = set(), set()
            for _, i, j in pairs:
                if i in used_t or j in used_d:
                    continue
                used_t.add(i)
                used_d.add(j)
                tr, d = self._tracks[i], detections[j]
                tr.box, tr.landmarks, tr.score = d.box.astype(np.float64), d.landmarks.astype(np.float64), d.score
                tr.found_by = d.found_by
                tr.missed, tr.lost_flow = 0, False
                matched.add(tr.track_id)
            for i, tr in enumerate(self._tracks):
                if i not in used_t and not partial:
                    tr.missed += 1
            keep = []
            for tr in self._tracks:
                (self.ended.append(tr.track_id) if tr.missed > cfg.grace else keep.append(tr))
            self._tracks = keep
            # 3) new tracks
            for j, d in enumerate(detections):
                if j not in used_d:
                    self._tracks.append(_Track(self._next_id, d.box.astype(np.float64), d.landmarks.astype(np.float64),
                                               d.score, born=self._frame, found_by=d.found_by,
                                               filt=OneEuro(cfg.min_cutoff, cfg.beta),
                                               last_t=t))
                    matched.add(self._next_id)
                    self._next_id += 1
        return [self._report(tr, t, matched) for tr in self._tracks]

    def _report(self, tr: _Track, t: float, matched: set[int]) -> TrackedFace:
        raw = _face_from(tr.box, tr.landmarks, tr.score, tr.found_by)
        size = max(tr.box[2] - tr.box[0], tr.box[3] - tr.box[1], 1.0)
        state = np.concatenate([tr.landmarks.ravel(), tr.box])
        smooth = tr.filt(state, t - tr.last_t, scale=size)
        tr.last_t = t
        face = _face_from(smooth[10:], smooth[:10].reshape(5, 2), tr.score)
        if tr.track_id in matched:
            status = "detected"
        elif tr.missed or tr.lost_flow:
            status = "uncertain"
        else:
            status = "tracked"
        return TrackedFace(tr.track_id, face, status, raw, self._frame - tr.born)

    def seed_history(self, track_id: int) -> None:
        """Forget the smoothing state of a track (after a jump, e.g. a back-filled start)."""
        for tr in self._tracks:
            if tr.track_id == track_id:
                tr.filt.reset()
