"""Video files in and out through PyAV (FFmpeg bundled in the wheel: no system ffmpeg needed).

Reading yields every frame upright (the stream's display rotation applied) as ``[H, W, 3]`` uint8 RGB with its own
presentation time, so variable-frame-rate footage keeps its timing. Writing encodes frames back in the coded
orientation with the same display matrix, the same time base and the same timestamps, and copies the audio
packets untouched (re-encoded to AAC only when the output container cannot hold the source codec). Output files
are written under a temporary name and renamed when complete, so an interrupted run never leaves a half file that
looks finished.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["VIDEO_EXTENSIONS", "VideoInfo", "VideoFrame", "probe_video", "read_frames", "VideoWriter",
           "is_video_path"]

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
# containers whose muxer takes H.264; the others get the codec below by default
_DEFAULT_CODEC = {".webm": "libvpx-vp9"}
_AUDIO_COPY_OK = {  # audio codecs each container can hold as they are (others are re-encoded)
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    ".m4v": {"aac", "mp3", "ac3", "eac3", "alac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"},
    ".mkv": None,  # anything
    ".webm": {"opus", "vorbis"},
    ".avi": {"mp3", "ac3", "pcm_s16le"},
}
_AUDIO_FALLBACK = {".webm": "libopus", ".avi": "libmp3lame"}  # default: aac


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` learns from a file's headers and first frame."""

    path: str
    width: int  # upright (display) width in pixels, after rotation
    height: int  # upright height
    coded_width: int  # as stored
    coded_height: int
    fps: float  # average frame rate (frames / second)
    time_base: Fraction  # of the video stream's timestamps
    frames: int  # frame count from the header; 0 when the container does not say
    duration: float  # seconds; 0 when unknown
    rotation: int  # display rotation in degrees counter-clockwise (0, 90, 180, 270)
    codec: str  # video codec name
    audio_codec: str | None  # first audio stream's codec, None without audio

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fps": round(self.fps, 4), "frames": self.frames,
                "duration_s": round(self.duration, 3), "rotation": self.rotation, "codec": self.codec,
                "audio": self.audio_codec}


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame."""

    index: int  # 0-based position in decoding order
    pixels: np.ndarray  # [H, W, 3] uint8 RGB, upright
    pts: int | None  # presentation timestamp in ``VideoInfo.time_base`` units
    time: float  # seconds


def _open(path: Path):
    import av

    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, not a video")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")
    try:
        container = av.open(str(path), "r")
    except av.FFmpegError as exc:
        raise InputError(path, f"not a readable video ({_short(exc)})") from exc
    if not container.streams.video:
        container.close()
        raise InputError(path, "has no video stream")
    return container


def _short(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg.split(": '", 1)[0][:160]


def _rotation(frame) -> int:
    return int(round((frame.rotation or 0) / 90.0)) % 4 * 90


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's headers and decode its first frame (to learn the display rotation and prove it decodes).

    Raises:
        InputError: missing, empty, not a video, no video stream, or the first frame does not decode.
    """
    import av

    path = Path(path)
    container = _open(path)
    try:
        vs = container.streams.video[0]
        try:
            first = next(container.decode(vs))
        except (StopIteration, av.FFmpegError) as exc:
            raise InputError(path, "no decodable video frame" + (f" ({_short(exc)})" if str(exc) else "")) from exc
        rot = _rotation(first)
        cw, ch = first.width, first.height
        w, h = (ch, cw) if rot in (90, 270) else (cw, ch)
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        duration = float(vs.duration * vs.time_base) if vs.duration and vs.time_base else (
            container.duration / 1e6 if container.duration else 0.0)
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        return VideoInfo(path=str(path), width=w, height=h, coded_width=cw, coded_height=ch, fps=fps,
                         time_base=vs.time_base or Fraction(1, 90000), frames=int(vs.frames or 0),
                         duration=duration, rotation=rot, codec=vs.codec_context.name, audio_codec=audio)
    finally:
        container.close()


