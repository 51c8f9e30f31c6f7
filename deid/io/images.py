"""Image files in and out, and the only conversions between uint8 images and network tensors.

Reading (``read_image`` for a file, ``decode_image`` for one already in memory, such as an upload) decodes the
whole file, so that a truncated or corrupt photo fails here with one clear ``InputError`` rather than half-way through
the pipeline. It applies the EXIF orientation and turns every supported
mode (grayscale, 16-bit, palette, CMYK, with or without alpha) into ``[H, W, 3]`` uint8 RGB, remembering what is
needed to write the result back in the same form.

Writing (``write_image``) builds a fresh file from the pixels: EXIF (GPS position, camera serial numbers, the embedded
thumbnail that still shows the original face), XMP, IPTC and comments are dropped unless asked for; the ICC colour
profile, the alpha channel and the file format are kept. Files are written atomically (temporary file + rename);
``encode_image`` builds the same bytes in memory, without touching the disk.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageCms, ImageOps, JpegImagePlugin, UnidentifiedImageError

from ..errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "LoadedImage",
    "read_image",
    "decode_image",
    "write_image",
    "encode_image",
    "check_output_path",
    "is_image_path",
    "to_tensor",
    "to_uint8",
]

# file suffix -> PIL format name written for it
_FORMAT_BY_EXTENSION = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
    ".bmp": "BMP",
}
IMAGE_EXTENSIONS = frozenset(_FORMAT_BY_EXTENSION)  # lower-case suffixes, with the dot
_WRITE_FORMATS = frozenset(_FORMAT_BY_EXTENSION.values())  # PIL format names write_image and encode_image produce
# PIL decoders tried on open. Restricting them keeps plugins that run external programs (EPS -> Ghostscript) or
# rarely used parsers out of reach of untrusted files. MPO is what PIL calls a JPEG with extra (multi-picture) frames.
_READ_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP")
_SUPPORTED = "JPEG, PNG, WebP, TIFF, BMP"
DEFAULT_MAX_PIXELS = 200_000_000  # largest image read_image accepts (width * height); a 200 Mpx phone photo fits

_MATTE = 255.0  # background that semi-transparent pixels are composited over (white), in [0, 255]
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_JPEG_QUALITY = 95  # default quality of lossy JPEG and WebP output
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError)


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded photo plus what ``write_image`` needs to write a result in the same form.

    Metadata that can identify a person or a camera (``exif``, ``xmp``, ``comment``) is kept here only so that
    ``write_image(..., keep_metadata=True)`` can copy it on request; by default it is never written.
    """

    path: str  # the file it was read from; for ``decode_image``, the name given to it (e.g. "upload")
    pixels: np.ndarray  # [H, W, 3] uint8 RGB in [0, 255], EXIF orientation applied, alpha composited over white
    alpha: np.ndarray | None  # [H, W] uint8 in [0, 255] (255 = opaque); None = the file had no transparency
    format: str  # PIL format name: "JPEG", "PNG", "WEBP", "TIFF" or "BMP"
    mode: str  # PIL mode of the file before conversion: "RGB", "L", "I;16", "RGBA", "LA", "P", "CMYK", ...
    bits: int  # bits per channel in the file: 8 or 16 (32 for float TIFFs); pixels are always 8-bit
    icc_profile: bytes | None  # embedded ICC colour profile; None = none (sRGB assumed)
    dpi: tuple[float, float] | None  # resolution stored in the file; None = not stated
    subsampling: int | None  # JPEG chroma subsampling, PIL code: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0; None = n/a
    lossless: bool | None  # WebP: whether the file was lossless; None = not a WebP or unknown
    exif: bytes | None = None  # raw EXIF block with the orientation removed; None = none
    xmp: bytes | None = None  # raw XMP packet; None = none
    comment: bytes | None = None  # JPEG COM segment; None = none

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels, after the EXIF orientation is applied (PIL order)."""
        return self.width, self.height

    @property
    def is_gray(self) -> bool:
        """Whether the file stored one colour channel (written back as grayscale)."""
        return self.mode in _GRAY_MODES


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has the suffix of an image format deid reads and writes (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------------------------------------------
# Reading


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read and fully decode a JPEG, PNG, WebP, TIFF or BMP photo.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels (width * height) than this, before decoding them, as a guard
            against decompression bombs. Pillow's own ceiling, ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (179 Mpx unless
            the application changes it), also applies.

    Returns:
        ``LoadedImage`` whose ``pixels`` are ``[H, W, 3]`` uint8 RGB in [0, 255], in display orientation. The first
        frame is read from animated or multi-page files.

    Raises:
        InputError: missing, unreadable, a directory, empty, not an image, unsupported, too large, truncated or
            corrupt. The message is one line naming the file and the cause.

    Example:
        >>> img = read_image("photo.jpg")
        >>> img.pixels.shape, img.format
        ((3000, 4000, 3), 'JPEG')
    """
    name = os.fspath(path)
    _check_readable_file(name)
    return _read(name, name, max_pixels)


