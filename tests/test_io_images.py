"""deid.io.images: every supported format and mode, EXIF orientation, metadata stripping, safe writes, bad inputs."""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from deid.errors import InputError
from deid.io.images import (
    IMAGE_EXTENSIONS,
    LoadedImage,
    check_output_path,
    is_image_path,
    read_image,
    to_tensor,
    to_uint8,
    write_image,
)

FORMATS = [(".jpg", "JPEG"), (".png", "PNG"), (".webp", "WEBP"), (".tif", "TIFF"), (".bmp", "BMP")]
LOSSLESS = {"PNG", "TIFF", "BMP"}


def test_pattern(height: int = 48, width: int = 64) -> np.ndarray:
    """``[H, W, 3]`` uint8: smooth colour ramps (so lossy codecs stay close) and an asymmetric bright corner."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), np.full_like(xx, 90)], axis=2)
    img[:8, :8] = (250, 250, 250)  # top-left marker, to see rotations
    return img.astype(np.uint8)


test_pattern.__test__ = False  # a helper, not a test


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def tiff_ifd(entries: list[tuple[int, int, int, bytes]], offset: int, next_ifd: int) -> tuple[bytes, int]:
    """Little-endian TIFF directory at ``offset``: ``(tag, type, count, value bytes)`` entries, values > 4 bytes
    placed after the directory. Returns the bytes and the offset just past them."""
    head_len = 2 + 12 * len(entries) + 4
    data, body = b"", struct.pack("<H", len(entries))
    for tag, typ, count, value in sorted(entries):
        if len(value) <= 4:
            body += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")
        else:
            body += struct.pack("<HHII", tag, typ, count, offset + head_len + len(data))
            data += value + (b"\0" if len(value) % 2 else b"")
    body += struct.pack("<I", next_ifd)
    return body + data, offset + head_len + len(data)


def exif_with_gps_serial_and_thumbnail(thumbnail: bytes, orientation: int = 1) -> bytes:
    """An APP1 EXIF payload with camera make, orientation, a body serial number, a GPS position and a JPEG thumbnail
    (IFD1), built byte by byte so the test knows exactly what is inside."""
    ascii_ = lambda s: (2, len(s) + 1, s.encode() + b"\0")  # noqa: E731 (TIFF type 2 = ASCII)
    rational = lambda *v: (5, len(v), b"".join(struct.pack("<II", int(x * 100), 100) for x in v))  # noqa: E731
    long_ = lambda v: (4, 1, struct.pack("<I", v))  # noqa: E731
    # layout: header (8) | IFD0 | Exif IFD | GPS IFD | IFD1 | thumbnail; sizes are fixed, so offsets are computed twice
    offsets = {"exif": 0, "gps": 0, "ifd1": 0, "thumb": 0}
    for _ in range(2):
        ifd0, end = tiff_ifd([(0x010F, *ascii_("DeidCam")), (0x0112, 3, 1, struct.pack("<H", orientation)),
                              (0x8769, *long_(offsets["exif"])), (0x8825, *long_(offsets["gps"]))], 8, offsets["ifd1"])
        offsets["exif"] = end
        exif_ifd, end = tiff_ifd([(0xA431, *ascii_("SN-0042-SECRET"))], end, 0)
        offsets["gps"] = end
        gps_ifd, end = tiff_ifd([(1, *ascii_("N")), (2, *rational(52, 22, 1.5)), (3, *ascii_("E")),
                                 (4, *rational(4, 53, 2))], end, 0)
        offsets["ifd1"] = end
        ifd1, end = tiff_ifd([(0x0103, 3, 1, struct.pack("<H", 6)), (0x0201, *long_(offsets["thumb"])),
                              (0x0202, *long_(len(thumbnail)))], end, 0)
        offsets["thumb"] = end
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd0 + exif_ifd + gps_ifd + ifd1 + thumbnail


XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="SecretTool"/></rdf:RDF></x:xmpmeta>'
       b'<?xpacket end="w"?>')


@pytest.fixture
def private_jpeg(tmp_path) -> tuple[Path, bytes, bytes]:
    """A JPEG carrying EXIF (GPS, serial number, thumbnail), XMP, a comment and an ICC profile.

    Returns the path, the thumbnail bytes and the ICC profile bytes.
    """
    thumb = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(thumb, "JPEG", quality=50, comment=b"THUMB-MARKER")
    thumbnail = thumb.getvalue()
    icc = srgb_icc()
    buf = io.BytesIO()
    Image.fromarray(test_pattern()).save(buf, "JPEG", quality=92, exif=exif_with_gps_serial_and_thumbnail(thumbnail),
                                         xmp=XMP, comment=b"secret comment", icc_profile=icc)
    data = buf.getvalue()
    path = tmp_path / "private.jpg"
    path.write_bytes(data[:2] + iptc_app13(b"IPTC-SECRET-CAPTION") + data[2:])  # APP13 right after SOI
    return path, thumbnail, icc


def iptc_app13(caption: bytes) -> bytes:
    """A JPEG APP13 (Photoshop 3.0) segment holding one IPTC record: the caption (2:120)."""
    iptc = b"\x1c\x02\x78" + struct.pack(">H", len(caption)) + caption
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc
    resource += b"\0" * (len(resource) % 2)
    body = b"Photoshop 3.0\0" + resource
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


# ----------------------------------------------------------------------------------------------------------------
# Formats and modes


@pytest.mark.parametrize("suffix, fmt", FORMATS)
def test_round_trip_keeps_size_and_format(tmp_path, suffix, fmt):
    pixels = test_pattern()
    first = write_image(pixels, tmp_path / f"a{suffix}")
    loaded = read_image(first)
    assert isinstance(loaded, LoadedImage)
    assert loaded.format == fmt and loaded.size == (64, 48) and loaded.bits == 8
    assert loaded.pixels.shape == (48, 64, 3) and loaded.pixels.dtype == np.uint8
    assert loaded.alpha is None
    second = read_image(write_image(loaded.pixels, tmp_path / f"b{suffix}", like=loaded))
    assert second.format == fmt and second.size == loaded.size
    for img in (loaded, second):
        err = np.abs(img.pixels.astype(int) - pixels).mean()
        assert err == 0 if fmt in LOSSLESS else err < 3


def test_format_follows_the_output_suffix_then_the_source(tmp_path):
    src = read_image(write_image(test_pattern(), tmp_path / "a.jpg"))
    assert read_image(write_image(src.pixels, tmp_path / "b.png", like=src)).format == "PNG"
    assert read_image(write_image(src.pixels, tmp_path / "c.out", like=src)).format == "JPEG"
    with pytest.raises(InputError, match=r"d\.out: unknown image suffix"):
        write_image(src.pixels, tmp_path / "d.out")


def test_webp_losslessness_is_detected_and_kept(tmp_path):
    pixels = test_pattern()
    Image.fromarray(pixels).save(tmp_path / "lossless.webp", lossless=True)
    Image.fromarray(pixels).save(tmp_path / "lossy.webp", quality=80)
    lossless, lossy = read_image(tmp_path / "lossless.webp"), read_image(tmp_path / "lossy.webp")
    assert lossless.lossless is True and lossy.lossless is False
    out = read_image(write_image(lossless.pixels, tmp_path / "out.webp", like=lossless))
    assert out.lossless is True and np.array_equal(out.pixels, pixels)


def test_jpeg_subsampling_defaults_to_420_and_keeps_444(tmp_path):
    Image.fromarray(test_pattern()).save(tmp_path / "s444.jpg", quality=95, subsampling=0)
    src = read_image(tmp_path / "s444.jpg")
    assert src.subsampling == 0
    assert read_image(write_image(src.pixels, tmp_path / "o444.jpg", like=src)).subsampling == 0
    assert read_image(write_image(src.pixels, tmp_path / "o420.jpg")).subsampling == 2


def test_exif_orientation_6_is_applied(tmp_path):
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:20] = (255, 0, 0)  # top half red
    stored[20:] = (0, 0, 255)  # bottom half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    img = read_image(tmp_path / "rot.jpg")
    assert img.size == (40, 60)  # width and height swapped
    assert img.pixels[30, 35, 0] > 200 and img.pixels[30, 35, 2] < 60, "the stored top is now on the right"
    assert img.pixels[30, 4, 2] > 200 and img.pixels[30, 4, 0] < 60, "the stored bottom is now on the left"
    out = tmp_path / "out.jpg"
    write_image(img.pixels, out, like=img)
    with Image.open(out) as im:
        assert im.size == (40, 60) and 0x0112 not in im.getexif()


def test_grayscale_reads_as_rgb_and_writes_back_gray(tmp_path):
    gray = test_pattern()[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.mode == "L" and img.is_gray and img.pixels.shape == (48, 64, 3)
    assert np.array_equal(img.pixels[..., 0], gray) and np.array_equal(img.pixels[..., 2], gray)
    out = write_image(img.pixels, tmp_path / "o.png", like=img)
    with Image.open(out) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), gray)


def test_rgba_alpha_is_composited_and_restored(tmp_path):
    rgba = np.dstack([test_pattern(), np.zeros((48, 64), np.uint8)])
    rgba[:, :32, 3] = 255  # left half opaque
    rgba[:, 32:48, 3] = 128  # a semi-transparent band
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.mode == "RGBA" and np.array_equal(img.alpha, rgba[..., 3])
    assert np.array_equal(img.pixels[:, :32], rgba[:, :32, :3]), "opaque pixels unchanged"
    assert np.all(img.pixels[:, 48:] == 255), "transparent pixels shown over white"
    for suffix in (".png", ".webp", ".tif"):
        out = write_image(img.pixels, tmp_path / f"o{suffix}", like=img)
        with Image.open(out) as im:
            back = np.asarray(im.convert("RGBA"))
        assert np.array_equal(back[..., 3], rgba[..., 3]), suffix
        opaque = np.abs(back[:, :32, :3].astype(int) - rgba[:, :32, :3])
        band = np.abs(back[:, 32:48, :3].astype(int) - rgba[:, 32:48, :3])
        if suffix == ".webp":  # lossy, with 4:2:0 chroma
            assert opaque.mean() < 3 and band.mean() < 4
        else:
            assert opaque.max() == 0 and band.max() <= 2, "colour kept (semi-transparent: up to rounding)"
    flat = read_image(write_image(img.pixels, tmp_path / "flat.jpg", like=img))
    assert flat.alpha is None and np.abs(flat.pixels.astype(int) - img.pixels).mean() < 3


def test_gray_with_alpha(tmp_path):
    la = np.dstack([test_pattern()[..., 1], np.full((48, 64), 200, np.uint8)])
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert img.mode == "LA" and np.all(img.alpha == 200)
    with Image.open(write_image(img.pixels, tmp_path / "o.png", like=img)) as im:
        assert im.mode == "LA" and np.all(np.asarray(im)[..., 1] == 200)


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.fromarray(test_pattern()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.mode == "P" and img.alpha is None
    assert np.array_equal(img.pixels, np.asarray(pal.convert("RGB")))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    img_t = read_image(tmp_path / "pt.png")
    assert img_t.alpha is not None and set(np.unique(img_t.alpha)) <= {0, 255} and (img_t.alpha == 0).any()


def png_16bit(arr: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG (color type 0 = gray ``[H, W]``, 2 = RGB ``[H, W, 3]``) from uint16 values."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))  # filter byte 0 + big-endian row
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def test_16bit_gray_and_rgb_png(tmp_path):
    rng = np.random.default_rng(0)
    gray16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    (tmp_path / "g16.png").write_bytes(png_16bit(gray16, 0))
    g = read_image(tmp_path / "g16.png")
    assert g.bits == 16 and g.pixels.shape == (20, 30, 3)
    assert np.abs(g.pixels[..., 0].astype(int) - gray16 / 257).max() <= 0.5
    rgb16 = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    (tmp_path / "c16.png").write_bytes(png_16bit(rgb16, 2))
    c = read_image(tmp_path / "c16.png")
    assert c.bits == 16 and c.mode == "RGB"
    assert np.abs(c.pixels.astype(int) - rgb16 / 257).max() <= 1
    with Image.open(write_image(c.pixels, tmp_path / "o.png", like=c)) as im:
        assert im.mode == "RGB", "written with 8 bits per channel"


@pytest.mark.parametrize("profile", ["none", "mismatched"])
def test_cmyk_jpeg_reads_as_rgb(tmp_path, profile):
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[..., 0] = 255  # pure cyan
    icc = srgb_icc() if profile == "mismatched" else None  # an RGB profile on CMYK data: plain conversion is used
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=95, icc_profile=icc)
    img = read_image(tmp_path / "c.jpg")
    assert img.mode == "CMYK" and img.format == "JPEG" and img.pixels.shape == (16, 16, 3)
    assert img.icc_profile is None, "a CMYK-side profile never travels with RGB pixels"
    r, g, b = img.pixels[8, 8].astype(int)
    assert r < 40 and g > 215 and b > 215


def test_multi_picture_jpeg_reads_as_jpeg(tmp_path):
    frames = [Image.fromarray(test_pattern()), Image.new("RGB", (64, 48))]
    frames[0].save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=frames[1:])
    img = read_image(tmp_path / "camera.jpg")
    assert img.format == "JPEG" and img.size == (64, 48)
    assert read_image(write_image(img.pixels, tmp_path / "out.jpg", like=img)).format == "JPEG"


def test_read_image_returns_the_first_frame_of_a_multipage_tiff(tmp_path):
    frames = [Image.fromarray(test_pattern()), Image.new("RGB", (10, 10))]
    frames[0].save(tmp_path / "m.tif", save_all=True, append_images=frames[1:])
    assert read_image(tmp_path / "m.tif").size == (64, 48)


# ----------------------------------------------------------------------------------------------------------------
# Metadata


def test_private_metadata_is_dropped_and_icc_kept(tmp_path, private_jpeg):
    path, thumbnail, icc = private_jpeg
    data = path.read_bytes()
    assert b"Exif\0\0" in data and b"SN-0042-SECRET" in data and thumbnail in data and b"IPTC-SECRET" in data
    src = read_image(path)
    assert src.pixels.shape == (48, 64, 3)
    with Image.open(path) as im:
        assert im.getexif().get_ifd(0x8825)[1] == "N", "GPS readable in the input"
    out = tmp_path / "clean.jpg"
    write_image(src.pixels, out, like=src)
    data = out.read_bytes()
    assert b"Exif" not in data, "no EXIF APP1 segment"
    assert b"SN-0042" not in data and b"DeidCam" not in data
    assert b"THUMB-MARKER" not in data and thumbnail[2:200] not in data, "no embedded thumbnail"
    assert b"http://ns.adobe.com/xap" not in data and b"SecretTool" not in data, "no XMP"
    assert b"secret comment" not in data and b"\xff\xfe" not in data, "no COM segment"
    assert b"IPTC-SECRET" not in data and b"Photoshop 3.0" not in data, "no IPTC"
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == icc
        assert not im.getexif() and "comment" not in im.info


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_metadata_is_not_carried_into_other_formats(tmp_path, private_jpeg, suffix):
    path, thumbnail, icc = private_jpeg
    src = read_image(path)
    out = write_image(src.pixels, tmp_path / f"clean{suffix}", like=src)
    data = out.read_bytes()
    for secret in (b"SN-0042", b"DeidCam", b"THUMB-MARKER", b"SecretTool", b"secret comment", b"IPTC-SECRET"):
        assert secret not in data
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == icc


def test_keep_metadata_copies_exif_and_xmp_but_never_the_thumbnail(tmp_path, private_jpeg):
    path, thumbnail, _ = private_jpeg
    src = read_image(path)
    out = write_image(src.pixels, tmp_path / "kept.jpg", like=src, keep_metadata=True)
    data = out.read_bytes()
    assert b"SN-0042-SECRET" in data and b"SecretTool" in data and b"secret comment" in data
    assert b"THUMB-MARKER" not in data
    with Image.open(out) as im:
        exif = im.getexif()
        assert exif.get_ifd(0x8825)[1] == "N" and 0x0112 not in exif


def test_gray_icc_profile_is_not_attached_to_rgb_output(tmp_path):
    gray_icc = bytearray(srgb_icc())
    gray_icc[16:20] = b"GRAY"  # only the header's colour space is looked at
    Image.fromarray(test_pattern()).save(tmp_path / "a.png", icc_profile=bytes(gray_icc))
    img = read_image(tmp_path / "a.png")
    assert img.icc_profile is None


# ----------------------------------------------------------------------------------------------------------------
# Safe writing


def test_check_output_path_refuses_the_input(tmp_path):
    src = tmp_path / "in.jpg"
    write_image(test_pattern(), src)
    for same in (src, tmp_path / "sub" / ".." / "in.jpg", Path(os.path.relpath(src))):
        if same.parent.name == "sub":
            (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(InputError, match="overwrite the input"):
            check_output_path(src, same)
    os.link(src, tmp_path / "hardlink.jpg")
    with pytest.raises(InputError, match="hardlink.jpg"):
        check_output_path(src, tmp_path / "hardlink.jpg")
    check_output_path(src, tmp_path / "out.jpg")  # a different, new file is fine


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    out = tmp_path / "out.png"
    write_image(test_pattern(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    before = out.read_bytes()

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"partial data")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(InputError, match=r"out\.png: cannot write \(disk full\)"):
        write_image(np.zeros((48, 64, 3), np.uint8), out)
    assert out.read_bytes() == before, "the old file is untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_write_into_a_missing_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_image(test_pattern(), tmp_path / "nope" / "out.png")


def test_written_file_gets_normal_permissions(tmp_path):
    out = write_image(test_pattern(), tmp_path / "out.png")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((4, 4, 4), np.uint8)])
def test_write_rejects_arrays_that_are_not_rgb_uint8(tmp_path, bad):
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_image(bad, tmp_path / "x.png")


# ----------------------------------------------------------------------------------------------------------------
# Bad inputs


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and header claiming ``width x height`` pixels, and no image data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(bytes(64))) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _corrupt_png() -> bytes:
    data = bytearray(_encoded("PNG"))
    start = data.index(b"IDAT") + 40
    data[start : start + 200] = bytes(200)  # zeroed compressed data: the zlib stream breaks
    return bytes(data)


BAD_FILES = {
    "truncated.jpg": (lambda: _encoded("JPEG")[:3000], "truncated image file"),
    "truncated.png": (lambda: _encoded("PNG")[:20000], "truncated image file"),
    "empty.jpg": (lambda: b"", r"empty file \(0 bytes\)"),
    "notes.jpg": (lambda: b"shopping list: eggs, milk\n" * 20, r"not an image \(cannot identify image format"),
    "corrupt.png": (_corrupt_png, "corrupt image data"),
    "garbage.jpg": (lambda: np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
                    "not an image"),
    "bomb.png": (lambda: _png_header_only(40000, 40000), "image too large .*possible decompression bomb"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_one_line_input_error_naming_the_file(tmp_path, name):
    make, cause = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: {cause}") as info:
        read_image(path)
    assert "\n" not in str(info.value) and info.value.path == str(path)


def test_pixel_limit_is_configurable(tmp_path):
    path = write_image(test_pattern(), tmp_path / "ok.png")
    with pytest.raises(InputError, match=r"ok\.png: image too large \(64x48 = 3072 px, limit 1000 px; possible"):
        read_image(path, max_pixels=1000)
    assert read_image(path, max_pixels=64 * 48).size == (64, 48)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"missing\.jpg: no such file$"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(InputError, match=r"folder\.jpg: is a directory"):
        read_image(tmp_path / "folder.jpg")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    path = write_image(test_pattern(), tmp_path / "secret.png")
    path.chmod(0)
    try:
        with pytest.raises(InputError, match=r"secret\.png: permission denied"):
            read_image(path)
    finally:
        path.chmod(0o600)


# ----------------------------------------------------------------------------------------------------------------
# Tensors and helpers


def test_to_tensor_and_to_uint8_are_exact_inverses():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    x = to_tensor(pixels)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert np.array_equal(to_uint8(x), pixels[None])
    assert np.array_equal(to_uint8(x[0]), pixels)


def test_to_uint8_clips_and_keeps_the_batch():
    y = to_uint8(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(2, 3, 1, 5))
    assert y.shape == (2, 1, 5, 3) and y.dtype == np.uint8
    assert y[1, 0, :, 0].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(1, 4, 8, 8))


def test_image_extensions_and_is_image_path():
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"} <= IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    assert is_image_path("a/B.JPG") and is_image_path(Path("x.tiff"))
    assert not is_image_path("notes.txt") and not is_image_path("noext")