def read_frames(path: str | os.PathLike) -> Iterator[VideoFrame]:
    """Decode every frame of ``path``, upright, in presentation order.

    Raises:
        InputError: the file cannot be opened, or decoding fails part-way (a truncated or corrupt file). Frames
            before the damage have been yielded by then; a file whose tail is cut off cleanly simply ends early.
    """
    import av

    path = Path(path)
    container = _open(path)
    try:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        index = 0
        try:
            for frame in container.decode(vs):
                k = _rotation(frame) // 90
                rgb = frame.to_ndarray(format="rgb24")
                if k:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k))
                yield VideoFrame(index=index, pixels=rgb, pts=frame.pts,
                                 time=float(frame.time) if frame.time is not None else index / 30.0)
                index += 1
        except av.FFmpegError as exc:
            raise InputError(path, f"decoding failed at frame {index} ({_short(exc)})") from exc
        if index == 0:
            raise InputError(path, "no decodable video frame")
    finally:
        container.close()


def _display_matrix(path: Path) -> bytes | None:
    """The raw 3x3 display matrix of the first frame (rotation and flips), None when there is none."""
    import av

    with av.open(str(path)) as c:
        for frame in c.decode(c.streams.video[0]):
            side = frame.side_data
            # PyAV 18.1.1 made the container a mapping (iterating yields the types); 18.1.0 iterated the entries
            for sd in side.values() if hasattr(side, "values") else side:
                if "DISPLAYMATRIX" in str(sd.type).upper():
                    return bytes(sd)
            return None
    return None