def decode_image(data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """``read_image`` for a file already in memory (an HTTP upload): same decoders, checks, result and messages.

    Nothing is written to disk.

    Args:
        data: the encoded file (JPEG, PNG, WebP, TIFF or BMP).
        name: how error messages and ``LoadedImage.path`` name it, e.g. "upload".
        max_pixels: as for ``read_image``.

    Returns:
        ``LoadedImage`` whose ``pixels`` are ``[H, W, 3]`` uint8 RGB in [0, 255], in display orientation.

    Raises:
        InputError: empty, not an image, unsupported, too large, truncated or corrupt; one line naming ``name``.

    Example:
        >>> img = decode_image(request_body, name="upload")
        >>> encode_image(img.pixels, like=img)  # same format, no EXIF/GPS
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InputError(name, "empty file (0 bytes)")
    return _read(name, bytes(data), max_pixels)


def _read(name: str, source: str | bytes, max_pixels: int) -> LoadedImage:
    """Decode ``source`` (a file path, or the file's bytes) into a ``LoadedImage``; errors name ``name``."""
    with _open_image(name, source) as im:
        _check_pixel_count(name, im.size, max_pixels)
        mode, bits = im.mode, _bits_per_channel(im)  # before decoding: it reads the decoder's raw mode
        _decode(name, im)
        fmt = "JPEG" if im.format == "MPO" else str(im.format)
        icc = im.info.get("icc_profile") or None
        dpi = _dpi(im.info.get("dpi"))
        subsampling = _jpeg_subsampling(im) if fmt == "JPEG" else None
        lossless = _webp_is_lossless(source) if fmt == "WEBP" else None
        comment = im.info.get("comment") or None
        oriented = _apply_orientation(im)
        pixels, alpha, icc = _to_rgb(oriented, icc)
        exif = _exif_without_orientation(oriented)
        xmp = _as_bytes(oriented.info.get("xmp") or oriented.info.get("XML:com.adobe.xmp"))
    return LoadedImage(path=name, pixels=pixels, alpha=alpha, format=fmt, mode=mode, bits=bits, icc_profile=icc,
                       dpi=dpi, subsampling=subsampling, lossless=lossless, exif=exif, xmp=xmp,
                       comment=_as_bytes(comment))


def _check_readable_file(name: str) -> None:
    """Refuse what is not a non-empty regular file, before any decoder sees it (a FIFO would block ``open``)."""
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise InputError(name, "no such file") from None
    except PermissionError:
        raise InputError(name, "permission denied") from None
    except OSError as exc:
        raise InputError(name, f"cannot open ({_one_line(exc.strerror or exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(name, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(name, "not a regular file")
    if st.st_size == 0:
        raise InputError(name, "empty file (0 bytes)")


def _open_image(name: str, source: str | bytes) -> Image.Image:
    """``Image.open`` of a path or of in-memory bytes, limited to the supported decoders, with every failure turned
    into ``InputError`` naming ``name``."""
    try:
        with warnings.catch_warnings():
            # read_image checks the size against its own limit; Pillow's warning threshold (89 Mpx) is not ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source if isinstance(source, str) else io.BytesIO(source), formats=_READ_FORMATS)
    except Image.DecompressionBombError as exc:
        raise InputError(name, _too_large_message(exc)) from None
    except UnidentifiedImageError:
        raise InputError(name, f"not an image (cannot identify image format; supported: {_SUPPORTED})") from None
    except PermissionError:
        raise InputError(name, "permission denied") from None
    except _DECODE_ERRORS as exc:
        raise InputError(name, f"corrupt image ({_one_line(exc)})") from None


def _check_pixel_count(name: str, size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise InputError(name, f"image too large ({w}x{h} = {_mpx(w * h)}, limit {_mpx(max_pixels)}; "
                               "possible decompression bomb)")


def _too_large_message(exc: Image.DecompressionBombError) -> str:
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{_mpx(int(found.group(1)))}, " if found else ""
    return f"image too large ({size}decoder limit {_mpx(limit)}; possible decompression bomb)"


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} Mpx" if pixels >= 1e6 else f"{pixels} px"


def _decode(name: str, im: Image.Image) -> None:
    """Decode every pixel now, so that truncation and corruption are reported by ``read_image``."""
    try:
        im.load()
    except _DECODE_ERRORS as exc:
        msg = str(exc)
        if "truncated" in msg or isinstance(exc, EOFError):
            raise InputError(name, "truncated image file") from None
        raise InputError(name, f"corrupt image data ({_one_line(exc)})") from None


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split()) or type(obj).__name__


def _bits_per_channel(im: Image.Image) -> int:
    """8 or 16 from the mode, or from the decoder's raw mode (16-bit RGB PNGs open as 8-bit "RGB")."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return 16
    if im.mode == "F":
        return 32
    for tile in getattr(im, "tile", None) or ():
        raw = tile.args if isinstance(tile.args, str) else (tile.args[0] if tile.args else "")
        if isinstance(raw, str) and ";16" in raw:
            return 16
    return 8


def _dpi(value: object) -> tuple[float, float] | None:
    if isinstance(value, tuple) and len(value) == 2:
        try:
            return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
    return None


def _jpeg_subsampling(im: Image.Image) -> int | None:
    try:
        code = JpegImagePlugin.get_sampling(im)
    except (AttributeError, KeyError, TypeError):
        return None
    return code if code in (0, 1, 2) else None


def _webp_is_lossless(source: str | bytes) -> bool | None:
    """Read the RIFF chunk list of a file path or in-memory file: a ``VP8L`` image chunk is lossless, ``VP8 `` lossy
    (``VP8X`` only announces)."""
    if not isinstance(source, str):
        return _webp_chunks_lossless(io.BytesIO(source))
    with open(source, "rb") as f:
        return _webp_chunks_lossless(f)


def _webp_chunks_lossless(f: BinaryIO) -> bool | None:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        fourcc, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if fourcc == b"VP8L":
            return True
        if fourcc == b"VP8 ":
            return False
        f.seek(length + (length & 1), os.SEEK_CUR)  # chunks are padded to an even length


def _apply_orientation(im: Image.Image) -> Image.Image:
    """Rotate/flip to display orientation; a malformed EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(im)
    except (SyntaxError, ValueError, struct.error, TypeError, KeyError, OSError):
        return im.copy()


def _exif_without_orientation(im: Image.Image) -> bytes | None:
    """The EXIF block rebuilt with its Exif, GPS and Interop sub-directories, without orientation or thumbnail."""
    if "exif" not in im.info:
        return None
    try:
        exif = im.getexif()
        for ifd in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.Interop):
            try:
                exif.get_ifd(ifd)  # load the sub-directory so that tobytes() writes it instead of a stale offset
            except KeyError:
                continue  # Pillow raises KeyError for an Interop directory the Exif directory does not point to
        exif.pop(ExifTags.Base.Orientation, None)
        return exif.tobytes()
    except (SyntaxError, ValueError, struct.error, TypeError, KeyError, OSError):
        return None


def _as_bytes(value: object) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


def _to_rgb(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
    """Any supported mode -> (``[H, W, 3]`` uint8 RGB composited over white, ``[H, W]`` uint8 alpha or None, ICC)."""
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or im.has_transparency_data else "RGB")
    elif mode in ("RGBa", "La"):  # premultiplied alpha
        im = im.convert("RGBA" if mode == "RGBa" else "LA")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "CMYK":
        im, icc = _cmyk_to_rgb(im, icc)
    elif mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        gray16 = np.asarray(im).astype(np.float64)
        gray = np.clip(np.rint(gray16 / 257.0), 0, 255).astype(np.uint8)  # 65535 -> 255
        return np.repeat(gray[..., None], 3, axis=2), None, _icc_for(icc, gray=True)
    elif mode == "F":
        gray = np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), None, _icc_for(icc, gray=True)
    elif mode not in ("RGB", "RGBA", "L", "LA"):
        im = im.convert("RGB")  # YCbCr, LAB, HSV
    arr = np.asarray(im)
    if im.mode == "L":
        return np.repeat(arr[..., None], 3, axis=2), None, _icc_for(icc, gray=True)
    if im.mode == "LA":
        rgb, alpha = np.repeat(arr[..., :1], 3, axis=2), arr[..., 1]
        return _composite(rgb, alpha), alpha.copy(), _icc_for(icc, gray=True)
    if im.mode == "RGBA":
        return _composite(arr[..., :3], arr[..., 3]), arr[..., 3].copy(), _icc_for(icc, gray=False)
    return np.array(arr, dtype=np.uint8), None, _icc_for(icc, gray=False)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """CMYK -> sRGB through the embedded profile when there is one (then an sRGB profile is carried on)."""
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            return ImageCms.profileToProfile(im, src, srgb, outputMode="RGB"), srgb.tobytes()
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # unusable profile: fall through to Pillow's plain conversion
    return im.convert("RGB"), None


