"""Real test videos with known face positions: public-domain faces moving across a textured background.

The faces come from photos scikit-image ships: the astronaut (Eileen Collins, NASA, public domain) and the camera
man (CC0). Each is cut out with a soft oval, scaled and moved along a straight path; the clip is encoded with a real
codec (H.264 by default) through PyAV, optionally with an AAC audio tone, variable frame timing and a display
rotation. ``make_clip`` returns every frame's true face boxes, so that tests and benchmarks can check that each face
region changed and that no face leaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

__all__ = ["Mover", "Clip", "make_clip", "face_sprites"]

# the detected face box of each source photo (MTCNN on the full photo), x0, y0, x1, y1
_SOURCES = {"astronaut": (179, 59, 268, 176), "camera": (200, 119, 256, 195)}


@dataclass(frozen=True)
class Mover:
    """One face moving in a straight line during ``[start, end)`` (fractions of the clip)."""

    source: str  # "astronaut", "astronaut-flipped", "camera"
    size: float  # face box height in pixels
    x0: float  # face centre at start, in pixels
    y0: float
    x1: float  # face centre at the end
    y1: float
    start: float = 0.0
    end: float = 1.0
    roll: float = 0.0  # degrees the head is tilted, counter-clockwise (its true box: the turned box's bounds)


@dataclass(frozen=True)
class Clip:
    path: Path
    width: int  # upright (display) size
    height: int
    frames: int
    fps: float
    pts: list[int]  # presentation timestamps, time base 1/1000... of ``time_base``
    time_base: Fraction
    boxes: list[list[tuple[int, np.ndarray]]]  # per frame: (mover index, true face box [4]) of visible faces


def face_sprites() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per source name: RGB crop ``[h, w, 3]`` uint8, soft alpha ``[h, w]`` float32, face box in crop pixels."""
    import skimage.data

    out = {}
    for name, (x0, y0, x1, y1) in _SOURCES.items():
        img = skimage.data.astronaut() if name == "astronaut" else np.repeat(skimage.data.camera()[..., None], 3, 2)
        w, h = x1 - x0, y1 - y0
        cx0, cy0 = max(int(x0 - 0.45 * w), 0), max(int(y0 - 0.45 * h), 0)
        cx1, cy1 = min(int(x1 + 0.45 * w), img.shape[1]), min(int(y1 + 0.35 * h), img.shape[0])
        crop = np.ascontiguousarray(img[cy0:cy1, cx0:cx1])
        yy, xx = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]].astype(np.float32)
        fx, fy = (x0 + x1) / 2 - cx0, (y0 + y1) / 2 - cy0
        r = np.sqrt(((xx - fx) / (0.9 * w)) ** 2 + ((yy - fy) / (0.85 * h)) ** 2)
        alpha = np.clip((1 - r) / 0.25, 0, 1).astype(np.float32)
        box = np.array([x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0], np.float32)
        out[name] = (crop, alpha, box)
        out[name + "-flipped"] = (crop[:, ::-1].copy(), alpha[:, ::-1].copy(),
                                  np.array([crop.shape[1] - box[2], box[1], crop.shape[1] - box[0], box[3]], np.float32))
    return out