class VideoWriter:
    """Encode frames like a source video into ``out`` (atomically), copying the source's audio.

    Example:
        >>> with VideoWriter(src, dst, info) as w:
        ...     for f in read_frames(src):
        ...         w.write(process(f.pixels), f.pts)

    The file appears at ``out`` only after ``close()`` succeeds; on error the partial file is removed.
    """

    def __init__(self, source: str | os.PathLike, out: str | os.PathLike, info: VideoInfo, *, codec: str | None = None,
                 crf: int = 18, preset: str = "veryfast", audio: bool = True, threads: int = 0):
        import av

        self.source, self.out, self.info = Path(source), Path(out), info
        suffix = self.out.suffix.lower()
        self._tmp = self.out.with_name(f".{self.out.stem}.{secrets.token_hex(4)}.part{self.out.suffix}")
        fmt = {".m4v": "mp4", ".mkv": "matroska"}.get(suffix)
        self._container = av.open(str(self._tmp), "w", format=fmt)
        codec = codec or _DEFAULT_CODEC.get(suffix, "libx264")
        try:
            self._vs = self._container.add_stream(codec, rate=Fraction(info.fps).limit_denominator(100000) or 30)
        except (av.FFmpegError, ValueError) as exc:
            self._abort()
            raise InputError(out, f"cannot encode with codec {codec!r} ({_short(exc)})") from exc
        vs = self._vs
        vs.width, vs.height = info.coded_width, info.coded_height
        even = info.coded_width % 2 == 0 and info.coded_height % 2 == 0
        vs.pix_fmt = "yuv420p" if even or codec not in ("libx264", "libx265") else "yuv444p"
        vs.time_base = info.time_base
        vs.codec_context.time_base = info.time_base
        opts = {}
        if codec in ("libx264", "libx265"):
            opts = {"crf": str(crf), "preset": preset}
        elif codec in ("libvpx-vp9", "libvpx"):
            opts = {"crf": str(crf + 13), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        vs.options = opts
        if threads:
            vs.codec_context.thread_count = threads
        matrix = _display_matrix(self.source) if info.rotation else None
        if matrix is not None:
            vs.set_display_matrix(list(np.frombuffer(matrix[:36], dtype="<i4").astype(int)))
        self._audio_in = None
        self._audio_out = None
        self._audio_packets: Iterator | None = None
        self._pending = None
        self._resampler = None
        if audio and info.audio_codec:
            try:
                self._setup_audio(suffix)
            except (av.FFmpegError, ValueError) as exc:
                self._abort()
                raise InputError(source, f"cannot copy or re-encode its audio ({_short(exc)}); try --no-audio") from exc
        self._frames = 0
        self._last_pts: int | None = None

    # -- audio -----------------------------------------------------------------------------------------------
    def _setup_audio(self, suffix: str) -> None:
        import av

        self._audio_in = av.open(str(self.source), "r")
        a_in = self._audio_in.streams.audio[0]
        allowed = _AUDIO_COPY_OK.get(suffix, set())
        if allowed is None or a_in.codec_context.name in allowed:
            self._audio_out = self._container.add_stream_from_template(a_in)
            self._transcode = False
        else:
            name = _AUDIO_FALLBACK.get(suffix, "aac")
            self._audio_out = self._container.add_stream(name, rate=a_in.codec_context.sample_rate or 48000)
            channels = a_in.codec_context.channels or 2
            # the default layout for that many channels ("1 channels", an unordered layout, is refused by AAC)
            self._audio_out.layout = {1: "mono", 6: "5.1", 8: "7.1"}.get(channels, "stereo")
            self._transcode = True
        self._audio_packets = self._audio_in.demux(a_in)

    def _next_audio(self):
        try:
            while True:
                p = next(self._audio_packets)
                if p.dts is not None or p.size:
                    return p
        except StopIteration:
            return None
        except Exception:  # noqa: BLE001 - a damaged audio tail ends the audio, never the video
            return None

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Mux source audio packets up to ``seconds`` of presentation time (None: all that is left)."""
        if self._audio_packets is None:
            return
        while True:
            if self._pending is None:
                self._pending = self._next_audio()
                if self._pending is None:
                    self._audio_packets = None
                    self._flush_audio_encoder()
                    return
            p = self._pending
            t = float(p.pts * p.time_base) if p.pts is not None and p.time_base else None
            if seconds is not None and t is not None and t > seconds:
                return
            self._pending = None
            if self._transcode:
                for frame in p.decode():
                    frame.pts = None
                    for q in self._audio_out.encode(frame):
                        self._container.mux(q)
            elif p.size:
                p.stream = self._audio_out
                self._container.mux(p)

    def _flush_audio_encoder(self) -> None:
        if self._audio_out is not None and getattr(self, "_transcode", False):
            for q in self._audio_out.encode(None):
                self._container.mux(q)

    # -- video -----------------------------------------------------------------------------------------------
    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        """Encode one upright ``[H, W, 3]`` uint8 RGB frame at timestamp ``pts`` (source time base)."""
        import av

        k = self.info.rotation // 90
        if k:
            rgb = np.rot90(rgb, -k)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            # missing or non-increasing timestamps (broken source): continue one frame duration on
            step = max(int(round(1 / (self.info.fps or 30) / self.info.time_base)), 1)
            pts = (self._last_pts + step) if self._last_pts is not None else 0
        frame.pts = pts
        frame.time_base = self.info.time_base
        self._last_pts = pts
        self._mux_audio_until(float(pts * self.info.time_base))
        for packet in self._vs.encode(frame):
            self._container.mux(packet)
        self._frames += 1

    def close(self) -> Path:
        """Flush the encoder and the rest of the audio, and move the file into place."""
        for packet in self._vs.encode(None):
            self._container.mux(packet)
        self._mux_audio_until(None)
        self._container.close()
        if self._audio_in is not None:
            self._audio_in.close()
        os.replace(self._tmp, self.out)
        return self.out

    def _abort(self) -> None:
        for c in (getattr(self, "_container", None), getattr(self, "_audio_in", None)):
            try:
                if c is not None:
                    c.close()
            except Exception:  # noqa: BLE001 - best effort while failing
                pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()