def _icc_for(icc: bytes | None, *, gray: bool) -> bytes | None:
    """Keep a profile only if its colour space (ICC header bytes 16..20) fits the pixels it travels with."""
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    return icc if space == (b"GRAY" if gray else b"RGB ") else None


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 colour over the white matte through ``[H, W]`` uint8 alpha -> ``[H, W, 3]`` uint8."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + _MATTE * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _uncomposite(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Inverse of ``_composite``: the colour that, over white through ``alpha``, shows as ``pixels``."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    colour = (pixels.astype(np.float32) - _MATTE * (1.0 - a)) / np.maximum(a, 1.0 / 255.0)
    colour = np.where(a > 0, colour, pixels.astype(np.float32))
    return np.clip(np.rint(colour), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Writing


def check_output_path(in_path: str | os.PathLike, out_path: str | os.PathLike) -> None:
    """Refuse an output path that names the input file (which would destroy the original photo).

    Raises:
        InputError: ``out_path`` is the same file as ``in_path`` (same inode when it exists, same resolved path
            otherwise).
    """
    if os.path.exists(out_path) and os.path.exists(in_path):
        same = os.path.samefile(in_path, out_path)  # also catches hard links and case-insensitive file systems
    else:
        same = Path(in_path).resolve() == Path(out_path).resolve()
    if same:
        raise InputError(out_path, "output would overwrite the input photo; choose another output path")


def write_image(
    pixels: np.ndarray,
    out_path: str | os.PathLike,
    *,
    like: LoadedImage | None = None,
    quality: int | None = None,
    keep_metadata: bool = False,
) -> Path:
    """Write ``pixels`` to a fresh image file, atomically.

    The format follows ``out_path``'s suffix; with an unknown suffix it is ``like.format``. From ``like`` (the
    photo the pixels came from) the result keeps the ICC profile, the alpha channel (when the format holds one),
    grayscale, JPEG chroma subsampling and WebP losslessness. EXIF, XMP, IPTC, comments and text chunks are never
    copied unless ``keep_metadata`` is set; even then the EXIF thumbnail (which shows the original face) and the
    orientation tag are left out. 16-bit sources are written with 8 bits per channel.

    Args:
        pixels: ``[H, W, 3]`` uint8 RGB in [0, 255], display orientation; ``[H, W]`` must match ``like``'s size
            when ``like`` has alpha.
        out_path: destination file; its directory must exist.
        like: the ``LoadedImage`` the pixels were derived from; None = plain RGB in the suffix's format.
        quality: JPEG/lossy WebP quality in 1..100; None = 95. Lossless formats ignore it.
        keep_metadata: copy EXIF (without orientation and thumbnail), XMP and the JPEG comment from ``like``.

    Returns:
        The path written.

    Raises:
        InputError: the suffix names no supported format (and there is no ``like``), or the file cannot be written.
        ValueError: ``pixels`` is not ``[H, W, 3]`` uint8, or does not fit ``like``'s alpha, or ``quality`` is out
            of range.

    Example:
        >>> img = read_image("in.jpg")
        >>> write_image(img.pixels, "out.jpg", like=img)  # same look, no EXIF/GPS
    """
    out = Path(out_path)
    _check_pixels(pixels)
    _check_quality(quality)
    fmt = _output_format(out, like)
    image, options = _prepare(pixels, fmt, like, quality, keep_metadata)
    _atomic_save(image, out, fmt, options)
    return out


def encode_image(
    pixels: np.ndarray,
    *,
    like: LoadedImage | None = None,
    fmt: str | None = None,
    quality: int | None = None,
    keep_metadata: bool = False,
) -> bytes:
    """``write_image`` into memory: the bytes ``write_image`` would put in the file, and nothing on disk.

    Args:
        pixels: as for ``write_image``.
        like: as for ``write_image``: the result keeps its format (unless ``fmt`` is given), ICC profile, alpha,
            grayscale, JPEG subsampling and WebP losslessness, and none of its EXIF, XMP or comments.
        fmt: "JPEG", "PNG", "WEBP", "TIFF" or "BMP" (case-insensitive; "JPG" = "JPEG"); None = ``like.format``.
        quality, keep_metadata: as for ``write_image``.

    Returns:
        The encoded file.

    Raises:
        ValueError: neither ``fmt`` nor ``like``, an unknown ``fmt``, or pixels and quality as for ``write_image``.

    Example:
        >>> img = decode_image(upload, name="upload")
        >>> data = encode_image(anonymised_pixels, like=img)  # same format and size, metadata dropped, ICC kept
    """
    _check_pixels(pixels)
    _check_quality(quality)
    name = fmt.upper() if fmt is not None else like.format if like is not None else None
    name = "JPEG" if name == "JPG" else name
    if name not in _WRITE_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(sorted(_WRITE_FORMATS))} (or given by like), got {fmt!r}")
    image, options = _prepare(pixels, name, like, quality, keep_metadata)
    if name == "TIFF" and hasattr(os, "memfd_create"):
        # libtiff, writing to a Python buffer, leaves the alignment gaps between blocks unset, so they carry stale
        # heap bytes; through a file descriptor they are zero, as in a file. A memfd is memory: nothing on disk.
        with os.fdopen(os.memfd_create("deid-encode", os.MFD_CLOEXEC), "w+b") as f:
            image.save(f, format=name, **options)
            f.seek(0)
            return f.read()
    buf = io.BytesIO()
    image.save(buf, format=name, **options)
    return buf.getvalue()