def _background(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([90 + 60 * xx / w, 110 + 40 * yy / h, 140 - 50 * xx / w], -1)
    tex = cv2.GaussianBlur(rng.normal(0, 18, (h, w, 1)).astype(np.float32), (0, 0), 3)[..., None]
    return np.clip(base + tex, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, sprite, m: Mover, t: float) -> np.ndarray | None:
    crop, alpha, box = sprite
    s = m.size / (box[3] - box[1])
    cw, ch = max(int(round(crop.shape[1] * s)), 2), max(int(round(crop.shape[0] * s)), 2)
    c = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    a = cv2.resize(alpha, (cw, ch), interpolation=cv2.INTER_LINEAR)
    box = box * s
    if m.roll:  # turn the sprite about the face centre, on a canvas that holds all of it
        r = cv2.getRotationMatrix2D(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), m.roll, 1.0)
        corners = np.array([[0, 0, 1], [cw, 0, 1], [0, ch, 1], [cw, ch, 1]], np.float64) @ r.T
        r[:, 2] -= corners.min(axis=0)
        cw, ch = (int(np.ceil(v)) for v in corners.max(axis=0) - corners.min(axis=0))
        c = cv2.warpAffine(c, r, (cw, ch), flags=cv2.INTER_LINEAR)
        a = cv2.warpAffine(a, r, (cw, ch), flags=cv2.INTER_LINEAR)
        turned = np.array([[box[0], box[1], 1], [box[2], box[1], 1], [box[0], box[3], 1], [box[2], box[3], 1]]) @ r.T
        box = np.concatenate([turned.min(axis=0), turned.max(axis=0)]).astype(np.float32)
    cx, cy = m.x0 + (m.x1 - m.x0) * t, m.y0 + (m.y1 - m.y0) * t
    fcx, fcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    ox, oy = int(round(cx - fcx)), int(round(cy - fcy))
    H, W = frame.shape[:2]
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + cw, W), min(oy + ch, H)
    if x1 <= x0 or y1 <= y0:
        return None
    reg = frame[y0:y1, x0:x1].astype(np.float32)
    al = a[y0 - oy : y1 - oy, x0 - ox : x1 - ox, None]
    frame[y0:y1, x0:x1] = np.clip(reg * (1 - al) + c[y0 - oy : y1 - oy, x0 - ox : x1 - ox] * al, 0, 255).astype(np.uint8)
    fb = box + np.array([ox, oy, ox, oy], np.float32)
    width = fb[2] - fb[0]
    fb = np.clip(fb, [0, 0, 0, 0], [W, H, W, H])
    if (fb[2] - fb[0]) < 0.6 * width:  # mostly outside the frame
        return None
    return fb


def make_clip(path: str | Path, movers: list[Mover], *, width: int = 320, height: int = 240, frames: int = 24,
              fps: float = 24.0, audio: bool = True, vfr: bool = False, rotation: int = 0, codec: str = "libx264",
              crf: int = 20, seed: int = 0) -> Clip:
    """Encode a clip of ``frames`` frames at ``width x height`` (as displayed) with the given faces.

    Args:
        vfr: timestamps with uneven gaps (every third frame is held twice as long): variable frame rate.
        rotation: display rotation (degrees counter-clockwise, as ``VideoFrame.rotation``): frames are stored
            rotated the other way and the container carries the display matrix, like a phone's portrait video.
    """
    import av

    path = Path(path)
    sprites = face_sprites()
    bg = _background(height, width, seed)
    tb = Fraction(1, 1000)
    step = 1000 / fps
    pts, t_ms = [], 0.0
    for i in range(frames):
        pts.append(int(round(t_ms)))
        t_ms += step * (2 if vfr and i % 3 == 2 else 1)
    k = (rotation // 90) % 4
    cw, ch = (height, width) if k % 2 else (width, height)
    boxes = []
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        vs.width, vs.height, vs.pix_fmt = cw, ch, "yuv420p"
        vs.time_base = tb
        vs.codec_context.time_base = tb
        vs.options = {"crf": str(crf), "preset": "veryfast"} if codec == "libx264" else {}
        if k:
            vs.set_display_rotation(rotation)
        if audio:
            astream = out.add_stream("aac", rate=16000)
            astream.layout = "mono"
        for i in range(frames):
            frame = bg.copy()
            t = i / max(frames - 1, 1)
            vis = []
            for j, m in enumerate(movers):
                if m.start <= t < m.end or (t == 1.0 and m.end >= 1.0):
                    local = (t - m.start) / max(m.end - m.start, 1e-9)
                    b = _paste(frame, sprites[m.source], m, local)
                    if b is not None:
                        vis.append((j, b))
            boxes.append(vis)
            coded = np.ascontiguousarray(np.rot90(frame, -k)) if k else frame
            vf = av.VideoFrame.from_ndarray(coded, format="rgb24")
            vf.pts, vf.time_base = pts[i], tb
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if audio:
            n = int(16000 * t_ms / 1000)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)[None]
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, 0
            for p in astream.encode(af):
                out.mux(p)
            for p in astream.encode():
                out.mux(p)
    return Clip(path=path, width=width, height=height, frames=frames, fps=fps, pts=pts, time_base=tb, boxes=boxes)