def _prepare(pixels: np.ndarray, fmt: str, like: LoadedImage | None, quality: int | None,
             keep_metadata: bool) -> tuple[Image.Image, dict]:
    """The PIL image and encoder options that ``write_image`` and ``encode_image`` save (arguments checked)."""
    image = _pil_image(pixels, fmt, like)
    return image, _save_options(fmt, image.mode, like, quality, keep_metadata)


def _check_pixels(pixels: np.ndarray) -> None:
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        shape = getattr(pixels, "shape", None)
        raise ValueError(f"pixels must be [H, W, 3] uint8 RGB, got {shape} {getattr(pixels, 'dtype', type(pixels))}")


def _check_quality(quality: int | None) -> None:
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")


def _output_format(out: Path, like: LoadedImage | None) -> str:
    fmt = _FORMAT_BY_EXTENSION.get(out.suffix.lower())
    if fmt is None and like is not None:
        fmt = like.format
    if fmt is None:
        raise InputError(out, f"unknown image suffix {out.suffix or '(none)'!r}; use one of "
                              f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    return fmt


def _pil_image(pixels: np.ndarray, fmt: str, like: LoadedImage | None) -> Image.Image:
    """The PIL image to save: RGB or L, plus alpha when ``like`` had it and the format can hold it."""
    alpha = like.alpha if like is not None else None
    if fmt == "JPEG":
        alpha = None  # JPEG has no alpha: keep the pixels composited over white
    gray = like is not None and like.is_gray and fmt != "WEBP"  # WebP stores colour only
    if alpha is not None and alpha.shape != pixels.shape[:2]:
        raise ValueError(f"pixels {pixels.shape[:2]} do not match the alpha channel {alpha.shape} of {like.path}")
    if alpha is not None and gray and fmt == "BMP":
        gray = False  # BMP has no gray + alpha mode
    colour = _uncomposite(pixels, alpha) if alpha is not None else pixels
    image = Image.fromarray(np.ascontiguousarray(colour), mode="RGB")
    if gray:
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(Image.fromarray(np.ascontiguousarray(alpha), mode="L"))
    return image


def _save_options(fmt: str, mode: str, like: LoadedImage | None, quality: int | None, keep_metadata: bool) -> dict:
    """Encoder options per format; metadata only from ``like`` and only what is safe or asked for."""
    opts: dict = {}
    if like is not None:
        icc = _icc_for(like.icc_profile, gray=mode in ("L", "LA"))
        if icc:
            opts["icc_profile"] = icc
        if like.dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
            opts["dpi"] = like.dpi
        if keep_metadata:
            opts.update(_metadata_options(fmt, like))
    if fmt == "JPEG":
        subsampling = like.subsampling if like is not None and like.subsampling is not None else 2
        opts.update(quality=quality or _JPEG_QUALITY, subsampling=subsampling, optimize=True)
    elif fmt == "WEBP":
        if like is not None and like.lossless:
            opts.update(lossless=True, quality=100, method=4)
        else:
            opts.update(quality=quality or _JPEG_QUALITY, method=4)
    elif fmt == "PNG":
        opts.update(compress_level=6)
    elif fmt == "TIFF":
        opts.update(compression="tiff_lzw")
    return opts


def _metadata_options(fmt: str, like: LoadedImage) -> dict:
    opts: dict = {}
    if like.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        opts["exif"] = like.exif
    if like.xmp and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        opts["xmp"] = like.xmp
    if like.comment and fmt == "JPEG":
        opts["comment"] = like.comment
    return opts


def _atomic_save(image: Image.Image, out: Path, fmt: str, options: dict) -> None:
    """Save to a temporary file beside ``out`` (created with the umask's permissions), then rename over ``out``."""
    directory = out.parent if str(out.parent) else Path(".")
    tmp = directory / f".{out.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileNotFoundError:
        raise InputError(out, f"cannot write: directory {directory} does not exist") from None
    except OSError as exc:
        raise InputError(out, f"cannot write ({_one_line(exc.strerror or exc)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=fmt, **options)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(out, f"cannot write ({_one_line(exc.strerror or exc)})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------------------------
# Network tensors


def to_tensor(pixels: np.ndarray, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 image -> network input.

    Args:
        pixels: ``[H, W, 3]`` uint8 RGB in [0, 255].
        device: where the tensor is created.

    Returns:
        ``[1, 3, H, W]`` float32 in [-1, 1] (0 -> -1, 255 -> 1).

    Example:
        >>> to_tensor(np.zeros((64, 64, 3), np.uint8)).shape
        torch.Size([1, 3, 64, 64])
    """
    _check_pixels(pixels)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
    x = x.permute(2, 0, 1).unsqueeze(0).to(torch.float32)  # [1, 3, H, W]
    return x / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Network output -> uint8 image(s). Values outside [-1, 1] are clipped.

    Args:
        images: ``[N, 3, H, W]`` or ``[3, H, W]`` float tensor in [-1, 1], on any device.

    Returns:
        ``[N, H, W, 3]`` or ``[H, W, 3]`` uint8 RGB in [0, 255] (same batch layout as the input).

    Example:
        >>> to_uint8(torch.zeros(3, 8, 8))[0, 0]
        array([128, 128, 128], dtype=uint8)
    """
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"images must be [N, 3, H, W] or [3, H, W], got {list(images.shape)}")
    x = (images.detach().to(torch.float32) + 1.0) * 127.5
    x = x.clamp(0, 255).round().to(torch.uint8)
    x = x.movedim(-3, -1)  # [..., H, W, 3]
    return x.cpu().numpy()
